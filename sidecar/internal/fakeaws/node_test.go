package fakeaws

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// do sends one request to the fake node and returns status, body and headers.
func do(t *testing.T, method, url string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the body: %v", method, url, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func ttl(s string) map[string]string { return map[string]string{tokenTTLHeader: s} }

// The token API as real IMDS has it: a TTL of 1..21600 s, echoed; 400
// otherwise; 403 with X-Forwarded-For; PUT only; TokenStatus overrides.
func TestNodeIMDSToken(t *testing.T) {
	for _, tt := range []struct {
		name        string
		method      string
		hdr         map[string]string
		tokenStatus int
		want        int
	}{
		{"min TTL", http.MethodPut, ttl("1"), 0, 200},
		{"max TTL", http.MethodPut, ttl("21600"), 0, 200},
		{"TTL 0", http.MethodPut, ttl("0"), 0, 400},
		{"TTL too long", http.MethodPut, ttl("21601"), 0, 400},
		{"TTL not a number", http.MethodPut, ttl("60s"), 0, 400},
		{"no TTL", http.MethodPut, nil, 0, 400},
		{"X-Forwarded-For", http.MethodPut, map[string]string{tokenTTLHeader: "60", "X-Forwarded-For": "10.0.0.1"}, 0, 403},
		{"GET", http.MethodGet, ttl("60"), 0, 405},
		{"v1-only node", http.MethodPut, ttl("60"), 403, 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
			n.TokenStatus = tt.tokenStatus
			code, body, h := do(t, tt.method, n.URL+tokenPath, tt.hdr)
			if code != tt.want {
				t.Fatalf("%d %q, want %d", code, body, tt.want)
			}
			if code != 200 {
				if !strings.Contains(body, "<title>"+strings.TrimSpace(http.StatusText(code))) && !strings.Contains(body, "<h1>") {
					t.Errorf("error body %q is not IMDS's error page", body)
				}
				return
			}
			if h.Get(tokenTTLHeader) != tt.hdr[tokenTTLHeader] || h.Get("Content-Type") != "text/plain" || body == "" {
				t.Fatalf("token %q, TTL header %q, Content-Type %q", body, h.Get(tokenTTLHeader), h.Get("Content-Type"))
			}
		})
	}
}

// Every item with a valid token; without one only where IMDSv1 is allowed;
// an invalid token never, even then.
func TestNodeIMDSItems(t *testing.T) {
	n := NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	_, tok, _ := do(t, http.MethodPut, n.URL+tokenPath, ttl("60"))
	_, tok2, _ := do(t, http.MethodPut, n.URL+tokenPath, ttl("60"))
	if tok == tok2 {
		t.Fatalf("the same token twice: %q", tok)
	}
	auth := map[string]string{tokenHeader: tok2}
	for path, want := range map[string]string{
		"/latest/meta-data/placement/region":             "eu-west-1",
		"/latest/meta-data/placement/availability-zone":  "eu-west-1b",
		"/latest/meta-data/placement/availability-zone/": "eu-west-1b",
		"/latest/dynamic/instance-identity/document":     n.Document,
		credsPath: NodeRole,
	} {
		if code, got, h := do(t, http.MethodGet, n.URL+path, auth); code != 200 || got != want || h.Get("Content-Type") != "text/plain" {
			t.Errorf("%s: %d %q (%s), want %q text/plain", path, code, got, h.Get("Content-Type"), want)
		}
	}
	code, body, _ := do(t, http.MethodGet, n.URL+credsPath+NodeRole, map[string]string{tokenHeader: tok})
	var doc map[string]string
	if code != 200 || json.Unmarshal([]byte(body), &doc) != nil {
		t.Fatalf("credentials: %d %q", code, body)
	}
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)
	exp, _ := time.Parse(time.RFC3339, doc["Expiration"])
	if doc["Code"] != "Success" || doc["Type"] != "AWS-HMAC" || doc["AccessKeyId"] != NodeAccessKeyID ||
		doc["SecretAccessKey"] != NodeSecretAccessKey || doc["Token"] != NodeSessionToken ||
		!stamp.MatchString(doc["LastUpdated"]) || !stamp.MatchString(doc["Expiration"]) || time.Until(exp) < 5*time.Hour {
		t.Fatalf("credentials document %v", doc)
	}
	for _, tt := range []struct {
		name    string
		path    string
		hdr     map[string]string
		allowV1 bool
		want    int
	}{
		{"no token, v2 required", credsPath, nil, false, 401},
		{"no token, v1 allowed", credsPath, nil, true, 200},
		{"invalid token, v1 allowed", credsPath, map[string]string{tokenHeader: "forged"}, true, 401},
		{"empty token", credsPath, map[string]string{tokenHeader: ""}, true, 401},
		{"other role", credsPath + "other-role", auth, false, 404},
		{"user-data", "/latest/user-data", auth, false, 404},
		{"POST", credsPath, auth, false, 405},
	} {
		n.AllowV1 = tt.allowV1
		method := http.MethodGet
		if tt.name == "POST" {
			method = http.MethodPost
		}
		if code, body, _ := do(t, method, n.URL+tt.path, tt.hdr); code != tt.want {
			t.Errorf("%s: %d %q, want %d", tt.name, code, body, tt.want)
		}
	}
}

