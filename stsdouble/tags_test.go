package stsdouble

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
)

// tagForm builds a Query API form from "name=value" pairs.
func tagForm(pairs ...string) url.Values {
	v := url.Values{}
	for _, p := range pairs {
		k, val, _ := strings.Cut(p, "=")
		v.Add(k, val)
	}
	return v
}

// manyTags is n complete tags k1=v1 ... kn=vn.
func manyTags(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("Tags.member.%d.Key=k%d", i, i), fmt.Sprintf("Tags.member.%d.Value=v%d", i, i))
	}
	return out
}

// The wire format of session tags and STS's limits on them: what passes
// comes back in member order; what STS refuses is a ValidationError whose
// message names the member and the constraint.
func TestParseTags(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name       string
		form       url.Values
		tags       []Tag
		transitive []string
		err        string // substring of the ValidationError's message; "" for success
	}{
		{name: "none", form: tagForm("RoleArn=x")},
		{name: "empty lists", form: tagForm("Tags=", "TransitiveTagKeys=")},
		{name: "two tags, member order", form: tagForm("Tags.member.2.Key=kubernetes-namespace", "Tags.member.2.Value=team-a",
			"Tags.member.1.Key=eks-cluster-name", "Tags.member.1.Value=prod"),
			tags: []Tag{{"eks-cluster-name", "prod"}, {"kubernetes-namespace", "team-a"}}},
		{name: "transitive", form: tagForm("Tags.member.1.Key=a", "Tags.member.1.Value=1", "Tags.member.2.Key=B", "Tags.member.2.Value=",
			"TransitiveTagKeys.member.1=b"),
			tags: []Tag{{"a", "1"}, {"B", ""}}, transitive: []string{"b"}},
		{name: "every allowed character", form: tagForm("Tags.member.1.Key=Zürich_.:/=+-@ 1", "Tags.member.1.Value=Zürich_.:/=+-@ 1"),
			tags: []Tag{{"Zürich_.:/=+-@ 1", "Zürich_.:/=+-@ 1"}}},
		{name: "50 tags", form: tagForm(manyTags(50)...), tags: func() []Tag {
			var out []Tag
			for i := 1; i <= 50; i++ {
				out = append(out, Tag{fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)})
			}
			return out
		}()},
		{name: "longest key and value", form: tagForm("Tags.member.1.Key="+long(128), "Tags.member.1.Value="+long(256)),
			tags: []Tag{{long(128), long(256)}}},

		{name: "51 tags", form: tagForm(manyTags(51)...), err: "at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50"},
		{name: "key without value", form: tagForm("Tags.member.1.Key=a"), err: "Value null at 'tags.1.member.value'"},
		{name: "value without key", form: tagForm("Tags.member.3.Value=a"), err: "Value null at 'tags.3.member.key'"},
		{name: "empty key", form: tagForm("Tags.member.1.Key=", "Tags.member.1.Value=a"), err: "'tags.1.member.key' failed to satisfy constraint: Member must have length greater than or equal to 1"},
		{name: "key too long", form: tagForm("Tags.member.1.Key="+long(129), "Tags.member.1.Value=a"), err: "'tags.1.member.key' failed to satisfy constraint: Member must have length less than or equal to 128"},
		{name: "value too long", form: tagForm("Tags.member.1.Key=a", "Tags.member.1.Value="+long(257)), err: "'tags.1.member.value' failed to satisfy constraint: Member must have length less than or equal to 256"},
		{name: "key character", form: tagForm("Tags.member.1.Key=a,b", "Tags.member.1.Value=a"), err: "'tags.1.member.key' failed to satisfy constraint: Member must satisfy regular expression pattern"},
		{name: "value character", form: tagForm("Tags.member.1.Key=a", "Tags.member.1.Value=$(POD)"), err: "'tags.1.member.value' failed to satisfy constraint: Member must satisfy regular expression pattern"},
		{name: "reserved prefix", form: tagForm("Tags.member.1.Key=AWS:x", "Tags.member.1.Value=a"), err: "reserved prefix aws:"},
		{name: "duplicate key, other case", form: tagForm("Tags.member.1.Key=Team", "Tags.member.1.Value=a", "Tags.member.2.Key=team", "Tags.member.2.Value=b"),
			err: "Duplicate tag keys found. Please note that Tag keys are case insensitive."},
		{name: "transitive not a tag", form: tagForm("Tags.member.1.Key=a", "Tags.member.1.Value=1", "TransitiveTagKeys.member.1=b"),
			err: "The specified transitive tag key must be included in the requested tags"},
		{name: "transitive without tags", form: tagForm("TransitiveTagKeys.member.1=a"), err: "must be included in the requested tags"},
		{name: "51 transitive keys", form: tagForm(append(manyTags(50), func() []string {
			var out []string
			for i := 1; i <= 51; i++ {
				out = append(out, fmt.Sprintf("TransitiveTagKeys.member.%d=k%d", i, i))
			}
			return out
		}()...)...), err: "at 'transitiveTagKeys' failed to satisfy constraint: Member must have length less than or equal to 50"},
		{name: "member zero", form: tagForm("Tags.member.0.Key=a", "Tags.member.0.Value=1"), err: "Tags.member.0.Key is not a valid parameter"},
		{name: "leading zero", form: tagForm("Tags.member.01.Key=a", "Tags.member.01.Value=1"), err: "is not a valid parameter"},
		{name: "no member", form: tagForm("Tags.1.Key=a", "Tags.1.Value=1"), err: "Tags.1.Key is not a valid parameter"},
		{name: "other field", form: tagForm("Tags.member.1.Name=a"), err: "Tags.member.1.Name is not a valid parameter"},
		{name: "transitive with field", form: tagForm("TransitiveTagKeys.member.1.Key=a"), err: "is not a valid parameter"},
		{name: "member twice", form: tagForm("Tags.member.1.Key=a", "Tags.member.1.Key=b", "Tags.member.1.Value=1"), err: "Tags.member.1.Key is given 2 times"},
		{name: "list with a value", form: tagForm("Tags=a"), err: "Tags must be sent as members"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tags, transitive, e := parseTags(tt.form)
			if tt.err == "" {
				if e != nil {
					t.Fatalf("refused: %v", e)
				}
				if !reflect.DeepEqual(tags, tt.tags) || !reflect.DeepEqual(transitive, tt.transitive) {
					t.Errorf("got %v %v, want %v %v", tags, transitive, tt.tags, tt.transitive)
				}
				return
			}
			if e == nil {
				t.Fatalf("accepted: %v %v", tags, transitive)
			}
			if e.status != 400 || e.code != "ValidationError" || !strings.Contains(e.message, tt.err) {
				t.Errorf("got %d %s %q, want 400 ValidationError containing %q", e.status, e.code, e.message, tt.err)
			}
		})
	}
}

