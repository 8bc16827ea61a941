package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
// netadmin and sysadmin) or targets podrole-agent, and allowed otherwise:
// /mutate patches NET_RAW out of it, /validate refuses it until it is out;
// pods podrole never touched are not judged; odd requests are refused, never
// allowed blind.
func TestEphemeralContainersHTTP(t *testing.T) {
	netAdmin := &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}}
	privileged := &corev1.SecurityContext{Privileged: new(true)}
	ptrace := &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}}}
	agentUID := &corev1.SecurityContext{RunAsUser: new(int64(contract.DefaultSidecarUID))}
	restricted := &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	targeting := debugContainer("debugger", ptrace)
	targeting.TargetContainerName = contract.AgentContainerName

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
		{name: "the agent's former UID grants nothing: allowed, NET_RAW dropped",
			body:    ephemeralReviewJSON("e3", "Pod", admissionv1.Update, injected, withEphemeral(t, injected, debugContainer("debugger", agentUID))),
			allowed: true, result: "patched"},
		{name: "general profile allowed, NET_RAW dropped",
			body:    ephemeralReviewJSON("e4", "Pod", admissionv1.Update, injected, withEphemeral(t, injected, debugContainer("debugger", ptrace))),
			allowed: true, result: "patched"},
		{name: "blocked pod: allowed, NET_RAW dropped",
			body:    ephemeralReviewJSON("e5", "Pod", admissionv1.Update, blocked, withEphemeral(t, blocked, debugContainer("debugger", agentUID))),
			allowed: true, result: "patched"},
		{name: "restricted profile allowed as is",
			body:    ephemeralReviewJSON("e5b", "Pod", admissionv1.Update, injected, withEphemeral(t, injected, debugContainer("debugger", restricted))),
			allowed: true, result: "skipped"},
		{name: "kubectl debug --target=podrole-agent refused",
			body:    ephemeralReviewJSON("e5c", "Pod", admissionv1.Update, injected, withEphemeral(t, injected, targeting)),
			message: `ephemeral container "debugger" of pod "app" targets podrole-agent`, code: 403, result: "denied"},
		{name: "pod without status is not judged",
			body:    ephemeralReviewJSON("e6", "Pod", admissionv1.Update, plain, withEphemeral(t, plain, debugContainer("debugger", privileged))),
			allowed: true, result: "skipped"},
		{name: "--allow-net-admin and --allow-net-raw let the netadmin profile through", allowNetAdmin: true,
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
			s, _ := newTestServerWith(t, func(c *mutate.Config) { c.AllowNetAdmin, c.AllowNetRaw = tt.allowNetAdmin, tt.allowNetAdmin })
			r := answer(t, s, "/mutate", tt.body)
			if r.Allowed != tt.allowed {
				t.Fatalf("allowed %v, want %v (%+v)", r.Allowed, tt.allowed, r.Result)
			}
			if (len(r.Patch) > 0) != (tt.result == "patched") {
				t.Errorf("result %s with patch %s", tt.result, r.Patch)
			}
			if !tt.allowed && (r.Result == nil || r.Result.Code != tt.code || !strings.Contains(r.Result.Message, tt.message)) {
				t.Errorf("result %+v, want code %d and message containing %q", r.Result, tt.code, tt.message)
			}
			if got := testutil.ToFloat64(s.admissions.WithLabelValues(tt.result)); got != 1 {
				t.Errorf("admissions{result=%q} = %v, want 1", tt.result, got)
			}

			// /validate gives the same answer, except that what /mutate
			// patches is refused there (the patch is missing), and is
			// admitted once patched.
			v := answer(t, s, "/validate", tt.body)
			want, vresult := tt.allowed, map[string]string{"skipped": "allowed", "patched": "denied"}[tt.result]
			if vresult == "" {
				vresult = tt.result
			}
			if tt.result == "patched" {
				want = false
				if v.Result == nil || !strings.Contains(v.Result.Message, "does not drop NET_RAW") {
					t.Errorf("/validate result %+v, want a NET_RAW refusal", v.Result)
				}
			}
			if v.Allowed != want || len(v.Patch) > 0 {
				t.Errorf("/validate allowed %v patch %s, want allowed %v (%+v)", v.Allowed, v.Patch, want, v.Result)
			}
			if got := testutil.ToFloat64(s.validations.WithLabelValues(vresult)); got != 1 {
				t.Errorf("validations{result=%q} = %v, want 1", vresult, got)
			}
			if tt.result == "patched" {
				var req admissionv1.AdmissionReview
				if err := json.Unmarshal(tt.body, &req); err != nil {
					t.Fatal(err)
				}
				p, err := jsonpatch.DecodePatch(r.Patch)
				if err != nil {
					t.Fatal(err)
				}
				if req.Request.Object.Raw, err = p.Apply(req.Request.Object.Raw); err != nil {
					t.Fatal(err)
				}
				body, _ := json.Marshal(&req)
				if v := answer(t, s, "/validate", body); !v.Allowed {
					t.Errorf("/validate refuses the patched request: %+v", v.Result)
				}
			}
		})
	}
}

// answer posts body to path and returns the AdmissionReview's response.
func answer(t *testing.T, s *Server, path string, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("%s: status %d: %s", path, rec.Code, rec.Body.String())
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("%s: not an AdmissionReview: %v %s", path, err, rec.Body.String())
	}
	return out.Response
}

// TestReinvocationHTTP: with reinvocationPolicy IfNeeded the API server
// sends the pod again, already injected, after a later webhook changed it.
// Unchanged podrole containers and nothing dangerous: allowed with no patch
// (a second patch would add duplicate containers) but the one that takes
// NET_RAW from a container the later webhook added; a NET_ADMIN container
// the later webhook added: refused.
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
		patch   string
		message string
	}{
		{"nothing added", injected, true, "", ""},
		{"harmless container added", addContainer(corev1.Container{Name: "log-shipper", Image: "registry.example/shipper:1"}), true,
			`[{"op":"add","path":"/spec/containers/1/securityContext","value":{"capabilities":{"drop":["NET_RAW"]}}}]`, ""},
		{"NET_ADMIN container added", addContainer(corev1.Container{Name: "mesh-proxy", Image: "registry.example/proxy:1",
			SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}}),
			false, "", `podrole: container "mesh-proxy" of pod "app" adds capability "NET_ADMIN"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(s.Handler(), reviewJSON("re", "team-a", admissionv1.Create, "Pod", tt.pod), "application/json")
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("not an AdmissionReview: %v %s", err, rec.Body.String())
			}
			r := out.Response
			if r.Allowed != tt.allowed || string(r.Patch) != tt.patch {
				t.Fatalf("allowed %v patch %s, want allowed %v and patch %s (%+v)", r.Allowed, r.Patch, tt.allowed, tt.patch, r.Result)
			}
			if !tt.allowed && (r.Result == nil || !strings.Contains(r.Result.Message, tt.message)) {
				t.Errorf("result %+v does not contain %q", r.Result, tt.message)
			}
		})
	}
}
