package conformance

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podrole/podrole/stsdouble"
)

const (
	pathToken   = "/latest/api/token"
	pathCreds   = "/latest/meta-data/iam/security-credentials/"
	pathCredsX  = "/latest/meta-data/iam/security-credentials-extended/"
	pathRegion  = "/latest/meta-data/placement/region"
	pathZone    = "/latest/meta-data/placement/availability-zone"
	pathIdDoc   = "/latest/dynamic/instance-identity/document"
	hdrToken    = "X-Aws-Ec2-Metadata-Token"
	hdrTokenTTL = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
)

// response is one HTTP answer, body read.
type response struct {
	status int
	header http.Header
	body   string
}

// call sends one request with the given headers (nil: none) and a 1 s
// client timeout, the budget botocore, the CLI and JS v3 give IMDS.
func call(t testing.TB, method, u string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t, 5*time.Second), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(b)}
}

// token gets an IMDSv2 token with ttl seconds.
func token(t testing.TB, sc *sidecar, ttl int) string {
	t.Helper()
	r := call(t, http.MethodPut, sc.URL+pathToken, map[string]string{hdrTokenTTL: strconv.Itoa(ttl)})
	if r.status != 200 || r.body == "" {
		t.Fatalf("PUT token ttl %d: %d %q", ttl, r.status, r.body)
	}
	return r.body
}

func withToken(tok string) map[string]string { return map[string]string{hdrToken: tok} }

var imdsTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

// credsDoc decodes a credentials document, failing on anything but 200 JSON.
func credsDoc(t *testing.T, r response) map[string]string {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("credentials: status %d, body %q", r.status, redact(r.body))
	}
	var doc map[string]string
	if err := json.Unmarshal([]byte(r.body), &doc); err != nil {
		t.Fatalf("credentials are not a JSON object of strings: %v", err)
	}
	return doc
}

