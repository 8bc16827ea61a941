package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Limits bound what clients can make the webhook hold. With failurePolicy
// Fail a webhook that hangs or is OOM-killed stops every pod in every
// labelled namespace, and anything that reaches the Service can connect,
// so none of this may depend on the client behaving. A zero field takes
// its DefaultLimits value.
type Limits struct {
	// ReadHeaderTimeout bounds the TLS handshake and a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included: a client
	// that announces a body and stalls is cut off and its connection closed.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from its headers (HTTP/2: its stream's
	// start) to the end of its answer.
	WriteTimeout time.Duration
	// IdleTimeout closes kept-alive connections left idle that long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (HTTP/2: the header list).
	MaxHeaderBytes int
	// H2ReceiveBuffer bounds, per HTTP/2 connection and per stream, the
	// request body bytes a client may send before a handler reads them (the
	// flow-control windows; Go's default is 1 MiB).
	H2ReceiveBuffer int
	// MemoryBudget bounds the memory all admission requests in flight may
	// hold at once: request bodies as their bytes arrive, then each review's
	// estimated cost (reviewCost) while it is decoded, decided and answered.
	// A review that alone would exceed it is refused.
	MemoryBudget int64
	// BudgetWait is how long a request waits for its share of MemoryBudget
	// before it is answered 503 with Retry-After (client-go, which the API
	// server calls webhooks with, retries such answers within its timeout).
	BudgetWait time.Duration
}

// DefaultLimits are the webhook's limits. The webhook configurations give
// the API server 5 s per call; these let an honest call through (it sends
// its few KiB at once) and end anything slower.
func DefaultLimits() Limits {
	return Limits{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		// Above client-go's 90 s idle timeout, so the API server, not the
		// webhook, closes its idle connections (no race with a new request).
		IdleTimeout:     120 * time.Second,
		MaxHeaderBytes:  32 << 10,
		H2ReceiveBuffer: 256 << 10,
		// With the Go runtime and the binary's pages (~30 MiB) and the GC's
		// headroom this stays well under the manifests' 256 Mi limit.
		MemoryBudget: 64 << 20,
		BudgetWait:   time.Second,
	}
}

// withDefaults fills l's zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	set := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	set(&l.ReadTimeout, d.ReadTimeout)
	set(&l.WriteTimeout, d.WriteTimeout)
	set(&l.IdleTimeout, d.IdleTimeout)
	set(&l.BudgetWait, d.BudgetWait)
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.H2ReceiveBuffer == 0 {
		l.H2ReceiveBuffer = d.H2ReceiveBuffer
	}
	if l.MemoryBudget == 0 {
		l.MemoryBudget = d.MemoryBudget
	}
	return l
}

// HTTPServer returns an http.Server for h with the server's Limits: the
// admission listener (tlsConfig set, served with ServeTLS) and the probe
// listener (tlsConfig nil) both use it. errorLog may be nil.
func (s *Server) HTTPServer(h http.Handler, tlsConfig *tls.Config, errorLog *log.Logger) *http.Server {
	l := s.limits
	return &http.Server{
		Handler: h, TLSConfig: tlsConfig, ErrorLog: errorLog,
		ReadHeaderTimeout: l.ReadHeaderTimeout, ReadTimeout: l.ReadTimeout,
		WriteTimeout: l.WriteTimeout, IdleTimeout: l.IdleTimeout,
		MaxHeaderBytes: l.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerConnection: l.H2ReceiveBuffer,
			MaxReceiveBufferPerStream:     l.H2ReceiveBuffer,
			// HTTP/2's default frame size, not Go's 1 MiB: each connection
			// keeps a read buffer as large as the largest frame it got.
			MaxReadFrameSize: 16 << 10,
		},
	}
}

// budget is a semaphore of bytes. Unlike a FIFO one, a small request is
// never queued behind a large one that cannot fit yet.
type budget struct {
	mu      sync.Mutex
	max     int64
	used    int64
	waiting int
	freed   chan struct{} // closed (and replaced) when bytes are released
}

func newBudget(max int64) *budget { return &budget{max: max, freed: make(chan struct{})} }

