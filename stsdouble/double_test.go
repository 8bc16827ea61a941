package stsdouble

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/podrole/podrole/internal/testenv"
)

const (
	account  = "111122223333"
	appRole  = "arn:aws:iam::111122223333:role/app"
	ciKey    = "AKIAIOSFODNN7EXAMPLE"
	ciSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	nodeKey  = "ASIANODEROLEEXAMPLE1"
	nodeSec  = "nodeRoleSecretAccessKeyEXAMPLE0000000000"
	nodeTok  = "nodeRoleSessionTokenEXAMPLE000000000000000000000000000000000000"
	issuer   = "https://oidc.podrole.test"
)

// clock is a movable test clock, near real time because the SDK signs with time.Now.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.offset) }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

type fixture struct {
	d   *Double
	srv *httptest.Server
	clk *clock
	log *bytes.Buffer
	mu  *sync.Mutex
}

// logs returns what the double logged so far.
func (f *fixture) logs() string { f.mu.Lock(); defer f.mu.Unlock(); return f.log.String() }

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// testRefetch lets JWKS tests rotate keys without waiting for the 5 s default.
const testRefetch = 100 * time.Millisecond

func newFixture(t *testing.T, mod func(*Config)) *fixture {
	t.Helper()
	cfg, err := LoadConfig("testdata/config.json")
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&cfg)
	}
	f := &fixture{clk: &clock{}, log: &bytes.Buffer{}, mu: &sync.Mutex{}}
	logger := slog.New(slog.NewTextHandler(lockedWriter{f.mu, f.log}, nil))
	f.d, err = New(cfg, Options{Now: f.clk.Now, Logger: logger, JWKSMinRefetch: testRefetch})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.d.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) client(region, ak, sk, tok string) *sts.Client {
	return sts.NewFromConfig(aws.Config{
		Region:           region,
		Credentials:      credentials.NewStaticCredentialsProvider(ak, sk, tok),
		RetryMaxAttempts: 1,
	}, func(o *sts.Options) { o.BaseEndpoint = aws.String(f.srv.URL) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// apiErr returns the STS error code and HTTP status of err.
func apiErr(t *testing.T, err error) (string, int) {
	t.Helper()
	var ae smithy.APIError
	var re *awshttp.ResponseError
	if !errors.As(err, &ae) || !errors.As(err, &re) {
		t.Fatalf("not an STS API error: %v", err)
	}
	return ae.ErrorCode(), re.HTTPStatusCode()
}

func TestAssumeRoleWithRealSDK(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client("us-east-1", ciKey, ciSecret, "")
	before := time.Now()
	out, err := c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("build-42")})
	if err != nil {
		t.Fatal(err)
	}
	cr := out.Credentials
	if !regexp.MustCompile(`^ASIA[A-Z2-7]{16}$`).MatchString(*cr.AccessKeyId) || *cr.SecretAccessKey == "" || *cr.SessionToken == "" {
		t.Fatalf("credentials look wrong: key %q", *cr.AccessKeyId)
	}
	if got, want := *out.AssumedRoleUser.Arn, "arn:aws:sts::111122223333:assumed-role/app/build-42"; got != want {
		t.Errorf("Arn = %s, want %s", got, want)
	}
	if !regexp.MustCompile(`^AROA[A-Z2-7]{17}:build-42$`).MatchString(*out.AssumedRoleUser.AssumedRoleId) {
		t.Errorf("AssumedRoleId = %s", *out.AssumedRoleUser.AssumedRoleId)
	}
	if d := cr.Expiration.Sub(before); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("default session lasts %s, want 1h", d)
	}
	if out.PackedPolicySize != nil {
		t.Errorf("PackedPolicySize present without a session policy")
	}
	issued := f.d.Issued(appRole)
	if len(issued) != 1 || issued[0].AccessKeyID != *cr.AccessKeyId || issued[0].Caller != "arn:aws:iam::111122223333:user/ci" {
		t.Fatalf("Issued = %+v", issued)
	}
	if c := f.d.Calls(appRole); c.AssumeRole != 1 || c.Denied != 0 {
		t.Errorf("Calls = %+v", c)
	}

	// The issued credentials sign GetCallerIdentity and come back as the assumed role.
	app := f.client("us-east-1", *cr.AccessKeyId, *cr.SecretAccessKey, *cr.SessionToken)
	id, err := app.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *id.Arn != *out.AssumedRoleUser.Arn || *id.Account != account || *id.UserId != *out.AssumedRoleUser.AssumedRoleId {
		t.Errorf("GetCallerIdentity = %s %s %s", *id.Arn, *id.Account, *id.UserId)
	}
	if c := f.d.Calls(appRole); c.GetCallerIdentity != 1 {
		t.Errorf("GetCallerIdentity not counted for the role: %+v", c)
	}

	// A session policy makes STS report PackedPolicySize.
	out, err = c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("p1"), Policy: aws.String(`{"Version":"2012-10-17","Statement":[]}`)})
	if err != nil {
		t.Fatal(err)
	}
	if out.PackedPolicySize == nil || *out.PackedPolicySize < 1 {
		t.Errorf("PackedPolicySize missing with a session policy")
	}
}