// TestChecklist runs the conformance checklist of docs/imds-clients.md
// against the binary, as black-box HTTP. Numbers are the checklist's.
func TestChecklist(t *testing.T) {
	st := startSTS(t)
	node := startNodeIMDS(t)
	sc := startSidecar(t, st, sidecarOpts{nodeURL: node.URL})
	v2 := startSidecar(t, st, sidecarOpts{nodeURL: node.URL, requireV2: true})

	t.Run("01 token TTL 1..21600", func(t *testing.T) {
		for _, ttl := range []string{"1", "60", "21600"} {
			r := call(t, http.MethodPut, sc.URL+pathToken, map[string]string{hdrTokenTTL: ttl})
			if r.status != 200 || r.body == "" || strings.ContainsAny(r.body, " \n") {
				t.Errorf("ttl %s: %d %q", ttl, r.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("ttl %s: Content-Type %q, want text/plain", ttl, ct)
			}
			if got := r.header.Get(hdrTokenTTL); got != ttl {
				t.Errorf("ttl %s: response %s = %q (the Go SDK silently drops to v1 without it)", ttl, hdrTokenTTL, got)
			}
		}
	})
	t.Run("02 bad TTL 400", func(t *testing.T) {
		for _, ttl := range []string{"0", "21601", "-1", "abc", "1.5", "", "99999999999999999999"} {
			hdr := map[string]string{hdrTokenTTL: ttl}
			if ttl == "" {
				hdr = nil // no TTL header at all
			}
			if r := call(t, http.MethodPut, sc.URL+pathToken, hdr); r.status != 400 {
				t.Errorf("ttl %q: status %d, want 400", ttl, r.status)
			}
		}
	})
	t.Run("03 PUT with X-Forwarded-For rejected", func(t *testing.T) {
		for _, xff := range []string{"10.0.0.1", "127.0.0.1", "169.254.169.254, 10.0.0.1"} {
			r := call(t, http.MethodPut, sc.URL+pathToken, map[string]string{hdrTokenTTL: "60", "X-Forwarded-For": xff})
			if r.status != 403 {
				t.Errorf("XFF %q: status %d, want 403 as real IMDS", xff, r.status)
			}
			if r.status == 200 && call(t, http.MethodGet, v2.URL+pathCreds, withToken(r.body)).status == 200 {
				t.Errorf("XFF %q: the token works", xff)
			}
		}
	})
	t.Run("04 token only by PUT", func(t *testing.T) {
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodHead, http.MethodDelete} {
			if r := call(t, m, sc.URL+pathToken, map[string]string{hdrTokenTTL: "60"}); r.status == 200 {
				t.Errorf("%s %s: 200", m, pathToken)
			}
		}
	})
	t.Run("05 tokens valid for their TTL, concurrent tokens all valid", func(t *testing.T) {
		const n = 32
		toks := make([]string, n)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []string
		for i := range toks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(mustReq(http.MethodPut, v2.URL+pathToken, map[string]string{hdrTokenTTL: "21600"}))
				if err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				toks[i] = string(b)
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("concurrent token requests failed: %v", errs)
		}
		if distinct := slices.Compact(slices.Sorted(slices.Values(toks))); len(distinct) != n {
			t.Errorf("%d concurrent token requests gave %d distinct tokens", n, len(distinct))
		}
		for i, tok := range toks {
			if r := call(t, http.MethodGet, v2.URL+pathCreds, withToken(tok)); r.status != 200 {
				t.Errorf("token %d of %d: status %d", i, n, r.status)
			}
		}
		short := token(t, v2, 3)
		if r := call(t, http.MethodGet, v2.URL+pathCreds, withToken(short)); r.status != 200 {
			t.Errorf("fresh 3 s token: %d", r.status)
		}
		time.Sleep(1500 * time.Millisecond)
		if r := call(t, http.MethodGet, v2.URL+pathCreds, withToken(short)); r.status != 200 {
			t.Errorf("3 s token after 1.5 s: %d", r.status)
		}
	})
	t.Run("06 invalid or expired token 401", func(t *testing.T) {
		expired := token(t, sc, 1)
		other := token(t, v2, 60) // another sidecar's token
		time.Sleep(2100 * time.Millisecond)
		for name, tok := range map[string]string{
			"garbage": "AQAEAKoNg-garbage==", "expired": expired, "other instance": other,
			"truncated": token(t, sc, 60)[:10], "blank-ish": " ",
		} {
			for _, s := range []*sidecar{sc, v2} {
				if name == "other instance" && s == v2 {
					continue
				}
				if r := call(t, http.MethodGet, s.URL+pathCreds, withToken(tok)); r.status != 401 {
					t.Errorf("%s token (require-v2 %v): status %d, want 401", name, s == v2, r.status)
				}
			}
		}
	})
	t.Run("07 v1 optional, refused when v2 required", func(t *testing.T) {
		if r := call(t, http.MethodGet, sc.URL+pathCreds, nil); r.status != 200 || r.body != appRole {
			t.Errorf("v1 listing: %d %q", r.status, r.body)
		}
		if r := call(t, http.MethodGet, sc.URL+pathCreds+appRole, nil); r.status != 200 {
			t.Errorf("v1 credentials: %d", r.status)
		}
		for _, p := range []string{pathCreds, pathCreds + appRole, pathRegion} {
			if r := call(t, http.MethodGet, v2.URL+p, nil); r.status != 401 {
				t.Errorf("require-imdsv2 %s without token: %d, want 401", p, r.status)
			}
		}
		if r := call(t, http.MethodGet, v2.URL+pathCreds+appRole, withToken(token(t, v2, 60))); r.status != 200 {
			t.Errorf("require-imdsv2 with token: %d", r.status)
		}
	})
	t.Run("08 listing is exactly the role name", func(t *testing.T) {
		for _, s := range []*sidecar{sc, v2} {
			r := call(t, http.MethodGet, s.URL+pathCreds, withToken(token(t, s, 60)))
			if r.status != 200 || r.body != appRole {
				t.Errorf("listing: %d %q, want %q with no newline", r.status, r.body, appRole)
			}
		}
	})
	t.Run("09 credentials document", func(t *testing.T) {
		doc := credsDoc(t, call(t, http.MethodGet, sc.URL+pathCreds+appRole, withToken(token(t, sc, 60))))
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range doc {
				if !yield(k) {
					return
				}
			}
		})
		want := []string{"AccessKeyId", "Code", "Expiration", "LastUpdated", "SecretAccessKey", "Token", "Type"}
		if !reflect.DeepEqual(keys, want) {
			t.Errorf("fields %v, want exactly %v", keys, want)
		}
		if doc["Code"] != "Success" || doc["Type"] != "AWS-HMAC" {
			t.Errorf("Code %q Type %q", doc["Code"], doc["Type"])
		}
		for _, f := range []string{"LastUpdated", "Expiration"} {
			if !imdsTime.MatchString(doc[f]) {
				t.Errorf("%s %q is not YYYY-MM-DDTHH:MM:SSZ", f, doc[f])
			}
		}
		latest := latestFor(t, st, sc, doc["AccessKeyId"])
		if doc["Expiration"] != latest.Expiration.UTC().Format("2006-01-02T15:04:05Z") {
			t.Errorf("Expiration %s, STS said %s", doc["Expiration"], latest.Expiration.UTC())
		}
		if arn, err := callerIdentity(t, st, processCreds{AccessKeyID: doc["AccessKeyId"], SecretAccessKey: doc["SecretAccessKey"], SessionToken: doc["Token"]}); err != nil || arn != latest.AssumedRoleARN {
			t.Errorf("GetCallerIdentity with the served document: %s %v", arn, err)
		}
	})
	t.Run("10 other roles 404", func(t *testing.T) {
		tok := token(t, sc, 60)
		for _, role := range []string{"other", nodeRole, "APP", "ap", "app2", "app%00", "app/..", "%61pp", "app;", "app/x"} {
			for _, base := range []string{pathCreds, pathCredsX} {
				if r := call(t, http.MethodGet, sc.URL+base+role, withToken(tok)); r.status != 404 {
					t.Errorf("%s%s: %d, want 404", base, role, r.status)
				}
			}
		}
	})
	t.Run("11 served expiration at least 30 min ahead", func(t *testing.T) {
		doc := credsDoc(t, call(t, http.MethodGet, sc.URL+pathCreds+appRole, nil))
		exp, err := time.Parse(time.RFC3339, doc["Expiration"])
		if err != nil || time.Until(exp) < 30*time.Minute {
			t.Errorf("Expiration %s is less than 30 min ahead (botocore/CLI would sign with expired keys)", doc["Expiration"])
		}
	})
	t.Run("13 extended path: credentials with AccountId, or 404", func(t *testing.T) {
		tok := token(t, sc, 60)
		list := call(t, http.MethodGet, sc.URL+pathCredsX, withToken(tok))
		r := call(t, http.MethodGet, sc.URL+pathCredsX+appRole, withToken(tok))
		switch {
		case list.status == 404 && r.status == 404:
			t.Log("extended path not served (404): clients fall back")
		case list.status == 200 && list.body == appRole && r.status == 200:
			doc := credsDoc(t, r)
			if doc["AccountId"] != account || doc["Code"] != "Success" || doc["Type"] != "AWS-HMAC" || doc["SecretAccessKey"] == "" || doc["Token"] == "" {
				t.Errorf("extended document: AccountId %q Code %q Type %q", doc["AccountId"], doc["Code"], doc["Type"])
			}
			latestFor(t, st, sc, doc["AccessKeyId"])
		default:
			t.Errorf("extended listing %d %q, document %d: want both 404, or the role and its credentials", list.status, list.body, r.status)
		}
		// AccountId never appears on the plain path.
		if doc := credsDoc(t, call(t, http.MethodGet, sc.URL+pathCreds+appRole, withToken(tok))); doc["AccountId"] != "" {
			t.Errorf("AccountId on the plain path")
		}
	})
	t.Run("14 placement from the node", func(t *testing.T) {
		tok := withToken(token(t, sc, 60))
		checks := map[string]string{pathRegion: region, pathZone: nodeZone, pathZone + "/": nodeZone}
		for p, want := range checks {
			if r := call(t, http.MethodGet, sc.URL+p, tok); r.status != 200 || r.body != want {
				t.Errorf("%s: %d %q, want %q", p, r.status, r.body, want)
			}
		}
		r := call(t, http.MethodGet, sc.URL+pathIdDoc, tok)
		nodeDoc := call(t, http.MethodGet, node.MockURL+pathIdDoc, nil)
		var got, want map[string]any
		if r.status != 200 || json.Unmarshal([]byte(r.body), &got) != nil || json.Unmarshal([]byte(nodeDoc.body), &want) != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("identity document: %d %s\nnode's: %s", r.status, r.body, nodeDoc.body)
		}
	})
	t.Run("15 unknown paths 404", func(t *testing.T) {
		tok := withToken(token(t, sc, 60))
		for _, p := range []string{"/latest/meta-data/ami-id", "/latest/meta-data/hostname", "/latest/meta-data/local-ipv4",
			"/latest/meta-data/public-keys/0/openssh-key", "/latest/user-data", "/latest/user-data/", "/latest/meta-data/nope",
			"/nope", "/latest/dynamic/instance-identity/pkcs7", "/latest/dynamic/instance-identity/signature",
			"/latest/meta-data/spot/instance-action", "/latest/meta-data/placement/region/x"} {
			if r := call(t, http.MethodGet, sc.URL+p, tok); r.status != 404 {
				t.Errorf("%s: %d, want 404", p, r.status)
			}
		}
	})
	t.Run("17 any Host header", func(t *testing.T) {
		for _, host := range []string{"169.254.169.254", "169.254.169.254:80", "[fd00:ec2::254]", "evil.example:1234", "localhost", ""} {
			status, body := rawGet(t, sc.URL, pathCreds, host)
			if status != 200 || body != appRole {
				t.Errorf("Host %q: %d %q", host, status, body)
			}
		}
	})
	t.Run("18 keep-alive and abrupt close", func(t *testing.T) {
		tr := &http.Transport{MaxIdleConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: time.Second}
		reused := 0
		for i := 0; i < 20; i++ {
			trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
				if ci.Reused {
					reused++
				}
			}}
			req := mustReq(http.MethodGet, sc.URL+pathCreds+appRole, nil)
			req = req.WithContext(httptrace.WithClientTrace(testCtx(t, 5*time.Second), trace))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: %d", i, resp.StatusCode)
			}
		}
		if reused < 19 {
			t.Errorf("only %d of 20 requests reused the connection", reused)
		}
		addr := strings.TrimPrefix(sc.URL, "http://")
		for i := 0; i < 30; i++ {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			switch i % 3 {
			case 0: // half a request line
				conn.Write([]byte("GET /latest/meta"))
			case 1: // a whole request, never read
				conn.Write([]byte("GET " + pathCreds + appRole + " HTTP/1.1\r\nHost: x\r\n\r\n"))
			case 2: // nothing at all
			}
			if tc, ok := conn.(*net.TCPConn); ok && i%2 == 0 {
				tc.SetLinger(0) // RST instead of FIN
			}
			conn.Close()
		}
		if r := call(t, http.MethodGet, sc.URL+pathCreds+appRole, nil); r.status != 200 || !sc.Alive() {
			t.Errorf("after abrupt closes: %d alive %v", r.status, sc.Alive())
		}
	})
	t.Run("19 role name known in advance", func(t *testing.T) {
		// Clients configured with the role name skip the listing.
		for _, s := range []*sidecar{sc, v2} {
			doc := credsDoc(t, call(t, http.MethodGet, s.URL+pathCreds+appRole, withToken(token(t, s, 21600))))
			latestFor(t, st, s, doc["AccessKeyId"])
		}
	})
	for _, s := range []*sidecar{sc, v2} {
		if !s.Alive() {
			t.Fatalf("a sidecar died: %s", redact(s.Logs()))
		}
		// Hundreds of metadata requests, one STS call: requests never reach STS.
		if n := len(st.issued(s)); n != 1 {
			t.Errorf("the sidecar called STS %d times for one-hour credentials", n)
		}
	}
	checkNodeRequests(t, node)
}

