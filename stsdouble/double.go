package stsdouble

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Options are the double's dependencies; the zero value is usable.
type Options struct {
	// Now is the clock (default time.Now). Tests move it to expire credentials.
	Now func() time.Time
	// Logger gets one line per request, never a secret (default: discard).
	Logger *slog.Logger
	// HTTPClient fetches JWKS URLs (default: 10 s timeout).
	HTTPClient *http.Client
	// JWKSMinRefetch is the least time between two JWKS fetches of one provider
	// when tokens name unknown keys (default 5 s), so junk tokens cannot hammer the IdP.
	JWKSMinRefetch time.Duration
}

// Outage modes for SetOutage.
type Outage int

const (
	// OutageNone answers normally.
	OutageNone Outage = iota
	// Outage503 answers every STS call with 503 ServiceUnavailable.
	Outage503
	// OutageClose closes every STS connection without an answer.
	OutageClose
)

// RoleCalls counts STS calls about one role.
type RoleCalls struct {
	AssumeRole                int `json:"assume_role"`
	AssumeRoleWithWebIdentity int `json:"assume_role_with_web_identity"`
	// GetCallerIdentity counts calls signed with credentials issued for the role.
	GetCallerIdentity int `json:"get_caller_identity"`
	// Denied counts calls about the role that failed (any error).
	Denied int `json:"denied"`
}

// Stats is a snapshot of the double's counters.
type Stats struct {
	Requests int                  `json:"requests"`
	Roles    map[string]RoleCalls `json:"roles"`
	Errors   map[string]int       `json:"errors"`
}

// Issued describes credentials the double handed out. It holds no secret.
type Issued struct {
	AccessKeyID    string    `json:"access_key_id"`
	RoleARN        string    `json:"role_arn"`
	AssumedRoleARN string    `json:"arn"`
	SessionName    string    `json:"session_name"`
	Action         string    `json:"action"`
	Caller         string    `json:"caller"` // caller ARN or web identity subject
	IssuedAt       time.Time `json:"issued_at"`
	Expiration     time.Time `json:"expiration"`
}

type session struct {
	Issued
	secret, token string
	roleID        string
}

// Double is a faithful in-memory AWS STS for tests. It is an http.Handler for
// the STS Query API; Admin serves its test knobs.
type Double struct {
	cfg   Config
	now   func() time.Time
	log   *slog.Logger
	roles map[string]Role
	keys  map[string]Key
	idps  map[string]*keySource
	skew  time.Duration

	mu       sync.Mutex
	sessions map[string]*session // by access key id
	order    []string            // access key ids in issue order
	stats    Stats
	outage   Outage
	latency  time.Duration
	lifetime time.Duration // test cap on issued lifetimes; 0: as requested
}

// New builds a double from cfg. JWKS files are read now; JWKS URLs on first use.
func New(cfg Config, opt Options) (*Double, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sts-double config: %w", err)
	}
	d := &Double{
		cfg: cfg, now: opt.Now, log: opt.Logger,
		roles: map[string]Role{}, keys: map[string]Key{}, idps: map[string]*keySource{},
		sessions: map[string]*session{},
		skew:     15 * time.Minute,
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxClockSkewSeconds > 0 {
		d.skew = time.Duration(cfg.MaxClockSkewSeconds) * time.Second
	}
	client := opt.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	for _, r := range cfg.Roles {
		d.roles[r.ARN] = r
	}
	for _, k := range cfg.Keys {
		d.keys[k.AccessKeyID] = k
	}
	refetch := opt.JWKSMinRefetch
	if refetch <= 0 {
		refetch = 5 * time.Second
	}
	for _, p := range cfg.OIDCProviders {
		ks, err := newKeySource(p, client, refetch)
		if err != nil {
			return nil, err
		}
		d.idps[p.Issuer] = ks
	}
	d.resetStatsLocked()
	return d, nil
}

func (d *Double) resetStatsLocked() {
	d.stats = Stats{Roles: map[string]RoleCalls{}, Errors: map[string]int{}}
}

// SetOutage switches the simulated outage.
func (d *Double) SetOutage(o Outage) { d.mu.Lock(); d.outage = o; d.mu.Unlock() }

