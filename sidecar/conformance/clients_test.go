package conformance

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"

	"github.com/podrole/podrole/internal/testenv"
	"github.com/podrole/podrole/stsdouble"
)

// realClient fetches credentials from the metadata endpoint at imdsURL the
// way an unmodified app using that SDK or tool does.
type realClient struct {
	name string
	// get returns the credentials the client obtained. v1Disabled sets
	// AWS_EC2_METADATA_V1_DISABLED=true where the client honours it.
	get func(t *testing.T, imdsURL string, v1Disabled bool) (processCreds, error)
}

// awsEnv are variables that would make the Go SDK find credentials or config
// somewhere other than the metadata service.
var awsEnv = []string{
	"AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN",
	"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_WEB_IDENTITY_TOKEN_FILE",
	"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
	"AWS_EC2_METADATA_DISABLED", "AWS_EC2_METADATA_V1_DISABLED", "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
	"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_REGION", "AWS_DEFAULT_REGION",
}

// clients returns every real client, each checking its own prerequisites.
func clients(t *testing.T) []realClient {
	t.Helper()
	python := "/usr/bin/python3"
	_, err := os.Stat(python)
	testenv.Need(t, err == nil, python, "Debian's python3 (scripts/deps-clients.sh)")
	testenv.Need(t, exec.Command(python, "-c", "import botocore").Run() == nil, "python3-botocore for /usr/bin/python3", "run scripts/deps-clients.sh")
	aws := "/usr/bin/aws"
	_, err = os.Stat(aws)
	testenv.Need(t, err == nil, aws, "Debian's awscli (AWS CLI v2), installed by scripts/deps.sh")
	node := testenv.Command(t, "node", "install nodejs (scripts/deps-clients.sh)")
	jsDir, _ := filepath.Abs("js")
	_, err = os.Stat(filepath.Join(jsDir, "node_modules", "@aws-sdk", "credential-providers"))
	testenv.Need(t, err == nil, "sidecar/conformance/js/node_modules", "run scripts/deps-clients.sh (npm ci)")
	script, _ := filepath.Abs("testdata/botocore_creds.py")

	return []realClient{
		{"aws-sdk-go-v2", goSDKCreds},
		{"botocore", func(t *testing.T, u string, v1 bool) (processCreds, error) {
			c, err := runJSON(t, clientEnv(t, u, v1), t.TempDir(), python, script)
			if err == nil && c.Method != "iam-role" {
				t.Errorf("botocore got credentials from %q, want the instance metadata provider (iam-role)", c.Method)
			}
			return c, err
		}},
		{"aws-cli-v2", func(t *testing.T, u string, v1 bool) (processCreds, error) {
			// The CLI's bundled botocore appends "latest/api/token" to the
			// endpoint as given, so it needs the trailing slash.
			return runJSON(t, clientEnv(t, u+"/", v1), t.TempDir(), aws, "configure", "export-credentials", "--format", "process")
		}},
		{"js-sdk-v3", func(t *testing.T, u string, v1 bool) (processCreds, error) {
			return runJSON(t, clientEnv(t, u, v1), jsDir, node, filepath.Join(jsDir, "imds-creds.js"))
		}},
	}
}

// goSDKCreds runs aws-sdk-go-v2's default chain in this process.
func goSDKCreds(t *testing.T, imdsURL string, v1Disabled bool) (processCreds, error) {
	for _, k := range awsEnv {
		t.Setenv(k, "") // restored after the test
		os.Unsetenv(k)
	}
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imdsURL)
	if v1Disabled {
		t.Setenv("AWS_EC2_METADATA_V1_DISABLED", "true")
	}
	ctx := testCtx(t, 30*time.Second)
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region))
	if err != nil {
		return processCreds{}, err
	}
	c, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return processCreds{}, err
	}
	if c.Source != ec2rolecreds.ProviderName {
		t.Errorf("aws-sdk-go-v2 got credentials from %q, want %q", c.Source, ec2rolecreds.ProviderName)
	}
	return processCreds{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken,
		Expiration: c.Expires.UTC().Format(time.RFC3339)}, nil
}

