package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/sidecar/internal/fakeaws"
	"github.com/podrole/podrole/sidecar/nodemeta"
)

// count returns how many log records have msg.
func (s *syncBuffer) count(msg string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			n++
		}
	}
	return n
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tokenFile(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(fakeaws.WebIdentityToken(t, "default", "web")), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

const lateMsg = "node metadata read after failures; serving it from now on"

// The node's IMDS fails at start and keeps failing for a while (throttled):
// the agent starts at once on the flags, keeps retrying in the background
// with backoff, and serves the node's region, zone and identity document as
// soon as it answers, logging that once.
func TestServeNodeMetadataLate(t *testing.T) {
	fakeaws.IsolateEnv(t)
	// Base credentials from the environment: only the placement reads go to the node.
	t.Setenv("AWS_ACCESS_KEY_ID", fakeaws.UserAccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", fakeaws.UserSecretAccessKey)
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	node.Fail(http.StatusServiceUnavailable, -1) // until it heals below
	sts := fakeaws.NewSTS(t, nil)
	opts := defaultServeOptions()
	opts.nodeRetry.Backoff = nodemeta.Backoff{Initial: time.Millisecond, Max: 20 * time.Millisecond}
	r := startServeWith(t, opts, "--role-arn="+testRole, "--sts-endpoint="+sts.URL, "--node-metadata-endpoint="+node.URL,
		"--region=us-east-1", "--availability-zone=us-east-1a", "--check-node-imds=false")
	waitFor(t, "started", func() bool { code, _, _ := call(t, "GET", r.health+contract.PathStarted, nil); return code == 200 })
	base := r.imds[0]
	// While the node fails: the flags, and a made-up document from them.
	if code, got, _ := call(t, "GET", base+"/latest/meta-data/placement/region", nil); code != 200 || got != "us-east-1" {
		t.Fatalf("region while the node fails: %d %q", code, got)
	}
	if _, doc, _ := call(t, "GET", base+"/latest/dynamic/instance-identity/document", nil); !strings.Contains(doc, `"us-east-1"`) {
		t.Fatalf("identity document while the node fails: %q", doc)
	}
	// Each failed attempt ends at its token PUT.
	waitFor(t, "background retries", func() bool { return node.Count("PUT /latest/api/token") >= 5 })
	if n := r.logs.count(lateMsg); n != 0 {
		t.Fatalf("success logged while failing")
	}
	node.Fail(0, 0)
	waitFor(t, "the node's region", func() bool {
		_, got, _ := call(t, "GET", base+"/latest/meta-data/placement/region", nil)
		return got == "eu-west-1"
	})
	for path, want := range map[string]string{
		"/latest/meta-data/placement/availability-zone": "eu-west-1b",
		"/latest/dynamic/instance-identity/document":    node.Document,
	} {
		if code, got, _ := call(t, "GET", base+path, nil); code != 200 || got != want {
			t.Errorf("%s after the node answered: %d %q, want %q", path, code, got, want)
		}
	}
	rec := r.logs.logLine(lateMsg)
	if rec == nil || rec["failed_attempts"].(float64) < 5 || rec["region"] != "eu-west-1" {
		t.Fatalf("success not logged as wanted: %v\n%s", rec, r.logs)
	}
	// Once: no more reads of the node, no second log line.
	asked := len(node.Paths())
	time.Sleep(100 * time.Millisecond) // 5+ backoff periods
	if n := r.logs.count(lateMsg); n != 1 || len(node.Paths()) != asked {
		t.Fatalf("after success: %d log lines, %d -> %d node requests", n, asked, len(node.Paths()))
	}
}

// reachableNode is a node IMDS that apps in the pod reach with IMDSv1
// (HttpTokens optional) and/or IMDSv2 (hop limit 2; with 1 the token's
// answer never arrives, which a refused token PUT stands in for).
func reachableNode(t *testing.T, v1, v2 bool) string {
	n := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	n.AllowV1 = v1
	if !v2 {
		n.TokenStatus = http.StatusForbidden
	}
	return n.URL
}

func metricLine(t *testing.T, r *running, version string) string {
	t.Helper()
	_, m, _ := call(t, "GET", r.health+contract.PathMetrics, nil)
	prefix := `podrole_node_imds_reachable{version="` + version + `"} `
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimPrefix(l, prefix)
		}
	}
	return ""
}

