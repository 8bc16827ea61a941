package nodemeta

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// standIn is a node IMDS that answers IMDSv1 GETs and/or IMDSv2 token PUTs,
// as a node with HttpTokens=optional/required and a given hop limit looks
// from a pod, and records what it was sent.
type standIn struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newStandIn(t *testing.T, v1, v2 bool) *standIn {
	s := &standIn{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Clone(context.Background()))
		s.mu.Unlock()
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
			if !v2 {
				// A hop limit of 1 drops the answer on its way into the pod;
				// 403 stands in for that here (TestCheckReachableSlow times out).
				w.WriteHeader(http.StatusForbidden)
				return
			}
			io.WriteString(w, "AQAEAnodeTokenEXAMPLE==")
		case r.Method == http.MethodGet && r.URL.Path == "/latest/meta-data/":
			if !v1 {
				w.WriteHeader(http.StatusUnauthorized) // HttpTokens=required
				return
			}
			io.WriteString(w, "ami-id\nhostname\niam/\nplacement/\n")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// Every combination is told apart, and the check sends exactly one token
// PUT and one token-less GET of the listing, marked as the check, reading
// nothing else.
func TestCheckReachable(t *testing.T) {
	for _, tt := range []struct {
		name   string
		v1, v2 bool
	}{{"v1 only", true, false}, {"v2 only", false, true}, {"both", true, true}, {"none", false, false}} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStandIn(t, tt.v1, tt.v2)
			connected := make(chan struct{})
			r := CheckReachable(context.Background(), ProbeClient(), s.URL+"/", connected)
			if r.V1 != tt.v1 || r.V2 != tt.v2 {
				t.Fatalf("got %+v, want v1=%v v2=%v", r, tt.v1, tt.v2)
			}
			select {
			case <-connected:
			default:
				t.Fatal("connected not closed")
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			var got []string
			for _, q := range s.reqs {
				got = append(got, q.Method+" "+q.URL.Path)
				if q.UserAgent() != ProbeUserAgent {
					t.Errorf("%s %s: User-Agent %q", q.Method, q.URL.Path, q.UserAgent())
				}
				if q.Method == http.MethodGet && q.Header.Get("X-Aws-Ec2-Metadata-Token") != "" {
					t.Error("the IMDSv1 GET carried a token")
				}
				if q.Method == http.MethodPut && q.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") == "" {
					t.Error("the token PUT has no TTL header")
				}
			}
			if len(got) != 2 || !strings.Contains(strings.Join(got, ","), "PUT /latest/api/token") || !strings.Contains(strings.Join(got, ","), "GET /latest/meta-data/") {
				t.Fatalf("requests %v, want one token PUT and one GET /latest/meta-data/", got)
			}
		})
	}
}

// A closed port (the pod's redirect to the agent's port before it listens)
// is "refused"; a 200 without a token is no IMDSv2.
func TestCheckReachableRefusedAndOdd(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	r := CheckReachable(context.Background(), ProbeClient(), closed, nil)
	if r.V1 || r.V2 || r.V1Detail != "refused" || r.V2Detail != "refused" {
		t.Fatalf("closed port: %+v", r)
	}
	empty := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer empty.Close()
	if r := CheckReachable(context.Background(), ProbeClient(), empty.URL, nil); r.V2 || !r.V1 {
		t.Fatalf("empty 200s: %+v, want v1 only", r)
	}
}

// A node that accepts the connection but never answers (a PUT answer
// dropped by the hop limit) costs ProbeTimeout, and connected is closed as
// soon as both connections are made, long before the answers.
func TestCheckReachableSlow(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	connected := make(chan struct{})
	done := make(chan Reachability, 1)
	go func() { done <- CheckReachable(context.Background(), ProbeClient(), srv.URL, connected) }()
	select {
	case <-connected:
	case <-done:
		t.Fatal("the check ended before connected was closed")
	case <-time.After(20 * time.Second):
		t.Fatal("connected not closed while the node holds its answers")
	}
	select {
	case r := <-done:
		if r.V1 || r.V2 || r.V1Detail != "timeout" || r.V2Detail != "timeout" {
			t.Fatalf("got %+v, want two timeouts", r)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the check did not give up")
	}
}
