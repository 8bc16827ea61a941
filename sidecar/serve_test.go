package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	awsimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/internal/testenv"
	"github.com/podrole/podrole/sidecar/internal/fakeaws"
	"github.com/podrole/podrole/sidecar/nodemeta"
)

const testRole = "arn:aws:iam::111122223333:role/app-role"

// syncBuffer collects the JSON log lines of a running serve.
type syncBuffer struct{ testenv.Buffer }

// logLine returns the first log record with msg, if any.
func (s *syncBuffer) logLine(msg string) map[string]any {
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			return rec
		}
	}
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type running struct {
	imds   []string // base URLs
	health string
	logs   *syncBuffer
	done   chan error
	cancel context.CancelFunc
}

// startServe runs `serve args...` in-process on loopback ports and waits
// until it listens.
func startServe(t *testing.T, args ...string) *running {
	t.Helper()
	return startServeWith(t, defaultServeOptions(), args...)
}

// startServeWith is startServe with test options (backoff, clients).
func startServeWith(t *testing.T, opts serveOptions, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{logs: &syncBuffer{}, done: make(chan error, 1), cancel: cancel}
	args = append([]string{"--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0"}, args...)
	go func() { r.done <- runServeWith(ctx, args, r.logs, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop")
		}
	})
	var rec map[string]any
	waitFor(t, "the listening log line", func() bool {
		select {
		case err := <-r.done:
			t.Fatalf("serve exited: %v\n%s", err, r.logs)
		default:
		}
		rec = r.logs.logLine("listening")
		return rec != nil
	})
	for _, a := range rec["imds_addrs"].([]any) {
		r.imds = append(r.imds, "http://"+a.(string))
	}
	r.health = "http://" + rec["health_addr"].(string)
	return r
}

var client = &http.Client{Timeout: 5 * time.Second}