// SetLatency delays every STS answer by l (the admin API is not delayed).
func (d *Double) SetLatency(l time.Duration) { d.mu.Lock(); d.latency = l; d.mu.Unlock() }

// SetMaxLifetime caps the lifetime of credentials issued from now on (0: no
// cap). Real STS never shortens a session; this knob lets rotation tests see
// expiry in minutes instead of the 15-minute STS minimum.
func (d *Double) SetMaxLifetime(l time.Duration) { d.mu.Lock(); d.lifetime = l; d.mu.Unlock() }

// Stats returns a copy of the counters.
func (d *Double) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Stats{Requests: d.stats.Requests, Roles: map[string]RoleCalls{}, Errors: map[string]int{}}
	for k, v := range d.stats.Roles {
		s.Roles[k] = v
	}
	for k, v := range d.stats.Errors {
		s.Errors[k] = v
	}
	return s
}

// Calls returns the counters of one role.
func (d *Double) Calls(roleARN string) RoleCalls {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats.Roles[roleARN]
}

// Issued lists the credentials issued for roleARN (all roles when empty), oldest first.
func (d *Double) Issued(roleARN string) []Issued {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Issued
	for _, id := range d.order {
		s := d.sessions[id]
		if roleARN == "" || s.RoleARN == roleARN {
			out = append(out, s.Issued)
		}
	}
	return out
}

// Reset zeroes the counters; issued credentials stay valid.
func (d *Double) Reset() { d.mu.Lock(); d.resetStatsLocked(); d.mu.Unlock() }

// Expire makes issued credentials with this access key id expired now, as if
// their time had run out.
func (d *Double) Expire(accessKeyID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[accessKeyID]
	if ok {
		s.Expiration = d.now().Add(-time.Second)
	}
	return ok
}

// maxBody bounds request bodies (web identity tokens are at most 20000 characters).
const maxBody = 1 << 20

// ServeHTTP answers the STS Query API.
func (d *Double) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newRequestID()
	d.mu.Lock()
	outage, latency := d.outage, d.latency
	d.stats.Requests++
	d.mu.Unlock()

	// Read the body first so that a client that gives up during the
	// injected latency cancels r.Context().
	raw, readErr := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	switch outage {
	case OutageClose:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				d.log.Info("sts call dropped (outage)", "request_id", reqID)
				return
			}
		}
		panic(http.ErrAbortHandler) // HTTP/2 or no hijack: abort the stream
	case Outage503:
		d.writeError(w, reqID, "", "", errUnavailable)
		return
	}

	action, role, body, e := d.handle(r, raw, readErr, reqID)
	if e != nil {
		d.writeError(w, reqID, action, role, e)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", reqID)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	d.log.Info("sts call", "request_id", reqID, "action", action, "role", role, "status", http.StatusOK)
}

func (d *Double) writeError(w http.ResponseWriter, reqID, action, role string, e *apiError) {
	d.mu.Lock()
	d.stats.Errors[e.code]++
	if role != "" {
		c := d.stats.Roles[role]
		c.Denied++
		d.stats.Roles[role] = c
	}
	d.mu.Unlock()
	b, _ := xml.Marshal(errorResponse{Xmlns: Namespace, Error: errorBody{Type: e.fault, Code: e.code, Message: e.message}, RequestID: reqID})
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", reqID)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.status)
	w.Write(b)
	// Messages never hold secrets: they name ARNs, dates and parameters only.
	d.log.Info("sts call failed", "request_id", reqID, "action", action, "role", role, "status", e.status, "code", e.code, "message", e.message)
}