// latestFor asserts that key is the newest credential the double issued for
// the app role to sc, and returns its record.
func latestFor(t *testing.T, st *stsServer, sc *sidecar, key string) stsdouble.Issued {
	t.Helper()
	l := st.latest(t, sc)
	if key != l.AccessKeyID {
		t.Fatalf("served access key %q, want %q, the one STS issued last for %s", key, l.AccessKeyID, appRoleARN)
	}
	return l
}

func mustReq(method, u string, hdr map[string]string) *http.Request {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		panic(err) // fixed test URLs
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return req
}

// rawGet sends a GET with exactly the Host header given (none when empty,
// then as HTTP/1.0) and returns status and body.
func rawGet(t *testing.T, base, path, host string) (int, string) {
	t.Helper()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"
	if host == "" {
		req = "GET " + path + " HTTP/1.0\r\n\r\n"
	}
	resp := rawExchange(t, strings.TrimPrefix(base, "http://"), req, 64<<10)
	r, err := http.ReadResponse(bufio.NewReader(strings.NewReader(resp)), nil)
	if err != nil {
		t.Fatalf("%q: unreadable response: %v", req, err)
	}
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// rawExchange writes req on a fresh connection and returns everything read
// until the server closes or 3 s pass (at most limit bytes).
func rawExchange(t *testing.T, addr, req string, limit int64) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	go func() { conn.Write([]byte(req)) }() // large requests may block while the server answers early
	b, _ := io.ReadAll(io.LimitReader(conn, limit))
	return string(b)
}