// Through the real SDK: tags reach the double's record (admin API and Go
// API), transitive keys too; a role whose trust lacks sts:TagSession
// refuses tagged calls as STS does, and still admits untagged ones;
// malformed tags are refused before trust is looked at.
func TestAssumeRoleSessionTags(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client("us-east-1", ciKey, ciSecret, "")
	tags := []types.Tag{
		{Key: aws.String("eks-cluster-name"), Value: aws.String("prod")},
		{Key: aws.String("kubernetes-namespace"), Value: aws.String("team-a")},
	}
	out, err := c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("tagged"),
		Tags: tags, TransitiveTagKeys: []string{"kubernetes-namespace"}})
	if err != nil {
		t.Fatal(err)
	}
	if out.PackedPolicySize == nil { //nolint:staticcheck // SA1019: real STS still sends it, and the double must too
		t.Errorf("no PackedPolicySize in the answer to a call with tags")
	}
	is := f.d.Issued(appRole)
	want := []Tag{{"eks-cluster-name", "prod"}, {"kubernetes-namespace", "team-a"}}
	if len(is) != 1 || !reflect.DeepEqual(is[0].Tags, want) || !reflect.DeepEqual(is[0].TransitiveTagKeys, []string{"kubernetes-namespace"}) {
		t.Fatalf("issued %+v", is)
	}
	resp, err := http.Get(f.srv.URL + "/_double/issued?role=" + appRole)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if !strings.Contains(body, `"tags": [`) || !strings.Contains(body, `"key": "kubernetes-namespace"`) || !strings.Contains(body, `"transitive_tag_keys": [`) {
		t.Errorf("/_double/issued lacks the tags:\n%s", body)
	}

	// "teams/long" trusts ci but not for sts:TagSession.
	const long = "arn:aws:iam::111122223333:role/teams/long"
	_, err = c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(long), RoleSessionName: aws.String("tagged"), Tags: tags})
	if code, status := apiErr(t, err); code != "AccessDenied" || status != 403 ||
		!strings.Contains(err.Error(), "User: arn:aws:iam::111122223333:user/ci is not authorized to perform: sts:TagSession on resource: "+long) {
		t.Errorf("tags without sts:TagSession: %s %d %v", code, status, err)
	}
	if _, err := c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(long), RoleSessionName: aws.String("plain")}); err != nil {
		t.Errorf("the same role without tags: %v", err)
	}

	// Malformed tags: ValidationError, even into a role the caller may not assume.
	bad := []types.Tag{{Key: aws.String("a"), Value: aws.String("x")}, {Key: aws.String("A"), Value: aws.String("y")}}
	for _, role := range []string{appRole, "arn:aws:iam::111122223333:role/nobody"} {
		_, err = c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(role), RoleSessionName: aws.String("dup"), Tags: bad})
		if code, status := apiErr(t, err); code != "ValidationError" || status != 400 || !strings.Contains(err.Error(), "Duplicate tag keys") {
			t.Errorf("%s, duplicate keys: %s %d %v", role, code, status, err)
		}
	}
	_, err = c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("trans"),
		Tags: tags[:1], TransitiveTagKeys: []string{"kubernetes-namespace"}})
	if code, status := apiErr(t, err); code != "ValidationError" || status != 400 {
		t.Errorf("transitive key not a tag: %s %d %v", code, status, err)
	}
}