func TestGetCallerIdentityLongTermKeys(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name, ak, sk, tok, arn string
	}{
		{"user", ciKey, ciSecret, "", "arn:aws:iam::111122223333:user/ci"},
		{"node role", nodeKey, nodeSec, nodeTok, "arn:aws:sts::111122223333:assumed-role/node-role/i-0123456789abcdef0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := f.client("eu-west-1", tt.ak, tt.sk, tt.tok).GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
			if err != nil {
				t.Fatal(err)
			}
			if *id.Arn != tt.arn || *id.Account != account {
				t.Errorf("got %s %s, want %s", *id.Arn, *id.Account, tt.arn)
			}
		})
	}
}

func TestNodeRoleAssumesPodRole(t *testing.T) {
	f := newFixture(t, nil)
	node := f.client("us-east-1", nodeKey, nodeSec, nodeTok)
	out, err := node.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("default-web-1")})
	if err != nil {
		t.Fatal(err)
	}
	// Role chaining: an assumed-role caller may not ask for more than an hour.
	app := f.client("us-east-1", *out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken)
	long := "arn:aws:iam::111122223333:role/teams/long"
	_, err = app.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(long), RoleSessionName: aws.String("chain"), DurationSeconds: aws.Int32(7200)})
	if code, status := apiErr(t, err); code != "ValidationError" || status != 400 || !strings.Contains(err.Error(), "role chaining") {
		t.Fatalf("chained 2h: %s %d %v", code, status, err)
	}
	out, err = app.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(long), RoleSessionName: aws.String("chain")})
	if err != nil {
		t.Fatal(err)
	}
	// The role's path is not part of the assumed-role ARN.
	if got := *out.AssumedRoleUser.Arn; got != "arn:aws:sts::111122223333:assumed-role/long/chain" {
		t.Errorf("Arn = %s", got)
	}
}

