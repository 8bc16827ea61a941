package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/webhook/mutate"
	"github.com/prometheus/client_golang/prometheus/testutil"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// ephemeralReviewJSON is what the API server sends for kubectl debug: an
// UPDATE of pods/ephemeralcontainers with the whole Pod as object and
// oldObject.
func ephemeralReviewJSON(uid, kind string, op admissionv1.Operation, old, object []byte) []byte {
	r := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID(uid), Kind: metav1.GroupVersionKind{Version: "v1", Kind: kind},
			Resource:    metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			SubResource: "ephemeralcontainers",
			// A namespace the test server cannot look up: the ephemeral check
			// must not depend on the namespace lookup.
			Namespace: "gone", Operation: op,
			Object: runtime.RawExtension{Raw: object}, OldObject: runtime.RawExtension{Raw: old},
		},
	}
	b, _ := json.Marshal(&r)
	return b
}

// storedPod is the pod the API server stores for a CREATE of podJSON(ns,
// annotations) through s: the webhook's own patch applied.
func storedPod(t *testing.T, s *Server, annotations map[string]string) []byte {
	t.Helper()
	raw := podJSON("team-a", annotations)
	rec := post(s.Handler(), reviewJSON("create", "team-a", admissionv1.Create, "Pod", raw), "application/json")
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil || !out.Response.Allowed {
		t.Fatalf("create: %s", rec.Body.String())
	}
	if len(out.Response.Patch) == 0 {
		return raw
	}
	p, err := jsonpatch.DecodePatch(out.Response.Patch)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := p.Apply(raw)
	if err != nil {
		t.Fatal(err)
	}
	return stored
}

func withEphemeral(t *testing.T, raw []byte, cs ...corev1.EphemeralContainer) []byte {
	t.Helper()
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, cs...)
	b, err := json.Marshal(&pod)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func debugContainer(name string, sc *corev1.SecurityContext) corev1.EphemeralContainer {
	return corev1.EphemeralContainer{
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: name, Image: "registry.example/busybox:1", SecurityContext: sc},
		TargetContainerName:      "app",
	}
}

