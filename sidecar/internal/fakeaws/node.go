package fakeaws

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Node credentials of the fake node's instance profile.
const (
	NodeRole            = "node-instance-role"
	NodeAccessKeyID     = "ASIAFAKENODE00000001"
	NodeSecretAccessKey = "node-secret"
	NodeSessionToken    = "node-session-token"
	// nodeSessionARN is who the node's credentials belong to: the node
	// role's instance session, as on EC2.
	nodeSessionARN = "arn:aws:sts::" + Account + ":assumed-role/" + NodeRole + "/i-0fakenode"
)

// Header names of IMDSv2, as the SDKs send them.
const (
	tokenHeader    = "X-Aws-Ec2-Metadata-Token"
	tokenTTLHeader = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	tokenPath      = "/latest/api/token"
	credsPath      = "/latest/meta-data/iam/security-credentials/"
	// maxTokenTTL is real IMDS's limit on a token's life (6 hours).
	maxTokenTTL = 21600
)

// NodeIMDS is the Go tests' node IMDS, an http.Handler that answers as real
// IMDS does (docs/imds-clients.md): IMDSv2 tokens for a PUT with a TTL of
// 1..21600 s (400 otherwise, 403 with X-Forwarded-For), 401 for an invalid
// or expired token and, unless AllowV1, for no token, text/plain answers,
// the role listing and its credentials document, the identity document and
// placement; 404 for anything else.
//
// The fields are what the node serves and how it behaves: set them before
// the first request (NewNodeIMDS sets a whole node with an instance
// profile). An empty item is not served (404): a node without an instance
// profile, say. Fail and Block change the behaviour while it serves.
type NodeIMDS struct {
	*httptest.Server // set by NewNodeIMDS; nil for a NewNode served otherwise

	Region, AvailabilityZone string
	Document                 string // the instance identity document (JSON)
	// Role is the instance profile's role; its credentials expire 6 hours
	// after each answer.
	Role                                       string
	AccessKeyID, SecretAccessKey, SessionToken string
	// AllowV1 answers requests without a token (HttpTokens=optional); by
	// default IMDSv2 is required, as on current instance types.
	AllowV1 bool
	// TokenStatus, when not 0, is the status of every token PUT instead of a
	// token: 403 is how an IMDSv1-only node looks to the SDKs (and how a
	// token answer dropped by a hop limit of 1 is modelled here).
	TokenStatus int

	mu         sync.Mutex
	requests   []NodeRequest
	tokens     map[string]time.Time // issued token -> expiry
	failStatus int
	failLeft   int // requests still to fail; < 0: all
	blocked    chan struct{}
}

// NodeRequest is one request the fake node IMDS received.
type NodeRequest struct {
	Method, Path, UserAgent string
	Token                   bool   // carried an IMDSv2 token header
	TTL                     string // the token TTL header, as sent
}

// NewNodeIMDS starts, on loopback, a node in region and zone az with an
// identity document and the instance profile NodeRole (NodeAccessKeyID...),
// IMDSv2 required; it is closed with the test. Change its fields before the
// first request for another node.
func NewNodeIMDS(t testing.TB, region, az string) *NodeIMDS {
	t.Helper()
	n := NewNode(region, az)
	n.Server = httptest.NewServer(n)
	t.Cleanup(n.Close)
	return n
}

// NewNode is the node of NewNodeIMDS, not serving yet: for a process that
// serves it on listeners of its own (the real-namespace test's helper).
func NewNode(region, az string) *NodeIMDS {
	return &NodeIMDS{
		Region: region, AvailabilityZone: az,
		Document: fmt.Sprintf(`{"accountId":"999988887777","availabilityZone":%q,"instanceId":"i-0fakenode","region":%q,"version":"2017-09-30"}`, az, region),
		Role:     NodeRole, AccessKeyID: NodeAccessKeyID, SecretAccessKey: NodeSecretAccessKey, SessionToken: NodeSessionToken,
	}
}

// Fail answers the next times requests with status and IMDS's error page
// instead of serving them, as a throttled or broken node does; times < 0
// fails every request until Fail is called again, and Fail(0, 0) ends it.
func (n *NodeIMDS) Fail(status, times int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.failStatus, n.failLeft = status, times
}

// Block makes every following request hang until the returned release is
// called (or the client gives up): a node that accepts and stays silent.
func (n *NodeIMDS) Block() (release func()) {
	ch := make(chan struct{})
	n.mu.Lock()
	n.blocked = ch
	n.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			n.mu.Lock()
			n.blocked = nil
			n.mu.Unlock()
			close(ch)
		})
	}
}

// Requests returns every request so far, failed and held ones included.
func (n *NodeIMDS) Requests() []NodeRequest {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.requests)
}

// Paths returns "METHOD path" of every request so far.
func (n *NodeIMDS) Paths() []string {
	var out []string
	for _, r := range n.Requests() {
		out = append(out, r.Method+" "+r.Path)
	}
	return out
}

