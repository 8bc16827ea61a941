package stsdouble

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Config is what the double knows: the account, the long-term keys that may
// sign requests, the roles with their trust, and the OIDC providers whose
// tokens AssumeRoleWithWebIdentity accepts. LoadConfig reads it from JSON;
// the JSON field names are the documented file format (see README.md).
type Config struct {
	// Account is the 12-digit account every role and key belongs to.
	Account string `json:"account"`
	// Regions accepted in the SigV4 credential scope. Empty: any region.
	Regions []string `json:"regions,omitempty"`
	// MaxClockSkewSeconds bounds |X-Amz-Date - now|; 0 means STS's 900 s.
	MaxClockSkewSeconds int `json:"max_clock_skew_seconds,omitempty"`
	// Keys are long-term (or externally issued, e.g. the node's instance
	// profile) credentials that may sign AssumeRole and GetCallerIdentity.
	Keys []Key `json:"keys,omitempty"`
	// Roles that may be assumed.
	Roles []Role `json:"roles"`
	// OIDCProviders are the identity providers registered in the account.
	OIDCProviders []OIDCProvider `json:"oidc_providers,omitempty"`
}

// Key is a known signing identity.
type Key struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	// SessionToken, when set, must come with every request signed by this key
	// (instance-profile credentials carry one).
	SessionToken string `json:"session_token,omitempty"`
	// ARN is who the key belongs to: arn:aws:iam::ACCOUNT:user/NAME, or
	// arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION for a node role.
	ARN string `json:"arn"`
}

// Role is an IAM role and its trust policy, reduced to what STS checks.
type Role struct {
	ARN string `json:"arn"`
	// MaxSessionDurationSeconds is the role's MaxSessionDuration (3600..43200); 0 means 3600.
	MaxSessionDurationSeconds int `json:"max_session_duration_seconds,omitempty"`
	// TrustedPrincipals may call AssumeRole: user or role ARNs (an assumed-role
	// caller matches its role's ARN), arn:aws:iam::ACCOUNT:root for a whole
	// account, or "*".
	TrustedPrincipals []string `json:"trusted_principals,omitempty"`
	// ExternalID, when set, must be passed as ExternalId by AssumeRole callers.
	ExternalID string `json:"external_id,omitempty"`
	// TagSession: the trust policy also allows sts:TagSession to
	// TrustedPrincipals, so their AssumeRole calls may carry session tags.
	// Without it a call with tags is refused (AccessDenied naming
	// sts:TagSession), as STS does.
	TagSession bool `json:"tag_session,omitempty"`
	// WebIdentity lists who may call AssumeRoleWithWebIdentity.
	WebIdentity []WebIdentityTrust `json:"web_identity,omitempty"`
}

// WebIdentityTrust is one Federated statement of a trust policy.
type WebIdentityTrust struct {
	// Issuer names an entry of Config.OIDCProviders (its issuer URL).
	Issuer string `json:"issuer"`
	// Audience the token must carry; empty means "sts.amazonaws.com".
	Audience string `json:"audience,omitempty"`
	// Subject is matched like StringLike: '*' any run, '?' one character.
	// Example: system:serviceaccount:default:*
	Subject string `json:"subject"`
}

// OIDCProvider is an IAM OpenID Connect provider: the issuer, the client IDs
// (audiences) it accepts, and where its signing keys come from.
type OIDCProvider struct {
	// Issuer is the exact "iss" claim, e.g. https://kubernetes.default.svc.
	Issuer string `json:"issuer"`
	// ClientIDs are accepted audiences; empty means ["sts.amazonaws.com"].
	ClientIDs []string `json:"client_ids,omitempty"`
	// JWKSFile is a JSON Web Key Set on disk (read once at start).
	JWKSFile string `json:"jwks_file,omitempty"`
	// JWKSURL is fetched on first use and again when a token names an unknown key
	// (e.g. the kube-apiserver's https://HOST/openid/v1/jwks).
	JWKSURL string `json:"jwks_url,omitempty"`
	// CAFile verifies JWKSURL's TLS certificate (PEM).
	CAFile string `json:"ca_file,omitempty"`
	// BearerTokenFile is sent as "Authorization: Bearer" to JWKSURL; re-read
	// on every fetch, since projected tokens rotate.
	BearerTokenFile string `json:"bearer_token_file,omitempty"`
}

// LoadConfig reads a JSON config file. Relative file paths inside it are
// taken relative to the file's directory. Unknown fields are an error, so a
// typo cannot silently weaken a trust policy.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read sts-double config: %w", err)
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("parse sts-double config %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	for i := range c.OIDCProviders {
		p := &c.OIDCProviders[i]
		p.JWKSFile, p.CAFile, p.BearerTokenFile = rel(p.JWKSFile), rel(p.CAFile), rel(p.BearerTokenFile)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("sts-double config %s: %w", path, err)
	}
	return c, nil
}

var (
	accountRE   = regexp.MustCompile(`^[0-9]{12}$`)
	roleARNRE   = regexp.MustCompile(`^arn:aws:iam::([0-9]{12}):role/(?:[\x21-\x7e]+/)?([\w+=,.@-]{1,64})$`)
	accessKeyRE = regexp.MustCompile(`^[\w]{16,128}$`)
)

