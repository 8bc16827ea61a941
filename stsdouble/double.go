package stsdouble

import (
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"
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
	// Tags and TransitiveTagKeys are the session tags AssumeRole was
	// called with, in member order.
	Tags              []Tag    `json:"tags,omitempty"`
	TransitiveTagKeys []string `json:"transitive_tag_keys,omitempty"`
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
		ks, err := newKeySource(p, client, refetch, d.now)
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

// Roles lists the configured role ARNs, sorted.
func (d *Double) Roles() []string {
	out := make([]string, 0, len(d.roles))
	for k := range d.roles {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
