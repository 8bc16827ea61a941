// Package policy decides whether a pod may have the IAM role it asks for:
// it resolves a role name or ARN, checks it against the namespace's
// allow-lists (kube2iam's iam.amazonaws.com/allowed-roles and kiam's
// iam.amazonaws.com/permitted) and validates the STS extras. It is pure: no
// HTTP, no client-go. Every denial names the problem and the fix, because the
// message is what a user sees in `kubectl apply`.
//
// Hostile input never widens an allow-list and a list that does not parse
// never fails open:
//
//   - iam.amazonaws.com/allowed-roles must be a JSON array of strings, each a
//     role name glob (path/name, '*' allowed) or a role ARN glob
//     arn:<partition>:iam::<account>:role/<path/name>. Anything else (bad
//     JSON, null, non-string or empty entries, an ARN glob without a literal
//     "role/", a "." or ".." path segment) refuses the namespace's pods with a
//     message naming the entry and the fix.
//   - An ARN is matched field by field: '*' matches any run of characters
//     within one of the ARN's ':'-separated fields, never a ':', so it cannot
//     move a match into another partition or account; in the resource it
//     matches after the literal "role/" and may cross '/' (kube2iam's glob:
//     arn:aws:iam::111122223333:role/* allows every role of that account,
//     paths included). An account of '*' (arn:aws:iam::*:role/x) is an
//     explicit choice and is honoured.
//   - A name entry ("app", "*-reader") means a role of that name under
//     --base-role-arn. Without a base role ARN it names no role and matches
//     nothing (the denial says so and how to fix it): a name glob never
//     matches a role of some other account written as a full ARN.
//   - iam.amazonaws.com/permitted must be one RE2 expression that compiles on
//     its own; it is then matched against the whole role value as written (as
//     ^(?:EXPR)$), so text like "a)|(.*" cannot break out of the anchoring. An
//     empty or invalid expression refuses the namespace's pods.
//   - Role names and ARNs with a "." or ".." path segment are malformed: IAM
//     paths are literal strings, and such segments only serve to confuse a
//     reader or a glob.
package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/podrole/podrole/contract"
)

// Denial is a refusal to admit a pod; its message is shown to the user as is.
type Denial struct{ Message string }

func (d *Denial) Error() string { return d.Message }

func deny(format string, args ...any) *Denial {
	return &Denial{Message: "podrole: " + fmt.Sprintf(format, args...)}
}

// partitions are the AWS partitions whose IAM ARNs we accept.
const partitions = `aws|aws-cn|aws-us-gov`

var (
	// roleARN matches arn:<partition>:iam::<12 digits>:role/<optional path/><name>.
	// IAM role names are [\w+=,.@-]{1,64}; path segments use the same characters.
	roleARN = regexp.MustCompile(`^arn:(?:` + partitions + `):iam::[0-9]{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$`)
	// roleName is a name with an optional path, to be appended to the base ARN.
	roleName = regexp.MustCompile(`^(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$`)
	// baseARN is a role ARN prefix ending in "role/" plus an optional path, with its trailing '/'.
	baseARN = regexp.MustCompile(`^arn:(?:` + partitions + `):iam::[0-9]{12}:role/(?:[\w+=,.@-]+/)*$`)
	// STS limits: ExternalId 2-1224 chars of [\w+=,.@:/-]; RoleSessionName 2-64 chars of [\w+=,.@-].
	externalID  = regexp.MustCompile(`^[\w+=,.@:/-]+$`) // plus length 2-1224: RE2 caps repeats at 1000
	sessionName = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
)

// NormalizeBaseARN accepts a base role ARN with or without its trailing '/'
// and returns it with one, or an error naming the expected form.
func NormalizeBaseARN(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if !strings.HasSuffix(s, "/") {
		s += "/"
	}
	if !baseARN.MatchString(s) || hasDotSegment(strings.TrimSuffix(s[strings.Index(s, ":role/")+len(":role/"):], "/")) {
		return "", fmt.Errorf("base role ARN %q is not valid: give the ARN prefix of your roles, e.g. arn:aws:iam::111122223333:role/ (partition aws, aws-cn or aws-us-gov, 12-digit account, no \".\" or \"..\" path segments)", strings.TrimSuffix(s, "/"))
	}
	return s, nil
}

