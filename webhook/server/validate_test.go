package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/podrole/podrole/contract"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// validateReview is an AdmissionReview of the ValidatingWebhookConfiguration.
func validateReview(uid, ns, name string, op admissionv1.Operation, kind, sub string, object, old []byte) []byte {
	r := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID(uid), Kind: metav1.GroupVersionKind{Version: "v1", Kind: kind},
			Resource:    metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			SubResource: sub, Name: name, Namespace: ns, Operation: op,
			Object: runtime.RawExtension{Raw: object}, OldObject: runtime.RawExtension{Raw: old},
		},
	}
	b, _ := json.Marshal(&r)
	return b
}

// TestValidateHTTP covers /validate end to end: pod creations as the API
// server stores them (after /mutate) are allowed, the same pod without the
// mutation is refused, updates of podrole's containers and exec/attach into
// them are refused, and what cannot be decoded is refused, never allowed.
func TestValidateHTTP(t *testing.T) {
	s, _ := newTestServer(t)
	role := map[string]string{contract.AnnotationRole: "app"}
	injected := storedPod(t, s, role)
	setImage := func(raw []byte, name, image string) []byte {
		var pod corev1.Pod
		if err := json.Unmarshal(raw, &pod); err != nil {
			t.Fatal(err)
		}
		for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
			for i := range cs {
				if cs[i].Name == name {
					cs[i].Image = image
				}
			}
		}
		b, _ := json.Marshal(&pod)
		return b
	}
	exec := func(container string) []byte {
		return []byte(`{"kind":"PodExecOptions","apiVersion":"v1","stdout":true,"container":"` + container + `","command":["sh"]}`)
	}
	tests := []struct {
		name    string
		body    []byte
		allowed bool
		code    int32
		message string
		result  string
	}{
		{name: "injected pod as stored", body: validateReview("v1", "team-a", "app", admissionv1.Create, "Pod", "", injected, nil), allowed: true, result: "allowed"},
		{name: "pod the mutating webhook never saw", body: validateReview("v2", "team-a", "app", admissionv1.Create, "Pod", "", podJSON("team-a", role), nil),
			code: 403, message: "podrole did not inject this pod (was the mutating webhook bypassed or its patch removed?)", result: "denied"},
		{name: "unlabelled namespace", body: validateReview("v3", "plain", "app", admissionv1.Create, "Pod", "", podJSON("plain", role), nil), allowed: true, result: "allowed"},
		{name: "namespace lookup fails: refused", body: validateReview("v4", "gone", "app", admissionv1.Create, "Pod", "", podJSON("gone", role), nil),
			code: 500, message: `cannot look up namespace "gone"`, result: "error"},
		{name: "set image on podrole-agent", body: validateReview("v5", "team-a", "app", admissionv1.Update, "Pod", "", setImage(injected, contract.AgentContainerName, "registry.example/evil:1"), injected),
			code: 403, message: `init container "podrole-agent" cannot be changed (kubectl set image and edits included)`, result: "denied"},
		{name: "set image on the app", body: validateReview("v6", "team-a", "app", admissionv1.Update, "Pod", "", setImage(injected, "app", "registry.example/app:2"), injected), allowed: true, result: "allowed"},
		{name: "update without oldObject", body: validateReview("v7", "team-a", "app", admissionv1.Update, "Pod", "", injected, nil),
			code: 403, message: "carries no object or no oldObject", result: "denied"},
		{name: "exec into podrole-agent", body: validateReview("v8", "team-a", "app", admissionv1.Connect, "PodExecOptions", "exec", exec(contract.AgentContainerName), nil),
			code: 403, message: `kubectl exec into container "podrole-agent" of pod "app" is refused`, result: "denied"},
		{name: "attach to podrole-init", body: validateReview("v9", "team-a", "app", admissionv1.Connect, "PodAttachOptions", "attach", []byte(`{"container":"podrole-init"}`), nil),
			code: 403, message: `kubectl attach into container "podrole-init"`, result: "denied"},
		{name: "exec into the app", body: validateReview("v10", "team-a", "app", admissionv1.Connect, "PodExecOptions", "exec", exec("app"), nil), allowed: true, result: "allowed"},
		{name: "exec options of another kind: refused", body: validateReview("v11", "team-a", "app", admissionv1.Connect, "Pod", "exec", exec(contract.AgentContainerName), nil),
			code: 400, message: "cannot read the container of this exec request", result: "error"},
		{name: "exec options that do not decode: refused", body: validateReview("v12", "team-a", "app", admissionv1.Connect, "PodExecOptions", "exec", []byte(`{"container":7}`), nil),
			code: 400, message: "cannot read the container", result: "error"},
		{name: "port-forward is not podrole's", body: validateReview("v13", "team-a", "app", admissionv1.Connect, "PodPortForwardOptions", "portforward", []byte(`{}`), nil), allowed: true, result: "allowed"},
		{name: "pod that does not decode", body: validateReview("v14", "team-a", "app", admissionv1.Create, "Pod", "", []byte(`{"spec":"x"}`), nil),
			code: 400, message: "cannot decode the pod", result: "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestServer(t)
			r := answer(t, s, "/validate", tt.body)
			if r.Allowed != tt.allowed || len(r.Patch) > 0 {
				t.Fatalf("allowed %v patch %s, want allowed %v (%+v)", r.Allowed, r.Patch, tt.allowed, r.Result)
			}
			if !tt.allowed && (r.Result == nil || r.Result.Code != tt.code || !strings.Contains(r.Result.Message, tt.message)) {
				t.Errorf("result %+v, want code %d and message containing %q", r.Result, tt.code, tt.message)
			}
			if got := testutil.ToFloat64(s.validations.WithLabelValues(tt.result)); got != 1 {
				t.Errorf("validations{result=%q} = %v, want 1", tt.result, got)
			}
			if got := testutil.CollectAndCount(s.admissions); got != 6 {
				t.Errorf("/validate touched the mutating metrics: %d series", got)
			}
		})
	}
}