func TestAssumeRoleErrors(t *testing.T) {
	f := newFixture(t, nil)
	good := f.client("us-east-1", ciKey, ciSecret, "")
	issued, err := good.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("to-expire")})
	if err != nil {
		t.Fatal(err)
	}
	ic := issued.Credentials
	in := func(role, session string) *sts.AssumeRoleInput {
		return &sts.AssumeRoleInput{RoleArn: aws.String(role), RoleSessionName: aws.String(session)}
	}
	tests := []struct {
		name   string
		client *sts.Client
		input  *sts.AssumeRoleInput
		code   string
		status int
		msg    string
	}{
		{"wrong secret", f.client("us-east-1", ciKey, "not-the-secret", ""), in(appRole, "s1"), "SignatureDoesNotMatch", 403, "does not match"},
		{"unknown key", f.client("us-east-1", "AKIAUNKNOWNEXAMPLE00", ciSecret, ""), in(appRole, "s1"), "InvalidClientTokenId", 403, "security token included in the request is invalid"},
		{"node key without its token", f.client("us-east-1", nodeKey, nodeSec, ""), in(appRole, "s1"), "InvalidClientTokenId", 403, ""},
		{"node key with another token", f.client("us-east-1", nodeKey, nodeSec, "forged"), in(appRole, "s1"), "InvalidClientTokenId", 403, ""},
		{"issued key with wrong token", f.client("us-east-1", *ic.AccessKeyId, *ic.SecretAccessKey, "forged"), in(appRole, "s1"), "InvalidClientTokenId", 403, ""},
		{"region outside config", f.client("ap-south-1", ciKey, ciSecret, ""), in(appRole, "s1"), "SignatureDoesNotMatch", 403, "valid region"},
		{"untrusted caller", good, in("arn:aws:iam::111122223333:role/other", "s1"), "AccessDenied", 403, "User: arn:aws:iam::111122223333:user/ci is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::111122223333:role/other"},
		{"unknown role", good, in("arn:aws:iam::111122223333:role/nope", "s1"), "AccessDenied", 403, "not authorized"},
		{"other account", good, in("arn:aws:iam::444455556666:role/app", "s1"), "AccessDenied", 403, ""},
		{"malformed role arn", good, in("arn:aws:iam::1111:rolex/app", "s1"), "ValidationError", 400, "is invalid"},
		{"short role arn", good, in("arn:aws:iam::1:r", "s1"), "ValidationError", 400, "roleArn"},
		{"session name too short", good, in(appRole, "s"), "ValidationError", 400, "greater than or equal to 2"},
		{"session name too long", good, in(appRole, strings.Repeat("s", 65)), "ValidationError", 400, "less than or equal to 64"},
		{"session name bad chars", good, in(appRole, "bad name!"), "ValidationError", 400, `[\w+=,.@-]*`},
		{"duration below 900", good, &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(600)}, "ValidationError", 400, "greater than or equal to 900"},
		{"duration above role max", good, &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(7200)}, "ValidationError", 400, "MaxSessionDuration"},
		{"duration above 12h", good, &sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::111122223333:role/teams/long"), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(43201)}, "ValidationError", 400, "less than or equal to 43200"},
	}
	partner := "arn:aws:iam::111122223333:role/partner"
	node := f.client("us-east-1", nodeKey, nodeSec, nodeTok)
	tests = append(tests,
		struct {
			name   string
			client *sts.Client
			input  *sts.AssumeRoleInput
			code   string
			status int
			msg    string
		}{"external id missing", node, in(partner, "s1"), "AccessDenied", 403, "assumed-role/node-role/i-0123456789abcdef0 is not authorized"},
		struct {
			name   string
			client *sts.Client
			input  *sts.AssumeRoleInput
			code   string
			status int
			msg    string
		}{"external id wrong", node, &sts.AssumeRoleInput{RoleArn: aws.String(partner), RoleSessionName: aws.String("s1"), ExternalId: aws.String("guess")}, "AccessDenied", 403, ""},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.client.AssumeRole(ctx(t), tt.input)
			if err == nil {
				t.Fatal("call succeeded")
			}
			code, status := apiErr(t, err)
			if code != tt.code || status != tt.status || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("got %s %d (%v), want %s %d containing %q", code, status, err, tt.code, tt.status, tt.msg)
			}
		})
	}

	t.Run("external id right", func(t *testing.T) {
		_, err := node.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(partner), RoleSessionName: aws.String("s1"), ExternalId: aws.String("podrole-ext-1")})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("expired issued credentials", func(t *testing.T) {
		f.clk.Advance(61 * time.Minute) // the SDK still signs with real time: the skew check must not trip first
		defer f.clk.Advance(-61 * time.Minute)
		_, err := f.client("us-east-1", *ic.AccessKeyId, *ic.SecretAccessKey, *ic.SessionToken).GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
		if code, status := apiErr(t, err); code != "ExpiredToken" || status != 400 {
			t.Fatalf("got %s %d, want ExpiredToken 400", code, status)
		}
	})
	t.Run("signature from the past", func(t *testing.T) {
		f.clk.Advance(16 * time.Minute)
		defer f.clk.Advance(-16 * time.Minute)
		_, err := good.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
		if code, status := apiErr(t, err); code != "SignatureDoesNotMatch" || status != 403 || !strings.Contains(err.Error(), "Signature expired") {
			t.Fatalf("got %s %d %v", code, status, err)
		}
	})
	t.Run("signature from the future", func(t *testing.T) {
		f.clk.Advance(-16 * time.Minute)
		defer f.clk.Advance(16 * time.Minute)
		_, err := good.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
		if code, _ := apiErr(t, err); code != "SignatureDoesNotMatch" || !strings.Contains(err.Error(), "not yet current") {
			t.Fatalf("got %s %v", code, err)
		}
	})
	if got := f.d.Calls(appRole).Denied; got == 0 {
		t.Errorf("denied calls about the app role were not counted")
	}
	if got := f.d.Calls("arn:aws:iam::111122223333:role/nope"); got != (RoleCalls{}) {
		t.Errorf("unknown role got counters: %+v", got)
	}
}