// Validate reports the first problem in c, naming the field and the fix.
func (c Config) Validate() error {
	if !accountRE.MatchString(c.Account) {
		return fmt.Errorf("account %q is not 12 digits: give the account id, e.g. 111122223333", c.Account)
	}
	if c.MaxClockSkewSeconds < 0 {
		return fmt.Errorf("max_clock_skew_seconds=%d is negative: use 0 for STS's 900", c.MaxClockSkewSeconds)
	}
	seenKey := map[string]bool{}
	for i, k := range c.Keys {
		if !accessKeyRE.MatchString(k.AccessKeyID) {
			return fmt.Errorf("keys[%d].access_key_id is not 16-128 word characters", i)
		}
		if seenKey[k.AccessKeyID] {
			return fmt.Errorf("keys[%d]: access key id listed twice", i)
		}
		seenKey[k.AccessKeyID] = true
		if k.SecretAccessKey == "" {
			return fmt.Errorf("keys[%d].secret_access_key is empty", i)
		}
		if _, err := parsePrincipal(k.ARN); err != nil {
			return fmt.Errorf("keys[%d].arn: %w", i, err)
		}
	}
	providers := map[string]bool{}
	for i, p := range c.OIDCProviders {
		if !strings.HasPrefix(p.Issuer, "https://") {
			return fmt.Errorf("oidc_providers[%d].issuer %q must be an https:// URL (STS accepts no other)", i, p.Issuer)
		}
		if (p.JWKSFile == "") == (p.JWKSURL == "") {
			return fmt.Errorf("oidc_providers[%d] (%s): set exactly one of jwks_file and jwks_url", i, p.Issuer)
		}
		if p.CAFile != "" && p.JWKSURL == "" {
			return fmt.Errorf("oidc_providers[%d] (%s): ca_file needs jwks_url", i, p.Issuer)
		}
		providers[p.Issuer] = true
	}
	seenRole := map[string]bool{}
	for i, r := range c.Roles {
		m := roleARNRE.FindStringSubmatch(r.ARN)
		if m == nil {
			return fmt.Errorf("roles[%d].arn %q is not a role ARN: use arn:aws:iam::ACCOUNT:role/NAME", i, r.ARN)
		}
		if m[1] != c.Account {
			return fmt.Errorf("roles[%d].arn %q is not in account %s", i, r.ARN, c.Account)
		}
		if seenRole[r.ARN] {
			return fmt.Errorf("roles[%d].arn %q listed twice", i, r.ARN)
		}
		seenRole[r.ARN] = true
		if d := r.MaxSessionDurationSeconds; d != 0 && (d < 3600 || d > 43200) {
			return fmt.Errorf("roles[%d] (%s).max_session_duration_seconds=%d: IAM allows 3600..43200", i, r.ARN, d)
		}
		for j, p := range r.TrustedPrincipals {
			if p == "*" {
				continue
			}
			if _, err := parsePrincipal(p); err != nil {
				return fmt.Errorf("roles[%d] (%s).trusted_principals[%d]: %w", i, r.ARN, j, err)
			}
		}
		for j, w := range r.WebIdentity {
			if !providers[w.Issuer] {
				return fmt.Errorf("roles[%d] (%s).web_identity[%d].issuer %q is not in oidc_providers: add the provider", i, r.ARN, j, w.Issuer)
			}
			if w.Subject == "" {
				return fmt.Errorf("roles[%d] (%s).web_identity[%d].subject is empty: give a pattern like system:serviceaccount:NS:SA", i, r.ARN, j)
			}
		}
	}
	return nil
}

func (r Role) maxSession() int {
	if r.MaxSessionDurationSeconds == 0 {
		return 3600
	}
	return r.MaxSessionDurationSeconds
}

// principal is a parsed IAM/STS identity ARN.
type principal struct {
	account string
	kind    string // "user", "role", "assumed-role", "root"
	name    string // user or role name (no path)
	session string // assumed-role only
}

var principalRE = regexp.MustCompile(`^arn:aws:(iam|sts)::([0-9]{12}):(root|user/.+|role/.+|assumed-role/[^/]+/[^/]+)$`)

func parsePrincipal(arn string) (principal, error) {
	m := principalRE.FindStringSubmatch(arn)
	if m == nil {
		return principal{}, fmt.Errorf("%q is not a principal ARN: use arn:aws:iam::ACCOUNT:user/NAME, arn:aws:iam::ACCOUNT:role/NAME, arn:aws:iam::ACCOUNT:root or arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION", arn)
	}
	p := principal{account: m[2]}
	rest := m[3]
	switch {
	case rest == "root":
		p.kind = "root"
	case strings.HasPrefix(rest, "assumed-role/"):
		if m[1] != "sts" {
			return principal{}, fmt.Errorf("%q: assumed-role ARNs start with \"arn:aws:sts::\"", arn)
		}
		parts := strings.SplitN(strings.TrimPrefix(rest, "assumed-role/"), "/", 2)
		p.kind, p.name, p.session = "assumed-role", parts[0], parts[1]
	default:
		if m[1] != "iam" {
			return principal{}, fmt.Errorf("%q: user and role ARNs start with \"arn:aws:iam::\"", arn)
		}
		kind, path, _ := strings.Cut(rest, "/")
		p.kind = kind
		p.name = path[strings.LastIndex(path, "/")+1:]
	}
	return p, nil
}

// trusts reports whether the trust principal entry admits the caller.
func trusts(entry string, caller principal) bool {
	if entry == "*" {
		return true
	}
	e, err := parsePrincipal(entry)
	if err != nil || e.account != caller.account {
		return false
	}
	switch e.kind {
	case "root":
		return true
	case "role":
		// An assumed-role session is trusted through its role.
		return (caller.kind == "assumed-role" || caller.kind == "role") && caller.name == e.name
	case "assumed-role":
		return caller.kind == "assumed-role" && caller.name == e.name && caller.session == e.session
	default:
		return caller.kind == e.kind && caller.name == e.name
	}
}

// globMatch matches s against an IAM StringLike pattern ('*' and '?').
func globMatch(pattern, s string) bool {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	ok, err := regexp.MatchString(b.String(), s)
	return err == nil && ok
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
