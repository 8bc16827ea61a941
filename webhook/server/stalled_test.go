package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podrole/podrole/bench"
	"github.com/podrole/podrole/certs"
	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/webhook/mutate"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
)

// tlsServer serves s over TLS on a loopback port exactly as main does
// (HTTPServer, the certs.Store's TLS config, ServeTLS) until the test ends,
// and returns its address and a pool trusting it.
func tlsServer(t testing.TB, s *Server) (string, *x509.CertPool) {
	t.Helper()
	ca, err := certs.NewCA("stalled-ca", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Issue("podrole-webhook", []string{"127.0.0.1"}, nil, true, false, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := kp.TLS()
	if err != nil {
		t.Fatal(err)
	}
	store := &certs.Store{}
	store.Set(cert)
	srv := s.HTTPServer(s.Handler(), store.TLSConfig(), nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return ln.Addr().String(), roots
}

// heapInUse is the Go heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// vmRSS is this process's resident set in bytes (0 where /proc is missing).
func vmRSS() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// stallHTTP1 opens one stalled HTTP/1.1 upload (bench.OpenStalledUpload),
// with room for a slow machine.
func stallHTTP1(addr string, roots *x509.CertPool) (net.Conn, *bufio.Reader, error) {
	return bench.OpenStalledUpload(context.Background(), addr, roots, 30*time.Second)
}

// TestStalledUploads: 120 TLS connections announce a 3 MB body, send
// 4 KiB and stall, and 120 HTTP/2 streams do the same. The webhook's heap
// must not grow by what they announce (before the fix: 3 MB each, 387 MiB
// RSS against a 256 Mi limit); a valid review must still be answered; and
// the server must end every stalled upload after its read timeout.
func TestStalledUploads(t *testing.T) {
	const uploads = 120
	// Short, so the test is quick; long enough that every upload is open
	// while the valid review is sent.
	const readTimeout = 5 * time.Second
	cfg := mutate.DefaultConfig()
	cfg.SidecarImage = "registry.example/podrole-sidecar:test"
	cfg.BaseRoleARN = "arn:aws:iam::111122223333:role/"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Config: cfg, Namespaces: testNamespaces(), Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(),
		Limits: Limits{ReadTimeout: readTimeout, ReadHeaderTimeout: readTimeout}})
	if err != nil {
		t.Fatal(err)
	}
	addr, roots := tlsServer(t, s)
	heap0, rss0 := heapInUse(), vmRSS()

	// HTTP/1.1: one connection each.
	type stalled struct {
		c  net.Conn
		br *bufio.Reader
	}
	h1 := make([]stalled, uploads)
	var wg sync.WaitGroup
	errs := make(chan error, uploads)
	for i := range uploads {
		wg.Go(func() {
			c, br, err := stallHTTP1(addr, roots)
			if err != nil {
				errs <- fmt.Errorf("stalled upload %d: %w", i, err)
				return
			}
			h1[i] = stalled{c, br}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	defer func() {
		for _, s := range h1 {
			s.c.Close()
		}
	}()

	// HTTP/2: streams of one connection, as the API server multiplexes.
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}, Timeout: readTimeout + 30*time.Second}
	defer h2.CloseIdleConnections()
	type result struct {
		status int
		proto  string
		err    error
	}
	results := make(chan result, uploads)
	writers := make([]*io.PipeWriter, uploads)
	for i := range uploads {
		pr, pw := io.Pipe()
		writers[i] = pw
		req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/mutate", pr)
		req.ContentLength = 3000000
		req.Header.Set("Content-Type", "application/json")
		go func() {
			resp, err := h2.Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			results <- result{status: resp.StatusCode, proto: resp.Proto}
		}()
		if _, err := pw.Write(bytes.Repeat([]byte(" "), 4<<10)); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, w := range writers {
			w.Close()
		}
	}()
	// Every upload's handler has started reading its body when its first
	// buffer has been taken from the budget (bounded wait).
	for deadline := time.Now().Add(30 * time.Second); s.memory.inUse() < 2*uploads*firstBodyBuffer; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d bytes of the budget taken: not every upload reached its handler", s.memory.inUse())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// (a) What 240 stalled uploads announcing 3 MB hold: their first
	// buffers (16 KiB), not 3 MB.
	heap1, rss1 := heapInUse(), vmRSS()
	growth := int64(heap1) - int64(heap0)
	t.Logf("%d stalled uploads (HTTP/1.1) + %d (HTTP/2), each announcing 3 MB: heap in use %+.1f MiB, RSS %+.1f MiB (%.1f MiB), budget in use %.1f MiB",
		uploads, uploads, float64(growth)/(1<<20), float64(rss1-rss0)/(1<<20), float64(rss1)/(1<<20), float64(s.memory.inUse())/(1<<20))
	if growth > 64<<20 {
		t.Errorf("the heap grew by %d MiB with %d stalled uploads open; want well under 64 MiB", growth>>20, 2*uploads)
	}

	// (b) A valid review is answered while they are open, over a new
	// HTTP/2 connection as the API server would send it.
	valid := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}, Timeout: 30 * time.Second}
	defer valid.CloseIdleConnections()
	body := reviewJSON("valid", "team-a", admissionv1.Create, "Pod", podJSON("team-a", map[string]string{contract.AnnotationRole: "app"}))
	resp, err := valid.Post("https://"+addr+"/mutate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("valid review not answered: %v", err)
	}
	var out admissionv1.AdmissionReview
	err = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || out.Response == nil || !out.Response.Allowed || len(out.Response.Patch) == 0 || out.Response.UID != "valid" {
		t.Fatalf("valid review: %s %v %+v", resp.Status, err, out.Response)
	}

	// (c) The server ends every stalled upload once its read timeout has
	// passed: HTTP/1.1 connections are answered and closed (the client
	// reads to EOF), HTTP/2 streams answered. Bounded waits only.
	for i, s := range h1 {
		s.c.SetReadDeadline(time.Now().Add(readTimeout + 30*time.Second))
		rest, err := io.ReadAll(s.br)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("stalled HTTP/1.1 upload %d: the server never closed the connection", i)
			}
			// A reset after the answer also ends it.
		}
		if !bytes.HasPrefix(rest, []byte("HTTP/1.1 400 ")) || !bytes.Contains(rest, []byte("timeout")) {
			t.Errorf("stalled HTTP/1.1 upload %d got %.200q (%v), want 400 naming the timeout", i, rest, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout+30*time.Second)
	defer cancel()
	for range uploads {
		select {
		case r := <-results:
			if r.err != nil || r.status != http.StatusBadRequest || r.proto != "HTTP/2.0" {
				t.Errorf("stalled HTTP/2 upload: %s %d %v, want HTTP/2.0 400", r.proto, r.status, r.err)
			}
		case <-ctx.Done():
			t.Fatal("the server never ended some stalled HTTP/2 uploads")
		}
	}
}