// checkIssued asserts that c is exactly what the double issued for the pod
// role (one of allowed), obtained with the node's identity, and that STS
// accepts it as the assumed role.
func checkIssued(t *testing.T, st *stsServer, c processCreds, allowed []stsdouble.Issued) {
	t.Helper()
	var match *stsdouble.Issued
	for i := range allowed {
		if allowed[i].AccessKeyID == c.AccessKeyID {
			match = &allowed[i]
		}
	}
	if match == nil {
		ids := make([]string, len(allowed))
		for i, a := range allowed {
			ids[i] = a.AccessKeyID
		}
		t.Fatalf("client got access key %q, want one the double issued for %s: %v", c.AccessKeyID, appRoleARN, ids)
	}
	if match.Caller != nodeARN {
		t.Errorf("the sidecar assumed the role as %s, want the node identity %s", match.Caller, nodeARN)
	}
	arn, err := callerIdentity(t, st, c)
	if err != nil {
		t.Fatalf("GetCallerIdentity with the client's credentials: %v", redact(err.Error(), c.SecretAccessKey, c.SessionToken))
	}
	if arn != match.AssumedRoleARN || !strings.HasPrefix(arn, "arn:aws:sts::"+account+":assumed-role/"+appRole+"/") {
		t.Errorf("GetCallerIdentity = %s, want %s", arn, match.AssumedRoleARN)
	}
}

// tokenBlocker sits in front of the sidecar and refuses IMDSv2 token
// requests with 403, as a network path that drops PUT would: clients must
// fall back to IMDSv1 and still get the role.
// It returns the proxy's URL and a count of requests that carried a token
// anyway (there must be none: v1 is what is tested).
func tokenBlocker(t *testing.T, sidecarURL string) (string, func() int) {
	target, _ := url.Parse(sidecarURL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	withToken := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			http.Error(w, "Forbidden", http.StatusForbidden)
			return
		}
		if r.Header.Get(hdrToken) != "" {
			mu.Lock()
			withToken++
			mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() int { mu.Lock(); defer mu.Unlock(); return withToken }
}

// TestRealClients: every client, unmodified, gets exactly the pod role's
// access key through the sidecar — IMDSv2, v2 required with v1 disabled in
// the client, and v1 only — and STS accepts it as the assumed role.
func TestRealClients(t *testing.T) {
	all := clients(t)
	st := startSTS(t)
	node := startNodeIMDS(t)
	modes := []struct {
		name       string
		requireV2  bool
		v1Disabled bool
		v1Only     bool
		ipv6       bool
	}{
		{name: "imdsv2"},
		// What pods calling [fd00:ec2::254] reach after the redirect.
		{name: "imdsv2-ipv6-loopback", requireV2: true, v1Disabled: true, ipv6: true},
		{name: "v2-required-v1-disabled", requireV2: true, v1Disabled: true},
		{name: "v1-only", v1Only: true},
	}
	var served []processCreds
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			sc := startSidecar(t, st, sidecarOpts{requireV2: m.requireV2, nodeURL: node.URL})
			u := sc.URL
			tokenUses := func() int { return 0 }
			if m.v1Only {
				u, tokenUses = tokenBlocker(t, sc.URL)
			}
			if m.ipv6 {
				u = "http://[::1]:" + strings.TrimPrefix(sc.URL, "http://127.0.0.1:")
				c, err := net.DialTimeout("tcp6", strings.TrimPrefix(u, "http://"), time.Second)
				testenv.Need(t, err == nil, "IPv6 loopback ([::1])", "enable IPv6 on lo")
				c.Close()
			}
			issued := []stsdouble.Issued{st.latest(t, sc)}
			for _, c := range all {
				t.Run(c.name, func(t *testing.T) {
					got, err := c.get(t, u, m.v1Disabled)
					if err != nil {
						t.Fatal(err)
					}
					checkIssued(t, st, got, issued)
					exp, err := time.Parse(time.RFC3339, got.Expiration)
					if err != nil {
						t.Errorf("%s reports no expiration (%q): it would never refresh", c.name, got.Expiration)
					} else if time.Until(exp) < 29*time.Minute {
						t.Errorf("%s sees credentials expiring in %s; the sidecar must serve >= 30 min", c.name, time.Until(exp).Round(time.Second))
					}
					served = append(served, got)
				})
			}
			if n := tokenUses(); n > 0 {
				t.Errorf("%d requests carried a token in v1-only mode", n)
			}
			if !sc.Alive() {
				t.Fatalf("sidecar died: %s", redact(sc.Logs()))
			}
			checkLogsClean(t, sc, served)
		})
	}
	// The sidecar must not have asked the node's IMDS for anything but base
	// credentials and placement.
	checkNodeRequests(t, node)
}