// post sends a raw form to the double and returns status and body.
func post(t *testing.T, url string, form string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), http.MethodPost, url, strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestWireFormat(t *testing.T) {
	f := newFixture(t, nil)
	uuid := `[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}`
	errRE := func(typ, code string) *regexp.Regexp {
		return regexp.MustCompile(`^<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>` + typ + `</Type><Code>` + code + `</Code><Message>[^<]+</Message></Error><RequestId>` + uuid + `</RequestId></ErrorResponse>$`)
	}
	tests := []struct {
		name   string
		form   string
		hdr    map[string]string
		status int
		re     *regexp.Regexp
	}{
		{"unsigned AssumeRole", "Action=AssumeRole&Version=2011-06-15&RoleArn=" + appRole + "&RoleSessionName=x1", nil, 403, errRE("Sender", "MissingAuthenticationToken")},
		{"unsigned GetCallerIdentity", "Action=GetCallerIdentity&Version=2011-06-15", nil, 403, errRE("Sender", "MissingAuthenticationToken")},
		{"unknown action", "Action=GetSessionTokenX&Version=2011-06-15", nil, 400, errRE("Sender", "InvalidAction")},
		{"wrong version", "Action=GetCallerIdentity&Version=2010-01-01", nil, 400, errRE("Sender", "InvalidAction")},
		{"no action", "Version=2011-06-15", nil, 400, errRE("Sender", "MissingAction")},
		{"bad algorithm", "Action=GetCallerIdentity&Version=2011-06-15", map[string]string{"Authorization": "AWS3 foo"}, 400, errRE("Sender", "IncompleteSignature")},
		{"no signature field", "Action=GetCallerIdentity&Version=2011-06-15", map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261128/us-east-1/sts/aws4_request, SignedHeaders=host", "X-Amz-Date": "20261128T000000Z"}, 400, errRE("Sender", "IncompleteSignature")},
		{"wrong service scope", "Action=GetCallerIdentity&Version=2011-06-15", map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/" + time.Now().UTC().Format("20060102") + "/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date, Signature=00", "X-Amz-Date": time.Now().UTC().Format(amzDateFmt)}, 403, errRE("Sender", "SignatureDoesNotMatch")},
		{"web identity without token", "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=" + appRole + "&RoleSessionName=x1", nil, 400, errRE("Sender", "ValidationError")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, hdr := post(t, f.srv.URL+"/", tt.form, tt.hdr)
			if status != tt.status || !tt.re.MatchString(body) {
				t.Errorf("got %d %s", status, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "text/xml" {
				t.Errorf("Content-Type %q", ct)
			}
			if hdr.Get("X-Amzn-Requestid") == "" {
				t.Errorf("no x-amzn-RequestId header")
			}
		})
	}

	t.Run("success documents", func(t *testing.T) {
		// Capture the raw AssumeRole answer through the SDK's HTTP client.
		var raw bytes.Buffer
		c := sts.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(ciKey, ciSecret, ""), RetryMaxAttempts: 1,
			HTTPClient: recordingClient{&raw}}, func(o *sts.Options) { o.BaseEndpoint = aws.String(f.srv.URL) })
		if _, err := c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("wire")}); err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`^<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials><AccessKeyId>ASIA[A-Z2-7]{16}</AccessKeyId><SecretAccessKey>[A-Za-z0-9+/=]{40}</SecretAccessKey><SessionToken>[A-Za-z0-9+/=]+</SessionToken><Expiration>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>AROA[A-Z2-7]{17}:wire</AssumedRoleId><Arn>arn:aws:sts::111122223333:assumed-role/app/wire</Arn></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>` + uuid + `</RequestId></ResponseMetadata></AssumeRoleResponse>$`)
		if !re.MatchString(raw.String()) {
			t.Errorf("AssumeRole body:\n%s", raw.String())
		}
		raw.Reset()
		if _, err := c.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{}); err != nil {
			t.Fatal(err)
		}
		re = regexp.MustCompile(`^<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult><Arn>arn:aws:iam::111122223333:user/ci</Arn><UserId>AIDA[A-Z2-7]{17}</UserId><Account>111122223333</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>` + uuid + `</RequestId></ResponseMetadata></GetCallerIdentityResponse>$`)
		if !re.MatchString(raw.String()) {
			t.Errorf("GetCallerIdentity body:\n%s", raw.String())
		}
	})

	t.Run("presigned GET", func(t *testing.T) {
		// aws-iam-authenticator style: a presigned GetCallerIdentity URL fetched with GET.
		pc := sts.NewPresignClient(f.client("us-east-1", ciKey, ciSecret, ""))
		pr, err := pc.PresignGetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequestWithContext(ctx(t), pr.Method, pr.URL, nil)
		for k, v := range pr.SignedHeader {
			if !strings.EqualFold(k, "host") {
				req.Header[k] = v
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "<Arn>arn:aws:iam::111122223333:user/ci</Arn>") {
			t.Fatalf("presigned call: %d %s", resp.StatusCode, b)
		}
		// Tampering with the signed query breaks the signature.
		req, _ = http.NewRequestWithContext(ctx(t), pr.Method, strings.Replace(pr.URL, "Version=2011-06-15", "Version=2011-06-15&Extra=1", 1), nil)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("tampered presigned URL: status %d, want 403", resp.StatusCode)
		}
	})
}

type recordingClient struct{ buf *bytes.Buffer }

func (c recordingClient) Do(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.buf.Write(b)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, err
}

// signer makes web identity tokens with the testdata keys.
type signer struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
}

func loadSigner(t *testing.T) signer {
	t.Helper()
	load := func(name string) any {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	return signer{rsa: load("oidc-rsa.key").(*rsa.PrivateKey), ec: load("oidc-ec.key").(*ecdsa.PrivateKey)}
}

func (s signer) token(t *testing.T, alg, kid string, claims map[string]any) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	hb, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"})
	cb, _ := json.Marshal(claims)
	signed := enc(hb) + "." + enc(cb)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	switch alg {
	case "RS256":
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, s.rsa, crypto.SHA256, sum[:]); err != nil {
			t.Fatal(err)
		}
	case "ES256":
		r, ss, err := ecdsa.Sign(rand.Reader, s.ec, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = append(pad32(r), pad32(ss)...)
	}
	return signed + "." + enc(sig)
}

func pad32(n *big.Int) []byte {
	b := make([]byte, 32)
	n.FillBytes(b)
	return b
}

func claims(mod func(map[string]any)) map[string]any {
	now := time.Now().Unix()
	c := map[string]any{"iss": issuer, "sub": "system:serviceaccount:default:web", "aud": []string{"sts.amazonaws.com"}, "iat": now, "nbf": now - 10, "exp": now + 3600}
	if mod != nil {
		mod(c)
	}
	return c
}