// TestPlacementWithoutNode: when the node's IMDS does not answer, region and
// zone come from the flags and the identity document still carries the region
// (aws-sdk-go-v2 reads .region from it).
func TestPlacementWithoutNode(t *testing.T) {
	t.Parallel() // sleep-bound; runs after the tests that set the environment
	st := startSTS(t)
	// Base credentials from the environment: the node's IMDS is down.
	sc := startSidecar(t, st, sidecarOpts{env: []string{
		"AWS_ACCESS_KEY_ID=" + nodeKeyID, "AWS_SECRET_ACCESS_KEY=" + nodeSecret, "AWS_SESSION_TOKEN=" + nodeToken,
	}})
	for p, want := range map[string]string{pathRegion: region, pathZone: flagZone, pathZone + "/": flagZone} {
		if r := call(t, http.MethodGet, sc.URL+p, nil); r.status != 200 || r.body != want {
			t.Errorf("%s: %d %q, want %q", p, r.status, r.body, want)
		}
	}
	r := call(t, http.MethodGet, sc.URL+pathIdDoc, nil)
	var doc struct {
		Region           string `json:"region"`
		AvailabilityZone string `json:"availabilityZone"`
	}
	if r.status != 200 || json.Unmarshal([]byte(r.body), &doc) != nil || doc.Region != region {
		t.Errorf("identity document without the node: %d %q, want JSON with region %q", r.status, r.body, region)
	}
	cd := credsDoc(t, call(t, http.MethodGet, sc.URL+pathCreds+appRole, nil))
	if l := latestFor(t, st, sc, cd["AccessKeyId"]); l.Caller != nodeARN {
		t.Errorf("assumed as %s, want the base identity %s", l.Caller, nodeARN)
	}
}