func call(t *testing.T, method, url string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// The whole agent with --source=node: node IMDS and STS on loopback, the
// SDK sequence over IPv4 (and IPv6 when the machine has ::1).
func TestServeNode(t *testing.T) {
	fakeaws.IsolateEnv(t)
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	sts := fakeaws.NewSTS(t, nil)
	r := startServe(t, "--role-arn="+testRole, "--sts-endpoint="+sts.URL, "--node-metadata-endpoint="+node.URL,
		"--external-id=ext-42", "--pod-name=web-0", "--pod-namespace=default", "--require-imdsv2")
	waitFor(t, "started", func() bool { code, _, _ := call(t, "GET", r.health+contract.PathStarted, nil); return code == 200 })

	for _, base := range r.imds {
		code, tok, h := call(t, "PUT", base+"/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
		if code != 200 || h.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") != "21600" {
			t.Fatalf("%s token: %d", base, code)
		}
		auth := map[string]string{"X-aws-ec2-metadata-token": tok}
		if code, _, _ := call(t, "GET", base+"/latest/meta-data/iam/security-credentials/", nil); code != 401 {
			t.Fatalf("--require-imdsv2 without token: %d", code)
		}
		code, role, _ := call(t, "GET", base+"/latest/meta-data/iam/security-credentials/", auth)
		if code != 200 || role != "app-role" {
			t.Fatalf("listing: %d %q", code, role)
		}
		code, body, _ := call(t, "GET", base+"/latest/meta-data/iam/security-credentials/"+role, auth)
		var doc map[string]string
		if code != 200 || json.Unmarshal([]byte(body), &doc) != nil {
			t.Fatalf("credentials: %d %q", code, body)
		}
		akid, secret, token := sts.Creds(1)
		exp, _ := time.Parse(time.RFC3339, doc["Expiration"])
		if doc["Code"] != "Success" || doc["AccessKeyId"] != akid || doc["SecretAccessKey"] != secret || doc["Token"] != token ||
			time.Until(exp) < 55*time.Minute {
			t.Fatalf("credentials document %v", doc)
		}
		for path, want := range map[string]string{
			"/latest/meta-data/placement/region":             "eu-west-1",
			"/latest/meta-data/placement/availability-zone/": "eu-west-1b",
			"/latest/dynamic/instance-identity/document":     node.Document,
		} {
			if code, got, _ := call(t, "GET", base+path, auth); code != 200 || got != want {
				t.Errorf("%s: %d %q, want %q", path, code, got, want)
			}
		}
		for _, path := range []string{"/latest/user-data", "/latest/meta-data/iam/security-credentials/" + fakeaws.NodeRole} {
			if code, _, _ := call(t, "GET", base+path, auth); code != 404 {
				t.Errorf("%s: %d, want 404", path, code)
			}
		}
	}
	t.Logf("served on %v", r.imds)

	// One STS call, with the pod's session name and external ID.
	reqs := sts.Requests()
	if len(reqs) != 1 || reqs[0].Form.Get("RoleSessionName") != "default.web-0" || reqs[0].Form.Get("ExternalId") != "ext-42" ||
		reqs[0].Form.Get("DurationSeconds") != "3600" || reqs[0].Form.Get("RoleArn") != testRole {
		t.Fatalf("STS requests: %+v", reqs)
	}
	if code, _, _ := call(t, "GET", r.health+contract.PathReadyz, nil); code != 200 {
		t.Fatalf("readyz: %d", code)
	}
	_, metrics, _ := call(t, "GET", r.health+contract.PathMetrics, nil)
	issuedKey, secret, token := sts.Creds(1)
	for _, want := range []string{`podrole_sts_calls_total{api="AssumeRole"} 1`, `podrole_imds_requests_total{code="200",route="credentials"}`, "podrole_credentials_expiry_seconds 3"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The health port is reachable from other pods: nothing in it names the
	// role, the session or the node, let alone a secret.
	for _, s := range []string{testRole, "app-role", "default.web-0", "ext-42", "111122223333", fakeaws.NodeAccessKeyID, issuedKey, "i-0fakenode"} {
		if strings.Contains(metrics, s) {
			t.Errorf("/metrics contains %q", s)
		}
	}

	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("serve returned %v on shutdown", err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("no graceful shutdown")
	}
	logs := r.logs.String()
	for _, s := range []string{secret, token, fakeaws.NodeSecretAccessKey, fakeaws.NodeSessionToken, "ext-42"} {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain a secret (%q):\n%s", s, logs)
		}
	}
	if r.logs.logLine("fetched role credentials") == nil || r.logs.logLine("started: first role credentials cached") == nil {
		t.Errorf("fetch/started not logged:\n%s", logs)
	}
}

// --source=web-identity: the agent asks the node's IMDS for nothing (in a
// pod, the rules would send it back to the agent itself), even when one
// answers; region and zone come from the flags, and no identity document is
// served. The token is read from the file. Only the node IMDS check, an
// app's view of reachability, is sent (and not with --check-node-imds=false).
func TestServeWebIdentityWithoutNode(t *testing.T) {
	fakeaws.IsolateEnv(t)
	sts := fakeaws.NewSTS(t, nil)
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1a") // answers, and records every request
	// Where an SDK default chain would look for the node by itself.
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", node.URL)
	tokenFile := filepath.Join(t.TempDir(), "token")
	token := fakeaws.WebIdentityToken(t, "default", "web")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PODROLE_ROLE_ARN", testRole) // flags also come from the environment
	r := startServe(t, "--source=web-identity", "--token-file="+tokenFile, "--sts-endpoint="+sts.URL,
		"--node-metadata-endpoint="+node.URL, "--region=ap-southeast-2", "--availability-zone=ap-southeast-2b", "--session-name=fixed-name")
	waitFor(t, "ready", func() bool { code, _, _ := call(t, "GET", r.health+contract.PathReadyz, nil); return code == 200 })
	base := r.imds[0]
	code, body, _ := call(t, "GET", base+"/latest/meta-data/iam/security-credentials-extended/app-role", nil)
	var doc map[string]string
	if code != 200 || json.Unmarshal([]byte(body), &doc) != nil || doc["AccountId"] != "111122223333" {
		t.Fatalf("extended credentials: %d %q", code, body)
	}
	for path, want := range map[string]string{
		"/latest/meta-data/placement/region":            "ap-southeast-2",
		"/latest/meta-data/placement/availability-zone": "ap-southeast-2b",
	} {
		if code, got, _ := call(t, "GET", base+path, nil); code != 200 || got != want {
			t.Errorf("%s: %d %q, want %q", path, code, got, want)
		}
	}
	if code, got, _ := call(t, "GET", base+"/latest/dynamic/instance-identity/document", nil); code != 404 {
		t.Errorf("identity document with web identity: %d %q, want 404", code, got)
	}
	reqs := sts.Requests()
	if len(reqs) != 1 || reqs[0].Form.Get("WebIdentityToken") != token || reqs[0].Form.Get("RoleSessionName") != "fixed-name" {
		t.Fatalf("STS requests %+v", reqs)
	}
	if strings.Contains(r.logs.String(), token[strings.LastIndex(token, ".")+1:]) {
		t.Fatal("the service-account token was logged")
	}
	// Nothing but the node IMDS check (an app's view: a token PUT and the
	// top-level listing, no token sent), which runs with web identity too.
	waitFor(t, "the node IMDS check", func() bool { return r.logs.logLine(nodeIMDSReachableWarning) != nil })
	for _, q := range node.Requests() {
		if q.UserAgent != nodemeta.ProbeUserAgent || q.Token || (q.Method+" "+q.Path != "PUT /latest/api/token" && q.Method+" "+q.Path != "GET /latest/meta-data/") {
			t.Errorf("web identity asked the node's metadata service %+v", q)
		}
	}
	if n := len(node.Requests()); n != 2 {
		t.Errorf("%d requests to the node, want the check's 2: %+v", n, node.Requests())
	}

	// With --check-node-imds=false, not even that.
	quiet := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1a")
	r = startServe(t, "--source=web-identity", "--token-file="+tokenFile, "--sts-endpoint="+sts.URL,
		"--node-metadata-endpoint="+quiet.URL, "--region=ap-southeast-2", "--check-node-imds=false")
	waitFor(t, "ready", func() bool { code, _, _ := call(t, "GET", r.health+contract.PathReadyz, nil); return code == 200 })
	if p := quiet.Paths(); len(p) != 0 {
		t.Fatalf("web identity with --check-node-imds=false asked the node's metadata service %v", p)
	}
	if _, m, _ := call(t, "GET", r.health+contract.PathMetrics, nil); strings.Contains(m, "podrole_node_imds_reachable{") {
		t.Errorf("the check's metric without the check:\n%s", m)
	}
}

// With STS hanging at start, the agent is alive but not started, and a
// client asking for credentials gets a prompt 503, not a hang.
func TestServeSlowSTS(t *testing.T) {
	fakeaws.IsolateEnv(t)
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	sts := fakeaws.NewSTS(t, nil)
	release := sts.Block()
	defer release()
	r := startServe(t, "--role-arn="+testRole, "--sts-endpoint="+sts.URL, "--node-metadata-endpoint="+node.URL)
	base := r.imds[0]
	for path, want := range map[string]int{
		"/latest/meta-data/iam/security-credentials/app-role": 503,
		"/latest/meta-data/iam/security-credentials/":         200,
		"/latest/meta-data/placement/region":                  200,
	} {
		if code, _, _ := call(t, "GET", base+path, nil); code != want {
			t.Errorf("%s with STS hanging: %d, want %d", path, code, want)
		}
	}
	for path, want := range map[string]int{contract.PathHealthz: 200, contract.PathStarted: 503, contract.PathReadyz: 503} {
		if code, _, _ := call(t, "GET", r.health+path, nil); code != want {
			t.Errorf("%s with STS hanging: %d, want %d", path, code, want)
		}
	}
	release()
	waitFor(t, "started after STS answers", func() bool {
		code, _, _ := call(t, "GET", r.health+contract.PathStarted, nil)
		return code == 200
	})
	if code, _, _ := call(t, "GET", base+"/latest/meta-data/iam/security-credentials/app-role", nil); code != 200 {
		t.Fatalf("credentials after STS recovered: %d", code)
	}
}

// Bad command lines fail with a message naming the problem.
func TestServeBadArgs(t *testing.T) {
	fakeaws.IsolateEnv(t)
	t.Setenv("PODROLE_ROLE_ARN", "")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{}, "--role-arn is required"},
		{[]string{"--role-arn=arn:aws:iam::1:user/bob"}, "not an IAM role ARN"},
		{[]string{"--role-arn=" + testRole, "--session-name=has space"}, "--session-name"},
		{[]string{"--role-arn=" + testRole, "--listen=nope"}, "--listen"},
		{[]string{"--role-arn=" + testRole, "extra"}, "unexpected arguments"},
		{[]string{"--role-arn=" + testRole, "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
			"--node-metadata-endpoint=http://127.0.0.1:1"}, "--region"},
		// Web identity asks the node nothing, so the region must be given.
		{[]string{"--role-arn=" + testRole, "--source=web-identity", "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0"},
			"--region is required with --source=web-identity"},
		{[]string{"--role-arn=" + testRole, "--source=web-identity", "--region=us-east-1", "--agent-mark=0x504f4452"}, "drop --agent-mark"},
		// Session tags: the cluster's name and every pod value, each one STS takes, and not with web identity.
		{[]string{"--role-arn=" + testRole, "--session-tags"}, "--cluster-name is required with --session-tags"},
		{[]string{"--role-arn=" + testRole, "--session-tags", "--cluster-name=prod", "--source=web-identity", "--region=us-east-1"},
			"use --source=node or drop --session-tags"},
		{[]string{"--role-arn=" + testRole, "--session-tags", "--cluster-name=prod", "--pod-name=web-0", "--pod-namespace=default",
			"--service-account=web", "--pod-uid=$(PODROLE_POD_UID)"}, `--pod-uid="$(PODROLE_POD_UID)" cannot be a session tag value`},
		{[]string{"--role-arn=" + testRole, "--session-tags", "--cluster-name=prod", "--cluster-arn=prod"}, "is not an EKS cluster ARN"},
		{[]string{"--role-arn=" + testRole, "--cluster-name=prod"}, "--cluster-name without --session-tags does nothing"},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := runServe(ctx, tt.args, io.Discard, io.Discard)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want one mentioning %q", tt.args, err, tt.want)
		}
	}
}

