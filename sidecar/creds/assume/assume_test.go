package assume

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/sidecar/internal/fakeaws"
	"github.com/podrole/podrole/stsdouble"
)

const roleARN = "arn:aws:iam::111122223333:role/team/app-role"

func testConfig(sts *fakeaws.STS) Config {
	return Config{
		RoleARN: roleARN, SessionName: "default.web-0", Duration: 2 * time.Hour,
		Region: "eu-west-1", STSEndpoint: sts.URL,
	}
}

// The node source signs AssumeRole with the instance profile credentials it
// got from the node IMDS at --node-metadata-endpoint, and sends exactly the
// fields of the pod's role.
func TestNodeAssumeRole(t *testing.T) {
	fakeaws.IsolateEnv(t)
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	sts := fakeaws.NewSTS(t, nil)
	for _, externalID := range []string{"ext-1234", ""} {
		cfg := testConfig(sts)
		// Node credentials are a role session: STS allows the chained
		// session at most an hour.
		cfg.Duration = 45 * time.Minute
		cfg.ExternalID = externalID
		src, err := NewNode(context.Background(), cfg, node.URL)
		if err != nil {
			t.Fatal(err)
		}
		before := len(sts.Requests())
		c, err := src.Fetch(context.Background())
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		reqs := sts.Requests()
		if len(reqs) != before+1 {
			t.Fatalf("%d STS calls, want 1", len(reqs)-before)
		}
		r := reqs[len(reqs)-1]
		want := map[string]string{
			"Action": "AssumeRole", "Version": "2011-06-15", "RoleArn": roleARN,
			"RoleSessionName": "default.web-0", "DurationSeconds": "2700", "ExternalId": externalID,
		}
		for k, v := range want {
			if got := r.Form.Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		if _, sent := r.Form["ExternalId"]; sent != (externalID != "") {
			t.Errorf("ExternalId sent = %v with external id %q", sent, externalID)
		}
		if !strings.Contains(r.Authorization, "Credential="+fakeaws.NodeAccessKeyID+"/") ||
			!strings.Contains(r.Authorization, "/eu-west-1/sts/aws4_request") || r.SecurityToken != fakeaws.NodeSessionToken {
			t.Errorf("not signed with the node's credentials for eu-west-1: %q token %q", r.Authorization, r.SecurityToken)
		}
		akid, secret, token := sts.Creds(len(reqs))
		if akid == "" || c.AccessKeyID != akid || c.SecretAccessKey != secret || c.SessionToken != token || c.AccountID != "111122223333" {
			t.Errorf("got %s account %s, want the issued %s", c.AccessKeyID, c.AccountID, akid)
		}
		if d := time.Until(c.Expiration); d < 44*time.Minute || d > 45*time.Minute {
			t.Errorf("expiration in %s, want 45m", d)
		}
	}
	// The node IMDS was asked for a token and the instance profile, nothing else.
	for _, p := range node.Paths() {
		if p != "PUT /latest/api/token" && !strings.HasPrefix(p, "GET /latest/meta-data/iam/security-credentials/") {
			t.Errorf("unexpected node IMDS request %s", p)
		}
	}
	if !slices.Contains(node.Paths(), "GET /latest/meta-data/iam/security-credentials/"+fakeaws.NodeRole) {
		t.Errorf("node credentials never fetched: %v", node.Paths())
	}
}

// An STS refusal comes back as an error naming the role and the STS code.
func TestNodeAssumeRoleDenied(t *testing.T) {
	fakeaws.IsolateEnv(t)
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	sts := fakeaws.NewSTS(t, nil)
	cfg := testConfig(sts)
	cfg.RoleARN, cfg.Duration = fakeaws.UntrustedRole, time.Hour
	src, err := NewNode(context.Background(), cfg, node.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") || !strings.Contains(err.Error(), fakeaws.UntrustedRole) {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), fakeaws.NodeSecretAccessKey) || strings.Contains(err.Error(), fakeaws.NodeSessionToken) {
		t.Fatalf("error leaks node secrets: %v", err)
	}
}

// With session tags, AssumeRole carries them as Tags.member.N.Key/Value
// (and TransitiveTagKeys.member.N) in the order given, and they reach STS:
// the double records them on the session it issued.
func TestNodeAssumeRoleSessionTags(t *testing.T) {
	fakeaws.IsolateEnv(t)
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	sts := fakeaws.NewSTS(t, func(c *stsdouble.Config) {
		for i := range c.Roles {
			c.Roles[i].TagSession = true
		}
	})
	tags := []contract.SessionTag{{Key: contract.TagClusterName, Value: "prod"}, {Key: contract.TagNamespace, Value: "team-a"}}
	for _, transitive := range []bool{false, true} {
		cfg := testConfig(sts)
		cfg.Duration, cfg.Tags, cfg.TransitiveTags = time.Hour, tags, transitive
		src, err := NewNode(context.Background(), cfg, node.URL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := src.Fetch(context.Background()); err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		reqs := sts.Requests()
		form := reqs[len(reqs)-1].Form
		want := url.Values{
			"Tags.member.1.Key": {"eks-cluster-name"}, "Tags.member.1.Value": {"prod"},
			"Tags.member.2.Key": {"kubernetes-namespace"}, "Tags.member.2.Value": {"team-a"},
		}
		if transitive {
			want["TransitiveTagKeys.member.1"] = []string{"eks-cluster-name"}
			want["TransitiveTagKeys.member.2"] = []string{"kubernetes-namespace"}
		}
		for k := range form {
			if strings.HasPrefix(k, "Tags") || strings.HasPrefix(k, "TransitiveTagKeys") {
				if _, ok := want[k]; !ok {
					t.Errorf("transitive=%v: unexpected %s=%q", transitive, k, form.Get(k))
				}
			}
		}
		for k, v := range want {
			if form.Get(k) != v[0] {
				t.Errorf("transitive=%v: %s = %q, want %q", transitive, k, form.Get(k), v[0])
			}
		}
		is := sts.Double.Issued(roleARN)
		got := is[len(is)-1]
		if len(got.Tags) != 2 || got.Tags[0].Key != "eks-cluster-name" || got.Tags[1].Value != "team-a" || (len(got.TransitiveTagKeys) == 2) != transitive {
			t.Errorf("transitive=%v: STS recorded tags %v, transitive %v", transitive, got.Tags, got.TransitiveTagKeys)
		}
	}
}

// A trust policy that allows sts:AssumeRole but not sts:TagSession refuses
// a call with tags: the error names the missing permission and the flag.
// Without tags the same refusal says nothing of tags.
func TestNodeAssumeRoleTagSessionDenied(t *testing.T) {
	fakeaws.IsolateEnv(t)
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	sts := fakeaws.NewSTS(t, nil)
	cfg := testConfig(sts)
	cfg.Duration, cfg.Tags = time.Hour, []contract.SessionTag{{Key: contract.TagClusterName, Value: "prod"}}
	src, err := NewNode(context.Background(), cfg, node.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") || !strings.Contains(err.Error(), "trust policy must allow sts:TagSession") ||
		!strings.Contains(err.Error(), "--session-tags") || !strings.Contains(err.Error(), roleARN) {
		t.Fatalf("err = %v", err)
	}
	cfg.RoleARN, cfg.Tags = fakeaws.UntrustedRole, nil
	src, _ = NewNode(context.Background(), cfg, node.URL)
	if _, err := src.Fetch(context.Background()); err == nil || strings.Contains(err.Error(), "TagSession") {
		t.Fatalf("untagged refusal: %v", err)
	}
}

// AssumeRoleWithWebIdentity takes tags only from the token: the source
// refuses to be built with tags rather than drop them silently.
func TestWebIdentityRefusesTags(t *testing.T) {
	cfg := testConfig(fakeaws.NewSTS(t, nil))
	cfg.Tags = []contract.SessionTag{{Key: contract.TagClusterName, Value: "prod"}}
	if _, err := NewWebIdentity(cfg, "/t"); err == nil || !strings.Contains(err.Error(), "session tags") {
		t.Fatalf("err = %v", err)
	}
}

// The web identity token is read from the file on every call (the kubelet
// rotates it) and sent unsigned.
func TestWebIdentity(t *testing.T) {
	fakeaws.IsolateEnv(t)
	sts := fakeaws.NewSTS(t, nil)
	tokenFile := filepath.Join(t.TempDir(), "token")
	src, err := NewWebIdentity(testConfig(sts), tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	for i, tok := range []string{fakeaws.WebIdentityToken(t, "default", "web"), fakeaws.WebIdentityToken(t, "default", "web")} {
		if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := src.Fetch(context.Background())
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		r := sts.Requests()[i]
		if r.Form.Get("Action") != "AssumeRoleWithWebIdentity" || r.Form.Get("WebIdentityToken") != tok ||
			r.Form.Get("RoleArn") != roleARN || r.Form.Get("RoleSessionName") != "default.web-0" || r.Form.Get("DurationSeconds") != "7200" {
			t.Errorf("call %d: form %v", i, r.Form)
		}
		if r.Authorization != "" {
			t.Errorf("web identity call signed: %q", r.Authorization)
		}
		if akid, _, _ := sts.Creds(i + 1); akid == "" || c.AccessKeyID != akid || c.AccountID != "111122223333" {
			t.Errorf("call %d: got %s account %s", i, c.AccessKeyID, c.AccountID)
		}
	}
}

func TestWebIdentityTokenFileProblems(t *testing.T) {
	fakeaws.IsolateEnv(t)
	sts := fakeaws.NewSTS(t, nil)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{filepath.Join(dir, "missing"), empty} {
		src, err := NewWebIdentity(testConfig(sts), file)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := src.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("%s: err = %v, want one naming the file", file, err)
		}
	}
	if n := len(sts.Requests()); n != 0 {
		t.Fatalf("%d STS calls without a token", n)
	}
	// A rejected token is never echoed in the error.
	secretTok := filepath.Join(dir, "tok")
	if err := os.WriteFile(secretTok, []byte("eyJ-very-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Not a JWT: STS answers InvalidIdentityToken.
	src, _ := NewWebIdentity(testConfig(sts), secretTok)
	if _, err := src.Fetch(context.Background()); err == nil || strings.Contains(err.Error(), "eyJ-very-secret") || !strings.Contains(err.Error(), "InvalidIdentityToken") {
		t.Fatalf("err = %v", err)
	}
}

func TestSessionName(t *testing.T) {
	long := strings.Repeat("n", 63)
	tests := []struct {
		explicit, ns, pod string
		want              string // "random": podrole-<hex>
		wantErr           bool
	}{
		{"given-name", "ns", "pod", "given-name", false},
		{"bad name!", "ns", "pod", "", true},
		{"x", "ns", "pod", "", true},
		{"", "default", "web-0", "default.web-0", false},
		{"", "team-a", "api.v2:8080/x", "team-a.api.v2-8080-x", false},
		{"", long, "pod", long + ".", false},
		{"", "", "web-0", "web-0", false},
		{"", "", "", "random", false},
		{"", "", "/", "random", false},
		{"", "@", "", "random", false},
	}
	for _, tt := range tests {
		got, err := SessionName(tt.explicit, tt.ns, tt.pod)
		if (err != nil) != tt.wantErr {
			t.Errorf("%q %q %q: err %v", tt.explicit, tt.ns, tt.pod, err)
			continue
		}
		if tt.wantErr {
			continue
		}
		if !sessionNameRE.MatchString(got) {
			t.Errorf("%q %q %q: %q is not a valid session name", tt.explicit, tt.ns, tt.pod, got)
		}
		if tt.want == "random" {
			if !strings.HasPrefix(got, "podrole-") || len(got) != len("podrole-")+12 {
				t.Errorf("%q %q: got %q, want podrole-<random>", tt.ns, tt.pod, got)
			}
		} else if got != tt.want {
			t.Errorf("%q %q %q: got %q, want %q", tt.explicit, tt.ns, tt.pod, got, tt.want)
		}
	}
	a, _ := SessionName("", "", "")
	b, _ := SessionName("", "", "")
	if a == b {
		t.Errorf("fallback names are not random: %q twice", a)
	}
}

func TestConfigRejected(t *testing.T) {
	sts := fakeaws.NewSTS(t, nil)
	for name, mod := range map[string]func(*Config){
		"no region":   func(c *Config) { c.Region = "" },
		"bad role":    func(c *Config) { c.RoleARN = "arn:aws:iam::1:user/x" },
		"bad session": func(c *Config) { c.SessionName = "a b" },
	} {
		c := testConfig(sts)
		mod(&c)
		if _, err := NewWebIdentity(c, "/t"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if RoleName(roleARN) != "app-role" {
		t.Errorf("RoleName = %q", RoleName(roleARN))
	}
}

// The agent's one client: every socket gets the control (the agent's mark),
// also in the copy the SDK's IMDS client makes to shorten its timeouts, and
// the node's metadata service is never reached through a proxy while STS
// follows the proxy environment.
func TestNewHTTPClient(t *testing.T) {
	proxy, _ := url.Parse("http://proxy.example:3128")
	saved := proxyFromEnvironment
	proxyFromEnvironment = func(*http.Request) (*url.URL, error) { return proxy, nil }
	t.Cleanup(func() { proxyFromEnvironment = saved })

	called := 0
	control := func(network, address string, c syscall.RawConn) error { called++; return nil }
	client := NewHTTPClient(control, "http://10.1.2.3:8080")
	for u, want := range map[string]*url.URL{
		"http://10.1.2.3:8080/latest/api/token":          nil,
		"http://169.254.169.254/latest/meta-data/":       nil,
		"http://[fd00:ec2::254]/latest/meta-data/":       nil,
		"https://sts.eu-west-1.amazonaws.com/":           proxy,
		"http://10.1.2.4:8080/other-host-same-port-path": proxy,
	} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		got, err := client.GetTransport().Proxy(req)
		if err != nil || got != want {
			t.Errorf("proxy for %s = %v, %v; want %v", u, got, err, want)
		}
	}

	proxyFromEnvironment = func(*http.Request) (*url.URL, error) { return nil, nil }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	// What feature/ec2/imds does to the client it is given.
	imdsCopy := client.WithDialerOptions(func(d *net.Dialer) { d.Timeout = time.Second })
	for _, c := range []*awshttp.BuildableClient{client, imdsCopy} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		req.Close = true
		before := called
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if called != before+1 {
			t.Fatalf("the control ran %d times for one connection", called-before)
		}
	}
}