// TestFailedRotation (checklist 12): while STS is down, the sidecar keeps
// serving the last good credentials while they are valid, never expired ones,
// and recovers when STS is back.
func TestFailedRotation(t *testing.T) {
	t.Parallel() // sleep-bound; runs after the tests that set the environment
	st := startSTS(t)
	node := startNodeIMDS(t)
	st.SetMaxLifetime(20 * time.Second)
	sc := startSidecar(t, st, sidecarOpts{nodeURL: node.URL})
	st.SetOutage(stsdouble.Outage503)
	first := st.latest(t, sc)
	servedFirst := false
	for time.Now().Before(first.Expiration.Add(3 * time.Second)) {
		r := call(t, http.MethodGet, sc.URL+pathCreds+appRole, nil)
		if r.status == 200 {
			doc := credsDoc(t, r)
			exp, _ := time.Parse(time.RFC3339, doc["Expiration"])
			if doc["AccessKeyId"] != first.AccessKeyID {
				t.Fatalf("served a key STS never issued during the outage")
			}
			if !time.Now().Before(exp) {
				t.Fatalf("served expired credentials (expired %s)", exp)
			}
			servedFirst = true
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !servedFirst {
		t.Errorf("the last good credentials were not served during the outage")
	}
	st.SetOutage(stsdouble.OutageNone)
	// Backoff is capped at a minute: the sidecar must be back within ~70 s.
	deadline := time.Now().Add(70 * time.Second)
	for time.Now().Before(deadline) {
		r := call(t, http.MethodGet, sc.URL+pathCreds+appRole, nil)
		if r.status == 200 {
			doc := credsDoc(t, r)
			if doc["AccessKeyId"] == first.AccessKeyID {
				t.Fatalf("served the expired first key after the outage")
			}
			latestFor(t, st, sc, doc["AccessKeyId"])
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("no credentials served 70 s after STS came back")
}

// stsHold stands in front of the STS double: once hold is called, STS
// requests reach it and wait, unanswered, until release (or their client
// gives up). An STS slow for exactly as long as the test says, with no
// latency to tune against the machine's speed.
type stsHold struct {
	mu      sync.Mutex
	gate    chan struct{} // nil: requests pass; closed by release
	reached chan struct{} // one value once a request waits at the hold
}

func (h *stsHold) hold() { h.mu.Lock(); h.gate = make(chan struct{}); h.mu.Unlock() }

func (h *stsHold) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate != nil {
		close(h.gate)
		h.gate = nil
	}
}

func (h *stsHold) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		gate := h.gate
		h.mu.Unlock()
		if gate != nil {
			select {
			case h.reached <- struct{}{}:
			default:
			}
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// TestSlowUpstream (checklist 16): while STS hangs, a metadata request with
// good cached credentials gets them, and once they are too old to serve it
// gets 503 Retry-After: 1; never a hang until STS answers. STS here answers
// nothing until the test releases it, so every answer the agent gives in
// between proves it did not wait for STS, however slow this machine is; how
// long the agent may wait (MaxWait, below the Go SDK's 500 ms header timeout)
// is measured exactly on a fake clock by sidecar/imds's TestSlowUpstream.
// Every verdict here is causal, none a deadline.
func TestSlowUpstream(t *testing.T) {
	t.Parallel() // waits for half a credential lifetime
	// Refreshed with 22.5-25 s left, served while more than 15 s are left.
	const lifetime = 30 * time.Second
	double := startSTS(t)
	h := &stsHold{reached: make(chan struct{}, 1)}
	srv := httptest.NewServer(h.wrap(double.Handler()))
	t.Cleanup(srv.Close)
	t.Cleanup(h.release) // before srv.Close, which waits for held requests
	st := &stsServer{Double: double.Double, URL: srv.URL}
	node := startNodeIMDS(t)
	st.SetMaxLifetime(lifetime)
	sc := startSidecar(t, st, sidecarOpts{nodeURL: node.URL})
	first := st.latest(t, sc)
	// The agent must serve first until at least here: its margin is half the
	// lifetime it saw, and the wire's Expiration drops the fraction of a second.
	mustServeUntil := first.Expiration.Add(-lifetime/2 - time.Second)
	h.hold()

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	type answer struct {
		status     int
		retryAfter string
		key        string // of a 200
		sent, got  time.Time
	}
	get := func() answer {
		t.Helper()
		a := answer{sent: time.Now()}
		resp, err := client.Do(mustReq(http.MethodGet, sc.URL+pathCreds+appRole, nil))
		if err != nil {
			t.Fatalf("no answer within 10 s while STS hangs (the agent waits for STS?): %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a.got, a.status, a.retryAfter = time.Now(), resp.StatusCode, resp.Header.Get("Retry-After")
		if a.status == 200 {
			var doc map[string]string
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatalf("credentials are not a JSON object of strings: %v", err)
			}
			if a.key = doc["AccessKeyId"]; a.key != first.AccessKeyID {
				t.Fatalf("served %s while STS hangs, want the cached %s", a.key, first.AccessKeyID)
			}
			if !a.sent.Before(first.Expiration) {
				t.Fatalf("served credentials that expired at %s to a request sent at %s", first.Expiration, a.sent)
			}
		} else if a.status != http.StatusServiceUnavailable || a.retryAfter != "1" || strings.Contains(string(b), "AccessKeyId") {
			t.Fatalf("refusal: %d Retry-After %q %q, want 503 Retry-After: 1 and no credentials", a.status, a.retryAfter, redact(string(b)))
		}
		return a
	}

	// The background refresh reaches STS and hangs there.
	select {
	case <-h.reached:
	case <-time.After(time.Until(first.Expiration)):
		t.Fatalf("no refresh reached STS before the credentials expired; sidecar log:\n%s", sc.Logs())
	}
	a := get()
	var slowest time.Duration
	switch {
	case a.status == 200:
		slowest = a.got.Sub(a.sent)
	case a.got.Before(mustServeUntil):
		t.Fatalf("refused at %s while the cached credentials were good until %s and a refresh hung", a.got, mustServeUntil)
	default:
		t.Skipf("inconclusive: this machine first asked at %s, after the %s window of cached credentials closed (%s)", a.sent, lifetime/4, mustServeUntil)
	}

	// Once too old, refusals; no 200 after the first while STS still hangs.
	var refusals []answer
	for len(refusals) < 3 {
		a := get()
		if a.status == 200 {
			if len(refusals) > 0 {
				t.Fatalf("served %s at %s after refusing at %s, while STS hangs", a.key, a.got, refusals[0].got)
			}
			slowest = max(slowest, a.got.Sub(a.sent))
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if a.got.Before(mustServeUntil) {
			t.Fatalf("refused at %s while the cached credentials were good until %s", a.got, mustServeUntil)
		}
		refusals = append(refusals, a)
	}
	t.Logf("while STS hung: slowest cached answer %s, refusals took %s, %s, %s (bounds: sidecar/imds TestSlowUpstream)",
		slowest, refusals[0].got.Sub(refusals[0].sent), refusals[1].got.Sub(refusals[1].sent), refusals[2].got.Sub(refusals[2].sent))

	// STS answers again: the agent serves what it issues next (its backoff
	// is capped at a minute).
	h.release()
	deadline := time.Now().Add(70 * time.Second)
	for {
		r := call(t, http.MethodGet, sc.URL+pathCreds+appRole, nil)
		if r.status == 200 {
			doc := credsDoc(t, r)
			if doc["AccessKeyId"] == first.AccessKeyID {
				t.Fatalf("served the old key after it was refused")
			}
			latestFor(t, st, sc, doc["AccessKeyId"])
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no credentials served 70 s after STS came back; sidecar log:\n%s", sc.Logs())
		}
		time.Sleep(500 * time.Millisecond)
	}
}
