// Package imds serves the instance metadata credentials API for one role, as
// real IMDS does: IMDSv2 session tokens, the role listing, the credentials
// document (plain and -extended), iam/info, and an allow-list of harmless
// placement metadata. Every other path is 404: no user-data, no node
// credentials, nothing proxied. Credentials come through CredentialSource, so
// this package never talks to STS.
package imds

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/podrole/podrole/sidecar/creds"
)

// Header names as clients send them (canonicalized by net/http).
const (
	HeaderToken    = "X-Aws-Ec2-Metadata-Token"
	HeaderTokenTTL = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
)

// Paths served. Matching is on the raw (escaped) request path, exactly:
// percent-encoding, "..", "//", ";", other case or trailing junk never match.
const (
	PathToken             = "/latest/api/token"
	PathCredentials       = "/latest/meta-data/iam/security-credentials"
	PathCredentialsExt    = "/latest/meta-data/iam/security-credentials-extended"
	PathInfo              = "/latest/meta-data/iam/info"
	PathRegion            = "/latest/meta-data/placement/region"
	PathAvailabilityZone  = "/latest/meta-data/placement/availability-zone"
	PathIdentityDocument  = "/latest/dynamic/instance-identity/document"
	timeFormat            = "2006-01-02T15:04:05Z"
	credentialsType       = "AWS-HMAC"
	credentialsCodeOK     = "Success"
	contentTypeText       = "text/plain"
	contentTypeHTML       = "text/html"
	instanceProfileIDBase = "AIPA"
)

// CredentialSource gives the role's current credentials; an error means none
// may be served now.
type CredentialSource interface {
	Credentials(ctx context.Context) (creds.Credentials, error)
}

// Placement is the node's harmless metadata; empty fields are 404.
type Placement struct {
	Region           string
	AvailabilityZone string
	IdentityDocument []byte // JSON, served as is
}

// Metrics observes requests. Route is one of the Route* names.
type Metrics interface {
	Request(route string, code int)
	TokenIssued()
}

// Route names, the label of the request metric.
const (
	RouteToken              = "token"
	RouteCredentialsList    = "credentials-list"
	RouteCredentials        = "credentials"
	RouteCredentialsExtList = "credentials-extended-list"
	RouteCredentialsExt     = "credentials-extended"
	RouteInfo               = "info"
	RouteRegion             = "region"
	RouteAvailabilityZone   = "availability-zone"
	RouteIdentityDocument   = "identity-document"
	RouteOther              = "other"
)

// Config configures a Handler.
type Config struct {
	RoleARN     string // arn:aws:iam::<account>:role/[path/]<name>
	Credentials CredentialSource
	Tokens      *Tokens
	Placement   Placement
	// CurrentPlacement, if set, is read on every request instead of
	// Placement, so that placement learnt after start (the node's IMDS
	// answering late) is served from then on. It must be safe for
	// concurrent use (e.g. an atomic.Pointer's Load).
	CurrentPlacement func() Placement
	RequireIMDSv2    bool
	Metrics          Metrics      // optional
	Logger           *slog.Logger // optional
	// Now is the clock for iam/info's LastUpdated fallback; time.Now when nil.
	Now func() time.Time
}

// Handler is the IMDS emulator's http.Handler.
type Handler struct {
	cfg     Config
	role    string
	routes  map[string]string // raw path -> route
	info    instanceProfile
	started time.Time
	log     *slog.Logger
	// doc is the credentials document last served, rendered once per set
	// of credentials rather than once per request (see document).
	doc atomic.Pointer[renderedCredentials]
}

type instanceProfile struct{ arn, id string }

