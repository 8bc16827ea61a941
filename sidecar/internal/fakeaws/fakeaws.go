// Package fakeaws holds loopback stand-ins for the sidecar's upstreams in
// tests: an STS speaking the real query/XML wire format, and a node IMDS
// with an instance profile. They record what they were asked, so tests can
// check the exact fields the sidecar sent.
package fakeaws

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// STSRequest is one call the fake STS received.
type STSRequest struct {
	Form          url.Values // Action, RoleArn, RoleSessionName, ...
	Authorization string     // SigV4 header; empty for unsigned calls
	SecurityToken string     // X-Amz-Security-Token
}

// STS is a fake STS for AssumeRole and AssumeRoleWithWebIdentity.
type STS struct {
	*httptest.Server

	mu       sync.Mutex
	requests []STSRequest
	failCode string // non-empty: answer every call with this error code
	blocked  chan struct{}
	now      func() time.Time
}

// NewSTS starts a fake STS on loopback; it is closed with the test. now
// dates the credentials it issues (time.Now when nil).
func NewSTS(t testing.TB, now func() time.Time) *STS {
	if now == nil {
		now = time.Now
	}
	s := &STS{now: now}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Fail makes every following call fail with an STS error code
// ("AccessDenied", "Throttling"...); "" heals it.
func (s *STS) Fail(code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failCode = code
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
	return append([]STSRequest(nil), s.requests...)
}

// Creds are the credentials the n-th call (from 1) returns.
func Creds(n int) (akid, secret, token string) {
	return fmt.Sprintf("ASIAFAKEROLE%08d", n), fmt.Sprintf("role-secret-%d", n), fmt.Sprintf("role-session-token-%d", n)
}

type stsCredentials struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string
	SessionToken    string
	Expiration      string
}

type assumedRoleUser struct {
	AssumedRoleID string `xml:"AssumedRoleId"`
	Arn           string
}

type stsResult struct {
	Credentials     stsCredentials
	AssumedRoleUser assumedRoleUser
	Provider        string `xml:",omitempty"`
	Audience        string `xml:",omitempty"`
}

func (s *STS) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		s.fail(w, http.StatusBadRequest, "InvalidRequest", "want a POST form")
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, STSRequest{
		Form: r.PostForm, Authorization: r.Header.Get("Authorization"), SecurityToken: r.Header.Get("X-Amz-Security-Token"),
	})
	n, failCode, blocked := len(s.requests), s.failCode, s.blocked
	s.mu.Unlock()
	if blocked != nil {
		select {
		case <-blocked:
		case <-r.Context().Done():
			return
		}
	}

	action := r.PostForm.Get("Action")
	if failCode != "" {
		s.fail(w, http.StatusForbidden, failCode, "injected failure")
		return
	}
	roleARN := r.PostForm.Get("RoleArn")
	session := r.PostForm.Get("RoleSessionName")
	secs, _ := strconv.Atoi(r.PostForm.Get("DurationSeconds"))
	if secs == 0 {
		secs = 3600
	}
	switch action {
	case "AssumeRole":
		if !strings.Contains(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=") {
			s.fail(w, http.StatusForbidden, "MissingAuthenticationToken", "Request is missing Authentication Token")
			return
		}
	case "AssumeRoleWithWebIdentity":
		if r.PostForm.Get("WebIdentityToken") == "" {
			s.fail(w, http.StatusBadRequest, "ValidationError", "WebIdentityToken is required")
			return
		}
	default:
		s.fail(w, http.StatusBadRequest, "InvalidAction", "unsupported action "+action)
		return
	}
	parts := strings.SplitN(roleARN, ":", 6)
	if len(parts) != 6 {
		s.fail(w, http.StatusBadRequest, "ValidationError", "bad RoleArn")
		return
	}
	akid, secret, token := Creds(n)
	res := stsResult{
		Credentials: stsCredentials{
			AccessKeyID: akid, SecretAccessKey: secret, SessionToken: token,
			Expiration: s.now().Add(time.Duration(secs) * time.Second).UTC().Format(time.RFC3339),
		},
		AssumedRoleUser: assumedRoleUser{
			AssumedRoleID: "AROAFAKEROLEID0000000:" + session,
			Arn:           fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", parts[4], parts[5][strings.LastIndex(parts[5], "/")+1:], session),
		},
	}
	if action == "AssumeRoleWithWebIdentity" {
		res.Provider, res.Audience = "oidc.example", "sts.amazonaws.com"
	}
	body, _ := xml.MarshalIndent(struct {
		XMLName  xml.Name
		Result   stsResult `xml:"Result"`
		Metadata struct {
			RequestID string `xml:"RequestId"`
		} `xml:"ResponseMetadata"`
	}{XMLName: xml.Name{Local: action + "Response"}, Result: res}, "", "  ")
	// The result element is named after the action too.
	out := strings.Replace(strings.Replace(string(body), "<Result>", "<"+action+"Result>", 1), "</Result>", "</"+action+"Result>", 1)
	out = strings.Replace(out, "<"+action+"Response>", `<`+action+`Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">`, 1)
	w.Header().Set("Content-Type", "text/xml")
	_, _ = w.Write([]byte(out))
}

