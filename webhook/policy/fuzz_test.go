package policy

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// fuzzBases are the base role ARNs the fuzz targets pick from: none, an
// account, and an account with a path.
var fuzzBases = []string{"", base111, baseTeam}

// fuzzCache is shared by the iterations of one fuzz process, so that cached
// answers are compared with fresh ones across many annotations.
var fuzzCache = NewListCache(8)

// FuzzAllowedRoles feeds arbitrary iam.amazonaws.com/allowed-roles values and
// roles (resolved as the webhook does, and also handed to the matcher raw).
// Invariants: a value that is not a JSON array of strings is refused as
// invalid; a cached answer equals a fresh one; every denial is podrole's and
// names the annotation; and an admitted role is a valid role ARN without
// "."/".." segments that some entry matches with '*' confined to one ARN
// field and "role/" literal (an independent regexp oracle), and, when every
// entry is a name, lies under the base ARN (its account and partition).
func FuzzAllowedRoles(f *testing.F) {
	for i, tt := range allowListCases {
		if tt.allowed != "-" {
			for k, b := range fuzzBases {
				if b == tt.base {
					f.Add(tt.allowed, tt.role, uint8(k+3*(i%2)))
				}
			}
		}
	}
	f.Add(`["*-reader"]`, "arn:aws:iam::999999999999:role/x-reader", uint8(0))
	f.Add(`["arn:aws:iam::111122223333:role/*"]`, "arn:aws:iam::111122223333:role/a/../b", uint8(0))
	f.Fuzz(func(t *testing.T, raw, role string, knobs uint8) {
		base := fuzzBases[int(knobs)%len(fuzzBases)]
		arn, d := ResolveRole(role, base)
		if d != nil || knobs&0x80 != 0 {
			arn = role // the matcher must hold on its own, too
		}
		l := parseAllowedRoles(raw)
		got := checkAllowedRoles("fuzz", raw, l, role, arn, base)
		ns := Namespace{Name: "fuzz", Annotations: map[string]string{"iam.amazonaws.com/allowed-roles": raw}}
		cached := fuzzCache.CheckNamespace(ns, role, arn, base, false)
		if (got == nil) != (cached == nil) || (got != nil && got.Message != cached.Message) {
			t.Fatalf("cached %v, fresh %v", cached, got)
		}
		var entries []string
		if err := json.Unmarshal([]byte(raw), &entries); err != nil || entries == nil {
			if got == nil || !strings.Contains(got.Message, "invalid iam.amazonaws.com/allowed-roles") {
				t.Fatalf("%q is not a JSON array of strings, yet: %v", raw, got)
			}
		}
		if got != nil {
			if !strings.HasPrefix(got.Message, "podrole: ") || !strings.Contains(got.Message, "iam.amazonaws.com/allowed-roles") {
				t.Fatalf("denial %q", got.Message)
			}
			return
		}
		if !roleARN.MatchString(arn) {
			t.Fatalf("%q admits %q, not a role ARN", raw, arn)
		}
		for _, seg := range strings.Split(arn[strings.Index(arn, ":role/")+len(":role/"):], "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q admits %q, with a dot segment", raw, arn)
			}
		}
		var matched, anyARN bool
		for _, e := range entries {
			anyARN = anyARN || strings.HasPrefix(e, "arn:")
			matched = matched || oracleMatch(e, base, arn)
		}
		if !matched {
			t.Fatalf("%q admits %q (base %q), but no entry matches it field by field", raw, arn, base)
		}
		if !anyARN && (base == "" || !strings.HasPrefix(arn, base)) {
			t.Fatalf("%q has only names, yet admits %q outside the base ARN %q", raw, arn, base)
		}
	})
}

// oracleMatch is the allow-list rule written independently: a name entry is
// appended to the base ARN (none: no match); the pattern must have the six
// ARN fields with "role/" written out; '*' is any run of non-':' characters.
func oracleMatch(entry, base, arn string) bool {
	pattern := entry
	if !strings.HasPrefix(entry, "arn:") {
		if base == "" {
			return false
		}
		pattern = base + entry
	}
	f := strings.Split(pattern, ":")
	if len(f) != 6 || f[0] != "arn" || f[2] != "iam" || f[3] != "" || !strings.HasPrefix(f[5], "role/") {
		return false
	}
	re := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, `[^:]*`) + "$")
	return re.MatchString(arn)
}

// FuzzPermitted feeds arbitrary iam.amazonaws.com/permitted expressions and
// role values. Invariants: an expression that is empty or does not compile
// on its own is refused as invalid; otherwise a role is admitted exactly
// when the expression alone (leftmost-longest) matches the whole role, so
// the anchoring can neither be escaped nor change what the expression says.
func FuzzPermitted(f *testing.F) {
	for _, tt := range allowListCases {
		if tt.permitted != "-" {
			f.Add(tt.permitted, tt.role)
		}
	}
	f.Add(`a)|(.*`, "arn:aws:iam::999999999999:role/evil")
	f.Add(`app|app-admin`, "app-admin")
	f.Add(`(?m)app$`, "app\nx")
	f.Add(`\Qa)|(.*\E`, "a)|(.*")
	f.Fuzz(func(t *testing.T, expr, role string) {
		l := parsePermitted(expr)
		got := checkPermitted("fuzz", expr, l, role)
		ns := Namespace{Name: "fuzz", Annotations: map[string]string{"iam.amazonaws.com/permitted": expr}}
		cached := fuzzCache.CheckNamespace(ns, role, role, "", false)
		if (got == nil) != (cached == nil) || (got != nil && got.Message != cached.Message) {
			t.Fatalf("cached %v, fresh %v", cached, got)
		}
		if got != nil && (!strings.HasPrefix(got.Message, "podrole: ") || !strings.Contains(got.Message, "iam.amazonaws.com/permitted")) {
			t.Fatalf("denial %q", got.Message)
		}
		alone, err := regexp.Compile(expr)
		if err != nil || strings.TrimSpace(expr) == "" || l.err != nil {
			if got == nil || !strings.Contains(got.Message, "invalid iam.amazonaws.com/permitted") {
				t.Fatalf("%q (alone: %v) is not a valid expression, yet: %v", expr, err, got)
			}
			return
		}
		alone.Longest()
		loc := alone.FindStringIndex(role)
		whole := loc != nil && loc[0] == 0 && loc[1] == len(role)
		if (got == nil) != whole {
			t.Fatalf("%q on %q: admitted %v, but the expression alone matches the whole role: %v (%v)", expr, role, got == nil, whole, loc)
		}
	})
}