// acquire takes n bytes, waiting for them until deadline or ctx's end; it
// reports whether it got them. Bytes free at once are taken even after the
// deadline.
func (b *budget) acquire(ctx context.Context, n int64, deadline time.Time) bool {
	var timer *time.Timer
	for {
		b.mu.Lock()
		if b.used+n <= b.max {
			b.used += n
			b.mu.Unlock()
			return true
		}
		wait := time.Until(deadline)
		if n > b.max || wait <= 0 {
			b.mu.Unlock()
			return false
		}
		b.waiting++
		freed := b.freed
		b.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		}
		var ok bool
		select {
		case <-freed:
			ok = true
		case <-timer.C:
		case <-ctx.Done():
		}
		b.mu.Lock()
		b.waiting--
		b.mu.Unlock()
		if !ok {
			return false
		}
	}
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.waiting > 0 {
		close(b.freed)
		b.freed = make(chan struct{})
	}
	b.mu.Unlock()
}

func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// hold is what one request has taken from a budget.
type hold struct {
	b        *budget
	n        int64
	ctx      context.Context
	deadline time.Time
}

// grow takes n more bytes; false means the budget had none in time.
func (h *hold) grow(n int64) bool {
	if !h.b.acquire(h.ctx, n, h.deadline) {
		return false
	}
	h.n += n
	return true
}

func (h *hold) release() {
	h.b.release(h.n)
	h.n = 0
}

// errOverloaded: the memory budget had no room for the request in time.
var errOverloaded = errors.New("podrole-webhook is at its memory budget for requests in flight")

// errTooLarge: the body is larger than MaxReviewBytes.
var errTooLarge = fmt.Errorf("request body is larger than %d bytes", MaxReviewBytes)

const (
	// firstBodyBuffer is the most a request gets before its bytes arrive,
	// whatever Content-Length it announces: a typical review is 2-5 KiB.
	firstBodyBuffer = 16 << 10
	// maxPooledBuffer is the largest buffer kept for reuse: one rare 3 MiB
	// pod must not pin 3 MiB per pooled buffer.
	maxPooledBuffer = 64 << 10
)

// readBody reads the request body into buf (a pooled buffer, possibly
// empty), growing it only as bytes arrive (doubling when full) and taking
// every byte of its capacity from h first. Content-Length only ever makes a
// buffer smaller: the first one is at most firstBodyBuffer, so a client that
// announces 3 MB and sends a few KiB costs 16 KiB.
func readBody(w http.ResponseWriter, r *http.Request, h *hold, buf []byte) ([]byte, error) {
	if r.ContentLength > MaxReviewBytes {
		return buf, errTooLarge
	}
	if cap(buf) == 0 {
		n := firstBodyBuffer
		if cl := r.ContentLength; cl >= 0 && cl < firstBodyBuffer {
			n = int(cl) + 1 // room to see EOF without growing
		}
		if !h.grow(int64(n)) {
			return buf, errOverloaded
		}
		buf = make([]byte, 0, n)
	} else if !h.grow(int64(cap(buf))) {
		return buf, errOverloaded
	}
	body := http.MaxBytesReader(w, r.Body, MaxReviewBytes)
	for {
		if len(buf) == cap(buf) {
			if len(buf) > MaxReviewBytes {
				return buf, errTooLarge
			}
			// Double what has arrived, but never past what the client
			// announced: a truthful Content-Length ends in one exact buffer.
			n := min(2*cap(buf), MaxReviewBytes+1)
			if cl := r.ContentLength; cl > int64(len(buf)) && cl < int64(n) {
				n = int(cl) + 1
			}
			if !h.grow(int64(n - cap(buf))) {
				return buf, errOverloaded
			}
			grown := make([]byte, len(buf), n)
			copy(grown, buf)
			buf = grown
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF:
			return buf, nil
		case err != nil:
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return buf, errTooLarge
			}
			return buf, fmt.Errorf("read request body: %w", err)
		}
	}
}

// The cost model: what serving one review allocates at most (garbage
// included: the heap holds it until a collection), from one pass over its
// JSON. Decoding turns 3 bytes ("{},") into a 400-byte struct; a container
// costs several KiB more (its patch operation and, when an injected pod is
// re-verified, the rebuilt injection); re-verification copies and
// re-encodes the whole pod several times (up to 25 bytes per byte of a
// long string). The constants cover the most expensive path measured for
// pods made only of empty objects, nulls, strings, map entries or
// containers, each as large as the default budget admits
// (TestReviewCostCoversAllocation keeps them honest).
const (
	costPerByte      = 32
	costPerToken     = 512     // ':' ',' '[' '{': a member or an element
	costPerObject    = 3 << 10 // '{'
	costPerContainer = 12 << 10
	// maxJSONDepth is encoding/json's nesting limit: deeper is refused.
	maxJSONDepth = 10000
)