// The node IMDS check, against nodes answering IMDSv1 only, IMDSv2 only,
// both, neither, and not at all: the gauge per version, and the warning
// naming the fix whenever an app could get an answer. Web identity runs it
// too, and so does node (its placement reads being the agent's own, marked).
func TestServeNodeIMDSCheck(t *testing.T) {
	fakeaws.IsolateEnv(t)
	sts := fakeaws.NewSTS(t, nil)
	tok := tokenFile(t)
	closed := "http://127.0.0.1:" + strconv.Itoa(freePort(t))
	for _, tt := range []struct {
		name     string
		endpoint string
		node     bool
		v1, v2   bool
	}{
		{"v1 only", reachableNode(t, true, false), false, true, false},
		{"v2 only", reachableNode(t, false, true), false, false, true},
		{"both", reachableNode(t, true, true), false, true, true},
		{"both, node source", reachableNode(t, true, true), true, true, true},
		{"none", reachableNode(t, false, false), false, false, false},
		{"nothing listens", closed, false, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"--role-arn=" + testRole, "--sts-endpoint=" + sts.URL, "--node-metadata-endpoint=" + tt.endpoint, "--region=us-east-1"}
			if !tt.node {
				args = append(args, "--source=web-identity", "--token-file="+tok)
			} else {
				t.Setenv("AWS_ACCESS_KEY_ID", fakeaws.UserAccessKeyID)
				t.Setenv("AWS_SECRET_ACCESS_KEY", fakeaws.UserSecretAccessKey)
			}
			r := startServe(t, args...)
			waitFor(t, "the check's metric", func() bool { return metricLine(t, r, "v2") != "" })
			want := func(b bool) string {
				if b {
					return "1"
				}
				return "0"
			}
			if got1, got2 := metricLine(t, r, "v1"), metricLine(t, r, "v2"); got1 != want(tt.v1) || got2 != want(tt.v2) {
				t.Errorf("podrole_node_imds_reachable v1=%s v2=%s, want %s %s", got1, got2, want(tt.v1), want(tt.v2))
			}
			warn := r.logs.logLine(nodeIMDSReachableWarning)
			if (warn != nil) != (tt.v1 || tt.v2) {
				t.Fatalf("warning logged: %v, want %v\n%s", warn != nil, tt.v1 || tt.v2, r.logs)
			}
			if warn != nil && (warn["level"] != "WARN" || warn["imdsv1"] != tt.v1 || warn["imdsv2"] != tt.v2) {
				t.Errorf("warning %v", warn)
			}
			if warn == nil && r.logs.logLine("apps in this pod cannot reach the node's instance metadata service") == nil {
				t.Errorf("no result logged:\n%s", r.logs)
			}
		})
	}
}

// Redirect mode in one process: the node's IMDS address leads to the
// agent's own IMDS port, as podrole-init's rules make it for unmarked
// traffic. The check must find it closed ("refused": apps cannot reach the
// node), not get its answers from the agent itself.
func TestServeCheckBeforeIMDSOpens(t *testing.T) {
	fakeaws.IsolateEnv(t)
	sts := fakeaws.NewSTS(t, nil)
	port := strconv.Itoa(freePort(t))
	r := startServe(t, "--role-arn="+testRole, "--sts-endpoint="+sts.URL, "--source=web-identity", "--token-file="+tokenFile(t),
		"--region=us-east-1", "--listen=127.0.0.1:"+port, "--node-metadata-endpoint=http://127.0.0.1:"+port)
	waitFor(t, "the check's metric", func() bool { return metricLine(t, r, "v2") != "" })
	if v1, v2 := metricLine(t, r, "v1"), metricLine(t, r, "v2"); v1 != "0" || v2 != "0" {
		t.Fatalf("the check reached the agent's own port: v1=%s v2=%s\n%s", v1, v2, r.logs)
	}
	rec := r.logs.logLine("apps in this pod cannot reach the node's instance metadata service")
	if rec == nil || rec["imdsv1_result"] != "refused" || rec["imdsv2_result"] != "refused" {
		t.Fatalf("check result %v", rec)
	}
	// And the port is open now.
	if code, _, _ := call(t, "PUT", r.imds[0]+"/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"}); code != 200 {
		t.Fatalf("token from the agent after the check: %d", code)
	}
}

