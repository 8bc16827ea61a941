package health

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podrole/podrole/contract"
)

type status struct {
	mu             sync.Mutex
	started, ready bool
}

func (s *status) Started() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.started }
func (s *status) Ready() bool   { s.mu.Lock(); defer s.mu.Unlock(); return s.ready }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The probes follow the credential state: alive always, started once the
// first credentials are cached, ready while credentials may be served.
func TestProbes(t *testing.T) {
	st := &status{}
	srv := httptest.NewServer(Handler(st, prometheus.NewRegistry()))
	defer srv.Close()
	check := func(want map[string]int) {
		t.Helper()
		for path, code := range want {
			if got, body := get(t, srv.URL+path); got != code {
				t.Errorf("%s = %d %q, want %d", path, got, body, code)
			}
		}
	}
	check(map[string]int{contract.PathHealthz: 200, contract.PathStarted: 503, contract.PathReadyz: 503, "/other": 404})
	st.mu.Lock()
	st.started, st.ready = true, true
	st.mu.Unlock()
	check(map[string]int{contract.PathHealthz: 200, contract.PathStarted: 200, contract.PathReadyz: 200})
	st.mu.Lock()
	st.ready = false // STS outage past the margin
	st.mu.Unlock()
	check(map[string]int{contract.PathHealthz: 200, contract.PathStarted: 200, contract.PathReadyz: 503})
}

func TestMetrics(t *testing.T) {
	now := time.Date(2026, 11, 28, 4, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	exp, have := time.Time{}, false
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, func() (time.Time, bool) { mu.Lock(); defer mu.Unlock(); return exp, have }, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	m.Request("credentials", 200)
	m.Request("credentials", 200)
	m.Request("other", 404)
	m.TokenIssued()
	m.STSCall("AssumeRole", nil)
	m.STSCall("AssumeRole", errors.New("denied"))
	mu.Lock()
	exp, have = now.Add(45*time.Minute), true
	mu.Unlock()
	srv := httptest.NewServer(Handler(&status{}, reg))
	defer srv.Close()
	code, body := get(t, srv.URL+contract.PathMetrics)
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`podrole_imds_requests_total{code="200",route="credentials"} 2`,
		`podrole_imds_requests_total{code="404",route="other"} 1`,
		`podrole_imds_tokens_issued_total 1`,
		`podrole_sts_calls_total{api="AssumeRole"} 2`,
		`podrole_sts_errors_total{api="AssumeRole"} 1`,
		`podrole_credentials_expiry_seconds 2700`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want+" ") {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Registering twice on one registry is an error, not a panic.
	if _, err := NewMetrics(reg, func() (time.Time, bool) { return time.Time{}, false }, time.Now); err == nil {
		t.Error("second registration accepted")
	}
}

// Only GET and HEAD are answered, on every path: nothing on this port
// changes state, and no other method reaches a handler.
func TestMethods(t *testing.T) {
	srv := httptest.NewServer(Handler(&status{started: true, ready: true}, prometheus.NewRegistry()))
	defer srv.Close()
	for _, path := range []string{contract.PathHealthz, contract.PathStarted, contract.PathReadyz, contract.PathMetrics, "/other"} {
		for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"} {
			req, _ := http.NewRequest(m, srv.URL+path, strings.NewReader("x"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %d Allow=%q, want 405 GET, HEAD", m, path, resp.StatusCode, resp.Header.Get("Allow"))
			}
		}
		resp, err := http.Head(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := 200
		if path == "/other" {
			want = 404
		}
		if resp.StatusCode != want {
			t.Errorf("HEAD %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// podrole_node_imds_reachable is absent until the check ran, then one
// series per version.
func TestNodeIMDSReachableMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, func() (time.Time, bool) { return time.Time{}, false }, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(&status{}, reg))
	defer srv.Close()
	if _, body := get(t, srv.URL+contract.PathMetrics); strings.Contains(body, NodeIMDSReachableMetric+"{") {
		t.Fatalf("reported before the check:\n%s", body)
	}
	m.NodeIMDSReachable("v1", true)
	m.NodeIMDSReachable("v2", false)
	_, body := get(t, srv.URL+contract.PathMetrics)
	for _, want := range []string{`podrole_node_imds_reachable{version="v1"} 1`, `podrole_node_imds_reachable{version="v2"} 0`} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}