// TestEphemeralContainersHTTP: kubectl debug on a pod podrole protects is
// refused when the debug container could undo the redirect (the profiles
// netadmin and sysadmin, the agent's UID) and allowed otherwise, without a
// patch; pods podrole never touched are not judged; odd requests are
// refused, never allowed blind.
func TestEphemeralContainersHTTP(t *testing.T) {
	netAdmin := &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}}
	privileged := &corev1.SecurityContext{Privileged: new(true)}
	ptrace := &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}}}
	agentUID := &corev1.SecurityContext{RunAsUser: new(int64(contract.DefaultSidecarUID))}

	s, _ := newTestServer(t)
	injected := storedPod(t, s, map[string]string{contract.AnnotationRole: "app"})
	blocked := storedPod(t, s, nil)
	plain := podJSON("plain", nil)
	if !strings.Contains(string(injected), `"podrole.io/status":"injected"`) || !strings.Contains(string(blocked), `"podrole.io/status":"blocked"`) {
		t.Fatalf("stored pods not injected/blocked:\n%s\n%s", injected, blocked)
	}

	tests := []struct {
		name          string
		allowNetAdmin bool
		body          []byte
		allowed       bool
		message       string // substring of Result.Message
		code          int32
		result        string
	}{
		{name: "netadmin profile on an injected pod",
			body:    ephemeralReviewJSON("e1", "Pod", admissionv1.Update, injected, withEphemeral(t, injected, debugContainer("debugger", netAdmin))),
			message: `podrole: ephemeral container "debugger" of pod "app" adds capability "NET_ADMIN": it could delete podrole's metadata rules`, code: 403, result: "denied"},
		{name: "sysadmin profile on a blocked pod",
			body:    ephemeralReviewJSON("e2", "Pod", admissionv1.Update, blocked, withEphemeral(t, blocked, debugContainer("debugger", privileged))),
			message: `ephemeral container "debugger" of pod "app" is privileged`, code: 403, result: "denied"},
		{name: "agent's UID on an injected pod",
			body:    ephemeralReviewJSON("e3", "Pod", admissionv1.Update, injected, withEphemeral(t, injected, debugContainer("debugger", agentUID))),
			message: `runs as UID 47181, the UID of podrole-agent`, code: 403, result: "denied"},
		{name: "general profile allowed",
			body:    ephemeralReviewJSON("e4", "Pod", admissionv1.Update, injected, withEphemeral(t, injected, debugContainer("debugger", ptrace))),
			allowed: true, result: "skipped"},
		{name: "agent's UID on a blocked pod allowed (no agent, every UID blocked)",
			body:    ephemeralReviewJSON("e5", "Pod", admissionv1.Update, blocked, withEphemeral(t, blocked, debugContainer("debugger", agentUID))),
			allowed: true, result: "skipped"},
		{name: "pod without status is not judged",
			body:    ephemeralReviewJSON("e6", "Pod", admissionv1.Update, plain, withEphemeral(t, plain, debugContainer("debugger", privileged))),
			allowed: true, result: "skipped"},
		{name: "--allow-net-admin lets NET_ADMIN through", allowNetAdmin: true,
			body:    ephemeralReviewJSON("e7", "Pod", admissionv1.Update, injected, withEphemeral(t, injected, debugContainer("debugger", netAdmin))),
			allowed: true, result: "skipped"},
		{name: "--allow-net-admin does not admit privileged", allowNetAdmin: true,
			body:    ephemeralReviewJSON("e8", "Pod", admissionv1.Update, injected, withEphemeral(t, injected, debugContainer("debugger", privileged))),
			message: "is privileged", code: 403, result: "denied"},
		{name: "no oldObject: every ephemeral container is judged",
			body:    ephemeralReviewJSON("e9", "Pod", admissionv1.Update, nil, withEphemeral(t, injected, debugContainer("debugger", netAdmin))),
			message: `adds capability "NET_ADMIN"`, code: 403, result: "denied"},
		{name: "pre-1.22 EphemeralContainers kind is refused, not allowed blind",
			body:    ephemeralReviewJSON("e10", "EphemeralContainers", admissionv1.Update, nil, []byte(`{"ephemeralContainers":[{"name":"d","securityContext":{"privileged":true}}]}`)),
			message: "not a v1 Pod", code: 400, result: "error"},
		{name: "object that does not decode",
			body:    ephemeralReviewJSON("e11", "Pod", admissionv1.Update, injected, []byte(`{"spec":{"ephemeralContainers":"nope"}}`)),
			message: "cannot decode the pod to check its ephemeral containers", code: 400, result: "error"},
		{name: "no object",
			body:    ephemeralReviewJSON("e12", "Pod", admissionv1.Update, injected, nil),
			message: "the request has no object", code: 400, result: "error"},
		{name: "oldObject that does not decode",
			body:    ephemeralReviewJSON("e13", "Pod", admissionv1.Update, []byte(`{"metadata":"x"}`), withEphemeral(t, injected, debugContainer("debugger", ptrace))),
			message: "cannot decode the stored pod", code: 400, result: "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestServerWith(t, func(c *mutate.Config) { c.AllowNetAdmin = tt.allowNetAdmin })
			rec := post(s.Handler(), tt.body, "application/json")
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
			}
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("not an AdmissionReview: %v %s", err, rec.Body.String())
			}
			r := out.Response
			if r.Allowed != tt.allowed {
				t.Fatalf("allowed %v, want %v (%+v)", r.Allowed, tt.allowed, r.Result)
			}
			if len(r.Patch) > 0 || r.PatchType != nil {
				t.Errorf("ephemeral container answer has a patch: %s", r.Patch)
			}
			if !tt.allowed && (r.Result == nil || r.Result.Code != tt.code || !strings.Contains(r.Result.Message, tt.message)) {
				t.Errorf("result %+v, want code %d and message containing %q", r.Result, tt.code, tt.message)
			}
			if got := testutil.ToFloat64(s.admissions.WithLabelValues(tt.result)); got != 1 {
				t.Errorf("admissions{result=%q} = %v, want 1", tt.result, got)
			}
		})
	}
}

// TestReinvocationHTTP: with reinvocationPolicy IfNeeded the API server
// sends the pod again, already injected, after a later webhook changed it.
// Unchanged podrole containers and nothing dangerous: allowed with no patch
// (a second patch would add duplicate containers); a NET_ADMIN container the
// later webhook added: refused.
func TestReinvocationHTTP(t *testing.T) {
	s, _ := newTestServer(t)
	injected := storedPod(t, s, map[string]string{contract.AnnotationRole: "app"})
	addContainer := func(c corev1.Container) []byte {
		var pod corev1.Pod
		if err := json.Unmarshal(injected, &pod); err != nil {
			t.Fatal(err)
		}
		pod.Spec.Containers = append(pod.Spec.Containers, c)
		b, _ := json.Marshal(&pod)
		return b
	}
	tests := []struct {
		name    string
		pod     []byte
		allowed bool
		message string
	}{
		{"nothing added", injected, true, ""},
		{"harmless container added", addContainer(corev1.Container{Name: "log-shipper", Image: "registry.example/shipper:1"}), true, ""},
		{"NET_ADMIN container added", addContainer(corev1.Container{Name: "mesh-proxy", Image: "registry.example/proxy:1",
			SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}}),
			false, `podrole: container "mesh-proxy" of pod "app" adds capability "NET_ADMIN"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(s.Handler(), reviewJSON("re", "team-a", admissionv1.Create, "Pod", tt.pod), "application/json")
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("not an AdmissionReview: %v %s", err, rec.Body.String())
			}
			r := out.Response
			if r.Allowed != tt.allowed || len(r.Patch) > 0 {
				t.Fatalf("allowed %v patch %s, want allowed %v and no patch (%+v)", r.Allowed, r.Patch, tt.allowed, r.Result)
			}
			if !tt.allowed && (r.Result == nil || !strings.Contains(r.Result.Message, tt.message)) {
				t.Errorf("result %+v does not contain %q", r.Result, tt.message)
			}
		})
	}
}