// ResolveRole turns the value of iam.amazonaws.com/role (a name, optionally
// with a path, or a full ARN) into a role ARN. base must already be normalized.
func ResolveRole(value, base string) (string, *Denial) {
	if strings.HasPrefix(value, "arn:") {
		if !roleARN.MatchString(value) {
			return "", deny("role %q is malformed: give a role name or a full IAM role ARN like arn:aws:iam::111122223333:role/name (partition aws, aws-cn or aws-us-gov, 12-digit account, name of up to 64 characters from [A-Za-z0-9+=,.@_-])", value)
		}
		if hasDotSegment(value[strings.Index(value, ":role/")+len(":role/"):]) {
			return "", deny("role %q is malformed: a \".\" or \"..\" path segment is not allowed (IAM paths are literal); write the role's real path and name", value)
		}
		return value, nil
	}
	if !roleName.MatchString(value) {
		return "", deny("role %q is malformed: a role name is up to 64 characters from [A-Za-z0-9+=,.@_-], optionally after a path (path/to/name); or give a full IAM role ARN", value)
	}
	if hasDotSegment(value) {
		return "", deny("role %q is malformed: a \".\" or \"..\" path segment is not allowed (IAM paths are literal); write the role's real path and name", value)
	}
	if base == "" {
		return "", deny("role %q is a name but the webhook has no --base-role-arn to complete it: use the full ARN (arn:aws:iam::<account>:role/%s) or ask a cluster admin to set --base-role-arn", value, value)
	}
	arn := base + value
	if !roleARN.MatchString(arn) {
		return "", deny("role %q resolves to %q, which is not a valid IAM role ARN: use a valid role name or a full ARN", value, arn)
	}
	return arn, nil
}

// Namespace is what the policy needs to know about the pod's namespace.
type Namespace struct {
	Name        string
	Annotations map[string]string
}

// CheckNamespace enforces the namespace's allow-lists for role, which is the
// role value as written (annotation or default role) and arn its resolution.
// With both allow-lists present both must pass; with neither, requireAllowed
// denies.
func CheckNamespace(ns Namespace, role, arn, base string, requireAllowed bool) *Denial {
	return (*ListCache)(nil).CheckNamespace(ns, role, arn, base, requireAllowed)
}

// ListCache remembers parsed allow-lists by their raw annotation value, so
// that admitting a pod does not parse JSON or compile a regexp every time.
// Entries depend only on the annotation string, so a changed annotation is a
// new key and is never answered from a stale entry. It holds at most max
// entries per list kind (an arbitrary one is dropped to make room), bounding
// memory however many distinct annotations a cluster has. A nil *ListCache
// caches nothing. It is safe for concurrent use.
type ListCache struct {
	mu        sync.Mutex
	max       int
	allowed   map[string]allowedList
	permitted map[string]permittedList
}

// allowedList is a parsed iam.amazonaws.com/allowed-roles value: the
// entries as written (for messages) and as globs, or why it does not parse.
type allowedList struct {
	raw     []string
	entries []allowedEntry
	names   bool // some entry is a name glob (needs the base ARN)
	err     error
}

// allowedEntry is one allow-list entry. A name glob is completed with the
// base ARN; an ARN glob is kept split at its ':' separators.
type allowedEntry struct {
	isARN     bool
	partition string // ARN glob fields
	account   string
	resource  string // after "role/"
	name      string // name glob (path/name)
}

// permittedList is a compiled iam.amazonaws.com/permitted value (a Regexp is
// safe for concurrent use), or why it does not compile.
type permittedList struct {
	re  *regexp.Regexp
	err error
}

// NewListCache returns a cache of at most max entries per annotation kind.
func NewListCache(max int) *ListCache {
	return &ListCache{max: max, allowed: map[string]allowedList{}, permitted: map[string]permittedList{}}
}

// CheckNamespace is the package's CheckNamespace with parsed lists from c.
func (c *ListCache) CheckNamespace(ns Namespace, role, arn, base string, requireAllowed bool) *Denial {
	allowed, hasAllowed := ns.Annotations[contract.AnnotationAllowedRoles]
	permitted, hasPermitted := ns.Annotations[contract.AnnotationPermitted]
	if !hasAllowed && !hasPermitted {
		if requireAllowed {
			return deny("role %q is not allowed in namespace %q: the namespace has no %s or %s annotation and the webhook runs with --require-allowed-roles; ask a cluster admin to annotate the namespace with the roles it may use",
				role, ns.Name, contract.AnnotationAllowedRoles, contract.AnnotationPermitted)
		}
		return nil
	}
	if hasAllowed {
		if d := checkAllowedRoles(ns.Name, allowed, c.allowedList(allowed), role, arn, base); d != nil {
			return d
		}
	}
	if hasPermitted {
		if d := checkPermitted(ns.Name, permitted, c.permittedList(permitted), role); d != nil {
			return d
		}
	}
	return nil
}