// New checks cfg and returns the handler.
func New(cfg Config) (*Handler, error) {
	role, profile, err := parseRole(cfg.RoleARN)
	if err != nil {
		return nil, err
	}
	if cfg.Credentials == nil || cfg.Tokens == nil {
		return nil, errors.New("imds: Credentials and Tokens are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	routes := map[string]string{
		PathToken:                       RouteToken,
		PathCredentials:                 RouteCredentialsList,
		PathCredentials + "/":           RouteCredentialsList,
		PathCredentials + "/" + role:    RouteCredentials,
		PathCredentialsExt:              RouteCredentialsExtList,
		PathCredentialsExt + "/":        RouteCredentialsExtList,
		PathCredentialsExt + "/" + role: RouteCredentialsExt,
		PathInfo:                        RouteInfo,
		PathRegion:                      RouteRegion,
		PathAvailabilityZone:            RouteAvailabilityZone,
		PathAvailabilityZone + "/":      RouteAvailabilityZone,
		PathIdentityDocument:            RouteIdentityDocument,
	}
	return &Handler{cfg: cfg, role: role, routes: routes, info: profile, started: cfg.Now(), log: cfg.Logger}, nil
}

// parseRole returns the role name and the instance profile real IMDS would
// show for it: same partition, account and path, a stable made-up ID.
func parseRole(roleARN string) (string, instanceProfile, error) {
	bad := fmt.Errorf("imds: %q is not an IAM role ARN: use arn:aws:iam::123456789012:role/name", roleARN)
	parts := strings.SplitN(roleARN, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "iam" || parts[4] == "" || !strings.HasPrefix(parts[5], "role/") {
		return "", instanceProfile{}, bad
	}
	resource := strings.TrimPrefix(parts[5], "role/")
	name := resource[strings.LastIndex(resource, "/")+1:]
	if name == "" {
		return "", instanceProfile{}, bad
	}
	sum := sha256.Sum256([]byte(roleARN))
	id := instanceProfileIDBase + base32.StdEncoding.EncodeToString(sum[:])[:17]
	profileARN := strings.Join(append(parts[:5:5], "instance-profile/"+resource), ":")
	return name, instanceProfile{arn: profileARN, id: id}, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route, known := h.routes[r.URL.EscapedPath()]
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		known = false // no client sends a query: refuse rather than guess
	}
	if !known {
		route = RouteOther
	}
	w.Header()["Server"] = []string{"EC2ws"}
	code := h.serve(w, r, route, known)
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.Request(route, code)
	}
}

// serve answers r and returns the status code it wrote (for the metrics;
// returned rather than observed through a wrapping ResponseWriter, which
// cost an allocation per request).
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, route string, known bool) int {
	if route == RouteToken {
		return h.token(w, r)
	}
	if !h.authorized(r) {
		return writeError(w, http.StatusUnauthorized)
	}
	if !known {
		return writeError(w, http.StatusNotFound)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return writeError(w, http.StatusMethodNotAllowed)
	}
	switch route {
	case RouteCredentialsList, RouteCredentialsExtList:
		return writeText(w, h.role) // exactly one name, no newline: clients take it whole
	case RouteCredentials:
		return h.credentials(w, r, false)
	case RouteCredentialsExt:
		return h.credentials(w, r, true)
	case RouteInfo:
		return h.instanceInfo(w, r)
	case RouteRegion:
		return writeTextOr404(w, h.placement().Region)
	case RouteAvailabilityZone:
		return writeTextOr404(w, h.placement().AvailabilityZone)
	case RouteIdentityDocument:
		return writeTextOr404(w, string(h.placement().IdentityDocument))
	}
	return writeError(w, http.StatusNotFound) // a route without an answer: none today
}

func (h *Handler) placement() Placement {
	if h.cfg.CurrentPlacement != nil {
		return h.cfg.CurrentPlacement()
	}
	return h.cfg.Placement
}

// authorized applies IMDSv2: a token, if sent, must be valid (401 otherwise,
// like real IMDS); without one, only when IMDSv1 is allowed.
func (h *Handler) authorized(r *http.Request) bool {
	vals := r.Header.Values(HeaderToken)
	if len(vals) == 0 {
		return !h.cfg.RequireIMDSv2
	}
	return len(vals) == 1 && h.cfg.Tokens.Valid(vals[0])
}

func (h *Handler) token(w http.ResponseWriter, r *http.Request) int {
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", http.MethodPut)
		return writeError(w, http.StatusMethodNotAllowed)
	}
	// Real IMDS refuses token requests that went through a proxy: it is what
	// keeps an SSRF-able proxy in the pod from minting tokens.
	if len(r.Header.Values("X-Forwarded-For")) > 0 {
		return writeError(w, http.StatusForbidden)
	}
	ttlVals := r.Header.Values(HeaderTokenTTL)
	if len(ttlVals) != 1 {
		return writeError(w, http.StatusBadRequest)
	}
	secs, err := strconv.Atoi(ttlVals[0])
	if err != nil || ttlVals[0] != strconv.Itoa(secs) {
		return writeError(w, http.StatusBadRequest)
	}
	ttl := time.Duration(secs) * time.Second
	if ttl < MinTokenTTL || ttl > MaxTokenTTL {
		return writeError(w, http.StatusBadRequest)
	}
	tok, err := h.cfg.Tokens.Issue(ttl)
	if err != nil {
		h.log.Error("issuing an IMDSv2 token failed", "err", err)
		return writeError(w, http.StatusInternalServerError)
	}
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.TokenIssued()
	}
	// Go v2 caches the token for the TTL stated here, and without the header
	// silently falls back to IMDSv1. The request's value is the canonical
	// spelling of secs (checked above).
	w.Header()[HeaderTokenTTL] = ttlVals
	return writeText(w, tok)
}

