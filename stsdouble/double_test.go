package stsdouble

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
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

// testRefetch is the JWKS refetch limit of the fixture: longer than any pause
// of a loaded machine, so only the fixture's clock (f.clk.Advance) opens the
// limiter and a test never waits for it.
const testRefetch = time.Minute

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
