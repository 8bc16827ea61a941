package conformance

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/podrole/podrole/stsdouble"
)

// taggedRoleARN's trust allows sts:TagSession to the node role
// (testdata/sts-double.json); the app role's does not.
const taggedRoleARN = "arn:aws:iam::111122223333:role/tagged"

// sessionTagArgs are the agent's session tag arguments as the webhook
// renders them once the kubelet has expanded the downward API references.
func sessionTagArgs(role string, transitive bool) []string {
	args := []string{"--role-arn=" + role, "--session-tags",
		"--cluster-name=prod", "--cluster-arn=arn:aws:eks:us-east-1:111122223333:cluster/prod",
		"--pod-name=web-7d9f8-abcde", "--pod-namespace=team-a", "--service-account=web",
		"--pod-uid=0f3b6a7e-5c1d-4b7e-9a51-2d1c7f0e8a11"}
	if transitive {
		args = append(args, "--session-tags-transitive")
	}
	return args
}

// nodeBaseEnv gives the agent the node role's credentials from the
// environment, so these tests need no node IMDS stand-in.
func nodeBaseEnv() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + nodeKeyID, "AWS_SECRET_ACCESS_KEY=" + nodeSecret, "AWS_SESSION_TOKEN=" + nodeToken}
}

// TestSessionTags: with --session-tags the real agent's AssumeRole carries
// EKS Pod Identity's six tags with the pod's values, and with
// --session-tags-transitive every key as transitive; STS (the double)
// records them on the session whose key the agent then serves, and that
// key works.
func TestSessionTags(t *testing.T) {
	t.Parallel()
	wantTags := []stsdouble.Tag{
		{Key: "eks-cluster-arn", Value: "arn:aws:eks:us-east-1:111122223333:cluster/prod"},
		{Key: "eks-cluster-name", Value: "prod"},
		{Key: "kubernetes-namespace", Value: "team-a"},
		{Key: "kubernetes-service-account", Value: "web"},
		{Key: "kubernetes-pod-name", Value: "web-7d9f8-abcde"},
		{Key: "kubernetes-pod-uid", Value: "0f3b6a7e-5c1d-4b7e-9a51-2d1c7f0e8a11"},
	}
	for _, transitive := range []bool{false, true} {
		name := map[bool]string{false: "not transitive", true: "transitive"}[transitive]
		t.Run(name, func(t *testing.T) {
			st := startSTS(t)
			sc := startSidecar(t, st, sidecarOpts{env: nodeBaseEnv(), extra: sessionTagArgs(taggedRoleARN, transitive)})
			doc := credsDoc(t, call(t, http.MethodGet, sc.URL+pathCreds+"tagged", nil))
			var got *stsdouble.Issued
			for _, i := range st.Issued(taggedRoleARN) {
				if i.SessionName == sc.session && i.AccessKeyID == doc["AccessKeyId"] {
					got = &i
				}
			}
			if got == nil {
				t.Fatalf("the served key %q is not one the double issued for %s to this agent", doc["AccessKeyId"], taggedRoleARN)
			}
			if !reflect.DeepEqual(got.Tags, wantTags) {
				t.Errorf("session tags STS received:\n%v\nwant\n%v", got.Tags, wantTags)
			}
			var wantTransitive []string
			if transitive {
				for _, tag := range wantTags {
					wantTransitive = append(wantTransitive, tag.Key)
				}
			}
			if !reflect.DeepEqual(got.TransitiveTagKeys, wantTransitive) {
				t.Errorf("transitive tag keys %v, want %v", got.TransitiveTagKeys, wantTransitive)
			}
			creds := processCreds{AccessKeyID: doc["AccessKeyId"], SecretAccessKey: doc["SecretAccessKey"], SessionToken: doc["Token"]}
			if arn, err := callerIdentity(t, st, creds); err != nil || arn != got.AssumedRoleARN {
				t.Errorf("GetCallerIdentity with the served key: %s %v, want %s", arn, err, got.AssumedRoleARN)
			}
		})
	}
}

// TestSessionTagsWithoutTagSession: the app role's trust lets the node
// role assume it but not tag the session. The real agent then never
// starts or serves credentials, and its log says what to fix: the trust
// policy must allow sts:TagSession.
func TestSessionTagsWithoutTagSession(t *testing.T) {
	t.Parallel()
	st := startSTS(t)
	sc := startSidecar(t, st, sidecarOpts{env: nodeBaseEnv(), extra: sessionTagArgs(appRoleARN, false), noWait: true})
	const hint = "the role's trust policy must allow sts:TagSession"
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(sc.Logs(), hint) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line says %q:\n%s", hint, redact(sc.Logs()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	logs := sc.Logs()
	for _, want := range []string{"AccessDenied", "is not authorized to perform: sts:TagSession on resource: " + appRoleARN, "--session-tags"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the agent's log lacks %q:\n%s", want, redact(logs))
		}
	}
	if r := call(t, http.MethodGet, sc.HealthURL+"/started", nil); r.status == 200 {
		t.Errorf("/started is 200 without credentials")
	}
	if r := call(t, http.MethodGet, sc.URL+pathCreds+appRole, nil); r.status != http.StatusServiceUnavailable {
		t.Errorf("credentials: %d, want 503", r.status)
	}
	if n := len(st.Issued(appRoleARN)); n != 0 {
		t.Errorf("the double issued %d sessions", n)
	}
	if c := st.Calls(appRoleARN); c.Denied == 0 {
		t.Errorf("no denied call recorded: %+v", c)
	}
}
