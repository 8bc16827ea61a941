// Package policy decides whether a pod may have the IAM role it asks for:
// it resolves a role name or ARN, checks it against the namespace's
// allow-lists (kube2iam's iam.amazonaws.com/allowed-roles and kiam's
// iam.amazonaws.com/permitted) and validates the STS extras. It is pure: no
// HTTP, no client-go. Every denial names the problem and the fix, because the
// message is what a user sees in `kubectl apply`.
package policy

import (
	"encoding/json"
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
	if !baseARN.MatchString(s) {
		return "", fmt.Errorf("base role ARN %q is not valid: give the ARN prefix of your roles, e.g. arn:aws:iam::111122223333:role/ (partition aws, aws-cn or aws-us-gov, 12-digit account)", strings.TrimSuffix(s, "/"))
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
		return value, nil
	}
	if !roleName.MatchString(value) {
		return "", deny("role %q is malformed: a role name is up to 64 characters from [A-Za-z0-9+=,.@_-], optionally after a path (path/to/name); or give a full IAM role ARN", value)
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

type allowedList struct {
	entries []string
	err     error
}

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
	var l allowedList
	l.err = json.Unmarshal([]byte(raw), &l.entries)
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
	var l permittedList
	l.re, l.err = regexp.Compile(`^(?:` + expr + `)$`)
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

func checkAllowedRoles(ns, raw string, l allowedList, role, arn, base string) *Denial {
	if l.err != nil {
		return deny("namespace %q has an invalid %s annotation %q (%v): it must be a JSON array of role names or ARNs, e.g. [\"app-*\"]; ask a cluster admin to fix it",
			ns, contract.AnnotationAllowedRoles, raw, l.err)
	}
	for _, e := range l.entries {
		pattern := e
		if !strings.HasPrefix(e, "arn:") {
			if base == "" {
				// A bare name needs the base ARN to become comparable; without
				// one it can only match a role written the same way.
				if globMatch(e, role) {
					return nil
				}
				continue
			}
			pattern = base + e
		}
		if globMatch(pattern, arn) {
			return nil
		}
	}
	// Only a denial spells the list out, so a success never marshals it.
	list, _ := json.Marshal(l.entries)
	return deny("role %q is not allowed in namespace %q: its %s %s does not match %s; ask a cluster admin to add it or use an allowed role",
		role, ns, contract.AnnotationAllowedRoles, list, arn)
}

func checkPermitted(ns, expr string, l permittedList, role string) *Denial {
	if l.err != nil {
		return deny("namespace %q has an invalid %s annotation %q (%v): it must be one regular expression; ask a cluster admin to fix it",
			ns, contract.AnnotationPermitted, expr, l.err)
	}
	if !l.re.MatchString(role) {
		return deny("role %q is not allowed in namespace %q: its %s regexp %q does not match %q; ask a cluster admin to widen it or use a permitted role",
			role, ns, contract.AnnotationPermitted, expr, role)
	}
	return nil
}

// globMatch reports whether s matches pattern, where '*' matches any run of
// characters (including '/', as kube2iam's glob does) and nothing else is special.
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
