package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/internal/testenv"
	"github.com/podrole/podrole/stsdouble"
)

// Identities shared by testdata/sts-double.json and testdata/node-imds.json.
const (
	account      = "111122223333"
	appRoleARN   = "arn:aws:iam::111122223333:role/app"
	appRole      = "app"
	nodeRole     = "node-role"
	nodeARN      = "arn:aws:sts::111122223333:assumed-role/node-role/i-0123456789abcdef0"
	nodeKeyID    = "ASIANODEROLEEXAMPLE1"
	nodeSecret   = "nodeRoleSecretAccessKeyEXAMPLE0000000000"
	nodeToken    = "nodeRoleSessionTokenEXAMPLE000000000000000000000000000000000000"
	userDataMark = "NODE-USERDATA-MARKER-7f3a"
	region       = "us-east-1"
	nodeZone     = "us-east-1c" // what the node IMDS stand-in says
	flagZone     = "us-east-1a" // what --availability-zone says
)

// sidecarBuild is the binary TestMain built (or PODROLE_SIDECAR_BIN), or why
// it could not; set once before any test runs.
var sidecarBuild struct {
	path string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podrole-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if p := os.Getenv("PODROLE_SIDECAR_BIN"); p != "" {
		sidecarBuild.path = p
		if !filepath.IsAbs(p) { // relative to the module root, like `make build`'s bin/
			root, err := moduleRoot()
			sidecarBuild.path, sidecarBuild.err = filepath.Join(root, p), err
		}
	} else {
		sidecarBuild.path, sidecarBuild.err = buildSidecar(dir)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func moduleRoot() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(gomod))), nil
}

// buildSidecar compiles ./sidecar of this module into dir.
func buildSidecar(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := filepath.Join(dir, "podrole-sidecar")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./sidecar")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./sidecar: %w\n%s", err, b)
	}
	return out, nil
}

func sidecarBin(t testing.TB) string {
	t.Helper()
	if sidecarBuild.err != nil {
		t.Fatalf("podrole-sidecar could not be built: %v", sidecarBuild.err)
	}
	return sidecarBuild.path
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects a subprocess's output for later inspection.
type syncBuffer = testenv.Buffer

// stsServer is stsdouble on loopback with the suite's config.
type stsServer struct {
	*stsdouble.Double
	URL string
}

func startSTS(t testing.TB) *stsServer {
	t.Helper()
	cfg, err := stsdouble.LoadConfig("testdata/sts-double.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := stsdouble.New(cfg, stsdouble.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	return &stsServer{Double: d, URL: srv.URL}
}

// issued lists the credentials the double issued for the app role to one
// sidecar (each runs with its own session name), oldest first.
func (s *stsServer) issued(sc *sidecar) []stsdouble.Issued {
	var out []stsdouble.Issued
	for _, i := range s.Issued(appRoleARN) {
		if i.SessionName == sc.session {
			out = append(out, i)
		}
	}
	return out
}

// latest returns the newest credentials the double issued to sc.
func (s *stsServer) latest(t testing.TB, sc *sidecar) stsdouble.Issued {
	t.Helper()
	is := s.issued(sc)
	if len(is) == 0 {
		t.Fatalf("the double issued no credentials for the app role with session %s", sc.session)
	}
	return is[len(is)-1]
}

// nodeIMDS is amazon-ec2-metadata-mock serving the node role and user-data,
// behind a recording proxy so tests see every path the sidecar asked the node for.
type nodeIMDS struct {
	URL     string // the recording proxy: what the sidecar is given
	MockURL string // the mock itself
	mu      sync.Mutex
	paths   []string // the agent's own requests
	checks  []string // the node IMDS check's (User-Agent checkUserAgent)
}

// checkUserAgent is the User-Agent of the agent's node IMDS check
// (--check-node-imds): an app's view of reachability, sent unmarked.
const checkUserAgent = "podrole-agent node-imds-check"

func (n *nodeIMDS) requested() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.paths...)
}

func (n *nodeIMDS) checked() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.checks...)
}

func mockBinary(t testing.TB) string {
	t.Helper()
	p := filepath.Join(testenv.CacheDir(), "bin", "ec2-metadata-mock")
	_, err := os.Stat(p)
	testenv.Need(t, err == nil, p, "run scripts/build-tools.sh (builds amazon-ec2-metadata-mock v1.13.0 from the Go module proxy)")
	return p
}