// handle parses and dispatches one call; role is the role the call was about
// (for counters), body the XML answer.
func (d *Double) handle(r *http.Request, raw []byte, readErr error, reqID string) (action, role string, body []byte, e *apiError) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return "", "", nil, senderErr(http.StatusMethodNotAllowed, "InvalidAction", "Only GET and POST are supported by the STS Query API.")
	}
	if readErr != nil {
		return "", "", nil, senderErr(http.StatusBadRequest, "MalformedQueryString", "could not read the request body")
	}
	if len(raw) > maxBody {
		return "", "", nil, senderErr(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "Request body is too large")
	}
	params, perr := url.ParseQuery(r.URL.RawQuery)
	if perr != nil {
		return "", "", nil, senderErr(http.StatusBadRequest, "MalformedQueryString", "The query string is malformed.")
	}
	if r.Method == http.MethodPost && len(raw) > 0 {
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if ct != "application/x-www-form-urlencoded" {
			return "", "", nil, senderErr(http.StatusBadRequest, "InvalidAction", "POST bodies must be application/x-www-form-urlencoded")
		}
		form, err := url.ParseQuery(string(raw))
		if err != nil {
			return "", "", nil, senderErr(http.StatusBadRequest, "MalformedQueryString", "The request body is not a valid form.")
		}
		for k, v := range form {
			params[k] = append(params[k], v...)
		}
	}
	action = params.Get("Action")
	if v := params.Get("Version"); v != "" && v != APIVersion {
		return action, "", nil, senderErr(http.StatusBadRequest, "InvalidAction", fmt.Sprintf("Could not find operation %s for version %s", action, v))
	}
	switch action {
	case "AssumeRole":
		caller, _, e := d.authenticate(r, raw)
		role = params.Get("RoleArn")
		if e != nil {
			return action, d.knownRole(role), nil, e
		}
		body, e = d.assumeRole(params, caller, reqID)
		return action, d.knownRole(role), body, e
	case "AssumeRoleWithWebIdentity":
		role = params.Get("RoleArn")
		body, e = d.assumeRoleWithWebIdentity(r.Context(), params, reqID)
		return action, d.knownRole(role), body, e
	case "GetCallerIdentity":
		caller, cs, e := d.authenticate(r, raw)
		if e != nil {
			return action, "", nil, e
		}
		body, role = d.getCallerIdentity(caller, cs, reqID)
		return action, role, body, nil
	case "":
		return action, "", nil, senderErr(http.StatusBadRequest, "MissingAction", "Missing Action")
	}
	return action, "", nil, senderErr(http.StatusBadRequest, "InvalidAction", fmt.Sprintf("Could not find operation %s for version %s", action, APIVersion))
}

// knownRole returns arn if it names a configured role (so counters cannot be
// grown without bound by arbitrary input), else "".
func (d *Double) knownRole(arn string) string {
	if _, ok := d.roles[arn]; ok {
		return arn
	}
	return ""
}

// authenticate verifies the request's SigV4 signature. It returns the
// caller, and the issued session when the caller used credentials from the double.
func (d *Double) authenticate(r *http.Request, body []byte) (principal, *session, *apiError) {
	sig, e := parseSignature(r)
	if e != nil {
		return principal{}, nil, e
	}
	if sig == nil {
		return principal{}, nil, errMissingAuth
	}
	now := d.now()
	var secret, arn string
	var sess *session
	if k, ok := d.keys[sig.accessKeyID]; ok {
		if k.SessionToken != "" && sig.securityToken != k.SessionToken {
			return principal{}, nil, errInvalidKey
		}
		secret, arn = k.SecretAccessKey, k.ARN
	} else {
		d.mu.Lock()
		s, ok := d.sessions[sig.accessKeyID]
		var cp session
		if ok {
			cp = *s
		}
		d.mu.Unlock()
		if !ok || sig.securityToken != cp.token {
			return principal{}, nil, errInvalidKey
		}
		if !now.Before(cp.Expiration) {
			return principal{}, nil, errExpiredKey
		}
		sess = &cp
		secret, arn = cp.secret, cp.AssumedRoleARN
	}
	if e := sig.checkScope(now, d.cfg.Regions, d.skew); e != nil {
		return principal{}, nil, e
	}
	if !sig.verify(r, body, secret) {
		return principal{}, nil, errBadSig
	}
	p, err := parsePrincipal(arn)
	if err != nil {
		return principal{}, nil, errInvalidKey
	}
	return p, sess, nil
}