// Count returns how many requests so far were "METHOD path", e.g.
// "PUT /latest/api/token".
func (n *NodeIMDS) Count(methodPath string) int {
	c := 0
	for _, p := range n.Paths() {
		if p == methodPath {
			c++
		}
	}
	return c
}

// ServeHTTP answers one request as the node's IMDS.
func (n *NodeIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	n.requests = append(n.requests, NodeRequest{Method: r.Method, Path: r.URL.Path, UserAgent: r.UserAgent(),
		Token: len(r.Header.Values(tokenHeader)) > 0, TTL: r.Header.Get(tokenTTLHeader)})
	blocked, fail := n.blocked, 0
	if n.failLeft != 0 {
		fail = n.failStatus
		if n.failLeft > 0 {
			n.failLeft--
		}
	}
	n.mu.Unlock()
	if blocked != nil {
		select {
		case <-blocked:
		case <-r.Context().Done():
			return
		}
	}
	switch {
	case fail != 0:
		writeIMDSError(w, fail)
	case r.URL.Path == tokenPath:
		n.issueToken(w, r)
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET, HEAD")
		writeIMDSError(w, http.StatusMethodNotAllowed)
	case !n.authorized(r):
		writeIMDSError(w, http.StatusUnauthorized)
	default:
		if body, ok := n.item(r.URL.Path); ok {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte(body))
			return
		}
		writeIMDSError(w, http.StatusNotFound)
	}
}

// issueToken answers PUT /latest/api/token: a fresh token valid for the
// TTL asked, echoed in the TTL header (the Go SDK falls back to IMDSv1
// without it).
func (n *NodeIMDS) issueToken(w http.ResponseWriter, r *http.Request) {
	ttl, err := strconv.Atoi(r.Header.Get(tokenTTLHeader))
	switch {
	case r.Method != http.MethodPut:
		w.Header().Set("Allow", http.MethodPut)
		writeIMDSError(w, http.StatusMethodNotAllowed)
		return
	case n.TokenStatus != 0:
		writeIMDSError(w, n.TokenStatus)
		return
	// A PUT that passed a proxy (or was forwarded by one in the pod) gets
	// no token: what IMDSv2 defends against.
	case len(r.Header.Values("X-Forwarded-For")) > 0:
		writeIMDSError(w, http.StatusForbidden)
		return
	case err != nil || ttl < 1 || ttl > maxTokenTTL:
		writeIMDSError(w, http.StatusBadRequest)
		return
	}
	n.mu.Lock()
	if n.tokens == nil {
		n.tokens = map[string]time.Time{}
	}
	tok := fmt.Sprintf("AQAEAfakeNodeToken%06d==", len(n.tokens)+1)
	n.tokens[tok] = time.Now().Add(time.Duration(ttl) * time.Second)
	n.mu.Unlock()
	w.Header().Set(tokenTTLHeader, strconv.Itoa(ttl))
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(tok))
}

// authorized: a token, if sent, must be one issued and not expired, even
// where IMDSv1 is allowed; none is needed only then.
func (n *NodeIMDS) authorized(r *http.Request) bool {
	sent := r.Header.Values(tokenHeader)
	if len(sent) == 0 {
		return n.AllowV1
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	exp, ok := n.tokens[sent[0]]
	return ok && time.Now().Before(exp)
}

// item is what the node serves at path, if anything.
func (n *NodeIMDS) item(path string) (string, bool) {
	var body string
	switch path {
	case "/latest/meta-data/":
		body = "iam/\nplacement/"
	case "/latest/meta-data/placement/region":
		body = n.Region
	case "/latest/meta-data/placement/availability-zone", "/latest/meta-data/placement/availability-zone/":
		body = n.AvailabilityZone
	case "/latest/dynamic/instance-identity/document":
		body = n.Document
	case credsPath:
		body = n.Role
	case credsPath + n.Role:
		if n.Role != "" {
			body = n.credentials()
		}
	}
	return body, body != ""
}

// credentials is the instance profile's credentials document, its times in
// IMDS's format, expiring in 6 hours as instance profile credentials do.
func (n *NodeIMDS) credentials() string {
	now := time.Now().UTC()
	b, err := json.MarshalIndent(struct {
		Code, LastUpdated, Type            string
		AccessKeyID                        string `json:"AccessKeyId"`
		SecretAccessKey, Token, Expiration string
	}{"Success", now.Format(time.RFC3339), "AWS-HMAC", n.AccessKeyID, n.SecretAccessKey, n.SessionToken,
		now.Add(6 * time.Hour).Format(time.RFC3339)}, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("encode the node's credentials document: %v", err)) // strings only: cannot fail
	}
	return string(b)
}

// writeIMDSError answers with the error page real IMDS sends.
func writeIMDSError(w http.ResponseWriter, code int) {
	title := fmt.Sprintf("%d - %s", code, http.StatusText(code))
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(code)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
	"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>%s</title>
 </head>
 <body>
  <h1>%s</h1>
 </body>
</html>
`, title, title)
}