func startNodeIMDS(t testing.TB) *nodeIMDS {
	t.Helper()
	bin := mockBinary(t)
	home := t.TempDir()
	cfg, err := filepath.Abs("testdata/node-imds.json")
	if err != nil {
		t.Fatal(err)
	}
	var mockURL string
	var lastErr error
	for attempt := 0; attempt < 3 && mockURL == ""; attempt++ {
		port := freePort(t)
		cmd := exec.Command(bin, "--hostname=127.0.0.1", "--port="+strconv.Itoa(port), "--config-file="+cfg)
		cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
		cmd.Dir = home
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start ec2-metadata-mock: %v", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-done
		})
		u := "http://127.0.0.1:" + strconv.Itoa(port)
		if lastErr = waitHTTP(u+"/latest/meta-data/instance-id", done, 10*time.Second); lastErr == nil {
			mockURL = u
		} else {
			lastErr = fmt.Errorf("%w; mock output:\n%s", lastErr, out.String())
		}
	}
	if mockURL == "" {
		t.Fatalf("ec2-metadata-mock did not come up: %v", lastErr)
	}
	n := &nodeIMDS{MockURL: mockURL}
	target, _ := url.Parse(mockURL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		if r.UserAgent() == checkUserAgent {
			n.checks = append(n.checks, r.Method+" "+r.URL.RequestURI())
		} else {
			n.paths = append(n.paths, r.Method+" "+r.URL.RequestURI())
		}
		n.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	n.URL = srv.URL
	return n
}

// waitHTTP polls u until it answers 2xx, the process ends (done closes) or d passes.
func waitHTTP(u string, done <-chan struct{}, d time.Duration) error {
	deadline := time.Now().Add(d)
	client := &http.Client{Timeout: time.Second}
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return errors.New("process exited")
		default:
		}
		resp, err := client.Get(u)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			last = fmt.Errorf("GET %s: HTTP %d", u, resp.StatusCode)
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s: %w", u, d, last)
}

// sidecarOpts vary the sidecar's command line.
type sidecarOpts struct {
	requireV2 bool
	// nodeURL is --node-metadata-endpoint (and the SDK's IMDS endpoint for base
	// credentials); empty uses a dead loopback port.
	nodeURL string
	extra   []string
	env     []string // extra environment, e.g. static base credentials
	// noWait returns once the health listener answers /healthz, without
	// waiting for /started (first credentials).
	noWait bool
}

// sidecar is a running `podrole-sidecar serve`.
type sidecar struct {
	URL       string // the IMDS emulator
	HealthURL string
	session   string // --session-name, unique per sidecar
	log       *syncBuffer
	cmd       *exec.Cmd
	done      chan struct{}
}

// Logs returns what the sidecar wrote to stderr/stdout so far.
func (s *sidecar) Logs() string { return s.log.String() }