var (
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]*$`)
	externalIDRE  = regexp.MustCompile(`^[\w+=,.@:/-]*$`)
)

func validationFailed(value, member, constraint string) *apiError {
	return errValidation(fmt.Sprintf("1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: %s", value, member, constraint))
}

func nullMember(member string) *apiError {
	return errValidation(fmt.Sprintf("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", member))
}

// commonParams validates RoleArn, RoleSessionName and DurationSeconds as STS does.
func commonParams(p url.Values) (roleARN, sessionName string, duration int, e *apiError) {
	roleARN = p.Get("RoleArn")
	sessionName = p.Get("RoleSessionName")
	switch {
	case !p.Has("RoleArn"):
		return "", "", 0, nullMember("roleArn")
	case len(roleARN) < 20:
		return "", "", 0, validationFailed(roleARN, "roleArn", "Member must have length greater than or equal to 20")
	case len(roleARN) > 2048:
		return "", "", 0, validationFailed(roleARN, "roleArn", "Member must have length less than or equal to 2048")
	case !p.Has("RoleSessionName"):
		return "", "", 0, nullMember("roleSessionName")
	case utf8.RuneCountInString(sessionName) < 2:
		return "", "", 0, validationFailed(sessionName, "roleSessionName", "Member must have length greater than or equal to 2")
	case utf8.RuneCountInString(sessionName) > 64:
		return "", "", 0, validationFailed(sessionName, "roleSessionName", "Member must have length less than or equal to 64")
	case !sessionNameRE.MatchString(sessionName):
		return "", "", 0, validationFailed(sessionName, "roleSessionName", `Member must satisfy regular expression pattern: [\w+=,.@-]*`)
	}
	if !roleARNRE.MatchString(roleARN) {
		return "", "", 0, errValidation(roleARN + " is invalid")
	}
	duration = 3600
	if p.Has("DurationSeconds") {
		v := p.Get("DurationSeconds")
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			return "", "", 0, senderErr(http.StatusBadRequest, "MalformedInput", fmt.Sprintf("DurationSeconds %q is not an integer", v))
		case n < 900:
			return "", "", 0, validationFailed(v, "durationSeconds", "Member must have value greater than or equal to 900")
		case n > 43200:
			return "", "", 0, validationFailed(v, "durationSeconds", "Member must have value less than or equal to 43200")
		}
		duration = n
	}
	return roleARN, sessionName, duration, nil
}

func (d *Double) assumeRole(p url.Values, caller principal, reqID string) ([]byte, *apiError) {
	roleARN, sessionName, duration, e := commonParams(p)
	if e != nil {
		return nil, e
	}
	if p.Has("ExternalId") {
		x := p.Get("ExternalId")
		if len(x) < 2 || len(x) > 1224 {
			return nil, validationFailed(x, "externalId", "Member must have length between 2 and 1224")
		}
		if !externalIDRE.MatchString(x) {
			return nil, validationFailed(x, "externalId", `Member must satisfy regular expression pattern: [\w+=,.@:\/-]*`)
		}
	}
	callerARN := caller.arn()
	denied := errAccessDenied(fmt.Sprintf("User: %s is not authorized to perform: sts:AssumeRole on resource: %s", callerARN, roleARN))
	role, ok := d.roles[roleARN]
	if !ok {
		return nil, denied // real STS does not say whether the role exists
	}
	trusted := false
	for _, t := range role.TrustedPrincipals {
		trusted = trusted || trusts(t, caller)
	}
	if !trusted || (role.ExternalID != "" && p.Get("ExternalId") != role.ExternalID) {
		return nil, denied
	}
	if duration > role.maxSession() {
		return nil, errValidation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}
	if caller.kind == "assumed-role" && duration > 3600 {
		return nil, errValidation("The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
	}
	s := d.issue(role, sessionName, duration, "AssumeRole", callerARN)
	var out assumeRoleResponse
	out.Xmlns = Namespace
	out.Result.Credentials = s.xml()
	out.Result.AssumedRoleUser = assumedRoleUserXML{AssumedRoleID: s.roleID + ":" + sessionName, Arn: s.AssumedRoleARN}
	out.Result.PackedPolicySize = packedPolicySize(p)
	out.Result.SourceIdentity = p.Get("SourceIdentity")
	out.ResponseMetadata.RequestID = reqID
	d.count(roleARN, func(c *RoleCalls) { c.AssumeRole++ })
	return mustXML(out), nil
}

// packedPolicySize is present only when session policies or tags were passed,
// as in STS: a rough percentage of the packed limit.
func packedPolicySize(p url.Values) *int {
	n := len(p.Get("Policy"))
	present := p.Has("Policy")
	for k, v := range p {
		if strings.HasPrefix(k, "PolicyArns.") || strings.HasPrefix(k, "Tags.") {
			present = true
			for _, s := range v {
				n += len(s)
			}
		}
	}
	if !present {
		return nil
	}
	pct := n * 100 / 2048
	if pct < 1 {
		pct = 1
	}
	return &pct
}

func (d *Double) assumeRoleWithWebIdentity(ctx context.Context, p url.Values, reqID string) ([]byte, *apiError) {
	roleARN, sessionName, duration, e := commonParams(p)
	if e != nil {
		return nil, e
	}
	tok := p.Get("WebIdentityToken")
	switch {
	case !p.Has("WebIdentityToken"):
		return nil, nullMember("webIdentityToken")
	case len(tok) < 4:
		return nil, validationFailed("***", "webIdentityToken", "Member must have length greater than or equal to 4")
	case len(tok) > 20000:
		return nil, validationFailed("***", "webIdentityToken", "Member must have length less than or equal to 20000")
	}
	hdr, claims, signed, sig, err := splitJWT(tok)
	if err != nil {
		return nil, errInvalidIdentityToken("The web identity token is not a valid JWT: " + err.Error())
	}
	ks, ok := d.idps[claims.Issuer]
	if !ok {
		return nil, errInvalidIdentityToken(fmt.Sprintf("No OpenIDConnect provider found in your account for %s", claims.Issuer))
	}
	if hdr.Alg != "RS256" && hdr.Alg != "ES256" {
		return nil, errInvalidIdentityToken(fmt.Sprintf("Unsupported token signing algorithm %q: use RS256 or ES256", hdr.Alg))
	}
	key, err := ks.key(ctx, hdr.Kid)
	var fe fetchError
	switch {
	case errors.As(err, &fe):
		d.log.Warn("JWKS fetch failed", "issuer", claims.Issuer, "error", err.Error())
		return nil, senderErr(http.StatusBadRequest, "IDPCommunicationError", "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements")
	case err != nil:
		return nil, errInvalidIdentityToken("Couldn't find a matching key in the JWKS of your identity provider for the token's key id")
	}
	if err := verifyJWS(hdr.Alg, key, signed, sig); err != nil {
		return nil, errInvalidIdentityToken("The signature of the web identity token could not be verified")
	}
	now := d.now()
	if claims.ExpiresAt == nil {
		return nil, errInvalidIdentityToken("The web identity token has no exp claim")
	}
	if now.Unix() >= *claims.ExpiresAt {
		return nil, senderErr(http.StatusBadRequest, "ExpiredTokenException", fmt.Sprintf("Token expired: current date/time %d must be before the expiration date/time%d", now.Unix(), *claims.ExpiresAt))
	}
	if claims.NotBefore != nil && now.Unix() < *claims.NotBefore {
		return nil, errInvalidIdentityToken("The web identity token is not yet valid (nbf is in the future)")
	}
	clientIDs := ks.provider.ClientIDs
	if len(clientIDs) == 0 {
		clientIDs = []string{"sts.amazonaws.com"}
	}
	aud := ""
	for _, a := range claims.Audience {
		for _, c := range clientIDs {
			if a == c && aud == "" {
				aud = a
			}
		}
	}
	if aud == "" {
		return nil, errInvalidIdentityToken("Incorrect token audience")
	}
	denied := errAccessDenied("Not authorized to perform sts:AssumeRoleWithWebIdentity")
	role, ok := d.roles[roleARN]
	if !ok {
		return nil, denied
	}
	trusted := false
	for _, t := range role.WebIdentity {
		want := t.Audience
		if want == "" {
			want = "sts.amazonaws.com"
		}
		if t.Issuer == claims.Issuer && want == aud && globMatch(t.Subject, claims.Subject) {
			trusted = true
		}
	}
	if !trusted {
		return nil, denied
	}
	if duration > role.maxSession() {
		return nil, errValidation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}
	s := d.issue(role, sessionName, duration, "AssumeRoleWithWebIdentity", claims.Subject)
	var out assumeRoleWithWebIdentityResponse
	out.Xmlns = Namespace
	out.Result.Credentials = s.xml()
	out.Result.SubjectFromWebIdentityToken = claims.Subject
	out.Result.AssumedRoleUser = assumedRoleUserXML{AssumedRoleID: s.roleID + ":" + sessionName, Arn: s.AssumedRoleARN}
	out.Result.PackedPolicySize = packedPolicySize(p)
	out.Result.Provider = "arn:aws:iam::" + d.cfg.Account + ":oidc-provider/" + strings.TrimPrefix(claims.Issuer, "https://")
	out.Result.Audience = aud
	out.ResponseMetadata.RequestID = reqID
	d.count(roleARN, func(c *RoleCalls) { c.AssumeRoleWithWebIdentity++ })
	return mustXML(out), nil
}

func (d *Double) getCallerIdentity(caller principal, sess *session, reqID string) ([]byte, string) {
	var out getCallerIdentityResponse
	out.Xmlns = Namespace
	out.Result.Arn = caller.arn()
	out.Result.Account = caller.account
	role := ""
	switch {
	case sess != nil:
		out.Result.UserID = sess.roleID + ":" + sess.SessionName
		role = sess.RoleARN
		d.count(role, func(c *RoleCalls) { c.GetCallerIdentity++ })
	case caller.kind == "assumed-role":
		out.Result.UserID = uniqueID("AROA", "arn:aws:iam::"+caller.account+":role/"+caller.name) + ":" + caller.session
	case caller.kind == "root":
		out.Result.UserID = caller.account
	default:
		out.Result.UserID = uniqueID("AIDA", caller.arn())
	}
	out.ResponseMetadata.RequestID = reqID
	return mustXML(out), role
}

func (d *Double) count(role string, f func(*RoleCalls)) {
	d.mu.Lock()
	c := d.stats.Roles[role]
	f(&c)
	d.stats.Roles[role] = c
	d.mu.Unlock()
}

// issue mints and records temporary credentials for role.
func (d *Double) issue(role Role, sessionName string, duration int, action, caller string) *session {
	now := d.now().UTC().Truncate(time.Second)
	name := role.ARN[strings.LastIndex(role.ARN, "/")+1:]
	d.mu.Lock()
	defer d.mu.Unlock()
	life := time.Duration(duration) * time.Second
	if d.lifetime > 0 && d.lifetime < life {
		life = d.lifetime
	}
	s := &session{
		Issued: Issued{
			AccessKeyID:    "ASIA" + randomString(16),
			RoleARN:        role.ARN,
			AssumedRoleARN: "arn:aws:sts::" + d.cfg.Account + ":assumed-role/" + name + "/" + sessionName,
			SessionName:    sessionName,
			Action:         action,
			Caller:         caller,
			IssuedAt:       now,
			Expiration:     now.Add(life),
		},
		secret: randomBase64(30),
		token:  "IQoJb3JpZ2luX2VjE" + randomBase64(270),
		roleID: uniqueID("AROA", role.ARN),
	}
	d.sessions[s.AccessKeyID] = s
	d.order = append(d.order, s.AccessKeyID)
	d.pruneLocked(now)
	return s
}

// maxSessions bounds memory in long benchmarks and demos: past it, sessions
// expired for an hour are forgotten (their keys then get InvalidClientTokenId).
const maxSessions = 10000

func (d *Double) pruneLocked(now time.Time) {
	if len(d.order) <= maxSessions {
		return
	}
	kept := d.order[:0]
	for _, id := range d.order {
		if s := d.sessions[id]; now.Sub(s.Expiration) > time.Hour {
			delete(d.sessions, id)
			continue
		}
		kept = append(kept, id)
	}
	d.order = kept
}

func (s *session) xml() credentialsXML {
	return credentialsXML{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.secret, SessionToken: s.token, Expiration: formatExpiration(s.Expiration)}
}

func (p principal) arn() string {
	switch p.kind {
	case "root":
		return "arn:aws:iam::" + p.account + ":root"
	case "assumed-role":
		return "arn:aws:sts::" + p.account + ":assumed-role/" + p.name + "/" + p.session
	}
	return "arn:aws:iam::" + p.account + ":" + p.kind + "/" + p.name
}

// uniqueID derives a stable IAM unique id (AROA..., AIDA...) from an ARN.
func uniqueID(prefix, arn string) string {
	sum := sha256.Sum256([]byte(arn))
	return prefix + strings.ToUpper(base32.StdEncoding.EncodeToString(sum[:]))[:17]
}

const upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

func randomString(n int) string {
	b := make([]byte, n)
	for i := range b {
		x, err := rand.Int(rand.Reader, big.NewInt(int64(len(upperAlnum))))
		if err != nil {
			panic(fmt.Sprintf("crypto/rand: %v", err))
		}
		b[i] = upperAlnum[x.Int64()]
	}
	return string(b)
}

func randomBase64(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return base64.StdEncoding.EncodeToString(b)
}

func newRequestID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func mustXML(v any) []byte {
	b, err := xml.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal STS response: %v", err)) // fixed struct types: cannot fail
	}
	return b
}

// Admin returns the handler of the test knobs, meant to be mounted at
// /_double/ (STS itself only uses "/"):
//
//	GET  /_double/healthz            200 when serving (for probes)
//	GET  /_double/calls              Stats as JSON
//	GET  /_double/issued[?role=ARN]  issued credentials (no secrets) as JSON
//	POST /_double/outage?on=1[&mode=503|close]   on=0 ends it
//	POST /_double/latency?ms=N
//	POST /_double/lifetime?seconds=N (0: no cap)
//	POST /_double/expire?access_key_id=ID
//	POST /_double/reset              zero the counters
func (d *Double) Admin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_double/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]bool{"ok": true})
	})
	mux.HandleFunc("GET /_double/calls", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.Stats())
	})
	mux.HandleFunc("GET /_double/issued", func(w http.ResponseWriter, r *http.Request) {
		list := d.Issued(r.URL.Query().Get("role"))
		if list == nil {
			list = []Issued{}
		}
		writeJSON(w, list)
	})
	mux.HandleFunc("POST /_double/outage", func(w http.ResponseWriter, r *http.Request) {
		on, err := strconv.ParseBool(r.URL.Query().Get("on"))
		if err != nil {
			http.Error(w, "outage: give on=1 or on=0 (and optionally mode=503 or mode=close)", http.StatusBadRequest)
			return
		}
		mode := OutageNone
		if on {
			switch r.URL.Query().Get("mode") {
			case "", "503":
				mode = Outage503
			case "close":
				mode = OutageClose
			default:
				http.Error(w, "outage: mode must be 503 or close", http.StatusBadRequest)
				return
			}
		}
		d.SetOutage(mode)
		writeJSON(w, map[string]any{"outage": on, "mode": r.URL.Query().Get("mode")})
	})
	mux.HandleFunc("POST /_double/latency", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			http.Error(w, "latency: give ms=N (milliseconds, >= 0)", http.StatusBadRequest)
			return
		}
		d.SetLatency(time.Duration(ms) * time.Millisecond)
		writeJSON(w, map[string]int{"latency_ms": ms})
	})
	mux.HandleFunc("POST /_double/lifetime", func(w http.ResponseWriter, r *http.Request) {
		s, err := strconv.Atoi(r.URL.Query().Get("seconds"))
		if err != nil || s < 0 {
			http.Error(w, "lifetime: give seconds=N (>= 0, 0 removes the cap)", http.StatusBadRequest)
			return
		}
		d.SetMaxLifetime(time.Duration(s) * time.Second)
		writeJSON(w, map[string]int{"max_lifetime_seconds": s})
	})
	mux.HandleFunc("POST /_double/expire", func(w http.ResponseWriter, r *http.Request) {
		if !d.Expire(r.URL.Query().Get("access_key_id")) {
			http.Error(w, "expire: no issued credentials with that access_key_id", http.StatusNotFound)
			return
		}
		writeJSON(w, map[string]bool{"expired": true})
	})
	mux.HandleFunc("POST /_double/reset", func(w http.ResponseWriter, r *http.Request) {
		d.Reset()
		writeJSON(w, map[string]bool{"reset": true})
	})
	return mux
}

// Handler serves STS on "/" and the admin API under /_double/.
func (d *Double) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/_double/", d.Admin())
	mux.Handle("/", d)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, "encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(buf.Bytes())
}

// Roles lists the configured role ARNs, sorted.
func (d *Double) Roles() []string {
	out := make([]string, 0, len(d.roles))
	for k := range d.roles {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
