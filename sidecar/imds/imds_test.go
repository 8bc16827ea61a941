package imds

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podrole/podrole/sidecar/creds"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const (
	testRoleARN = "arn:aws:iam::111122223333:role/team/app-role"
	credsPath   = PathCredentials + "/app-role"
	extPath     = PathCredentialsExt + "/app-role"
)

// fixedSource serves one set of credentials, or an error.
type fixedSource struct {
	c   creds.Credentials
	err error
}

func (f fixedSource) Credentials(context.Context) (creds.Credentials, error) { return f.c, f.err }

func testCreds() creds.Credentials {
	return creds.Credentials{
		AccessKeyID: "ASIAEXAMPLEROLEKEY01", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		SessionToken: "IQoJb3JpZ2luX2VjEXAMPLETOKEN==",
		Expiration:   time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC),
		LastUpdated:  time.Date(2026, 11, 28, 4, 0, 0, 0, time.UTC), AccountID: "111122223333",
	}
}

type recordingMetrics struct {
	mu       sync.Mutex
	requests map[string]int
	tokens   int
}

func (m *recordingMetrics) Request(route string, code int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.requests == nil {
		m.requests = map[string]int{}
	}
	m.requests[fmt.Sprintf("%s %d", route, code)]++
}

func (m *recordingMetrics) TokenIssued() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens++
}

type testServer struct {
	h       *Handler
	tokens  *Tokens
	clock   *testClock
	metrics *recordingMetrics
}

