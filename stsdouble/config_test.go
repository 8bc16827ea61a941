package stsdouble

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	base, err := LoadConfig("testdata/config.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		mod  func(*Config)
		want string
	}{
		"account":             {func(c *Config) { c.Account = "1234" }, "12 digits"},
		"role arn":            {func(c *Config) { c.Roles[0].ARN = "arn:aws:iam::111122223333:user/app" }, "not a role ARN"},
		"role other account":  {func(c *Config) { c.Roles[0].ARN = "arn:aws:iam::444455556666:role/app" }, "not in account"},
		"max session":         {func(c *Config) { c.Roles[0].MaxSessionDurationSeconds = 60 }, "3600..43200"},
		"bad principal":       {func(c *Config) { c.Roles[0].TrustedPrincipals = []string{"node-role"} }, "not a principal ARN"},
		"unknown issuer":      {func(c *Config) { c.Roles[0].WebIdentity[0].Issuer = "https://x" }, "not in oidc_providers"},
		"empty subject":       {func(c *Config) { c.Roles[0].WebIdentity[0].Subject = "" }, "subject is empty"},
		"http issuer":         {func(c *Config) { c.OIDCProviders[0].Issuer = "http://oidc" }, "https://"},
		"both jwks":           {func(c *Config) { c.OIDCProviders[0].JWKSURL = "https://x/jwks" }, "exactly one"},
		"key without secret":  {func(c *Config) { c.Keys[0].SecretAccessKey = "" }, "secret_access_key is empty"},
		"duplicate key":       {func(c *Config) { c.Keys[1].AccessKeyID = c.Keys[0].AccessKeyID }, "listed twice"},
		"key arn":             {func(c *Config) { c.Keys[0].ARN = "ci" }, "not a principal ARN"},
		"negative clock skew": {func(c *Config) { c.MaxClockSkewSeconds = -1 }, "negative"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := base
			c.Roles = append([]Role(nil), base.Roles...)
			c.Roles[0].WebIdentity = append([]WebIdentityTrust(nil), base.Roles[0].WebIdentity...)
			c.Keys = append([]Key(nil), base.Keys...)
			c.OIDCProviders = append([]OIDCProvider(nil), base.OIDCProviders...)
			tt.mod(&c)
			_, err := New(c, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), ciSecret) {
				t.Errorf("error leaks a secret")
			}
		})
	}
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.json")
	os.WriteFile(typo, []byte(`{"account":"111122223333","roles":[],"trusted":[]}`), 0o644)
	if _, err := LoadConfig(typo); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestTrustMatching(t *testing.T) {
	tests := []struct {
		entry, caller string
		want          bool
	}{
		{"arn:aws:iam::111122223333:role/node-role", "arn:aws:sts::111122223333:assumed-role/node-role/i-1", true},
		{"arn:aws:iam::111122223333:role/path/node-role", "arn:aws:sts::111122223333:assumed-role/node-role/i-1", true},
		{"arn:aws:iam::111122223333:role/node-role", "arn:aws:sts::111122223333:assumed-role/node-role-2/i-1", false},
		{"arn:aws:iam::111122223333:role/node-role", "arn:aws:sts::444455556666:assumed-role/node-role/i-1", false},
		{"arn:aws:iam::111122223333:role/node-role", "arn:aws:iam::111122223333:user/node-role", false},
		{"arn:aws:iam::111122223333:user/ci", "arn:aws:iam::111122223333:user/ci", true},
		{"arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:user/anyone", true},
		{"arn:aws:iam::111122223333:root", "arn:aws:iam::444455556666:user/anyone", false},
		{"arn:aws:sts::111122223333:assumed-role/r/s1", "arn:aws:sts::111122223333:assumed-role/r/s2", false},
		{"*", "arn:aws:iam::444455556666:user/anyone", true},
	}
	for _, tt := range tests {
		p, err := parsePrincipal(tt.caller)
		if err != nil {
			t.Fatal(err)
		}
		if got := trusts(tt.entry, p); got != tt.want {
			t.Errorf("trusts(%s, %s) = %v", tt.entry, tt.caller, got)
		}
	}
	for pattern, cases := range map[string]map[string]bool{
		"system:serviceaccount:default:*": {"system:serviceaccount:default:web": true, "system:serviceaccount:default2:web": false},
		"system:serviceaccount:ns:sa-?":   {"system:serviceaccount:ns:sa-1": true, "system:serviceaccount:ns:sa-10": false},
		"a.b":                             {"a.b": true, "axb": false},
	} {
		for s, want := range cases {
			if got := globMatch(pattern, s); got != want {
				t.Errorf("globMatch(%q, %q) = %v", pattern, s, got)
			}
		}
	}
}
