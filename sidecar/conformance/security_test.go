package conformance

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// probe is one raw HTTP/1.x exchange: the exact bytes sent.
type probe struct {
	name string
	raw  string
}

// forbidden returns what must never come out of the sidecar: the node role's
// name and credentials, the instance profile, and the node's user-data.
func forbidden(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("testdata/node-imds.json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Userdata struct {
			Values struct {
				Userdata string `json:"userdata"`
			} `json:"values"`
		} `json:"userdata"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	ud, err := base64.StdEncoding.DecodeString(cfg.Userdata.Values.Userdata)
	if err != nil || !strings.Contains(string(ud), userDataMark) {
		t.Fatalf("testdata/node-imds.json user-data must hold %s", userDataMark)
	}
	return []string{nodeRole, nodeKeyID, nodeSecret, nodeToken, userDataMark, cfg.Userdata.Values.Userdata,
		"bootstrap.sh", "instance-profile/node-role", "AIPANODEROLEPROFILE01"}
}

// leaks returns the forbidden strings found in resp (names case-insensitively).
func leaks(resp string, bad []string) []string {
	var found []string
	low := strings.ToLower(resp)
	for _, b := range bad {
		if strings.Contains(resp, b) || strings.Contains(low, strings.ToLower(b)) {
			found = append(found, b)
		}
	}
	return found
}

// securityProbes are path, encoding, method, header and request-form tricks
// aimed at the node role, its credentials and the node's user-data.
func securityProbes(mockHost, tokenHeader string) []probe {
	get := func(target string, extra ...string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: 169.254.169.254\r\n" + tokenHeader + strings.Join(extra, "") + "Connection: close\r\n\r\n"
	}
	var ps []probe
	paths := []string{
		"/latest/meta-data/iam/security-credentials/node-role",
		"/latest/meta-data/iam/security-credentials-extended/node-role",
		"/latest/meta-data/iam/security-credentials/node-role/",
		"/latest/meta-data/iam/security-credentials/NODE-ROLE",
		"/latest/meta-data/iam/security-credentials/%6eode-role",
		"/latest/meta-data/iam/security-credentials/node%2Drole",
		"/latest/meta-data/iam/security-credentials/app/../node-role",
		"/latest/meta-data/iam/security-credentials/app/%2e%2e/node-role",
		"/latest/meta-data/iam/security-credentials/%2e%2e/security-credentials/node-role",
		"/latest/meta-data/iam/security-credentials/app%2f..%2fnode-role",
		"/latest/meta-data/iam/security-credentials//node-role",
		"/latest/meta-data/iam/security-credentials/./node-role",
		"/latest/meta-data/iam/security-credentials/node-role%00",
		"/latest/meta-data/iam/security-credentials/node-role;app",
		"/latest/meta-data/iam/security-credentials/app;/../node-role",
		"/latest/meta-data/iam/security-credentials/node-role?role=app",
		"/latest/meta-data/iam/security-credentials/app?/../node-role",
		"/latest/meta-data/iam/security-credentials/app%23/../node-role",
		"/latest/meta-data/iam/security-credentials\\node-role",
		"/latest/meta-data/iam/security-credentials/",
		"/latest/meta-data/iam/security-credentials",
		"/latest/meta-data/iam/security-credentials-extended/",
		"/latest/meta-data/iam/info",
		"/latest/meta-data/iam/",
		"/latest/meta-data/iam",
		"/latest/meta-data/",
		"/latest/meta-data",
		"/latest/",
		"/",
		"/latest/user-data",
		"/latest/user-data/",
		"//latest/user-data",
		"/latest//user-data",
		"/latest/./user-data",
		"/latest/meta-data/../user-data",
		"/latest/meta-data/%2e%2e/user-data",
		"/latest/meta-data/..%2fuser-data",
		"/latest/meta-data/placement/region/../../../user-data",
		"/latest/%75ser-data",
		"/LATEST/USER-DATA",
		"/latest/user-data%00",
		"/latest/user-data;",
		"/latest/user-data?x=1",
		"/%2Flatest%2Fuser-data",
		"/2009-04-04/user-data",
		"/2021-07-15/meta-data/iam/security-credentials/node-role",
		"/1.0/user-data",
		"/latest/dynamic/instance-identity/document/../../../user-data",
		"/latest/api/token/../../user-data",
		"latest/user-data",
		"*",
	}
	for _, p := range paths {
		ps = append(ps, probe{"GET " + p, get(p)})
	}
	for _, m := range []string{"HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH", "TRACE", "PROPFIND"} {
		for _, p := range []string{"/latest/user-data", "/latest/meta-data/iam/security-credentials/", "/latest/meta-data/iam/security-credentials/node-role"} {
			ps = append(ps, probe{m + " " + p, m + " " + p + " HTTP/1.1\r\nHost: 169.254.169.254\r\n" + tokenHeader + "X-Aws-Ec2-Metadata-Token-Ttl-Seconds: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"})
		}
	}
	for _, target := range []string{
		"http://169.254.169.254/latest/user-data",
		"http://" + mockHost + "/latest/user-data",
		"http://" + mockHost + "/latest/meta-data/iam/security-credentials/node-role",
		"http://" + mockHost + "/latest/meta-data/iam/security-credentials/",
		"http://node-role@" + mockHost + "/latest/user-data",
	} {
		ps = append(ps, probe{"absolute-form " + target, get(target)})
	}
	ps = append(ps,
		probe{"CONNECT to the node IMDS", "CONNECT " + mockHost + " HTTP/1.1\r\nHost: " + mockHost + "\r\n\r\nGET /latest/user-data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
		probe{"HTTP/0.9", "GET /latest/user-data\r\n\r\n"},
		probe{"HTTP/1.0 without Host", "GET /latest/user-data HTTP/1.0\r\n" + tokenHeader + "\r\n"},
		probe{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
	)
	creds := "/latest/meta-data/iam/security-credentials/"
	for name, h := range map[string]string{
		"Host is the node IMDS":      "",
		"X-Forwarded-For":            "X-Forwarded-For: 169.254.169.254\r\n",
		"X-Forwarded-Host":           "X-Forwarded-Host: " + mockHost + "\r\n",
		"Forwarded":                  "Forwarded: for=169.254.169.254;host=" + mockHost + "\r\n",
		"X-Original-URL":             "X-Original-URL: /latest/user-data\r\n",
		"X-Rewrite-URL":              "X-Rewrite-URL: /latest/meta-data/iam/security-credentials/node-role\r\n",
		"X-HTTP-Method-Override":     "X-HTTP-Method-Override: PUT\r\n",
		"X-Aws-Ec2-Metadata-Role":    "X-Aws-Ec2-Metadata-Role: node-role\r\n",
		"64 KiB header":              "X-Big: " + strings.Repeat("a", 64<<10) + "\r\n",
		"2 MiB header":               "X-Big: " + strings.Repeat("a", 2<<20) + "\r\n",
		"2000 headers":               strings.Repeat("X-Many: node-role\r\n", 2000),
		"folded header":              "X-Fold: a\r\n node-role\r\n",
		"duplicate token header":     "X-Aws-Ec2-Metadata-Token: junk\r\n",
		"Expect 100-continue":        "Expect: 100-continue\r\n",
		"Upgrade to h2c":             "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
		"Accept-Encoding everything": "Accept-Encoding: gzip, deflate, br\r\n",
	} {
		for _, p := range []string{creds, creds + "node-role", "/latest/user-data"} {
			if name == "Host is the node IMDS" {
				ps = append(ps, probe{name + " " + p, "GET " + p + " HTTP/1.1\r\nHost: " + mockHost + "\r\n" + tokenHeader + "Connection: close\r\n\r\n"})
				continue
			}
			ps = append(ps, probe{name + " " + p, get(p, h)})
		}
	}
	ps = append(ps,
		probe{"request smuggling CL.TE", "POST " + creds + " HTTP/1.1\r\nHost: x\r\n" + tokenHeader + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /latest/user-data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
		probe{"request smuggling TE.CL", "POST " + creds + " HTTP/1.1\r\nHost: x\r\n" + tokenHeader + "Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\nGET /latest/meta-data/iam/security-credentials/node-role HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
		probe{"pipelined requests", "GET " + creds + " HTTP/1.1\r\nHost: x\r\n" + tokenHeader + "\r\nGET /latest/user-data HTTP/1.1\r\nHost: x\r\n" + tokenHeader + "\r\nGET " + creds + "node-role HTTP/1.1\r\nHost: x\r\n" + tokenHeader + "Connection: close\r\n\r\n"},
		probe{"bare LF line endings", "GET /latest/user-data HTTP/1.1\nHost: x\n" + strings.ReplaceAll(tokenHeader, "\r\n", "\n") + "Connection: close\n\n"},
		probe{"NUL in path", "GET /latest/user-data\x00/meta-data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
		probe{"space in path", "GET /latest/meta-data/iam/security-credentials/ node-role HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
	)
	return ps
}

// TestSecurityProbes: with amazon-ec2-metadata-mock as the node's IMDS
// (serving node-role with valid credentials and user-data with a marker), no
// path, encoding, method, header or request-form trick gets the node role's
// name, keys or the user-data through the sidecar — over IPv4 or IPv6, with
// or without an IMDSv2 token — and the sidecar never asks the node for them.
func TestSecurityProbes(t *testing.T) {
	t.Parallel() // sleep-bound; runs after the tests that set the environment
	bad := forbidden(t)
	st := startSTS(t)
	node := startNodeIMDS(t)
	// The stand-in really serves what the probes look for: the test can fail.
	if r := call(t, "GET", node.MockURL+"/latest/user-data", nil); !strings.Contains(r.body, userDataMark) {
		t.Fatalf("the node IMDS stand-in does not serve the user-data marker: %q", r.body)
	}
	if r := call(t, "GET", node.MockURL+"/latest/meta-data/iam/security-credentials/"+nodeRole, nil); !strings.Contains(r.body, nodeSecret) {
		t.Fatalf("the node IMDS stand-in does not serve the node role's credentials")
	}
	sc := startSidecar(t, st, sidecarOpts{nodeURL: node.URL})
	mockHost := strings.TrimPrefix(node.MockURL, "http://")
	proxyHost := strings.TrimPrefix(node.URL, "http://")
	tok := token(t, sc, 21600)
	addrs := []string{strings.TrimPrefix(sc.URL, "http://")}
	_, port, _ := net.SplitHostPort(addrs[0])
	if c, err := net.Dial("tcp6", "[::1]:"+port); err == nil { // the sidecar also serves [::1] for IPv6 pods
		c.Close()
		addrs = append(addrs, "[::1]:"+port)
	} else {
		t.Logf("no IPv6 loopback here; IPv4 only: %v", err)
	}
	n, silent := 0, 0
	for _, addr := range addrs {
		for _, withToken := range []bool{false, true} {
			th := ""
			if withToken {
				th = "X-aws-ec2-metadata-token: " + tok + "\r\n"
			}
			for _, host := range []string{mockHost, proxyHost} {
				for _, p := range securityProbes(host, th) {
					n++
					resp := rawExchange(t, addr, p.raw, 4<<20)
					if resp == "" {
						silent++
					}
					// The probe transport itself must work: the plain listing answers.
					if p.name == "GET "+pathCreds && (!strings.HasPrefix(resp, "HTTP/1.1 200 ") || !strings.HasSuffix(resp, "\r\n\r\n"+appRole)) {
						t.Errorf("the plain listing probe via %s got %q", addr, resp)
					}
					if l := leaks(resp, bad); len(l) > 0 {
						first, _, _ := strings.Cut(resp, "\r\n")
						t.Errorf("%s (via %s, token %v): response %q leaks %v", p.name, addr, withToken, first, redactAll(l))
					}
				}
			}
		}
	}
	// The health listener is reachable from the node and other pods.
	hAddr := strings.TrimPrefix(sc.HealthURL, "http://")
	for _, p := range []string{"/metrics", "/started", "/healthz", "/readyz", "/debug/pprof/", "/latest/user-data",
		"/latest/meta-data/iam/security-credentials/node-role", "/latest/meta-data/iam/security-credentials/"} {
		n++
		resp := rawExchange(t, hAddr, "GET "+p+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 4<<20)
		if l := leaks(resp, bad); len(l) > 0 {
			t.Errorf("health listener %s leaks %v", p, redactAll(l))
		}
	}
	t.Logf("%d probes sent, %d closed without an answer", n, silent)
	if !sc.Alive() {
		t.Fatalf("the sidecar died under the probes")
	}
	if r := call(t, "GET", sc.URL+pathCreds, nil); r.status != 200 || r.body != appRole {
		t.Errorf("after the probes the listing is %d %q", r.status, r.body)
	}
	if l := leaks(sc.Logs(), []string{nodeSecret, nodeToken, tok}); len(l) > 0 {
		t.Errorf("the sidecar logged secrets or tokens: %v", redactAll(l))
	}
	checkNodeRequests(t, node)
}

// redactAll names leaked values without printing secrets in full.
func redactAll(vals []string) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		if len(v) > 12 {
			v = v[:6] + "…" + fmt.Sprint(len(v))
		}
		out[i] = v
	}
	return out
}