func newHandler(t testing.TB, requireV2 bool, src CredentialSource, placement Placement) *testServer {
	t.Helper()
	clock := newTestClock()
	tk := newTokens(t, clock.Now)
	m := &recordingMetrics{}
	h, err := New(Config{
		RoleARN: testRoleARN, Credentials: src, Tokens: tk, RequireIMDSv2: requireV2,
		Placement: placement, Metrics: m, Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &testServer{h: h, tokens: tk, clock: clock, metrics: m}
}

var testPlacement = Placement{
	Region: "eu-west-1", AvailabilityZone: "eu-west-1b",
	IdentityDocument: []byte(`{"region":"eu-west-1","availabilityZone":"eu-west-1b"}`),
}

// do sends one request through the real HTTP request parser.
func (s *testServer) do(method, target string, headers map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, req)
	return rec
}

// Every route, trick and mode: the allow-list is exact.
func TestRouting(t *testing.T) {
	type tc struct {
		method, target string
		token          string // "valid", "expired", "bogus" or ""
		headers        map[string]string
		code           int
		body           string // exact, when set
	}
	common := []tc{
		{"GET", PathCredentials, "valid", nil, 200, "app-role"},
		{"GET", PathCredentials + "/", "valid", nil, 200, "app-role"},
		{"GET", PathCredentialsExt + "/", "valid", nil, 200, "app-role"},
		{"GET", PathCredentialsExt, "valid", nil, 200, "app-role"},
		{"HEAD", PathCredentials + "/", "valid", nil, 200, ""},
		{"GET", credsPath, "valid", nil, 200, ""},
		{"GET", extPath, "valid", nil, 200, ""},
		{"GET", PathInfo, "valid", nil, 200, ""},
		{"GET", PathRegion, "valid", nil, 200, "eu-west-1"},
		{"GET", PathAvailabilityZone, "valid", nil, 200, "eu-west-1b"},
		{"GET", PathAvailabilityZone + "/", "valid", nil, 200, "eu-west-1b"},
		{"GET", PathIdentityDocument, "valid", nil, 200, string(testPlacement.IdentityDocument)},
		{"GET", "http://169.254.169.254" + PathCredentials + "/", "valid", nil, 200, "app-role"},
		{"GET", PathCredentials + "/", "valid", map[string]string{"Host": "evil.example:1234"}, 200, "app-role"},
		// Invalid tokens are refused even where IMDSv1 is allowed, like real IMDS.
		{"GET", credsPath, "expired", nil, 401, ""},
		{"GET", credsPath, "bogus", nil, 401, ""},
		{"GET", PathRegion, "bogus", nil, 401, ""},
		// Token endpoint.
		{"GET", PathToken, "", nil, 405, ""},
		{"POST", PathToken, "", map[string]string{HeaderTokenTTL: "60"}, 405, ""},
		{"PUT", PathToken, "", map[string]string{HeaderTokenTTL: "60", "X-Forwarded-For": "10.0.0.1"}, 403, ""},
		{"PUT", PathToken, "", nil, 400, ""},
		{"PUT", PathToken, "", map[string]string{HeaderTokenTTL: "0"}, 400, ""},
		{"PUT", PathToken, "", map[string]string{HeaderTokenTTL: "21601"}, 400, ""},
		{"PUT", PathToken, "", map[string]string{HeaderTokenTTL: "-5"}, 400, ""},
		{"PUT", PathToken, "", map[string]string{HeaderTokenTTL: "60s"}, 400, ""},
		{"PUT", PathToken, "", map[string]string{HeaderTokenTTL: "060"}, 400, ""},
		{"PUT", PathToken, "", map[string]string{HeaderTokenTTL: "1.5"}, 400, ""},
		{"PUT", PathToken, "", map[string]string{HeaderTokenTTL: "99999999999999999999"}, 400, ""},
		{"PUT", PathToken + "?x=1", "", map[string]string{HeaderTokenTTL: "60"}, 404, ""},
		// Methods.
		{"POST", credsPath, "valid", nil, 405, ""},
		{"DELETE", PathCredentials + "/", "valid", nil, 405, ""},
	}
	tricks := []string{
		"/", "/latest", "/latest/", "/latest/meta-data", "/latest/meta-data/", "/latest/meta-data/iam",
		"/latest/meta-data/iam/", "/latest/user-data", "/latest/user-data/", "/latest/meta-data/instance-id",
		"/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
		"/latest/dynamic/instance-identity/signature", "/latest/dynamic/instance-identity/pkcs7",
		"/2021-07-15/meta-data/iam/security-credentials/", "/latest/api/token/",
		PathCredentials + "/node-instance-role", PathCredentials + "/other-role", PathCredentials + "/app-rolex",
		PathCredentials + "/APP-ROLE", PathCredentials + "/app-role/", PathCredentials + "/app-role/..",
		PathCredentials + "/./app-role", PathCredentials + "/../security-credentials/app-role",
		PathCredentials + "//app-role", "//latest/meta-data/iam/security-credentials/",
		"/latest/meta-data//iam/security-credentials/", "/latest//meta-data/iam/info",
		PathCredentials + "/%61pp-role", PathCredentials + "%2Fapp-role", PathCredentials + "/app-role%00",
		PathCredentials + "/%2e%2e/info", "/latest/meta-data/iam/%2e%2e/%2e%2e/user-data",
		"/latest/meta-data/iam/security-credentials/app-role;x", "/latest/meta-data/iam/security-credentials;/",
		"/latest/meta-data/iam/security-credentials/app-role%3b", "/LATEST/meta-data/iam/security-credentials/",
		"/latest/meta-data/iam/Security-Credentials/", "/latest/meta-data/IAM/info",
		PathCredentials + "/app-role?x=1", PathCredentials + "/?", PathRegion + "/", PathRegion + "x",
		PathIdentityDocument + "/", PathInfo + "/", PathCredentialsExt + "/app-role/", PathCredentialsExt + "/other",
		PathCredentials + "/app-role\\", PathCredentials + "/app-role%20", "/latest/meta-data/placement/../iam/info",
	}
	for _, p := range tricks {
		common = append(common, tc{"GET", p, "valid", nil, 404, ""}, tc{"GET", p, "", nil, 404, ""})
	}

	for _, mode := range []struct {
		name      string
		requireV2 bool
	}{{"v1 allowed", false}, {"v2 required", true}} {
		cases := append([]tc(nil), common...)
		// Without a token: served in v1 mode, 401 in v2-only mode (tricks are 404
		// when v1 is allowed; with v2 required they are refused before routing).
		for _, p := range []string{PathCredentials + "/", credsPath, extPath, PathInfo, PathRegion, PathIdentityDocument} {
			code := 200
			if mode.requireV2 {
				code = 401
			}
			cases = append(cases, tc{"GET", p, "", nil, code, ""})
		}
		for i := range cases {
			if mode.requireV2 && cases[i].token == "" && cases[i].code == 404 {
				cases[i].code = 401
			}
		}
		t.Run(mode.name, func(t *testing.T) {
			s := newHandler(t, mode.requireV2, fixedSource{c: testCreds()}, testPlacement)
			valid, _ := s.tokens.Issue(time.Hour)
			expired, _ := s.tokens.Issue(time.Second)
			s.clock.Advance(2 * time.Second)
			for _, c := range cases {
				h := map[string]string{}
				for k, v := range c.headers {
					h[k] = v
				}
				switch c.token {
				case "valid":
					h[HeaderToken] = valid
				case "expired":
					h[HeaderToken] = expired
				case "bogus":
					h[HeaderToken] = "AQAEAFakeToken=="
				}
				rec := s.do(c.method, c.target, h)
				if rec.Code != c.code {
					t.Errorf("%s %s (token %q): %d, want %d", c.method, c.target, c.token, rec.Code, c.code)
					continue
				}
				if c.body != "" && c.method != "HEAD" && rec.Body.String() != c.body {
					t.Errorf("%s %s: body %q, want %q", c.method, c.target, rec.Body.String(), c.body)
				}
				if rec.Code != 200 && strings.Contains(rec.Body.String(), testCreds().SecretAccessKey) {
					t.Errorf("%s %s: error page leaks the secret", c.method, c.target)
				}
			}
		})
	}
}

// The token call answers like real IMDS: text/plain token, TTL echoed.
func TestTokenIssueAndUse(t *testing.T) {
	for _, requireV2 := range []bool{false, true} {
		s := newHandler(t, requireV2, fixedSource{c: testCreds()}, testPlacement)
		for _, ttl := range []string{"1", "300", "21600"} {
			rec := s.do("PUT", PathToken, map[string]string{HeaderTokenTTL: ttl})
			if rec.Code != 200 || rec.Header().Get(HeaderTokenTTL) != ttl || rec.Header().Get("Content-Type") != "text/plain" {
				t.Fatalf("PUT ttl %s: %d %v", ttl, rec.Code, rec.Header())
			}
			tok := rec.Body.String()
			if got := s.do("GET", PathCredentials+"/", map[string]string{HeaderToken: tok}); got.Code != 200 {
				t.Fatalf("GET with fresh token: %d", got.Code)
			}
		}
		s.metrics.mu.Lock()
		if s.metrics.tokens != 3 || s.metrics.requests["token 200"] != 3 || s.metrics.requests["credentials-list 200"] != 3 {
			t.Fatalf("metrics: %d tokens, %v", s.metrics.tokens, s.metrics.requests)
		}
		s.metrics.mu.Unlock()
	}
}

// The credentials documents and iam/info, byte for byte.
func TestDocumentsGolden(t *testing.T) {
	s := newHandler(t, false, fixedSource{c: testCreds()}, testPlacement)
	for name, path := range map[string]string{
		"credentials.golden": credsPath, "credentials-extended.golden": extPath, "info.golden": PathInfo,
	} {
		rec := s.do("GET", path, nil)
		if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/plain" {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Header().Get("Content-Type"))
		}
		golden := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(golden, rec.Body.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run go test -update to create it)", err)
		}
		if rec.Body.String() != string(want) {
			t.Errorf("%s:\n%s\nwant (%s):\n%s", path, rec.Body.String(), golden, want)
		}
	}
}

