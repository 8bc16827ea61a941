package contract

import (
	"reflect"
	"strings"
	"testing"
)

// taggedConfig is a node-source agent with every session tag set, as the
// webhook renders it after the kubelet expanded the downward API values.
func taggedConfig() ServeConfig {
	c := DefaultServeConfig()
	c.RoleARN, c.AgentMark, c.IgnoreEnv = "arn:aws:iam::111122223333:role/app", DefaultAgentMark, true
	c.PodName, c.PodNamespace = "web-7d9f8-abcde", "team-a"
	c.SessionTags, c.TransitiveSessionTags = true, true
	c.ClusterName, c.ClusterARN = "prod", "arn:aws:eks:eu-west-1:111122223333:cluster/prod"
	c.PodUID, c.ServiceAccount = "0f3b6a7e-5c1d-4b7e-9a51-2d1c7f0e8a11", "web"
	return c
}

// The tags are EKS Pod Identity's keys, in a fixed order, with the pod's
// values; eks-cluster-arn only when given; none without --session-tags.
func TestSessionTagList(t *testing.T) {
	c := taggedConfig()
	want := []SessionTag{
		{"eks-cluster-arn", "arn:aws:eks:eu-west-1:111122223333:cluster/prod"},
		{"eks-cluster-name", "prod"},
		{"kubernetes-namespace", "team-a"},
		{"kubernetes-service-account", "web"},
		{"kubernetes-pod-name", "web-7d9f8-abcde"},
		{"kubernetes-pod-uid", "0f3b6a7e-5c1d-4b7e-9a51-2d1c7f0e8a11"},
	}
	if got := c.SessionTagList(); !reflect.DeepEqual(got, want) {
		t.Errorf("tags %v\nwant %v", got, want)
	}
	c.ClusterARN = ""
	if got := c.SessionTagList(); !reflect.DeepEqual(got, want[1:]) {
		t.Errorf("without --cluster-arn: %v", got)
	}
	c.SessionTags = false
	if got := c.SessionTagList(); got != nil {
		t.Errorf("without --session-tags: %v", got)
	}
}

// Every way --session-tags can be misconfigured fails Validate with a
// message naming the flag and the fix.
func TestSessionTagsValidate(t *testing.T) {
	if err := taggedConfig().Validate(); err != nil {
		t.Fatalf("tagged config: %v", err)
	}
	tests := map[string]struct {
		mod  func(*ServeConfig)
		want string
	}{
		"web identity": {func(c *ServeConfig) {
			c.Source, c.AgentMark, c.Region = SourceWebIdentity, 0, "eu-west-1"
		}, "use --source=node or drop --session-tags"},
		"no cluster name":     {func(c *ServeConfig) { c.ClusterName = "" }, "--cluster-name is required with --session-tags"},
		"bad cluster name":    {func(c *ServeConfig) { c.ClusterName = "prod#1" }, "--cluster-name=\"prod#1\" cannot be a session tag value"},
		"bad cluster arn":     {func(c *ServeConfig) { c.ClusterARN = "arn:aws:iam::111122223333:role/prod" }, "--cluster-arn=\"arn:aws:iam::111122223333:role/prod\" is not an EKS cluster ARN"},
		"other cluster's arn": {func(c *ServeConfig) { c.ClusterARN = "arn:aws:eks:eu-west-1:111122223333:cluster/dev" }, "names cluster \"dev\" but --cluster-name is \"prod\""},
		"no pod uid":          {func(c *ServeConfig) { c.PodUID = "" }, "--pod-uid is required with --session-tags"},
		"no service account":  {func(c *ServeConfig) { c.ServiceAccount = "" }, "--service-account is required with --session-tags"},
		"no pod name":         {func(c *ServeConfig) { c.PodName = "" }, "--pod-name is required with --session-tags"},
		"no namespace":        {func(c *ServeConfig) { c.PodNamespace = "" }, "--pod-namespace is required with --session-tags"},
		"unexpanded variable": {func(c *ServeConfig) { c.PodUID = "$(PODROLE_POD_UID)" }, "--pod-uid=\"$(PODROLE_POD_UID)\" cannot be a session tag value"},
		"value too long":      {func(c *ServeConfig) { c.ClusterName = strings.Repeat("é", 257) }, "--cluster-name is 257 characters long"},
		"transitive alone": {func(c *ServeConfig) {
			c.SessionTags, c.ClusterName, c.ClusterARN = false, "", ""
		}, "--session-tags-transitive without --session-tags does nothing"},
		"cluster name alone": {func(c *ServeConfig) {
			c.SessionTags, c.TransitiveSessionTags, c.ClusterARN = false, false, ""
		}, "--cluster-name without --session-tags does nothing"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := taggedConfig()
			tt.mod(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestCheckTagValue(t *testing.T) {
	for v, ok := range map[string]bool{
		"":                                  true, // STS allows empty values
		"prod":                              true,
		"team-a/web_1:8080=x+y@z.example":   true,
		"Zürich cluster 2":                  true, // letters and spaces of any script
		"arn:aws:eks:us-east-1:1:cluster/x": true,
		strings.Repeat("a", 256):            true,
		strings.Repeat("a", 257):            false,
		"a,b":                               false,
		"$(PODROLE_POD_NAME)":               false,
		"tab\there":                         false,
		"quote\"":                           false,
	} {
		if err := CheckTagValue("x", v); (err == nil) != ok {
			t.Errorf("%q: err %v, want ok=%v", v, err, ok)
		}
	}
}

func TestCheckClusterARN(t *testing.T) {
	for arn, ok := range map[string]bool{
		"arn:aws:eks:us-east-1:111122223333:cluster/prod":         true,
		"arn:aws-cn:eks:cn-north-1:111122223333:cluster/prod":     true,
		"arn:aws-us-gov:eks:us-gov-west-1:111122223333:cluster/p": true,
		"arn:aws:eks:us-east-1:111122223333:cluster/":             false,
		"arn:aws:eks:us-east-1:111122223333:cluster/a/b":          false,
		"arn:aws:eks:us-east-1:11112222333:cluster/prod":          false,
		"arn:aws:eks::111122223333:cluster/prod":                  false,
		"arn:aws:eks:us-east-1:111122223333:nodegroup/prod":       false,
		"arn:aws:iam::111122223333:role/prod":                     false,
		"arn:other:eks:us-east-1:111122223333:cluster/prod":       false,
		"prod": false,
	} {
		if err := CheckClusterARN(arn, ""); (err == nil) != ok {
			t.Errorf("%q: err %v, want ok=%v", arn, err, ok)
		}
	}
}