// TestOverloadShed: with the budget taken by uploads in flight, a request
// waits BudgetWait and is answered 503 with Retry-After (client-go
// retries it); once they end, the same request is admitted.
func TestOverloadShed(t *testing.T) {
	cfg := mutate.DefaultConfig()
	cfg.SidecarImage = "registry.example/podrole-sidecar:test"
	cfg.BaseRoleARN = "arn:aws:iam::111122223333:role/"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	const readTimeout = 3 * time.Second
	body := reviewJSON("shed", "team-a", admissionv1.Create, "Pod", podJSON("team-a", map[string]string{contract.AnnotationRole: "app"}))
	cost, err := reviewCost(body)
	if err != nil {
		t.Fatal(err)
	}
	// Room for the review alone, or for four stalled uploads' first
	// buffers, not for both.
	s, err := New(Options{Config: cfg, Namespaces: testNamespaces(), Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(),
		Limits: Limits{ReadTimeout: readTimeout, MemoryBudget: int64(len(body)+1) + cost + 2*firstBodyBuffer, BudgetWait: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	addr, roots := tlsServer(t, s)
	var conns []net.Conn
	for range 4 {
		c, _, err := stallHTTP1(addr, roots)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Post("https://"+addr+"/mutate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(b), "memory budget") {
		t.Fatalf("with the budget taken: %s, Retry-After %q, %s", resp.Status, resp.Header.Get("Retry-After"), b)
	}
	if got := testutil.ToFloat64(s.shed); got != 1 {
		t.Errorf("shed counter %v", got)
	}
	// The uploads end at their read timeout and give their memory back.
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(readTimeout + 30*time.Second))
		io.Copy(io.Discard, c)
		c.Close()
	}
	for deadline := time.Now().Add(30 * time.Second); s.memory.inUse() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still taken after the uploads ended", s.memory.inUse())
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err = client.Post("https://"+addr+"/mutate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the uploads ended: %s", resp.Status)
	}
}