// No usable credentials: a clear 503, never a document.
func TestCredentialsUnavailable(t *testing.T) {
	s := newHandler(t, false, fixedSource{err: fmt.Errorf("%w: sts down", creds.ErrUnavailable)}, testPlacement)
	for _, p := range []string{credsPath, extPath} {
		rec := s.do("GET", p, nil)
		if rec.Code != http.StatusServiceUnavailable || strings.Contains(rec.Body.String(), "AccessKeyId") {
			t.Fatalf("%s: %d %q", p, rec.Code, rec.Body.String())
		}
	}
	// The listing and info do not depend on STS.
	if rec := s.do("GET", PathCredentials+"/", nil); rec.Code != 200 || rec.Body.String() != "app-role" {
		t.Fatalf("listing: %d %q", rec.Code, rec.Body.String())
	}
	if rec := s.do("GET", PathInfo, nil); rec.Code != 200 {
		t.Fatalf("info: %d", rec.Code)
	}
}

// Without node metadata or flags, placement paths are 404.
func TestPlacementMissing(t *testing.T) {
	s := newHandler(t, false, fixedSource{c: testCreds()}, Placement{})
	for _, p := range []string{PathRegion, PathAvailabilityZone, PathAvailabilityZone + "/", PathIdentityDocument} {
		if rec := s.do("GET", p, nil); rec.Code != 404 {
			t.Fatalf("%s: %d", p, rec.Code)
		}
	}
}

