package policy

import (
	"strings"
	"testing"
)

const (
	base111  = "arn:aws:iam::111122223333:role/"
	baseTeam = "arn:aws:iam::111122223333:role/teams/a/"
	evilARN  = "arn:aws:iam::999999999999:role/evil"
)

// allowListCase is one namespace allow-list decision, written from the
// attacker's side: role is the pod's iam.amazonaws.com/role as written.
type allowListCase struct {
	name               string
	allowed, permitted string // "-" = annotation absent
	role, base         string
	deny               string // substring of the denial; "" = allowed
}

// allowListCases are the regression cases of both allow-list formats; the
// fuzz targets start from them too.
var allowListCases = []allowListCase{
	// kiam permitted: the expression is validated alone, then anchored.
	{name: "permitted breaks out of the anchor", allowed: "-", permitted: "a)|(.*", role: evilARN, deny: "invalid iam.amazonaws.com/permitted"},
	{name: "permitted breaks out, own role", allowed: "-", permitted: "a)|(.*", role: "a", base: base111, deny: "invalid iam.amazonaws.com/permitted"},
	{name: "permitted opens a group", allowed: "-", permitted: "(.*", role: evilARN, deny: "invalid iam.amazonaws.com/permitted"},
	{name: "permitted closes a group", allowed: "-", permitted: ".*)|(", role: evilARN, deny: "invalid iam.amazonaws.com/permitted"},
	{name: "permitted closes and reopens", allowed: "-", permitted: "app)(?:x", role: "app", base: base111, deny: "invalid iam.amazonaws.com/permitted"},
	{name: "permitted unterminated \\Q", allowed: "-", permitted: `\Qapp`, role: "app", base: base111, deny: "cannot be anchored"},
	{name: "permitted empty", allowed: "-", permitted: "", role: "app", base: base111, deny: "the expression is empty"},
	{name: "permitted blank", allowed: "-", permitted: "  ", role: "app", base: base111, deny: "the expression is empty"},
	{name: "permitted bracket", allowed: "-", permitted: "[", role: "app", base: base111, deny: "invalid iam.amazonaws.com/permitted"},
	{name: "permitted alternation is inside the anchor", allowed: "-", permitted: "app|web", role: "web", base: base111},
	{name: "permitted alternation suffix", allowed: "-", permitted: "app|web", role: "xweb", base: base111, deny: "does not match"},
	{name: "permitted alternation prefix", allowed: "-", permitted: "app|web", role: "app2", base: base111, deny: "does not match"},
	{name: "permitted name does not match an ARN", allowed: "-", permitted: "app-.*", role: "arn:aws:iam::999999999999:role/app-x", deny: "does not match"},
	{name: "permitted flags stay inside", allowed: "-", permitted: "(?i)APP", role: "app", base: base111},
	{name: "permitted ARN expression", allowed: "-", permitted: `arn:aws:iam::111122223333:role/app-.*`, role: "arn:aws:iam::111122223333:role/app-x"},
	{name: "permitted ARN expression, other account", allowed: "-", permitted: `arn:aws:iam::111122223333:role/app-.*`, role: "arn:aws:iam::999999999999:role/app-x", deny: "does not match"},
	{name: "permitted explicit anchors", allowed: "-", permitted: "^app$", role: "app", base: base111},

	// kube2iam allowed-roles without --base-role-arn: names match nothing.
	{name: "name glob, no base, other account", allowed: `["*-reader"]`, permitted: "-", role: "arn:aws:iam::999999999999:role/x-reader", deny: "no --base-role-arn to complete them"},
	{name: "star, no base", allowed: `["*"]`, permitted: "-", role: evilARN, deny: "no --base-role-arn"},
	{name: "name, no base, same name as ARN", allowed: `["app"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/app", deny: "no --base-role-arn"},
	{name: "ARN entry, no base", allowed: `["*-reader", "arn:aws:iam::111122223333:role/*"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/x-reader"},
	{name: "ARN entry, no base, other account", allowed: `["*-reader", "arn:aws:iam::111122223333:role/*"]`, permitted: "-", role: "arn:aws:iam::999999999999:role/x-reader", deny: "does not match"},
	{name: "explicit any account", allowed: `["arn:aws:iam::*:role/x"]`, permitted: "-", role: "arn:aws:iam::999999999999:role/x"},
	{name: "explicit any account, other name", allowed: `["arn:aws:iam::*:role/x"]`, permitted: "-", role: "arn:aws:iam::999999999999:role/y", deny: "does not match"},

	// With a base ARN: names stay in its account and partition.
	{name: "star, base", allowed: `["*"]`, permitted: "-", role: "x", base: base111},
	{name: "star, base, other account", allowed: `["*"]`, permitted: "-", role: evilARN, base: base111, deny: "does not match"},
	{name: "star, base, other partition", allowed: `["*"]`, permitted: "-", role: "arn:aws-cn:iam::111122223333:role/x", base: base111, deny: "does not match"},
	{name: "name glob, base, other account", allowed: `["*-reader"]`, permitted: "-", role: "arn:aws:iam::999999999999:role/a-reader", base: base111, deny: "does not match"},
	{name: "name glob, base, ARN in base account", allowed: `["*-reader"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/a-reader", base: base111},
	{name: "name glob crosses path", allowed: `["*-reader"]`, permitted: "-", role: "team/a-reader", base: base111},
	{name: "base path: names stay under it", allowed: `["*"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/teams/b/x", base: baseTeam, deny: "does not match"},
	{name: "base path: prefix of a sibling", allowed: `["*"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/teams/ab/x", base: baseTeam, deny: "does not match"},
	{name: "base path: name", allowed: `["*"]`, permitted: "-", role: "x", base: baseTeam},
	{name: "case matters", allowed: `["App"]`, permitted: "-", role: "app", base: base111, deny: "does not match"},

	// ARN globs: '*' stays inside one field, "role/" is literal.
	{name: "ARN star, other partition", allowed: `["arn:aws:iam::111122223333:role/*"]`, permitted: "-", role: "arn:aws-cn:iam::111122223333:role/x", deny: "does not match"},
	{name: "ARN star, gov partition", allowed: `["arn:aws:iam::111122223333:role/*"]`, permitted: "-", role: "arn:aws-us-gov:iam::111122223333:role/x", deny: "does not match"},
	{name: "ARN star, path", allowed: `["arn:aws:iam::111122223333:role/*"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/a/b"},
	{name: "ARN star, dot-dot path", allowed: `["arn:aws:iam::111122223333:role/*"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/a/../b", deny: "path segment"},
	{name: "ARN star, other account", allowed: `["arn:aws:iam::111122223333:role/*"]`, permitted: "-", role: evilARN, deny: "does not match"},
	{name: "partition star", allowed: `["arn:*:iam::111122223333:role/x"]`, permitted: "-", role: "arn:aws-cn:iam::111122223333:role/x"},
	{name: "partition star, other account", allowed: `["arn:*:iam::111122223333:role/x"]`, permitted: "-", role: "arn:aws-cn:iam::999999999999:role/x", deny: "does not match"},
	{name: "account glob", allowed: `["arn:aws:iam::11112222333*:role/x"]`, permitted: "-", role: "arn:aws:iam::111122223334:role/x"},
	{name: "account glob, other", allowed: `["arn:aws:iam::11112222333*:role/x"]`, permitted: "-", role: "arn:aws:iam::111122224444:role/x", deny: "does not match"},
	{name: "star spanning fields", allowed: `["arn:*:role/admin"]`, permitted: "-", role: "arn:aws:iam::999999999999:role/admin", deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "star for role/", allowed: `["arn:aws:iam::111122223333:*"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/x", deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "star glued to role", allowed: `["arn:aws:iam::111122223333:role*"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/x", deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "star for the account and the rest", allowed: `["arn:aws:iam::*"]`, permitted: "-", role: evilARN, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "star after arn:", allowed: `["arn:*"]`, permitted: "-", role: evilARN, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "user ARN", allowed: `["arn:aws:iam::111122223333:user/*"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/x", deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "sts ARN", allowed: `["arn:aws:sts::111122223333:role/*"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/x", deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "region in ARN", allowed: `["arn:aws:iam:us-east-1:111122223333:role/*"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/x", deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "dot-dot entry", allowed: `["arn:aws:iam::111122223333:role/team/../*"]`, permitted: "-", role: "arn:aws:iam::111122223333:role/x", deny: "path segment"},
	{name: "dot-dot name entry", allowed: `["team/../*"]`, permitted: "-", role: "x", base: base111, deny: "path segment"},
	{name: "name entry with colon", allowed: `["*:role/x"]`, permitted: "-", role: "x", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},

	// Malformed allowed-roles annotations refuse, whatever the role.
	{name: "bad JSON", allowed: `app-*`, permitted: "-", role: "app-x", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "trailing comma", allowed: `["app",]`, permitted: "-", role: "app", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "non-string entry", allowed: `["app", 1]`, permitted: "-", role: "app", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "null entry", allowed: `["app", null]`, permitted: "-", role: "app", base: base111, deny: "is empty"},
	{name: "object", allowed: `{"app": true}`, permitted: "-", role: "app", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "JSON string", allowed: `"app"`, permitted: "-", role: "app", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "null", allowed: `null`, permitted: "-", role: "app", base: base111, deny: "null is not an array"},
	{name: "empty annotation", allowed: ``, permitted: "-", role: "app", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "empty entry", allowed: `[""]`, permitted: "-", role: "app", base: base111, deny: "is empty"},
	{name: "blank entry", allowed: `["app", " "]`, permitted: "-", role: "app", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "space in entry", allowed: `["app "]`, permitted: "-", role: "app", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "leading slash", allowed: `["/app"]`, permitted: "-", role: "app", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "trailing slash", allowed: `["app/"]`, permitted: "-", role: "app", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "ARN without name", allowed: `["arn:aws:iam::111122223333:role/"]`, permitted: "-", role: "app", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
	{name: "empty list allows nothing", allowed: `[]`, permitted: "-", role: "app", base: base111, deny: "does not match"},

	// Both lists: both must pass; a broken one refuses.
	{name: "both pass", allowed: `["app-*"]`, permitted: "app-.*", role: "app-x", base: base111},
	{name: "permitted broken, allowed passes", allowed: `["*"]`, permitted: "a)|(.*", role: "x", base: base111, deny: "invalid iam.amazonaws.com/permitted"},
	{name: "allowed broken, permitted passes", allowed: `["*"`, permitted: ".*", role: "x", base: base111, deny: "invalid iam.amazonaws.com/allowed-roles"},
}

func (tt allowListCase) namespace() Namespace {
	ann := map[string]string{}
	if tt.allowed != "-" {
		ann["iam.amazonaws.com/allowed-roles"] = tt.allowed
	}
	if tt.permitted != "-" {
		ann["iam.amazonaws.com/permitted"] = tt.permitted
	}
	return Namespace{Name: "team-a", Annotations: ann}
}

// TestAllowListAttacks resolves each role as the webhook does, then checks
// it against the namespace's lists, cached and uncached.
func TestAllowListAttacks(t *testing.T) {
	c := NewListCache(4)
	for round := 0; round < 2; round++ {
		for _, tt := range allowListCases {
			arn, d := ResolveRole(tt.role, tt.base)
			if d == nil {
				ns := tt.namespace()
				d = CheckNamespace(ns, tt.role, arn, tt.base, false)
				cached := c.CheckNamespace(ns, tt.role, arn, tt.base, false)
				if (d == nil) != (cached == nil) || (d != nil && d.Message != cached.Message) {
					t.Fatalf("%s: cached %v, uncached %v", tt.name, cached, d)
				}
			}
			switch {
			case tt.deny == "" && d != nil:
				t.Errorf("%s: denied: %s", tt.name, d.Message)
			case tt.deny != "" && d == nil:
				t.Errorf("%s: allowed %q (%s), want a denial containing %q", tt.name, tt.role, arn, tt.deny)
			case tt.deny != "" && (!strings.Contains(d.Message, tt.deny) || !strings.HasPrefix(d.Message, "podrole: ")):
				t.Errorf("%s: denial %q, want one containing %q", tt.name, d.Message, tt.deny)
			}
		}
	}
}

// TestMatcherAlone: the allow-list matcher refuses, on its own, ARNs that
// ResolveRole would never produce (defence in depth: a caller that skips
// ResolveRole must not widen a list).
func TestMatcherAlone(t *testing.T) {
	for _, tt := range []struct{ allowed, arn, base string }{
		{`["arn:aws:iam::111122223333:role/*"]`, "arn:aws:iam::111122223333:role/a/../b", ""},
		{`["arn:aws:iam::111122223333:role/*"]`, "arn:aws:iam::111122223333:role/./b", ""},
		{`["arn:aws:iam::111122223333:role/*"]`, "arn:aws:iam::111122223333:role/a//b", ""},
		{`["arn:aws:iam::111122223333:role/*"]`, "arn:aws:iam::111122223333:role/", ""},
		{`["arn:aws:iam::111122223333:role/*"]`, "arn:aws:iam::111122223333:role/x:y", ""},
		{`["arn:aws:iam::111122223333:role/*"]`, "arn:aws:iam::111122223333:role/x\n", ""},
		{`["arn:aws:iam::*:role/x"]`, "arn:aws:iam::999999999999:role/y:iam::1:role/x", ""},
		{`["arn:aws:iam::111122223333:role/*"]`, "arn:aws:sts::111122223333:role/x", ""},
		{`["arn:aws:iam::111122223333:role/*"]`, "arn:aws:iam:r:111122223333:role/x", ""},
		{`["arn:aws:iam::111122223333:role/*"]`, "xarn:aws:iam::111122223333:role/x", ""},
		{`["*"]`, "arn:aws:iam::111122223333:role/a/../b", base111},
		{`["*"]`, "arn:aws:iam::111122223333:role/x", ""},
		{`["*"]`, "x", ""},
		{`["*"]`, "", ""},
	} {
		ns := Namespace{Name: "n", Annotations: map[string]string{"iam.amazonaws.com/allowed-roles": tt.allowed}}
		if d := CheckNamespace(ns, tt.arn, tt.arn, tt.base, false); d == nil {
			t.Errorf("%s admits %q (base %q)", tt.allowed, tt.arn, tt.base)
		}
	}
}

// TestInvalidListsNameTheFix: a namespace whose allow-list does not parse
// refuses every role, even one any reading of the list would allow, with a
// message naming the annotation, the namespace and what a fix looks like.
func TestInvalidListsNameTheFix(t *testing.T) {
	for _, tt := range []struct{ annotation, value, fix string }{
		{"iam.amazonaws.com/allowed-roles", `*`, `a JSON array of strings`},
		{"iam.amazonaws.com/allowed-roles", `["*", 1]`, `a JSON array of strings`},
		{"iam.amazonaws.com/allowed-roles", `[["*"]]`, `a JSON array of strings`},
		{"iam.amazonaws.com/allowed-roles", `null`, `a JSON array of strings`},
		{"iam.amazonaws.com/allowed-roles", `["*", ""]`, `a JSON array of strings`},
		{"iam.amazonaws.com/allowed-roles", `["arn:aws:iam::*"]`, `role ARN glob arn:<partition>:iam::<account>:role/<path/name>`},
		{"iam.amazonaws.com/permitted", ``, `one RE2 regular expression`},
		{"iam.amazonaws.com/permitted", `.*(`, `one RE2 regular expression`},
		{"iam.amazonaws.com/permitted", `x)|(.*`, `compiles on its own`},
		{"iam.amazonaws.com/permitted", `\Q.*`, `compiles on its own`},
	} {
		ns := Namespace{Name: "team-a", Annotations: map[string]string{tt.annotation: tt.value}}
		for _, role := range []string{"app", "arn:aws:iam::111122223333:role/app", evilARN} {
			arn, d := ResolveRole(role, base111)
			if d != nil {
				t.Fatal(d)
			}
			for _, c := range []*ListCache{nil, NewListCache(1)} {
				d := c.CheckNamespace(ns, role, arn, base111, false)
				if d == nil {
					t.Fatalf("%s=%q admits %q", tt.annotation, tt.value, role)
				}
				for _, want := range []string{`namespace "team-a" has an invalid ` + tt.annotation + ` annotation`, tt.fix, "ask a cluster admin to fix it"} {
					if !strings.Contains(d.Message, want) {
						t.Errorf("%s=%q: denial %q does not contain %q", tt.annotation, tt.value, d.Message, want)
					}
				}
			}
		}
	}
}