// The IPv6 loopback listener is best effort for a pod without IPv6, but a
// [::1] port held by someone else stops the start: the pod's IPv6 metadata
// traffic would go to them.
func TestBindIMDS(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	sysErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "listen", Net: "tcp6", Err: os.NewSyscallError("bind", errno)}
	}
	tests := []struct {
		name     string
		addr     string
		v6Err    error
		wantN    int
		wantFail bool
	}{
		{"dual stack", "127.0.0.1:0", nil, 2, false},
		{"no ::1 in the pod", "127.0.0.1:0", sysErr(syscall.EADDRNOTAVAIL), 1, false},
		{"no IPv6 at all", "127.0.0.1:0", sysErr(syscall.EAFNOSUPPORT), 1, false},
		{"[::1] port taken", "127.0.0.1:0", sysErr(syscall.EADDRINUSE), 0, true},
		{"not loopback v4", "localhost:0", sysErr(syscall.EADDRINUSE), 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []string
			bind := func(network, addr string) (pendingListener, error) {
				asked = append(asked, network+" "+addr)
				if network == "tcp6" {
					if tt.v6Err != nil {
						return nil, tt.v6Err
					}
					return &fakeListener{addr: addr}, nil
				}
				return bindTCP(network, addr)
			}
			ls, err := bindIMDS(tt.addr, bind, log)
			if (err != nil) != tt.wantFail || len(ls) != tt.wantN {
				t.Fatalf("got %d listeners, err %v (asked %v)", len(ls), err, asked)
			}
			closeAll(ls)
			if tt.wantN == 2 {
				port := ls[0].Addr().(*net.TCPAddr).Port
				if want := fmt.Sprintf("tcp6 [::1]:%d", port); asked[1] != want {
					t.Fatalf("IPv6 listener on %q, want %q (the IPv4 port)", asked[1], want)
				}
			}
		})
	}
}