// With CurrentPlacement, every request reads the placement anew: what the
// node's IMDS said late (after start) is served from then on, also while
// requests are in flight (go test -race).
func TestCurrentPlacement(t *testing.T) {
	var cur atomic.Pointer[Placement]
	cur.Store(&Placement{Region: "us-east-1"}) // from the flags, the node not answering yet
	clock := newTestClock()
	h, err := New(Config{
		RoleARN: testRoleARN, Credentials: fixedSource{c: testCreds()}, Tokens: newTokens(t, clock.Now), Now: clock.Now,
		Placement:        Placement{Region: "ignored-when-current-is-set"},
		CurrentPlacement: func() Placement { return *cur.Load() },
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{h: h}
	if rec := s.do("GET", PathRegion, nil); rec.Code != 200 || rec.Body.String() != "us-east-1" {
		t.Fatalf("region before: %d %q", rec.Code, rec.Body.String())
	}
	if rec := s.do("GET", PathIdentityDocument, nil); rec.Code != 404 {
		t.Fatalf("identity document before: %d", rec.Code)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if rec := s.do("GET", PathRegion, nil); rec.Code != 200 {
					t.Errorf("region during the swap: %d", rec.Code)
					return
				}
			}
		}()
	}
	cur.Store(&testPlacement)
	wg.Wait()
	for path, want := range map[string]string{
		PathRegion: testPlacement.Region, PathAvailabilityZone: testPlacement.AvailabilityZone,
		PathIdentityDocument: string(testPlacement.IdentityDocument),
	} {
		if rec := s.do("GET", path, nil); rec.Code != 200 || rec.Body.String() != want {
			t.Errorf("%s after the node answered: %d %q, want %q", path, rec.Code, rec.Body.String(), want)
		}
	}
}

func TestNewRejectsBadRole(t *testing.T) {
	tk := newTokens(t, nil)
	for _, arn := range []string{"", "app-role", "arn:aws:iam::111122223333:user/bob", "arn:aws:iam::111122223333:role/", "arn:aws:s3:::bucket"} {
		if _, err := New(Config{RoleARN: arn, Credentials: fixedSource{}, Tokens: tk}); err == nil {
			t.Errorf("role %q accepted", arn)
		}
	}
	s := newHandler(t, false, fixedSource{c: testCreds()}, testPlacement)
	if s.h.info.arn != "arn:aws:iam::111122223333:instance-profile/team/app-role" || len(s.h.info.id) != 21 {
		t.Fatalf("instance profile %+v", s.h.info)
	}
}

// Over a real connection: keep-alive, a client that hangs up mid-request,
// and any Host header.
func TestConnections(t *testing.T) {
	s := newHandler(t, false, fixedSource{c: testCreds()}, testPlacement)
	srv := httptest.NewServer(s.h)
	defer srv.Close()

	// A client that sends half a request and hangs up does no harm.
	for range 20 {
		c, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata"))
		c.Close()
	}

	// Three requests on one connection, each answered.
	c, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	put := "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(put)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := io.ReadAll(resp.Body)
	for _, p := range []string{PathCredentials + "/", credsPath} {
		req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: whatever\r\nX-aws-ec2-metadata-token: %s\r\n\r\n", p, tok)
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("%s on the kept-alive connection: %v", p, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Fatalf("%s: %d %q", p, resp.StatusCode, body)
		}
	}
	// The server is still healthy for everyone else.
	resp, err = http.Get(srv.URL + PathRegion)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("region after abrupt clients: %d", resp.StatusCode)
	}
}