// allowedList parses an iam.amazonaws.com/allowed-roles value (the returned
// entries are shared: read only).
func (c *ListCache) allowedList(raw string) allowedList {
	if c != nil {
		c.mu.Lock()
		l, ok := c.allowed[raw]
		c.mu.Unlock()
		if ok {
			return l
		}
	}
	l := parseAllowedRoles(raw)
	if c != nil {
		c.mu.Lock()
		makeRoom(c.allowed, c.max)
		c.allowed[raw] = l
		c.mu.Unlock()
	}
	return l
}

// permittedList compiles an iam.amazonaws.com/permitted value (a Regexp is
// safe for concurrent use).
func (c *ListCache) permittedList(expr string) permittedList {
	if c != nil {
		c.mu.Lock()
		l, ok := c.permitted[expr]
		c.mu.Unlock()
		if ok {
			return l
		}
	}
	l := parsePermitted(expr)
	if c != nil {
		c.mu.Lock()
		makeRoom(c.permitted, c.max)
		c.permitted[expr] = l
		c.mu.Unlock()
	}
	return l
}

// makeRoom drops arbitrary entries until m has room for one more.
func makeRoom[V any](m map[string]V, max int) {
	for k := range m {
		if len(m) < max {
			return
		}
		delete(m, k)
	}
}

var (
	// nameGlob is a role name glob: path segments and a name of IAM role
	// name characters or '*', no empty segment.
	nameGlob = regexp.MustCompile(`^(?:[\w+=,.@*-]+/)*[\w+=,.@*-]+$`)
	// arnGlob is a role ARN glob with '*' only inside the partition, the
	// account and the path/name, and a literal "role/".
	arnGlob = regexp.MustCompile(`^arn:([a-z*-]+):iam::([0-9*]+):role/((?:[\w+=,.@*-]+/)*[\w+=,.@*-]+)$`)
)

// parseAllowedRoles parses an iam.amazonaws.com/allowed-roles value: a JSON
// array of role name globs and role ARN globs. Anything else is an error.
func parseAllowedRoles(raw string) allowedList {
	var l allowedList
	if err := json.Unmarshal([]byte(raw), &l.raw); err != nil {
		l.err = err
		return l
	}
	if l.raw == nil {
		l.err = errors.New("null is not an array")
		return l
	}
	l.entries = make([]allowedEntry, len(l.raw))
	for i, e := range l.raw {
		if err := parseAllowedEntry(e, &l.entries[i]); err != nil {
			l.err = fmt.Errorf("entry %d %q %w", i+1, e, err)
			return l
		}
		l.names = l.names || !l.entries[i].isARN
	}
	return l
}

func parseAllowedEntry(e string, out *allowedEntry) error {
	if strings.HasPrefix(e, "arn:") {
		m := arnGlob.FindStringSubmatch(e)
		if m == nil {
			return errors.New(`is not a role ARN glob arn:<partition>:iam::<account>:role/<path/name> ('*' only inside the partition, the account or the path/name; "role/" written out)`)
		}
		if hasDotSegment(m[3]) {
			return errors.New(`has a "." or ".." path segment`)
		}
		*out = allowedEntry{isARN: true, partition: m[1], account: m[2], resource: m[3]}
		return nil
	}
	if e == "" {
		return errors.New("is empty")
	}
	if !nameGlob.MatchString(e) {
		return errors.New("is neither a role name glob (path/name of [A-Za-z0-9+=,.@_-] and '*') nor a role ARN glob (arn:...)")
	}
	if hasDotSegment(e) {
		return errors.New(`has a "." or ".." path segment`)
	}
	*out = allowedEntry{name: e}
	return nil
}

// splitRoleARN splits a role ARN into partition, account and the path/name
// after "role/". ok is false for anything that is not a valid role ARN (as
// ResolveRole accepts them: known partition, 12-digit account, IAM name
// characters, non-empty segments, no "." or ".." segment): such a string
// matches no entry, whoever calls.
func splitRoleARN(arn string) (partition, account, resource string, ok bool) {
	if !roleARN.MatchString(arn) {
		return "", "", "", false
	}
	rest, ok := strings.CutPrefix(arn, "arn:")
	if !ok {
		return "", "", "", false
	}
	fields := strings.Split(rest, ":")
	if len(fields) != 5 || fields[1] != "iam" || fields[2] != "" {
		return "", "", "", false
	}
	resource, ok = strings.CutPrefix(fields[4], "role/")
	if !ok || resource == "" || hasDotSegment(resource) {
		return "", "", "", false
	}
	for _, seg := range strings.Split(resource, "/") {
		if seg == "" {
			return "", "", "", false
		}
	}
	return fields[0], fields[3], resource, true
}