type fakeListener struct{ addr string }

func (f *fakeListener) Listen() (net.Listener, error) { return nil, net.ErrClosed }
func (f *fakeListener) Close() error                  { return nil }
func (f *fakeListener) Addr() net.Addr                { return &net.TCPAddr{IP: net.IPv6loopback} }

// The Go SDK's own IMDS client and EC2 role provider, unchanged but for the
// endpoint, get the pod role's credentials and the region, with IMDSv1
// allowed and with IMDSv2 required.
func TestServeGoSDKClient(t *testing.T) {
	fakeaws.IsolateEnv(t)
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	for _, extra := range []string{"--require-imdsv2=false", "--require-imdsv2"} {
		t.Run(extra, func(t *testing.T) {
			sts := fakeaws.NewSTS(t, nil)
			r := startServe(t, "--role-arn="+testRole, "--sts-endpoint="+sts.URL, "--node-metadata-endpoint="+node.URL, extra)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			client := awsimds.New(awsimds.Options{Endpoint: r.imds[0]})
			got, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client }).Retrieve(ctx)
			if err != nil {
				t.Fatalf("Go SDK credentials: %v", err)
			}
			akid, secret, token := sts.Creds(1)
			if akid == "" || got.AccessKeyID != akid || got.SecretAccessKey != secret || got.SessionToken != token || !got.CanExpire {
				t.Fatalf("Go SDK got %s (expires %v)", got.AccessKeyID, got.Expires)
			}
			region, err := client.GetRegion(ctx, nil)
			if err != nil || region.Region != "eu-west-1" {
				t.Fatalf("Go SDK region: %+v, %v", region, err)
			}
		})
	}
}