// Alive reports whether the process still runs.
func (s *sidecar) Alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func startSidecar(t testing.TB, st *stsServer, o sidecarOpts) *sidecar {
	t.Helper()
	bin := sidecarBin(t)
	nodeURL := o.nodeURL
	if nodeURL == "" {
		nodeURL = "http://127.0.0.1:" + strconv.Itoa(freePort(t)) // nothing listens: node IMDS down
	}
	session := "conformance-" + strconv.FormatInt(time.Now().UnixNano()%1e12, 36)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, hport := freePort(t), freePort(t)
		args := []string{"serve",
			"--role-arn=" + appRoleARN,
			"--listen=127.0.0.1:" + strconv.Itoa(port),
			"--health-listen=127.0.0.1:" + strconv.Itoa(hport),
			"--sts-endpoint=" + st.URL,
			"--region=" + region,
			"--availability-zone=" + flagZone,
			"--node-metadata-endpoint=" + nodeURL,
			"--session-name=" + session,
		}
		// As the webhook runs it: nothing from PODROLE_* variables, and with
		// --source=node the agent's socket mark on every outbound
		// connection (setting it needs CAP_NET_RAW or CAP_NET_ADMIN, so only
		// when the suite runs as root; on loopback the mark changes no route).
		args = append(args, "--ignore-env")
		if !slices.ContainsFunc(o.extra, func(a string) bool { return strings.HasPrefix(a, "--source=") }) {
			args = append(args, "--source=node")
			if os.Geteuid() == 0 {
				args = append(args, "--agent-mark="+contract.FormatMark(contract.DefaultAgentMark))
			}
		}
		if o.requireV2 {
			args = append(args, "--require-imdsv2")
		}
		args = append(args, o.extra...)
		cmd := exec.Command(bin, args...)
		// A clean environment: no PODROLE_* or AWS_* from the caller, no shared
		// config, and the SDK's IMDS (base credentials) pointed at the stand-in.
		cmd.Env = append([]string{
			"PATH=/usr/bin:/bin",
			"HOME=" + t.TempDir(),
			"AWS_CONFIG_FILE=/dev/null",
			"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
			"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + nodeURL,
		}, o.env...)
		log := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatalf("start podrole-sidecar: %v", err)
		}
		s := &sidecar{
			URL:       "http://127.0.0.1:" + strconv.Itoa(port),
			HealthURL: "http://127.0.0.1:" + strconv.Itoa(hport),
			session:   session,
			log:       log, cmd: cmd, done: make(chan struct{}),
		}
		go func() { cmd.Wait(); close(s.done) }()
		t.Cleanup(func() { s.stop(t) })
		ready := "/started"
		if o.noWait {
			ready = "/healthz"
		}
		lastErr = waitHTTP(s.HealthURL+ready, s.done, 20*time.Second)
		if lastErr == nil {
			return s
		}
		s.stop(t)
		if !strings.Contains(log.String(), "address already in use") {
			break
		}
	}
	t.Fatalf("podrole-sidecar did not start: %v", lastErr)
	return nil
}

// stop ends the sidecar with SIGTERM (SIGKILL after 10 s).
func (s *sidecar) stop(t testing.TB) {
	if !s.Alive() {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		t.Errorf("podrole-sidecar ignored SIGTERM for 10 s")
	}
}

// processCreds is the credential_process JSON every client helper prints.
type processCreds struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string
	SessionToken    string
	Expiration      string
	Method          string // botocore only
}

// callerIdentity signs GetCallerIdentity with c against the double.
func callerIdentity(t testing.TB, st *stsServer, c processCreds) (string, error) {
	t.Helper()
	client := sts.NewFromConfig(aws.Config{
		Region:           region,
		Credentials:      credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken),
		RetryMaxAttempts: 1,
	}, func(o *sts.Options) { o.BaseEndpoint = aws.String(st.URL) })
	out, err := client.GetCallerIdentity(testCtx(t, 10*time.Second), &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.Arn), nil
}

// redact replaces every secret in s, for failure messages.
func redact(s string, secrets ...string) string {
	for _, x := range append(secrets, nodeSecret, nodeToken) {
		if x != "" {
			s = strings.ReplaceAll(s, x, "<redacted>")
		}
	}
	return s
}

// clientEnv is the environment of a client subprocess: no credentials or
// config from the caller, the metadata endpoint on loopback.
func clientEnv(t testing.TB, imdsURL string, v1Disabled bool) []string {
	env := []string{
		"PATH=/usr/bin:/bin",
		"HOME=" + t.TempDir(),
		"LANG=C.UTF-8",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"BOTO_CONFIG=/dev/null",
		"AWS_REGION=" + region,
		"AWS_DEFAULT_REGION=" + region,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + imdsURL,
		"AWS_PAGER=",
	}
	if v1Disabled {
		env = append(env, "AWS_EC2_METADATA_V1_DISABLED=true")
	}
	return env
}

// runJSON runs a client and decodes its credential_process JSON.
func runJSON(t testing.TB, env []string, dir string, name string, args ...string) (processCreds, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return processCreds{}, fmt.Errorf("%s %v: %w; stderr: %s", name, args, err, redact(stderr.String()))
	}
	var c processCreds
	if err := json.Unmarshal(stdout.Bytes(), &c); err != nil {
		return processCreds{}, fmt.Errorf("%s printed no credential JSON: %w", name, err)
	}
	return c, nil
}