// credentialsDoc is the document of real IMDS, fields in its order.
type credentialsDoc struct {
	Code            string
	LastUpdated     string
	Type            string
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string
	Token           string
	Expiration      string
	AccountID       string `json:"AccountId,omitempty"` // -extended only
}

func (h *Handler) credentials(w http.ResponseWriter, r *http.Request, extended bool) int {
	c, err := h.cfg.Credentials.Credentials(r.Context())
	if err != nil {
		return h.unavailable(w, err)
	}
	doc, err := h.document(c)
	if err != nil { // cannot happen for these flat string structs
		return writeError(w, http.StatusInternalServerError)
	}
	if extended {
		return writeText(w, doc.extended)
	}
	return writeText(w, doc.plain)
}

// renderedCredentials are the two credentials documents of one set of
// credentials.
type renderedCredentials struct {
	from            creds.Credentials
	plain, extended string
}

// document returns c's documents, rendered when c differs from the
// credentials last rendered: an agent serves the same credentials for most
// of an hour, and rendering them for each request (JSON with reflection,
// two timestamps) was most of what the credentials request allocated.
func (h *Handler) document(c creds.Credentials) (*renderedCredentials, error) {
	if d := h.doc.Load(); d != nil && sameDocument(d.from, c) {
		return d, nil
	}
	doc := credentialsDoc{
		Code:            credentialsCodeOK,
		LastUpdated:     c.LastUpdated.UTC().Format(timeFormat),
		Type:            credentialsType,
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		Token:           c.SessionToken,
		Expiration:      c.Expiration.UTC().Format(timeFormat),
	}
	plain, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	doc.AccountID = c.AccountID
	extended, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	d := &renderedCredentials{from: c, plain: string(plain), extended: string(extended)}
	// Concurrent renderings of new credentials store equal documents: any
	// one of them may stay.
	h.doc.Store(d)
	return d, nil
}

// sameDocument reports whether a and b render the same documents: every
// field the documents show, times to the second as formatted.
func sameDocument(a, b creds.Credentials) bool {
	return a.AccessKeyID == b.AccessKeyID && a.SecretAccessKey == b.SecretAccessKey && a.SessionToken == b.SessionToken &&
		a.AccountID == b.AccountID && a.Expiration.Equal(b.Expiration) && a.LastUpdated.Equal(b.LastUpdated)
}

// unavailable answers 503 when no credentials may be served. Why 503: the Go
// SDK retries 5xx (3 attempts within its 5 s budget), riding out a fetch that
// is about to finish; botocore, the AWS CLI and JS v3 fail this fetch cleanly
// and keep their current credentials until those expire. A 404 would say the
// role does not exist, and a 200 with a failure Code would break botocore and
// JS v3 in less obvious ways. The body is the generic error page: the
// reason (never a secret) is in the sidecar's log.
func (h *Handler) unavailable(w http.ResponseWriter, err error) int {
	h.log.Debug("no role credentials to serve", "err", err)
	w.Header().Set("Retry-After", "1")
	return writeError(w, http.StatusServiceUnavailable)
}

type infoDoc struct {
	Code               string
	LastUpdated        string
	InstanceProfileArn string
	InstanceProfileID  string `json:"InstanceProfileId"`
}

func (h *Handler) instanceInfo(w http.ResponseWriter, r *http.Request) int {
	updated := h.started
	if c, err := h.cfg.Credentials.Credentials(r.Context()); err == nil {
		updated = c.LastUpdated
	}
	return writeJSON(w, infoDoc{
		Code:               credentialsCodeOK,
		LastUpdated:        updated.UTC().Format(timeFormat),
		InstanceProfileArn: h.info.arn,
		InstanceProfileID:  h.info.id,
	})
}

func writeText(w http.ResponseWriter, s string) int {
	h := w.Header()
	h["Content-Type"] = []string{contentTypeText}
	h["Content-Length"] = []string{strconv.Itoa(len(s))}
	_, _ = io.WriteString(w, s) // no copy: net/http's writer takes strings
	return http.StatusOK
}

func writeTextOr404(w http.ResponseWriter, s string) int {
	if s == "" {
		return writeError(w, http.StatusNotFound)
	}
	return writeText(w, s)
}

func writeJSON(w http.ResponseWriter, v any) int {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil { // cannot happen for these flat string structs
		return writeError(w, http.StatusInternalServerError)
	}
	return writeText(w, string(b))
}

// writeError answers with the error page real IMDS uses.
func writeError(w http.ResponseWriter, code int) int {
	title := fmt.Sprintf("%d - %s", code, http.StatusText(code))
	body := `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
	"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>` + title + `</title>
 </head>
 <body>
  <h1>` + title + `</h1>
 </body>
</html>
`
	w.Header().Set("Content-Type", contentTypeHTML)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
	return code
}