// heldProbe is a node IMDS check client whose requests get no answer until
// release (whatever their deadline); with connect, each first reports its
// connection made, as a node that accepts and then stays silent.
type heldProbe struct {
	connect bool
	release chan struct{}
	asked   atomic.Int32
}

func (p *heldProbe) Do(req *http.Request) (*http.Response, error) {
	p.asked.Add(1)
	if tr := httptrace.ContextClientTrace(req.Context()); p.connect && tr != nil && tr.ConnectDone != nil {
		tr.ConnectDone("tcp", req.URL.Host, nil)
	}
	<-p.release
	return nil, errors.New("no answer")
}

// The check costs start-up only its connections: with the node silent after
// connecting, the IMDS port opens and the agent starts while the check still
// waits; with the connections pending, the IMDS port stays closed and
// /started stays 503 although credentials are cached, until they settle.
func TestServeCheckAndStart(t *testing.T) {
	fakeaws.IsolateEnv(t)
	sts := fakeaws.NewSTS(t, nil)
	tok := tokenFile(t)
	args := []string{"--role-arn=" + testRole, "--sts-endpoint=" + sts.URL, "--source=web-identity", "--token-file=" + tok, "--region=us-east-1"}

	t.Run("silent node", func(t *testing.T) {
		p := &heldProbe{connect: true, release: make(chan struct{})}
		defer close(p.release)
		opts := defaultServeOptions()
		opts.probeClient = p
		r := startServeWith(t, opts, args...)
		waitFor(t, "started", func() bool { code, _, _ := call(t, "GET", r.health+contract.PathStarted, nil); return code == 200 })
		if code, _, _ := call(t, "GET", r.imds[0]+"/latest/meta-data/iam/security-credentials/app-role", nil); code != 200 {
			t.Fatalf("credentials while the check waits: %d", code)
		}
		if p.asked.Load() != 2 || metricLine(t, r, "v1") != "" {
			t.Fatalf("the check ended early: %d requests, metric %q", p.asked.Load(), metricLine(t, r, "v1"))
		}
	})

	t.Run("connections pending", func(t *testing.T) {
		p := &heldProbe{release: make(chan struct{})}
		released := false
		release := func() {
			if !released {
				released = true
				close(p.release)
			}
		}
		opts := defaultServeOptions()
		opts.probeClient = p
		port, hport := strconv.Itoa(freePort(t)), strconv.Itoa(freePort(t))
		logs := &syncBuffer{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- runServeWith(ctx, append(args, "--listen=127.0.0.1:"+port, "--health-listen=127.0.0.1:"+hport), logs, opts)
		}()
		defer func() { release(); cancel(); <-done }() // serve waits for the check on its way out
		health := "http://127.0.0.1:" + hport
		waitFor(t, "first credentials", func() bool { return logs.logLine("fetched role credentials") != nil })
		if code, _, _ := call(t, "GET", health+contract.PathStarted, nil); code != 503 {
			t.Fatalf("/started with the IMDS port closed: %d", code)
		}
		if code, _, _ := call(t, "GET", health+contract.PathReadyz, nil); code != 503 {
			t.Fatalf("/readyz with the IMDS port closed: %d", code)
		}
		if code, _, _ := call(t, "GET", health+contract.PathHealthz, nil); code != 200 {
			t.Fatalf("/healthz: %d", code)
		}
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("the IMDS port before the check connected: %v", err)
		}
		release()
		waitFor(t, "started", func() bool { code, _, _ := call(t, "GET", health+contract.PathStarted, nil); return code == 200 })
		if code, _, _ := call(t, "GET", "http://127.0.0.1:"+port+"/latest/meta-data/iam/security-credentials/app-role", nil); code != 200 {
			t.Fatalf("credentials after the check: %d", code)
		}
	})
}
