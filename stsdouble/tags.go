package stsdouble

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Tag is one session tag, as AssumeRole received it.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// STS's limits on session tags (AssumeRole's Tags and TransitiveTagKeys).
const (
	maxTags        = 50
	maxTagKeyLen   = 128
	maxTagValueLen = 256
)

var (
	tagKeyRE   = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$`)
	tagValueRE = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	// tagParamRE is one member of a Query API list: Tags.member.N.Key or
	// .Value, TransitiveTagKeys.member.N. N counts from 1, no leading zero.
	tagParamRE = regexp.MustCompile(`^(Tags|TransitiveTagKeys)\.member\.([1-9][0-9]{0,3})(\.Key|\.Value)?$`)
)

// parseTags reads AssumeRole's session tags and transitive tag keys from
// the Query API form and checks them as STS does: every member named
// right, each tag with both Key and Value, at most 50 of each, keys of
// 1-128 and values of at most 256 characters from STS's alphabet, no key
// twice (keys are case-insensitive), no aws: prefix, and every transitive
// key one of the tags. The first problem is a 400 ValidationError.
// An empty list is sent as a bare "Tags=" and means no tags.
func parseTags(p url.Values) (tags []Tag, transitive []string, e *apiError) {
	type member struct {
		key, value       string
		hasKey, hasValue bool
	}
	tagMembers := map[int]*member{}
	transMembers := map[int]string{}
	// In name order, so that the first problem reported is the same on every
	// call (url.Values is a map).
	for _, name := range slices.Sorted(maps.Keys(p)) {
		vs := p[name]
		if name == "Tags" || name == "TransitiveTagKeys" {
			if len(vs) != 1 || vs[0] != "" {
				return nil, nil, errValidation(fmt.Sprintf("%s must be sent as members (%s.member.N...), or empty for an empty list", name, name))
			}
			continue
		}
		if !strings.HasPrefix(name, "Tags.") && !strings.HasPrefix(name, "TransitiveTagKeys.") {
			continue
		}
		m := tagParamRE.FindStringSubmatch(name)
		if m == nil || (m[1] == "Tags") == (m[3] == "") {
			return nil, nil, errValidation(fmt.Sprintf("%s is not a valid parameter: use Tags.member.N.Key, Tags.member.N.Value or TransitiveTagKeys.member.N", name))
		}
		if len(vs) != 1 {
			return nil, nil, errValidation(fmt.Sprintf("%s is given %d times", name, len(vs)))
		}
		n, _ := strconv.Atoi(m[2])
		if m[1] == "TransitiveTagKeys" {
			transMembers[n] = vs[0]
			continue
		}
		t := tagMembers[n]
		if t == nil {
			t = &member{}
			tagMembers[n] = t
		}
		if m[3] == ".Key" {
			t.key, t.hasKey = vs[0], true
		} else {
			t.value, t.hasValue = vs[0], true
		}
	}
	if len(tagMembers) > maxTags {
		return nil, nil, validationFailed(fmt.Sprintf("[%d tags]", len(tagMembers)), "tags", fmt.Sprintf("Member must have length less than or equal to %d", maxTags))
	}
	if len(transMembers) > maxTags {
		return nil, nil, validationFailed(fmt.Sprintf("[%d keys]", len(transMembers)), "transitiveTagKeys", fmt.Sprintf("Member must have length less than or equal to %d", maxTags))
	}
	seen := map[string]bool{}
	for _, n := range sortedKeys(tagMembers) {
		t := tagMembers[n]
		at := fmt.Sprintf("tags.%d.member", n)
		switch {
		case !t.hasKey:
			return nil, nil, nullMember(at + ".key")
		case !t.hasValue:
			return nil, nil, nullMember(at + ".value")
		}
		if e := checkTagKey(t.key, at+".key"); e != nil {
			return nil, nil, e
		}
		switch {
		case utf8.RuneCountInString(t.value) > maxTagValueLen:
			return nil, nil, validationFailed(t.value, at+".value", fmt.Sprintf("Member must have length less than or equal to %d", maxTagValueLen))
		case !tagValueRE.MatchString(t.value):
			return nil, nil, validationFailed(t.value, at+".value", `Member must satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]*`)
		}
		if seen[strings.ToLower(t.key)] {
			return nil, nil, errValidation("Duplicate tag keys found. Please note that Tag keys are case insensitive.")
		}
		seen[strings.ToLower(t.key)] = true
		tags = append(tags, Tag{Key: t.key, Value: t.value})
	}
	for _, n := range sortedKeys(transMembers) {
		k := transMembers[n]
		if e := checkTagKey(k, fmt.Sprintf("transitiveTagKeys.%d.member", n)); e != nil {
			return nil, nil, e
		}
		if !seen[strings.ToLower(k)] {
			return nil, nil, errValidation(fmt.Sprintf("The specified transitive tag key must be included in the requested tags: %s is not among the session tags", k))
		}
		transitive = append(transitive, k)
	}
	return tags, transitive, nil
}

func checkTagKey(k, at string) *apiError {
	switch n := utf8.RuneCountInString(k); {
	case n < 1:
		return validationFailed(k, at, "Member must have length greater than or equal to 1")
	case n > maxTagKeyLen:
		return validationFailed(k, at, fmt.Sprintf("Member must have length less than or equal to %d", maxTagKeyLen))
	case !tagKeyRE.MatchString(k):
		return validationFailed(k, at, `Member must satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]+`)
	case strings.HasPrefix(strings.ToLower(k), "aws:"):
		return errValidation(fmt.Sprintf("Tag key %s uses the reserved prefix aws:", k))
	}
	return nil
}

func sortedKeys[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}