// match reports whether the entry allows the role ARN whose fields are
// given; base is the normalized base ARN ("" when none).
func (e *allowedEntry) match(arn, partition, account, resource, base string) bool {
	if e.isARN {
		return globMatch(e.partition, partition) && globMatch(e.account, account) && globMatch(e.resource, resource)
	}
	// A name means a role under the base ARN; without one it names no role.
	if base == "" || !strings.HasPrefix(arn, base) {
		return false
	}
	return globMatch(e.name, arn[len(base):])
}

// hasDotSegment reports whether a '/'-separated path has a "." or ".." segment.
func hasDotSegment(path string) bool {
	for _, seg := range strings.Split(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// parsePermitted compiles an iam.amazonaws.com/permitted value. The
// expression must compile on its own before it is anchored, so that text
// closing the anchoring group ("a)|(.*") is refused rather than unanchored.
func parsePermitted(expr string) permittedList {
	if strings.TrimSpace(expr) == "" {
		return permittedList{err: errors.New("the expression is empty")}
	}
	if _, err := regexp.Compile(expr); err != nil {
		return permittedList{err: err}
	}
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		// Valid alone, invalid anchored: an unterminated \Q quotes the anchor.
		return permittedList{err: fmt.Errorf("the expression cannot be anchored (an unterminated \\Q?): %w", err)}
	}
	return permittedList{re: re}
}

func checkAllowedRoles(ns, raw string, l allowedList, role, arn, base string) *Denial {
	if l.err != nil {
		return deny("namespace %q has an invalid %s annotation %q (%v): it must be a JSON array of strings, each a role name or a role ARN, '*' matching within one ARN field, e.g. [\"app-*\", \"arn:aws:iam::111122223333:role/team/*\"]; ask a cluster admin to fix it",
			ns, contract.AnnotationAllowedRoles, raw, l.err)
	}
	if partition, account, resource, ok := splitRoleARN(arn); ok {
		for i := range l.entries {
			if l.entries[i].match(arn, partition, account, resource, base) {
				return nil
			}
		}
	}
	// Only a denial spells the list out, so a success never marshals it.
	list, _ := json.Marshal(l.raw)
	d := deny("role %q is not allowed in namespace %q: its %s %s does not match %s; ask a cluster admin to add it or use an allowed role",
		role, ns, contract.AnnotationAllowedRoles, list, arn)
	if base == "" && l.names {
		d.Message += " (its entries that are role names match no role: the webhook has no --base-role-arn to complete them; write them as full ARNs, arn:aws:iam::<account>:role/<name>, or ask a cluster admin to set --base-role-arn)"
	}
	return d
}

func checkPermitted(ns, expr string, l permittedList, role string) *Denial {
	if l.err != nil {
		return deny("namespace %q has an invalid %s annotation %q (%v): it must be one RE2 regular expression that compiles on its own, matched against the whole role as written (as ^(?:EXPR)$), e.g. app-.* or arn:aws:iam::111122223333:role/app-.*; ask a cluster admin to fix it",
			ns, contract.AnnotationPermitted, expr, l.err)
	}
	if !l.re.MatchString(role) {
		return deny("role %q is not allowed in namespace %q: its %s regexp %q does not match %q; ask a cluster admin to widen it or use a permitted role",
			role, ns, contract.AnnotationPermitted, expr, role)
	}
	return nil
}

// globMatch reports whether s matches pattern, where '*' matches any run of
// characters (including '/', as kube2iam's glob does) and nothing else is
// special. It is applied to one ARN field at a time (never across ':').
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}

// CheckExternalID validates iam.amazonaws.com/external-id against STS's rules.
func CheckExternalID(v string) *Denial {
	if len(v) >= 2 && len(v) <= 1224 && externalID.MatchString(v) {
		return nil
	}
	return deny("annotation %s is not a valid STS external ID: use 2 to 1224 characters from [A-Za-z0-9+=,.@:/_-]", contract.AnnotationExternalID)
}

// CheckSessionName validates iam.amazonaws.com/session-name against STS's rules.
func CheckSessionName(v string) *Denial {
	if sessionName.MatchString(v) {
		return nil
	}
	return deny("annotation %s=%q is not a valid STS role session name: use 2 to 64 characters from [A-Za-z0-9+=,.@_-]", contract.AnnotationSessionName, v)
}
