package nodemeta

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProbeTimeout bounds each request of CheckReachable.
const ProbeTimeout = time.Second

// ProbeUserAgent is the User-Agent of CheckReachable's requests, so that a
// node IMDS stand-in (or a flow log) can tell them from the agent's own.
const ProbeUserAgent = "podrole-agent node-imds-check"

// Reachability is what an app in the pod gets from the node's metadata
// service: V2 when an IMDSv2 token PUT is answered with a token, V1 when an
// IMDSv1 GET (no token) of /latest/meta-data/ is answered 200. The details
// say what happened instead (refused, timeout, HTTP 401...).
type Reachability struct {
	V1, V2             bool
	V1Detail, V2Detail string
}

// ProbeClient is an HTTP client as an app would have one for the node's
// IMDS: no socket mark (the agent's other client sets it), no proxy, no
// connection reuse.
func ProbeClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       (&net.Dialer{Timeout: ProbeTimeout}).DialContext,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// CheckReachable sends, at once and each within ProbeTimeout, one IMDSv2
// token PUT and one IMDSv1 GET of /latest/meta-data/ to endpoint with
// client (use ProbeClient: unmarked, so that the pod's rules treat it like
// an app's request). It reads nothing of value: the token is thrown away
// unused, the listing is not read past its status line.
//
// connected, if not nil, is closed once both requests have their
// connection (made, refused or given up): from then on the pod's rules have
// decided where each goes, so the caller may open a listener the rules
// redirect to without the check ever reaching it.
func CheckReachable(ctx context.Context, client Doer, endpoint string, connected chan<- struct{}) Reachability {
	base := strings.TrimRight(endpoint, "/")
	var r Reachability
	var wg sync.WaitGroup
	wg.Add(2)
	var dialed sync.WaitGroup
	dialed.Add(2)
	go func() {
		defer wg.Done()
		r.V2, r.V2Detail = probe(ctx, client, http.MethodPut, base+"/latest/api/token", &dialed, func(h http.Header) {
			h.Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", tokenTTLSeconds)
		}, func(b []byte) bool { return len(strings.TrimSpace(string(b))) > 0 })
	}()
	go func() {
		defer wg.Done()
		r.V1, r.V1Detail = probe(ctx, client, http.MethodGet, base+"/latest/meta-data/", &dialed, nil, nil)
	}()
	settled := make(chan struct{})
	go func() {
		dialed.Wait()
		if connected != nil {
			close(connected)
		}
		close(settled)
	}()
	wg.Wait()
	<-settled // closed by now: each probe settles its connection before it returns
	return r
}

// probe sends one request and reports whether it was answered 200 (and,
// with body, whether the body passes). dialed is marked done exactly once,
// when the connection is settled or the request ends without one.
func probe(ctx context.Context, client Doer, method, url string, dialed *sync.WaitGroup, header func(http.Header), body func([]byte) bool) (bool, string) {
	var once sync.Once
	done := func() { once.Do(dialed.Done) }
	defer done()
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		ConnectDone: func(_, _ string, _ error) { done() },
	})
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("User-Agent", ProbeUserAgent)
	if header != nil {
		header(req.Header)
	}
	resp, err := client.Do(req)
	done()
	if err != nil {
		return false, classify(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	if body != nil {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		if err != nil || !body(b) {
			return false, "HTTP 200 without a token"
		}
	}
	return true, "HTTP 200"
}

// classify names why a request got no answer, for the log.
func classify(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return "denied"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return "unreachable"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "error: " + err.Error()
}
