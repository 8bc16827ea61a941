// Package fakeaws holds loopback stand-ins for the sidecar's upstreams in
// tests: STS (the repository's STS double, stsdouble, behind a recorder) and
// the node's IMDS (NodeIMDS). They record what they were asked, so tests can
// check the exact fields the sidecar sent.
//
// There are exactly two stand-ins for the node's IMDS in this repository,
// each where it serves best. NodeIMDS is the one in Go tests (and, through
// NewNode, the node of sidecar/redirect's real-namespace test): it answers
// as real IMDS does (docs/imds-clients.md) and injects failures on demand
// (IMDSv2 required or IMDSv1 allowed, token PUTs refused, requests failed or
// held, items missing), which unit tests need and which a third-party mock
// cannot do. amazon-ec2-metadata-mock, AWS's own mock, is the node's IMDS of
// the conformance suite (sidecar/conformance) and of the e2e cluster
// (e2e/README.md): there, faithfulness to an implementation that is not ours
// matters more than failure injection. A third stand-in would be a third
// idea of what IMDS answers; add a knob to NodeIMDS instead.
package fakeaws

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/podrole/podrole/stsdouble"
)

// STSRequest is one call the STS received, and what it answered.
type STSRequest struct {
	Form          url.Values // Action, RoleArn, RoleSessionName, ...
	Authorization string     // SigV4 header; empty for unsigned calls
	SecurityToken string     // X-Amz-Security-Token
	Status        int        // the HTTP status of the answer (0: the client gave up first)
	// Credentials the answer carried (empty unless it issued some).
	AccessKeyID, SecretAccessKey, SessionToken string
}

// Identities the STS knows besides the node's instance profile.
const (
	// Account is the account of every role and key.
	Account = "111122223333"
	// UserAccessKeyID and UserSecretAccessKey are an IAM user's long-term
	// key that every role trusts (base credentials from the environment).
	UserAccessKeyID     = "AKIAFAKEUSER00000001"
	UserSecretAccessKey = "user-secret-access-key"
	// WebIdentityIssuer is the OIDC provider whose tokens (WebIdentityToken)
	// every role trusts, for any service account.
	WebIdentityIssuer = "https://oidc.fakeaws.test"
	// UntrustedRole is a role nobody may assume: AssumeRole and
	// AssumeRoleWithWebIdentity into it answer AccessDenied.
	UntrustedRole = "arn:aws:iam::" + Account + ":role/untrusted"
)

// Roles are the roles the STS knows (see NewSTS).
var Roles = []string{
	"arn:aws:iam::" + Account + ":role/app-role",
	"arn:aws:iam::" + Account + ":role/team/app-role",
}

// STS is stsdouble, the repository's one STS stand-in (SigV4, trust, web
// identity tokens, STS's documents and errors), on loopback, behind a
// recorder: tests see the exact fields the sidecar sent and the
// credentials it was given, and can hold calls (Block). Its configuration
// trusts, for every role in Roles, the node's instance profile (NodeRole),
// the IAM user key (UserAccessKeyID) and web identity tokens from
// WebIdentityToken; roles allow 12-hour sessions.
type STS struct {
	*httptest.Server
	Double *stsdouble.Double

	mu       sync.Mutex
	requests []STSRequest
	blocked  chan struct{}
}

// NewSTS starts the STS on loopback; it is closed with the test. mod, when
// not nil, changes the configuration first (a role's trust, say).
func NewSTS(t testing.TB, mod func(*stsdouble.Config)) *STS {
	t.Helper()
	cfg := stsConfig(t)
	if mod != nil {
		mod(&cfg)
	}
	d, err := stsdouble.New(cfg, stsdouble.Options{})
	if err != nil {
		t.Fatalf("start the STS double: %v", err)
	}
	s := &STS{Double: d}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func stsConfig(t testing.TB) stsdouble.Config {
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwksFile, oidcKey().jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := stsdouble.Config{
		Account: Account,
		Keys: []stsdouble.Key{
			{AccessKeyID: NodeAccessKeyID, SecretAccessKey: NodeSecretAccessKey, SessionToken: NodeSessionToken, ARN: nodeSessionARN},
			{AccessKeyID: UserAccessKeyID, SecretAccessKey: UserSecretAccessKey, ARN: "arn:aws:iam::" + Account + ":user/base"},
		},
		OIDCProviders: []stsdouble.OIDCProvider{{Issuer: WebIdentityIssuer, JWKSFile: jwksFile}},
		Roles:         []stsdouble.Role{{ARN: UntrustedRole}},
	}
	for _, arn := range Roles {
		cfg.Roles = append(cfg.Roles, stsdouble.Role{
			ARN:                       arn,
			MaxSessionDurationSeconds: 43200,
			TrustedPrincipals:         []string{"arn:aws:iam::" + Account + ":role/" + NodeRole, "arn:aws:iam::" + Account + ":user/base"},
			WebIdentity:               []stsdouble.WebIdentityTrust{{Issuer: WebIdentityIssuer, Subject: "system:serviceaccount:*"}},
		})
	}
	return cfg
}

// Block makes every following call hang until the returned release is
// called (or the client gives up): a slow STS.
func (s *STS) Block() (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.blocked = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.blocked = nil
			s.mu.Unlock()
			close(ch)
		})
	}
}