// reviewCost estimates what serving body allocates, from one scan of its
// JSON outside strings. Containers are the elements of arrays under a key
// that encoding/json could match to containers, initContainers or
// ephemeralContainers (any case; any key with escapes or non-ASCII bytes
// counts, since the decoder folds those too). Invalid JSON is costed as
// far as it goes (decoding refuses it later).
func reviewCost(body []byte) (int64, error) {
	var tokens, objects, containers int64
	// stack holds '{', '[' or 'c' (an array of containers) per open level.
	stack := make([]byte, 0, 32)
	keyNamesContainers := false // the last string was a container-list name
	valueIsContainers := false  // ... and was followed by ':'
	first := false              // just after a containers '[': the next value is one
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c == ' ' || c == '\n' || c == '\t' || c == '\r' {
			continue
		}
		if first {
			first = false
			if c != ']' {
				containers++
			}
		}
		switch c {
		case '"':
			start, plain := i+1, true
			for i++; i < len(body) && body[i] != '"'; i++ {
				if body[i] == '\\' {
					plain = false
					i++
				} else if body[i] >= 0x80 {
					plain = false
				}
			}
			end := min(i, len(body))
			keyNamesContainers = !plain || containerList(body[start:end])
		case ':':
			tokens++
			valueIsContainers = keyNamesContainers
			keyNamesContainers = false
		case '[', '{':
			tokens++
			if len(stack) >= maxJSONDepth {
				return 0, fmt.Errorf("request body nests deeper than %d levels", maxJSONDepth)
			}
			switch {
			case c == '{':
				objects++
				stack = append(stack, '{')
			case valueIsContainers:
				stack = append(stack, 'c')
				first = true
			default:
				stack = append(stack, '[')
			}
			valueIsContainers, keyNamesContainers = false, false
		case ']', '}':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			valueIsContainers, keyNamesContainers = false, false
		case ',':
			tokens++
			if len(stack) > 0 && stack[len(stack)-1] == 'c' {
				containers++
			}
			valueIsContainers, keyNamesContainers = false, false
		}
	}
	return costPerByte*int64(len(body)) + costPerToken*tokens + costPerObject*objects + costPerContainer*containers, nil
}

// containerList reports whether key is, in any ASCII case, the JSON name of
// a pod's container list.
func containerList(key []byte) bool {
	for _, name := range []string{"containers", "initContainers", "ephemeralContainers"} {
		if len(key) != len(name) {
			continue
		}
		same := true
		for j := range key {
			if lower(key[j]) != lower(name[j]) {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// tooCostly answers a review that alone would exceed the memory budget:
// an AdmissionReview refusal the user sees when its uid can be read, else
// a plain 413.
func tooCostly(w http.ResponseWriter, body []byte, cost, budget int64) {
	msg := fmt.Sprintf("podrole: this request is too large for podrole to check: serving it would take about %d MiB, more than the webhook's %d MiB for requests in flight (a pod this large, or with this many containers, volumes or other list entries, is refused; split it)",
		cost>>20, budget>>20)
	var peek struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Request    *struct {
			UID types.UID `json:"uid"`
		} `json:"request"`
	}
	// Skipping what the struct lacks allocates next to nothing.
	if json.Unmarshal(body, &peek) != nil || peek.Request == nil || peek.Request.UID == "" ||
		peek.APIVersion != admissionv1.SchemeGroupVersion.String() || peek.Kind != "AdmissionReview" {
		http.Error(w, msg, http.StatusRequestEntityTooLarge)
		return
	}
	out := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: peek.APIVersion, Kind: peek.Kind},
		Response: &admissionv1.AdmissionResponse{UID: peek.Request.UID, Allowed: false, Result: &metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusRequestEntityTooLarge, Reason: metav1.StatusReasonRequestEntityTooLarge, Message: msg,
		}},
	}
	b, _ := json.Marshal(&out)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// overloaded answers a request the budget had no room for.
func overloaded(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, errOverloaded.Error()+"; retry", http.StatusServiceUnavailable)
}
