//go:build e2e

package e2e

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// withWebhookEnvs is withWebhookEnv for several variables at once: one
// `kubectl set env`, so one revision, which one `rollout undo` takes back
// (a second undo would return to the first change).
func (e *env) withWebhookEnvs(t testing.TB, pairs ...string) (undo func()) {
	t.Helper()
	deps := e.webhookDeployments(t)
	for _, d := range deps {
		e.k(t, append([]string{"-n", webhookNS, "set", "env", d}, pairs...)...)
		e.k(t, "-n", webhookNS, "rollout", "status", d, "--timeout=120s")
	}
	return func() {
		for _, d := range deps {
			e.k(t, "-n", webhookNS, "rollout", "undo", d)
			e.k(t, "-n", webhookNS, "rollout", "status", d, "--timeout=120s")
		}
	}
}

// Scenario 14: with --session-tags the agent's AssumeRole carries EKS Pod
// Identity's session tags, and the pod's values are the real ones the
// kubelet expanded from the downward API (its UID exists only once the pod
// is stored). The STS double's record of the issued session is the witness.
func (e *env) scenarioSessionTags(t *testing.T) {
	undo := e.withWebhookEnvs(t, "PODROLE_SESSION_TAGS=true", "PODROLE_SESSION_TAGS_TRANSITIVE=true", "PODROLE_CLUSTER_NAME=podrole-e2e")
	defer func() {
		undo()
		e.waitInjecting(t, 90*time.Second)
	}()
	e.waitInjecting(t, 90*time.Second)
	ns := e.namespace(t, "s14", true, nil)
	p := e.startPod(t, podSpec{name: "tagged", ns: ns, role: "e2e-app"})
	if args := strings.Join(p.Spec.InitContainers[1].Args, " "); !strings.Contains(args, "--session-tags") {
		t.Fatalf("agent args %q lack --session-tags", args)
	}
	uid := e.k(t, "-n", ns, "get", "pod", "tagged", "-o", "jsonpath={.metadata.uid}")
	r := e.creds(t, ns, "tagged", "app")
	if !r.OK {
		t.Fatalf("the app got no credentials: %s", r.Error)
	}
	type tag struct{ Key, Value string }
	var issued []struct {
		AccessKeyID string   `json:"access_key_id"`
		Tags        []tag    `json:"tags"`
		Transitive  []string `json:"transitive_tag_keys"`
	}
	if err := json.Unmarshal(e.double(t, "GET", "/_double/issued?role="+roleARN("e2e-app")), &issued); err != nil {
		t.Fatalf("decode /_double/issued: %v", err)
	}
	want := []tag{
		{"eks-cluster-name", "podrole-e2e"},
		{"kubernetes-namespace", ns},
		{"kubernetes-service-account", "default"},
		{"kubernetes-pod-name", "tagged"},
		{"kubernetes-pod-uid", strings.TrimSpace(uid)},
	}
	for _, i := range issued {
		if i.AccessKeyID != r.AccessKeyID {
			continue
		}
		if !reflect.DeepEqual(i.Tags, want) {
			t.Errorf("session tags STS received:\n%v\nwant\n%v", i.Tags, want)
		}
		if len(i.Transitive) != len(want) {
			t.Errorf("transitive tag keys %v, want every key", i.Transitive)
		}
		t.Logf("the double issued %s with tags %v", r.AccessKeyID, i.Tags)
		return
	}
	t.Fatalf("the STS double never issued %s for %s", r.AccessKeyID, roleARN("e2e-app"))
}