// A node without an instance profile, region or document answers 404 for them.
func TestNodeIMDSMissingItems(t *testing.T) {
	n := NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	n.Role, n.Region, n.Document, n.AllowV1 = "", "", "", true
	for _, path := range []string{credsPath, credsPath + NodeRole, "/latest/meta-data/placement/region", "/latest/dynamic/instance-identity/document"} {
		if code, body, _ := do(t, http.MethodGet, n.URL+path, nil); code != 404 {
			t.Errorf("%s: %d %q, want 404", path, code, body)
		}
	}
}

// Fail fails the next n requests, whatever they are, then the node heals;
// Count and Requests see the failed ones too.
func TestNodeIMDSFail(t *testing.T) {
	n := NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	n.AllowV1 = true
	n.Fail(http.StatusServiceUnavailable, 2)
	var got []int
	for range 3 {
		code, _, _ := do(t, http.MethodGet, n.URL+"/latest/meta-data/placement/region", nil)
		got = append(got, code)
	}
	if got[0] != 503 || got[1] != 503 || got[2] != 200 {
		t.Fatalf("statuses %v, want 503 503 200", got)
	}
	n.Fail(http.StatusInternalServerError, -1)
	for range 3 {
		if code, _, _ := do(t, http.MethodPut, n.URL+tokenPath, ttl("60")); code != 500 {
			t.Fatalf("token while failing for good: %d", code)
		}
	}
	n.Fail(0, 0)
	if code, _, _ := do(t, http.MethodPut, n.URL+tokenPath, ttl("60")); code != 200 {
		t.Fatalf("token after Fail(0, 0): %d", code)
	}
	if c := n.Count("PUT " + tokenPath); c != 4 {
		t.Fatalf("Count = %d, want 4 token PUTs", c)
	}
	if r := n.Requests(); len(r) != 7 || r[6].TTL != "60" || r[0].Token {
		t.Fatalf("requests %+v", r)
	}
}

// Block holds requests until released, or until the client gives up.
func TestNodeIMDSBlock(t *testing.T) {
	n := NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	release := n.Block()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, n.URL+tokenPath, nil)
	req.Header.Set(tokenTTLHeader, "60")
	done := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	// The request reached the node and is held: nothing answers it yet.
	deadline := time.After(10 * time.Second)
	for n.Count("PUT "+tokenPath) == 0 {
		select {
		case code := <-done:
			t.Fatalf("answered %d while blocked", code)
		case <-deadline:
			t.Fatal("the request never reached the node")
		case <-time.After(time.Millisecond):
		}
	}
	select {
	case code := <-done:
		t.Fatalf("answered %d while blocked", code)
	default:
	}
	release()
	select {
	case code := <-done:
		if code != 200 {
			t.Fatalf("after release: %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still held after release")
	}
	cancel()
}