// BenchmarkCredentialSequence is what an SDK does per credential fetch,
// over real loopback HTTP with keep-alive, credentials from a warm cache.
func BenchmarkCredentialSequence(b *testing.B) {
	cache := creds.New(warmSource{}, creds.Options{})
	if _, err := cache.Credentials(context.Background()); err != nil {
		b.Fatal(err)
	}
	tk := newTokens(b, nil)
	h, err := New(Config{RoleARN: testRoleARN, Credentials: cache, Tokens: tk})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	do := func(method, url string, hdr map[string]string) []byte {
		req, _ := http.NewRequest(method, url, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s %s: %d", method, url, resp.StatusCode)
		}
		return body
	}
	b.ResetTimer()
	for b.Loop() {
		tok := string(do("PUT", srv.URL+PathToken, map[string]string{HeaderTokenTTL: "21600"}))
		role := string(do("GET", srv.URL+PathCredentials+"/", map[string]string{HeaderToken: tok}))
		do("GET", srv.URL+PathCredentials+"/"+role, map[string]string{HeaderToken: tok})
	}
}

type warmSource struct{}

func (warmSource) API() string { return "AssumeRole" }
func (warmSource) Fetch(context.Context) (creds.Credentials, error) {
	c := testCreds()
	c.Expiration = time.Now().Add(time.Hour)
	return c, nil
}

// FuzzAllowList: whatever the request line, only the exact allow-listed
// paths answer 200, and only the role's own path yields a credentials
// document. (go test -fuzz=FuzzAllowList ./sidecar/imds to explore.)
func FuzzAllowList(f *testing.F) {
	for _, seed := range []string{
		credsPath, extPath, PathCredentials + "/", PathCredentials + "/%61pp-role", PathCredentials + "/app-role/..",
		"//latest/meta-data/iam/security-credentials/", "/latest/meta-data/iam/security-credentials/app-role;x",
		"http://x" + credsPath, "/latest/user-data", "*", PathCredentials + "/app-role?x", "/LATEST" + credsPath[7:],
	} {
		f.Add(seed)
	}
	s := newHandler(f, false, fixedSource{c: testCreds()}, testPlacement)
	allowed := map[string]bool{}
	for p := range s.h.routes {
		allowed[p] = true
	}
	f.Fuzz(func(t *testing.T, target string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil {
			return // the server would refuse it before any handler
		}
		rec := httptest.NewRecorder()
		s.h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			return
		}
		if !allowed[req.URL.EscapedPath()] || req.URL.RawQuery != "" {
			t.Fatalf("%q (path %q) answered 200", target, req.URL.EscapedPath())
		}
		if strings.Contains(rec.Body.String(), testCreds().SecretAccessKey) &&
			req.URL.EscapedPath() != credsPath && req.URL.EscapedPath() != extPath {
			t.Fatalf("%q yielded credentials", target)
		}
	})
}

// BenchmarkServeHTTP is the handler alone (no connection, no parser) for
// each request of an SDK's credential sequence: what the agent allocates
// per request on top of net/http's own. Allocations set how often the GC
// runs at a given GOGC, and so what a lower GC target costs (README
// "Performance").
func BenchmarkServeHTTP(b *testing.B) {
	cache := creds.New(warmSource{}, creds.Options{})
	if _, err := cache.Credentials(context.Background()); err != nil {
		b.Fatal(err)
	}
	tk := newTokens(b, nil)
	h, err := New(Config{RoleARN: testRoleARN, Credentials: cache, Tokens: tk, Metrics: nopMetrics{}})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := tk.Issue(MaxTokenTTL)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name, method, path string
		header             map[string]string
	}{
		{"token", http.MethodPut, PathToken, map[string]string{HeaderTokenTTL: "21600"}},
		{"listing", http.MethodGet, PathCredentials + "/", map[string]string{HeaderToken: tok}},
		{"credentials", http.MethodGet, credsPath, map[string]string{HeaderToken: tok}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			w := &discardWriter{header: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.header)
				w.code = 0
				h.ServeHTTP(w, req)
				if w.code != http.StatusOK {
					b.Fatalf("%s %s: %d", tc.method, tc.path, w.code)
				}
			}
		})
	}
}

type nopMetrics struct{}

func (nopMetrics) Request(string, int) {}
func (nopMetrics) TokenIssued()        {}

// discardWriter is a ResponseWriter that keeps the status and headers and
// throws the body away.
type discardWriter struct {
	header http.Header
	code   int
}

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(b []byte) (int, error) { d.setCode(); return len(b), nil }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) setCode() {
	if d.code == 0 {
		d.code = http.StatusOK
	}
}
