package contract

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Session tag keys: the ones EKS Pod Identity sets, so that permission
// policies written for it (${aws:PrincipalTag/kubernetes-namespace}) work
// unchanged with podrole. The agent sends them with sts:AssumeRole when the
// webhook runs with --session-tags (serve --session-tags).
const (
	TagClusterARN     = "eks-cluster-arn"
	TagClusterName    = "eks-cluster-name"
	TagNamespace      = "kubernetes-namespace"
	TagServiceAccount = "kubernetes-service-account"
	TagPodName        = "kubernetes-pod-name"
	TagPodUID         = "kubernetes-pod-uid"
)

// SessionTag is one STS session tag.
type SessionTag struct{ Key, Value string }

// maxTagValue is STS's limit on a session tag value, in characters.
const maxTagValue = 256

// tagValueRE is STS's alphabet of tag values: letters, spaces, digits and _.:/=+-@.
var tagValueRE = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)

// CheckTagValue reports why STS would refuse v as a session tag value, or
// nil. flag names where v came from, for the message.
func CheckTagValue(flag, v string) error {
	if n := utf8.RuneCountInString(v); n > maxTagValue {
		return fmt.Errorf("--%s is %d characters long: STS takes session tag values of at most %d", flag, n, maxTagValue)
	}
	if !tagValueRE.MatchString(v) {
		return fmt.Errorf("--%s=%q cannot be a session tag value: STS allows only letters, digits, spaces and _.:/=+-@", flag, v)
	}
	return nil
}

// clusterARNRE is an EKS cluster ARN: arn:PARTITION:eks:REGION:ACCOUNT:cluster/NAME.
var clusterARNRE = regexp.MustCompile(`^arn:aws(?:-[a-z]+)*:eks:[a-z]{2}(?:-[a-z]+)+-[0-9]+:[0-9]{12}:cluster/([0-9A-Za-z][0-9A-Za-z_-]{0,99})$`)

// CheckClusterARN checks --cluster-arn (an EKS cluster ARN) and, when
// clusterName is set, that the ARN names that cluster.
func CheckClusterARN(arn, clusterName string) error {
	m := clusterARNRE.FindStringSubmatch(arn)
	if m == nil {
		return fmt.Errorf("--cluster-arn=%q is not an EKS cluster ARN: give arn:aws:eks:REGION:ACCOUNT:cluster/NAME, e.g. arn:aws:eks:us-east-1:111122223333:cluster/prod "+
			"(aws eks describe-cluster --name NAME --query cluster.arn)", arn)
	}
	if clusterName != "" && m[1] != clusterName {
		return fmt.Errorf("--cluster-arn=%q names cluster %q but --cluster-name is %q: give the same cluster to both", arn, m[1], clusterName)
	}
	return CheckTagValue("cluster-arn", arn)
}

// CheckClusterName checks --cluster-name as a session tag value.
func CheckClusterName(name string) error {
	if strings.TrimSpace(name) == "" {
		return fmt.Errorf("--cluster-name is required with --session-tags: it is the %s tag (e.g. --cluster-name=prod)", TagClusterName)
	}
	return CheckTagValue("cluster-name", name)
}

// SessionTagList returns the session tags the agent sends, in a fixed order,
// or nil without --session-tags. eks-cluster-arn is left out when
// --cluster-arn is empty. Validate has checked every value.
func (c ServeConfig) SessionTagList() []SessionTag {
	if !c.SessionTags {
		return nil
	}
	var tags []SessionTag
	if c.ClusterARN != "" {
		tags = append(tags, SessionTag{TagClusterARN, c.ClusterARN})
	}
	return append(tags,
		SessionTag{TagClusterName, c.ClusterName},
		SessionTag{TagNamespace, c.PodNamespace},
		SessionTag{TagServiceAccount, c.ServiceAccount},
		SessionTag{TagPodName, c.PodName},
		SessionTag{TagPodUID, c.PodUID},
	)
}

// checkSessionTags is Validate's part for --session-tags: each tag's value
// present and one STS accepts. The pod's values come from the downward API;
// a pod name is a DNS subdomain, so only an agent run by hand can fail here.
func (c ServeConfig) checkSessionTags() error {
	if !c.SessionTags {
		for name, set := range map[string]bool{"session-tags-transitive": c.TransitiveSessionTags, "cluster-name": c.ClusterName != "", "cluster-arn": c.ClusterARN != ""} {
			if set {
				return fmt.Errorf("--%s without --session-tags does nothing: add --session-tags, or drop --%s", name, name)
			}
		}
		return nil
	}
	if c.Source == SourceWebIdentity {
		return fmt.Errorf("--session-tags with --source=%s: sts:AssumeRoleWithWebIdentity takes session tags only from the token's "+
			"https://aws.amazon.com/tags claim, which Kubernetes service-account tokens do not carry; use --source=%s or drop --session-tags", SourceWebIdentity, SourceNode)
	}
	if err := CheckClusterName(c.ClusterName); err != nil {
		return err
	}
	if c.ClusterARN != "" {
		if err := CheckClusterARN(c.ClusterARN, c.ClusterName); err != nil {
			return err
		}
	}
	for _, f := range []struct{ flag, tag, v, from string }{
		{"pod-namespace", TagNamespace, c.PodNamespace, "metadata.namespace"},
		{"service-account", TagServiceAccount, c.ServiceAccount, "spec.serviceAccountName"},
		{"pod-name", TagPodName, c.PodName, "metadata.name"},
		{"pod-uid", TagPodUID, c.PodUID, "metadata.uid"},
	} {
		if f.v == "" {
			return fmt.Errorf("--%s is required with --session-tags: it is the %s tag (the webhook passes the downward API's %s)", f.flag, f.tag, f.from)
		}
		if err := CheckTagValue(f.flag, f.v); err != nil {
			return err
		}
	}
	return nil
}