func (s *STS) fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>
  <RequestId>00000000-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>`, code, msg)
}

// Node credentials of the fake node's instance profile.
const (
	NodeRole            = "node-instance-role"
	NodeAccessKeyID     = "ASIAFAKENODE00000001"
	NodeSecretAccessKey = "node-secret"
	NodeSessionToken    = "node-session-token"
)

// NodeIMDS is a fake node IMDS (IMDSv2 required) with region, zone,
// identity document and an instance profile.
type NodeIMDS struct {
	*httptest.Server
	Region, AvailabilityZone, Document string

	mu       sync.Mutex
	paths    []string
	requests []NodeRequest
}

// NodeRequest is one request the fake node IMDS received.
type NodeRequest struct {
	Method, Path, UserAgent string
	Token                   bool // carried an IMDSv2 token header
}

// NewNodeIMDS starts it on loopback; it is closed with the test.
func NewNodeIMDS(t testing.TB, region, az string) *NodeIMDS {
	n := &NodeIMDS{
		Region: region, AvailabilityZone: az,
		Document: fmt.Sprintf(`{"accountId":"999988887777","availabilityZone":%q,"instanceId":"i-0fakenode","region":%q,"version":"2017-09-30"}`, az, region),
	}
	n.Server = httptest.NewServer(http.HandlerFunc(n.serve))
	t.Cleanup(n.Close)
	return n
}

// Requests returns every request so far.
func (n *NodeIMDS) Requests() []NodeRequest {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]NodeRequest(nil), n.requests...)
}

// Paths returns "METHOD path" of every request so far.
func (n *NodeIMDS) Paths() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.paths...)
}

const nodeToken = "node-imds-token"

func (n *NodeIMDS) serve(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	n.paths = append(n.paths, r.Method+" "+r.URL.Path)
	n.requests = append(n.requests, NodeRequest{Method: r.Method, Path: r.URL.Path, UserAgent: r.UserAgent(),
		Token: len(r.Header.Values("X-Aws-Ec2-Metadata-Token")) > 0})
	n.mu.Unlock()
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut || r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") == "" {
			http.Error(w, "bad token request", http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
		_, _ = w.Write([]byte(nodeToken))
		return
	}
	if r.Header.Get("X-Aws-Ec2-Metadata-Token") != nodeToken {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	body := ""
	switch r.URL.Path {
	case "/latest/meta-data/placement/region":
		body = n.Region
	case "/latest/meta-data/placement/availability-zone":
		body = n.AvailabilityZone
	case "/latest/dynamic/instance-identity/document":
		body = n.Document
	case "/latest/meta-data/iam/security-credentials/":
		body = NodeRole
	case "/latest/meta-data/iam/security-credentials/" + NodeRole:
		body = fmt.Sprintf(`{"Code":"Success","LastUpdated":%q,"Type":"AWS-HMAC","AccessKeyId":%q,"SecretAccessKey":%q,"Token":%q,"Expiration":%q}`,
			time.Now().UTC().Format(time.RFC3339), NodeAccessKeyID, NodeSecretAccessKey, NodeSessionToken,
			time.Now().Add(6*time.Hour).UTC().Format(time.RFC3339))
	}
	if body == "" {
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write([]byte(body))
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