func TestAssumeRoleWithWebIdentity(t *testing.T) {
	f := newFixture(t, nil)
	s := loadSigner(t)
	anon := sts.NewFromConfig(aws.Config{Region: "us-east-1", RetryMaxAttempts: 1}, func(o *sts.Options) { o.BaseEndpoint = aws.String(f.srv.URL) })
	call := func(role, tok string) (*sts.AssumeRoleWithWebIdentityOutput, error) {
		return anon.AssumeRoleWithWebIdentity(ctx(t), &sts.AssumeRoleWithWebIdentityInput{RoleArn: aws.String(role), RoleSessionName: aws.String("default-web"), WebIdentityToken: aws.String(tok)})
	}
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run("happy "+alg, func(t *testing.T) {
			kid := map[string]string{"RS256": "rsa-1", "ES256": "ec-1"}[alg]
			out, err := call(appRole, s.token(t, alg, kid, claims(nil)))
			if err != nil {
				t.Fatal(err)
			}
			if *out.SubjectFromWebIdentityToken != "system:serviceaccount:default:web" || *out.Audience != "sts.amazonaws.com" ||
				*out.Provider != "arn:aws:iam::111122223333:oidc-provider/oidc.podrole.test" ||
				*out.AssumedRoleUser.Arn != "arn:aws:sts::111122223333:assumed-role/app/default-web" {
				t.Errorf("got sub %s aud %s provider %s arn %s", *out.SubjectFromWebIdentityToken, *out.Audience, *out.Provider, *out.AssumedRoleUser.Arn)
			}
			// The issued credentials are usable against the double.
			c := f.client("us-east-1", *out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken)
			id, err := c.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
			if err != nil || *id.Arn != *out.AssumedRoleUser.Arn {
				t.Fatalf("GetCallerIdentity: %v", err)
			}
		})
	}
	if got := f.d.Calls(appRole).AssumeRoleWithWebIdentity; got != 2 {
		t.Errorf("AssumeRoleWithWebIdentity count %d, want 2", got)
	}
	good := s.token(t, "RS256", "rsa-1", claims(nil))
	tampered := strings.Split(good, ".")
	tampered[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"` + issuer + `","sub":"system:serviceaccount:kube-system:admin","aud":"sts.amazonaws.com","exp":9999999999}`))
	tests := []struct {
		name, role, token, code string
		status                  int
	}{
		{"wrong audience", appRole, s.token(t, "RS256", "rsa-1", claims(func(c map[string]any) { c["aud"] = "kubernetes" })), "InvalidIdentityToken", 400},
		{"expired", appRole, s.token(t, "RS256", "rsa-1", claims(func(c map[string]any) { c["exp"] = time.Now().Unix() - 5 })), "ExpiredTokenException", 400},
		{"no exp", appRole, s.token(t, "RS256", "rsa-1", claims(func(c map[string]any) { delete(c, "exp") })), "InvalidIdentityToken", 400},
		{"not yet valid", appRole, s.token(t, "RS256", "rsa-1", claims(func(c map[string]any) { c["nbf"] = time.Now().Unix() + 600 })), "InvalidIdentityToken", 400},
		{"unknown issuer", appRole, s.token(t, "RS256", "rsa-1", claims(func(c map[string]any) { c["iss"] = "https://evil.example" })), "InvalidIdentityToken", 400},
		{"tampered claims", appRole, strings.Join(tampered, "."), "InvalidIdentityToken", 400},
		{"unknown kid", appRole, s.token(t, "RS256", "rsa-2", claims(nil)), "InvalidIdentityToken", 400},
		{"alg none", appRole, base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + strings.Split(good, ".")[1] + ".", "InvalidIdentityToken", 400},
		{"not a jwt", appRole, "not-a-jwt", "InvalidIdentityToken", 400},
		{"subject not trusted", appRole, s.token(t, "ES256", "ec-1", claims(func(c map[string]any) { c["sub"] = "system:serviceaccount:kube-system:web" })), "AccessDenied", 403},
		{"role without web trust", "arn:aws:iam::111122223333:role/other", good, "AccessDenied", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := call(tt.role, tt.token)
			if err == nil {
				t.Fatal("call succeeded")
			}
			if code, status := apiErr(t, err); code != tt.code || status != tt.status {
				t.Errorf("got %s %d (%v), want %s %d", code, status, err, tt.code, tt.status)
			}
		})
	}
	if strings.Contains(f.logs(), strings.Split(good, ".")[2]) {
		t.Errorf("a token signature leaked into the logs")
	}
}

// TestJWKSFromURL serves the JWKS over TLS with a bearer token, as the
// kube-apiserver's /openid/v1/jwks does, and rotates keys behind it.
func TestJWKSFromURL(t *testing.T) {
	s := loadSigner(t)
	jwksBytes, err := os.ReadFile("testdata/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	keys := jwksBytes
	var fetches int
	idp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/openid/v1/jwks" || r.Header.Get("Authorization") != "Bearer sa-token" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		fetches++
		w.Write(keys)
	}))
	defer idp.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: idp.Certificate().Raw}), 0o644)
	tokFile := filepath.Join(dir, "token")
	os.WriteFile(tokFile, []byte("sa-token\n"), 0o600)

	f := newFixture(t, func(c *Config) {
		c.OIDCProviders[0].JWKSFile = ""
		c.OIDCProviders[0].JWKSURL = idp.URL + "/openid/v1/jwks"
		c.OIDCProviders[0].CAFile = ca
		c.OIDCProviders[0].BearerTokenFile = tokFile
	})
	anon := sts.NewFromConfig(aws.Config{Region: "us-east-1", RetryMaxAttempts: 1}, func(o *sts.Options) { o.BaseEndpoint = aws.String(f.srv.URL) })
	call := func(tok string) error {
		_, err := anon.AssumeRoleWithWebIdentity(ctx(t), &sts.AssumeRoleWithWebIdentityInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("web"), WebIdentityToken: aws.String(tok)})
		return err
	}
	if err := call(s.token(t, "RS256", "rsa-1", claims(nil))); err != nil {
		t.Fatal(err)
	}
	if err := call(s.token(t, "ES256", "ec-1", claims(nil))); err != nil {
		t.Fatal(err)
	}
	if fetches != 1 {
		t.Errorf("JWKS fetched %d times for two tokens with known keys, want 1", fetches)
	}

	// A wrong bearer token: the IdP refuses, STS says it could not reach it.
	os.WriteFile(tokFile, []byte("stale"), 0o600)
	time.Sleep(testRefetch + 50*time.Millisecond) // let the refetch limiter allow another fetch
	err = call(s.token(t, "RS256", "rotated", claims(nil)))
	if code, status := apiErr(t, err); code != "IDPCommunicationError" || status != 400 {
		t.Errorf("IdP refusing: got %s %d", code, status)
	}
	// Key rotation: the IdP now publishes "rotated"; a token naming it triggers a refetch.
	os.WriteFile(tokFile, []byte("sa-token"), 0o600)
	var set map[string][]map[string]string
	json.Unmarshal(jwksBytes, &set)
	set["keys"][0]["kid"] = "rotated"
	mu.Lock()
	keys, _ = json.Marshal(set)
	mu.Unlock()
	time.Sleep(testRefetch + 50*time.Millisecond)
	if err := call(s.token(t, "RS256", "rotated", claims(nil))); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
}

func TestOutageLatencyAndAdmin(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client("us-east-1", ciKey, ciSecret, "")
	adminPost := func(path string) int {
		resp, err := http.Post(f.srv.URL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	if st := adminPost("/_double/outage?on=1"); st != 200 {
		t.Fatalf("outage on: %d", st)
	}
	_, err := c.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
	if code, status := apiErr(t, err); code != "ServiceUnavailable" || status != 503 {
		t.Errorf("outage 503: got %s %d", code, status)
	}
	adminPost("/_double/outage?on=1&mode=close")
	_, err = c.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
	var re *awshttp.ResponseError
	if err == nil || (errors.As(err, &re) && re.HTTPStatusCode() != 0) {
		t.Errorf("outage close: want a transport error without an HTTP answer, got %v", err)
	}
	adminPost("/_double/outage?on=0")
	if _, err := c.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{}); err != nil {
		t.Fatalf("after outage: %v", err)
	}

	// Latency: a caller with a deadline shorter than the injected delay gives up.
	adminPost("/_double/latency?ms=2000")
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = c.GetCallerIdentity(short, &sts.GetCallerIdentityInput{})
	cancel()
	if err == nil {
		t.Errorf("latency 2s: a 200ms deadline call succeeded")
	}
	adminPost("/_double/latency?ms=0")

	for _, bad := range []string{"/_double/latency?ms=x", "/_double/outage?on=maybe", "/_double/outage?on=1&mode=tea", "/_double/lifetime?seconds=-1"} {
		if st := adminPost(bad); st != 400 {
			t.Errorf("%s: status %d, want 400", bad, st)
		}
	}

	// Lifetime cap and Expire, for rotation tests.
	adminPost("/_double/lifetime?seconds=120")
	out, err := c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("short")})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(*out.Credentials.Expiration); d > 121*time.Second || d < 100*time.Second {
		t.Errorf("capped lifetime %s, want ~2m", d)
	}
	if st := adminPost("/_double/expire?access_key_id=" + *out.Credentials.AccessKeyId); st != 200 {
		t.Fatalf("expire: %d", st)
	}
	_, err = f.client("us-east-1", *out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken).GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
	if code, _ := apiErr(t, err); code != "ExpiredToken" {
		t.Errorf("after expire: %s", code)
	}
	if st := adminPost("/_double/expire?access_key_id=ASIANOPE"); st != 404 {
		t.Errorf("expire unknown: %d", st)
	}

	if resp, err := http.Get(f.srv.URL + "/_double/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v", err)
	} else {
		resp.Body.Close()
	}
	resp, err := http.Get(f.srv.URL + "/_double/calls")
	if err != nil {
		t.Fatal(err)
	}
	var stats Stats
	json.NewDecoder(resp.Body).Decode(&stats)
	resp.Body.Close()
	if stats.Roles[appRole].AssumeRole != 1 || stats.Errors["ServiceUnavailable"] != 1 || stats.Errors["ExpiredToken"] != 1 {
		t.Errorf("calls = %+v", stats)
	}
	resp, err = http.Get(f.srv.URL + "/_double/issued?role=" + appRole)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var issued []Issued
	if err := json.Unmarshal(b, &issued); err != nil || len(issued) != 1 || issued[0].AccessKeyID != *out.Credentials.AccessKeyId {
		t.Errorf("issued = %s (%v)", b, err)
	}
	if strings.Contains(string(b), *out.Credentials.SecretAccessKey) || strings.Contains(string(b), *out.Credentials.SessionToken) {
		t.Errorf("/_double/issued leaks secrets")
	}
	adminPost("/_double/reset")
	if s := f.d.Stats(); s.Requests != 0 || len(s.Roles) != 0 {
		t.Errorf("after reset: %+v", s)
	}
	for _, secret := range []string{ciSecret, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken} {
		if strings.Contains(f.logs(), secret) {
			t.Errorf("a secret leaked into the logs")
		}
	}
}

func TestConfigValidate(t *testing.T) {
	base, err := LoadConfig("testdata/config.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		mod  func(*Config)
		want string
	}{
		"account":             {func(c *Config) { c.Account = "1234" }, "12 digits"},
		"role arn":            {func(c *Config) { c.Roles[0].ARN = "arn:aws:iam::111122223333:user/app" }, "not a role ARN"},
		"role other account":  {func(c *Config) { c.Roles[0].ARN = "arn:aws:iam::444455556666:role/app" }, "not in account"},
		"max session":         {func(c *Config) { c.Roles[0].MaxSessionDurationSeconds = 60 }, "3600..43200"},
		"bad principal":       {func(c *Config) { c.Roles[0].TrustedPrincipals = []string{"node-role"} }, "not a principal ARN"},
		"unknown issuer":      {func(c *Config) { c.Roles[0].WebIdentity[0].Issuer = "https://x" }, "not in oidc_providers"},
		"empty subject":       {func(c *Config) { c.Roles[0].WebIdentity[0].Subject = "" }, "subject is empty"},
		"http issuer":         {func(c *Config) { c.OIDCProviders[0].Issuer = "http://oidc" }, "https://"},
		"both jwks":           {func(c *Config) { c.OIDCProviders[0].JWKSURL = "https://x/jwks" }, "exactly one"},
		"key without secret":  {func(c *Config) { c.Keys[0].SecretAccessKey = "" }, "secret_access_key is empty"},
		"duplicate key":       {func(c *Config) { c.Keys[1].AccessKeyID = c.Keys[0].AccessKeyID }, "listed twice"},
		"key arn":             {func(c *Config) { c.Keys[0].ARN = "ci" }, "not a principal ARN"},
		"negative clock skew": {func(c *Config) { c.MaxClockSkewSeconds = -1 }, "negative"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := base
			c.Roles = append([]Role(nil), base.Roles...)
			c.Roles[0].WebIdentity = append([]WebIdentityTrust(nil), base.Roles[0].WebIdentity...)
			c.Keys = append([]Key(nil), base.Keys...)
			c.OIDCProviders = append([]OIDCProvider(nil), base.OIDCProviders...)
			tt.mod(&c)
			_, err := New(c, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), ciSecret) {
				t.Errorf("error leaks a secret")
			}
		})
	}
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.json")
	os.WriteFile(typo, []byte(`{"account":"111122223333","roles":[],"trusted":[]}`), 0o644)
	if _, err := LoadConfig(typo); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestTrustMatching(t *testing.T) {
	tests := []struct {
		entry, caller string
		want          bool
	}{
		{"arn:aws:iam::111122223333:role/node-role", "arn:aws:sts::111122223333:assumed-role/node-role/i-1", true},
		{"arn:aws:iam::111122223333:role/path/node-role", "arn:aws:sts::111122223333:assumed-role/node-role/i-1", true},
		{"arn:aws:iam::111122223333:role/node-role", "arn:aws:sts::111122223333:assumed-role/node-role-2/i-1", false},
		{"arn:aws:iam::111122223333:role/node-role", "arn:aws:sts::444455556666:assumed-role/node-role/i-1", false},
		{"arn:aws:iam::111122223333:role/node-role", "arn:aws:iam::111122223333:user/node-role", false},
		{"arn:aws:iam::111122223333:user/ci", "arn:aws:iam::111122223333:user/ci", true},
		{"arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:user/anyone", true},
		{"arn:aws:iam::111122223333:root", "arn:aws:iam::444455556666:user/anyone", false},
		{"arn:aws:sts::111122223333:assumed-role/r/s1", "arn:aws:sts::111122223333:assumed-role/r/s2", false},
		{"*", "arn:aws:iam::444455556666:user/anyone", true},
	}
	for _, tt := range tests {
		p, err := parsePrincipal(tt.caller)
		if err != nil {
			t.Fatal(err)
		}
		if got := trusts(tt.entry, p); got != tt.want {
			t.Errorf("trusts(%s, %s) = %v", tt.entry, tt.caller, got)
		}
	}
	for pattern, cases := range map[string]map[string]bool{
		"system:serviceaccount:default:*": {"system:serviceaccount:default:web": true, "system:serviceaccount:default2:web": false},
		"system:serviceaccount:ns:sa-?":   {"system:serviceaccount:ns:sa-1": true, "system:serviceaccount:ns:sa-10": false},
		"a.b":                             {"a.b": true, "axb": false},
	} {
		for s, want := range cases {
			if got := globMatch(pattern, s); got != want {
				t.Errorf("globMatch(%q, %q) = %v", pattern, s, got)
			}
		}
	}
}

func ExampleDouble() {
	cfg := Config{
		Account: "111122223333",
		Keys:    []Key{{AccessKeyID: "AKIAIOSFODNN7EXAMPLE", SecretAccessKey: "secret", ARN: "arn:aws:iam::111122223333:user/ci"}},
		Roles:   []Role{{ARN: "arn:aws:iam::111122223333:role/app", TrustedPrincipals: []string{"arn:aws:iam::111122223333:user/ci"}}},
	}
	d, err := New(cfg, Options{})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(d.Handler()) // STS on "/", knobs under /_double/
	defer srv.Close()
	fmt.Println(d.Roles())
	// Output: [arn:aws:iam::111122223333:role/app]
}

// TestBotocoreParsesResponses: a second, independent STS client (the AWS CLI
// v2's botocore) accepts the double's signatures checks and parses its XML
// answers and errors.
func TestBotocoreParsesResponses(t *testing.T) {
	const aws = "/usr/bin/aws"
	_, err := os.Stat(aws)
	testenv.Need(t, err == nil, aws, "Debian's awscli (scripts/deps.sh)")
	f := newFixture(t, nil)
	run := func(secret string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx(t), aws, append(args, "--endpoint-url", f.srv.URL, "--output", "json")...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
			"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=" + ciKey, "AWS_SECRET_ACCESS_KEY=" + secret, "AWS_PAGER=", "AWS_MAX_ATTEMPTS=1"}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run(ciSecret, "sts", "get-caller-identity")
	if err != nil || !strings.Contains(out, `"Arn": "arn:aws:iam::111122223333:user/ci"`) {
		t.Fatalf("get-caller-identity: %v\n%s", err, out)
	}
	out, err = run(ciSecret, "sts", "assume-role", "--role-arn", appRole, "--role-session-name", "cli")
	if err != nil || !strings.Contains(out, `"Arn": "arn:aws:sts::111122223333:assumed-role/app/cli"`) || !strings.Contains(out, `"AccessKeyId": "ASIA`) {
		t.Fatalf("assume-role: %v\n%s", err, out)
	}
	out, err = run("wrong", "sts", "get-caller-identity")
	if err == nil || !strings.Contains(out, "(SignatureDoesNotMatch)") {
		t.Errorf("wrong secret: %v\n%s", err, out)
	}
	out, err = run(ciSecret, "sts", "assume-role", "--role-arn", "arn:aws:iam::111122223333:role/other", "--role-session-name", "cli")
	if err == nil || !strings.Contains(out, "(AccessDenied)") || !strings.Contains(out, "is not authorized to perform: sts:AssumeRole") {
		t.Errorf("untrusted: %v\n%s", err, out)
	}
}