// TestRealClientsAfterRotation: once the sidecar has refreshed the role's
// credentials, every client gets the new key, not the first one.
func TestRealClientsAfterRotation(t *testing.T) {
	all := clients(t)
	st := startSTS(t)
	// Sessions of a minute: the sidecar refreshes after 10-15 s instead of 10+ min.
	st.SetMaxLifetime(time.Minute)
	node := startNodeIMDS(t)
	for _, v2 := range []bool{false, true} {
		name := map[bool]string{false: "imdsv2", true: "v2-required-v1-disabled"}[v2]
		t.Run(name, func(t *testing.T) {
			sc := startSidecar(t, st, sidecarOpts{requireV2: v2, nodeURL: node.URL})
			first := st.latest(t, sc)
			deadline := time.Now().Add(45 * time.Second)
			for len(st.issued(sc)) < 2 && time.Now().Before(deadline) {
				time.Sleep(200 * time.Millisecond)
			}
			if len(st.issued(sc)) < 2 {
				t.Fatalf("the sidecar did not refresh one-minute credentials within 45 s")
			}
			for _, c := range all {
				t.Run(c.name, func(t *testing.T) {
					// Any key issued since the refresh is right: another
					// refresh may land while a slow client starts.
					from := len(st.issued(sc)) - 1
					got, err := c.get(t, sc.URL, v2)
					if err != nil {
						t.Fatal(err)
					}
					if got.AccessKeyID == first.AccessKeyID {
						t.Fatalf("client got the first key after the sidecar refreshed")
					}
					allowed := st.issued(sc)[from:]
					checkIssued(t, st, got, allowed)
				})
			}
		})
	}
}

// checkLogsClean asserts no credential or token reached the sidecar's logs.
func checkLogsClean(t *testing.T, sc *sidecar, served []processCreds) {
	t.Helper()
	logs := sc.Logs()
	secrets := []string{nodeSecret, nodeToken}
	for _, c := range served {
		secrets = append(secrets, c.SecretAccessKey, c.SessionToken)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("the sidecar logged a secret key or session token")
			return
		}
	}
}

// checkNodeRequests asserts the sidecar only asked the node's IMDS for its
// own base credentials and placement, never user-data or anything a probe named.
func checkNodeRequests(t *testing.T, node *nodeIMDS) {
	t.Helper()
	allowed := []string{
		"PUT /latest/api/token",
		"GET /latest/meta-data/iam/security-credentials/",
		"GET /latest/meta-data/iam/security-credentials/" + nodeRole,
		"GET /latest/meta-data/placement/region",
		"GET /latest/meta-data/placement/availability-zone",
		"GET /latest/dynamic/instance-identity/document",
	}
	for _, p := range node.requested() {
		if !slices.Contains(allowed, p) {
			t.Errorf("the sidecar asked the node's IMDS for %q", p)
		}
	}
	checkCheckRequests(t, node)
}

// checkCheckRequests: the node IMDS check sends nothing but a token PUT and
// the top-level listing (once each per sidecar; tests may run several
// against one node).
func checkCheckRequests(t *testing.T, node *nodeIMDS) {
	t.Helper()
	for _, p := range node.checked() {
		if p != "PUT /latest/api/token" && p != "GET /latest/meta-data/" {
			t.Errorf("the node IMDS check asked the node's IMDS for %q", p)
		}
	}
}
