package policy

import (
	"strings"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"arn:aws:iam::1:role/app", "arn:aws:iam::1:role/app", true},
		{"arn:aws:iam::1:role/app", "arn:aws:iam::1:role/app2", false},
		{"arn:aws:iam::1:role/app-*", "arn:aws:iam::1:role/app-reader", true},
		{"arn:aws:iam::1:role/app-*", "arn:aws:iam::1:role/app-", true},
		{"arn:aws:iam::1:role/app-*", "arn:aws:iam::1:role/web-reader", false},
		{"*", "anything", true},
		{"arn:aws:iam::1:role/*", "arn:aws:iam::1:role/path/to/x", true}, // * crosses '/', as kube2iam's glob (the ARN matcher applies it per ':' field)
		{"*/reader", "arn:aws:iam::1:role/team/reader", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "acb", false},
		{"ab*ba", "aba", false}, // prefix and suffix may not overlap
		{"a.b", "aXb", false},   // only * is special
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func TestNormalizeBaseARN(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"", "", ""},
		{"arn:aws:iam::111122223333:role/", "arn:aws:iam::111122223333:role/", ""},
		{"arn:aws:iam::111122223333:role", "arn:aws:iam::111122223333:role/", ""},
		{"arn:aws-us-gov:iam::111122223333:role/teams/a", "arn:aws-us-gov:iam::111122223333:role/teams/a/", ""},
		{"arn:aws:iam::1111:role/", "", "12-digit account"},
		{"arn:aws:iam::111122223333:user/", "", "not valid"},
		{"111122223333", "", "not valid"},
		{"arn:aws:iam::111122223333:role/teams/../", "", "not valid"},
		{"arn:aws:iam::111122223333:role/./", "", "not valid"},
		{"arn:aws:iam::111122223333:role/teams/..a/", "arn:aws:iam::111122223333:role/teams/..a/", ""},
	}
	for _, tt := range tests {
		got, err := NormalizeBaseARN(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("NormalizeBaseARN(%q) error %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeBaseARN(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestResolveRole(t *testing.T) {
	base := "arn:aws:iam::111122223333:role/"
	tests := []struct{ role, base, want, deny string }{
		{"app", base, base + "app", ""},
		{"a/b/app", base, base + "a/b/app", ""},
		{"arn:aws-cn:iam::111122223333:role/x", "", "arn:aws-cn:iam::111122223333:role/x", ""},
		{"app+=,.@_-", base, base + "app+=,.@_-", ""},
		{strings.Repeat("r", 64), base, base + strings.Repeat("r", 64), ""},
		{strings.Repeat("r", 65), base, "", "malformed"},
		{"app", "", "", "no --base-role-arn"},
		{"/app", base, "", "malformed"},
		{"app/", base, "", "malformed"},
		{"arn:aws:iam::111122223333:role/", "", "", "malformed"},
		{"arn:aws:iam::111122223333:role/a b", "", "", "malformed"},
		{"arn:aws:sts::111122223333:assumed-role/a/b", "", "", "malformed"},
		{"app\n", base, "", "malformed"},
		// "." and ".." path segments are refused: IAM paths are literal, and
		// they only serve to trick a reader or a glob.
		{"a/../admin", base, "", "path segment"},
		{"./app", base, "", "path segment"},
		{"..", base, "", "path segment"},
		{"arn:aws:iam::111122223333:role/team-a/../admin", "", "", "path segment"},
		{"arn:aws:iam::111122223333:role/../admin", "", "", "path segment"},
		{"arn:aws:iam::111122223333:role/a/..b", "", "arn:aws:iam::111122223333:role/a/..b", ""},
		{"...", base, base + "...", ""},
	}
	for _, tt := range tests {
		got, d := ResolveRole(tt.role, tt.base)
		if tt.deny != "" {
			if d == nil || !strings.Contains(d.Message, tt.deny) || !strings.HasPrefix(d.Message, "podrole: ") {
				t.Errorf("ResolveRole(%q) = %q, %v; want denial %q", tt.role, got, d, tt.deny)
			}
			continue
		}
		if d != nil || got != tt.want {
			t.Errorf("ResolveRole(%q) = %q, %v; want %q", tt.role, got, d, tt.want)
		}
	}
}

// External IDs are shared secrets with a third party in some setups: a
// denial must not echo them.
func TestExternalIDNotEchoed(t *testing.T) {
	d := CheckExternalID("secret value with spaces")
	if d == nil || strings.Contains(d.Message, "secret value") {
		t.Fatalf("denial %v", d)
	}
	if d := CheckExternalID(strings.Repeat("x", 1224)); d != nil {
		t.Fatalf("1224 characters refused: %v", d)
	}
	if d := CheckExternalID(strings.Repeat("x", 1225)); d == nil {
		t.Fatal("1225 characters accepted")
	}
}

// TestListCache checks that cached allow-lists decide exactly as parsing
// each time, that a changed annotation is judged by its new value, that bad
// annotations stay refused when cached, and that the cache stays bounded.
func TestListCache(t *testing.T) {
	const base = "arn:aws:iam::111122223333:role/"
	c := NewListCache(2)
	tests := []struct {
		allowed, permitted string // "" = annotation absent
		role               string
		deny               string // substring of the denial; "" = allowed
	}{
		{allowed: `["app-*"]`, role: "app-reader"},
		{allowed: `["app-*"]`, role: "web", deny: "does not match"},
		{allowed: `["web"]`, role: "app-reader", deny: "does not match"}, // changed value: new answer
		{allowed: `["web"]`, role: "web"},
		{allowed: `[app]`, role: "app", deny: "invalid iam.amazonaws.com/allowed-roles"},
		{allowed: `[app]`, role: "app", deny: "invalid iam.amazonaws.com/allowed-roles"}, // cached error
		{permitted: `app-.*`, role: "app-x"},
		{permitted: `app-.*`, role: "xapp-x", deny: "does not match"}, // anchored
		{permitted: `app-(`, role: "app-x", deny: "invalid iam.amazonaws.com/permitted"},
		{permitted: `app-(`, role: "app-x", deny: "invalid iam.amazonaws.com/permitted"},
		{allowed: `["app-*"]`, permitted: `web`, role: "app-1", deny: "permitted regexp"}, // both must pass
	}
	for round := 0; round < 2; round++ {
		for _, tt := range tests {
			ann := map[string]string{}
			if tt.allowed != "" {
				ann["iam.amazonaws.com/allowed-roles"] = tt.allowed
			}
			if tt.permitted != "" {
				ann["iam.amazonaws.com/permitted"] = tt.permitted
			}
			ns := Namespace{Name: "team", Annotations: ann}
			arn := base + tt.role
			uncached := CheckNamespace(ns, tt.role, arn, base, false)
			cached := c.CheckNamespace(ns, tt.role, arn, base, false)
			if (uncached == nil) != (cached == nil) || (cached != nil && cached.Message != uncached.Message) {
				t.Fatalf("%+v: cached %v, uncached %v", tt, cached, uncached)
			}
			switch {
			case tt.deny == "" && cached != nil:
				t.Errorf("%+v: denied: %s", tt, cached.Message)
			case tt.deny != "" && (cached == nil || !strings.Contains(cached.Message, tt.deny)):
				t.Errorf("%+v: got %v, want a denial containing %q", tt, cached, tt.deny)
			}
		}
	}
	if len(c.allowed) > 2 || len(c.permitted) > 2 {
		t.Errorf("cache holds %d allowed and %d permitted entries, bound is 2", len(c.allowed), len(c.permitted))
	}
}
