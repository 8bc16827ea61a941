package server

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/webhook/mutate"
	"github.com/prometheus/client_golang/prometheus"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
)

// TestEnvModeHTTP: what kubectl gets from /mutate and /validate for pods of
// a namespace that enforces the restricted Pod Security Standard: the
// env-mode patch and its warning (kubectl prints AdmissionResponse
// warnings), a warning and no patch for a pod without a role, and the
// validating webhook's verdicts on the patched and unpatched pod.
func TestEnvModeHTTP(t *testing.T) {
	cfg := mutate.DefaultConfig()
	cfg.SidecarImage = "registry.example/podrole-sidecar:test"
	cfg.BaseRoleARN = "arn:aws:iam::111122223333:role/"
	cfg.Source, cfg.Region = contract.SourceWebIdentity, "eu-west-1"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	nss := namespaces{"team-r": {Name: "team-r", Labels: map[string]string{contract.LabelInject: contract.InjectEnabled, contract.LabelPodSecurityEnforce: "restricted"}}}
	s, err := New(Options{Config: cfg, Namespaces: nss, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	call := func(path string, body []byte) *admissionv1.AdmissionResponse {
		t.Helper()
		return answer(t, s, path, body)
	}

	pod := podJSON("team-r", map[string]string{contract.AnnotationRole: "app"})
	r := call("/mutate", reviewJSON("e1", "team-r", admissionv1.Create, "Pod", pod))
	if !r.Allowed || len(r.Patch) == 0 {
		t.Fatalf("env-mode pod: allowed %v patch %s", r.Allowed, r.Patch)
	}
	if w := strings.Join(r.Warnings, "\n"); !strings.Contains(w, "runs in env mode") || !strings.Contains(w, "HttpTokens=required") {
		t.Errorf("warnings %q lack the env-mode warning", r.Warnings)
	}
	p, err := jsonpatch.DecodePatch(r.Patch)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := p.Apply(pod)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"podrole.io/mode":"env"`, `"AWS_EC2_METADATA_SERVICE_ENDPOINT","value":"http://127.0.0.1:9181/"`, `"name":"podrole-agent"`} {
		if !strings.Contains(string(patched), want) {
			t.Errorf("patched pod lacks %s: %s", want, patched)
		}
	}
	if strings.Contains(string(patched), `"podrole-init"`) {
		t.Errorf("env-mode pod got podrole-init: %s", patched)
	}
	if v := call("/validate", reviewJSON("e2", "team-r", admissionv1.Create, "Pod", patched)); !v.Allowed || len(v.Warnings) > 0 {
		t.Errorf("/validate on the patched pod: allowed %v %+v warnings %q", v.Allowed, v.Result, v.Warnings)
	}
	if v := call("/validate", reviewJSON("e3", "team-r", admissionv1.Create, "Pod", pod)); v.Allowed || !strings.Contains(v.Result.Message, "has no podrole-agent container") {
		t.Errorf("/validate on the unpatched pod: allowed %v %+v", v.Allowed, v.Result)
	}

	r = call("/mutate", reviewJSON("e4", "team-r", admissionv1.Create, "Pod", podJSON("team-r", nil)))
	if !r.Allowed || len(r.Patch) > 0 || !strings.Contains(strings.Join(r.Warnings, "\n"), "asks for no role and runs in env mode") {
		t.Errorf("no-role pod in env mode: allowed %v patch %s warnings %q", r.Allowed, r.Patch, r.Warnings)
	}
}