// BenchmarkAssumeRole is one signed AssumeRole through the real SDK client,
// SigV4 verification and all, over loopback.
func BenchmarkAssumeRole(b *testing.B) {
	cfg, err := LoadConfig("testdata/config.json")
	if err != nil {
		b.Fatal(err)
	}
	d, err := New(cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	c := sts.NewFromConfig(aws.Config{Region: "us-east-1", RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(ciKey, ciSecret, "")},
		func(o *sts.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	in := &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("bench")}
	for b.Loop() {
		if _, err := c.AssumeRole(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}

// Long runs must not grow without bound: past maxSessions, sessions expired
// for over an hour are dropped and their keys stop working.
func TestSessionsPruned(t *testing.T) {
	f := newFixture(t, nil)
	role := f.d.roles[appRole]
	old := f.d.issue(role, "old", 900, "AssumeRole", "test")
	f.clk.Advance(3 * time.Hour)
	defer f.clk.Advance(-3 * time.Hour)
	for i := 0; i < maxSessions; i++ {
		f.d.issue(role, "new", 900, "AssumeRole", "test")
	}
	is := f.d.Issued(appRole)
	if len(is) != maxSessions || is[0].SessionName != "new" {
		t.Fatalf("%d sessions kept, first %q", len(is), is[0].SessionName)
	}
	if f.d.Expire(old.AccessKeyID) {
		t.Errorf("the old session is still known")
	}
}
