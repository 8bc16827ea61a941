package nodemeta

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/podrole/podrole/sidecar/internal/fakeaws"
)

// reachNode is the node's IMDS as a pod sees it with HttpTokens optional
// (v1) or required, and with a hop limit of 2 (v2) or 1: the token PUT's
// answer then never reaches the pod, which TokenStatus 403 stands in for
// here (TestCheckReachableSlow has the silent version).
func reachNode(t *testing.T, v1, v2 bool) *fakeaws.NodeIMDS {
	n := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	n.AllowV1 = v1
	if !v2 {
		n.TokenStatus = http.StatusForbidden
	}
	return n
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
			node := reachNode(t, tt.v1, tt.v2)
			connected := make(chan struct{})
			r := CheckReachable(context.Background(), ProbeClient(), node.URL+"/", connected)
			if r.V1 != tt.v1 || r.V2 != tt.v2 {
				t.Fatalf("got %+v, want v1=%v v2=%v", r, tt.v1, tt.v2)
			}
			select {
			case <-connected:
			default:
				t.Fatal("connected not closed")
			}
			var got []string
			for _, q := range node.Requests() {
				got = append(got, q.Method+" "+q.Path)
				if q.UserAgent != ProbeUserAgent {
					t.Errorf("%s %s: User-Agent %q", q.Method, q.Path, q.UserAgent)
				}
				if q.Method == http.MethodGet && q.Token {
					t.Error("the IMDSv1 GET carried a token")
				}
				if q.Method == http.MethodPut && q.TTL == "" {
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
	// Not an IMDS: any web server on that address, answering 200 with
	// nothing to every request.
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
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	node.AllowV1 = true
	release := node.Block()
	defer release()
	connected := make(chan struct{})
	done := make(chan Reachability, 1)
	go func() { done <- CheckReachable(context.Background(), ProbeClient(), node.URL, connected) }()
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