// Requests returns the calls received so far.
func (s *STS) Requests() []STSRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]STSRequest, len(s.requests))
	for i, r := range s.requests {
		out[i] = r
		out[i].Form = maps.Clone(r.Form)
	}
	return out
}

// Creds are the credentials the n-th call (from 1) was answered with; empty
// when there was no such call or it issued none.
func (s *STS) Creds(n int) (akid, secret, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n < 1 || n > len(s.requests) {
		return "", "", ""
	}
	r := s.requests[n-1]
	return r.AccessKeyID, r.SecretAccessKey, r.SessionToken
}

// maxSTSBody bounds what the recorder reads (the double's own limit is 1 MiB).
const maxSTSBody = 2 << 20

func (s *STS) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSTSBody))
	if err != nil {
		http.Error(w, "read the request body", http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, _ := url.ParseQuery(r.URL.RawQuery)
	if post, err := url.ParseQuery(string(body)); err == nil {
		for k, v := range post {
			form[k] = append(form[k], v...)
		}
	}
	s.mu.Lock()
	s.requests = append(s.requests, STSRequest{
		Form: form, Authorization: r.Header.Get("Authorization"), SecurityToken: r.Header.Get("X-Amz-Security-Token"),
	})
	i, blocked := len(s.requests)-1, s.blocked
	s.mu.Unlock()
	if blocked != nil {
		select {
		case <-blocked:
		case <-r.Context().Done():
			return
		}
	}
	tw := &teeWriter{ResponseWriter: w}
	s.Double.ServeHTTP(tw, r)
	var doc struct {
		Result struct {
			Credentials struct {
				AccessKeyID     string `xml:"AccessKeyId"`
				SecretAccessKey string
				SessionToken    string
			}
		} `xml:",any"`
	}
	_ = xml.Unmarshal(tw.body.Bytes(), &doc) // errors have no credentials
	s.mu.Lock()
	rec := &s.requests[i]
	rec.Status = tw.status
	c := doc.Result.Credentials
	rec.AccessKeyID, rec.SecretAccessKey, rec.SessionToken = c.AccessKeyID, c.SecretAccessKey, c.SessionToken
	s.mu.Unlock()
}

// teeWriter passes an answer through and keeps a copy.
type teeWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *teeWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *teeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

// oidcSigner is the web identity provider's signing key, made once per
// test binary: ECDSA P-256, cheap to generate.
type oidcSigner struct {
	key  *ecdsa.PrivateKey
	jwks []byte
}

var oidcKey = sync.OnceValue(func() oidcSigner {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(fmt.Sprintf("generate the OIDC test key: %v", err))
	}
	enc := base64.RawURLEncoding.EncodeToString
	x, y := make([]byte, 32), make([]byte, 32)
	k.X.FillBytes(x)
	k.Y.FillBytes(y)
	set, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "kid": "fakeaws", "use": "sig", "alg": "ES256", "x": enc(x), "y": enc(y),
	}}})
	if err != nil {
		panic(fmt.Sprintf("encode the OIDC test JWKS: %v", err))
	}
	return oidcSigner{key: k, jwks: set}
})

// WebIdentityToken returns a projected service-account token for
// system:serviceaccount:NAMESPACE:NAME, valid for an hour, that every STS
// of this package accepts (audience sts.amazonaws.com, issuer
// WebIdentityIssuer).
func WebIdentityToken(t testing.TB, namespace, name string) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	now := time.Now().Unix()
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": "fakeaws", "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{
		"iss": WebIdentityIssuer, "sub": "system:serviceaccount:" + namespace + ":" + name,
		"aud": []string{"sts.amazonaws.com"}, "iat": now, "nbf": now - 60, "exp": now + 3600,
	})
	signed := enc(hdr) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	r, sig, err := ecdsa.Sign(rand.Reader, oidcKey().key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	rb, sb := make([]byte, 32), make([]byte, 32)
	r.FillBytes(rb)
	sig.FillBytes(sb)
	return signed + "." + enc(append(rb, sb...))
}

// IsolateEnv keeps the AWS SDK in a test from finding anything of the
// machine's: no credential or region variables, no config files, no IMDS
// endpoint but the ones the test passes explicitly.
func IsolateEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
		"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
		"AWS_EC2_METADATA_DISABLED", "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_STS_REGIONAL_ENDPOINTS", "AWS_DEFAULTS_MODE",
	} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
}
