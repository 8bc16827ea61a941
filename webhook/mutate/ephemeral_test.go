package mutate

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// ephemeralFixture is one testdata/ephemeral/*.yaml case: ephemeral
// containers added (kubectl debug) to a stored pod, and the answer.
type ephemeralFixture struct {
	Description string          `json:"description"`
	Config      json.RawMessage `json:"config,omitempty"`
	// Pod is the stored pod, the request's oldObject.
	Pod json.RawMessage `json:"pod"`
	// Add are the ephemeral containers of the request's object: each
	// replaces the stored one of the same name, or is appended.
	Add  []corev1.EphemeralContainer `json:"add"`
	Want want                        `json:"want"`
}

// TestEphemeralFixtures runs every testdata/ephemeral/*.yaml case through
// CheckEphemeral: the outcome, the denial message, a patch only to drop
// NET_RAW (outcome patched), and ValidateEphemeral's matching verdict.
func TestEphemeralFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/ephemeral/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures in testdata/ephemeral: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			var fx ephemeralFixture
			cfg := loadFixture(t, file, &fx, func() json.RawMessage { return fx.Config })
			var old corev1.Pod
			if err := json.Unmarshal(fx.Pod, &old); err != nil {
				t.Fatalf("pod: %v", err)
			}
			if len(fx.Add) == 0 {
				t.Fatal("fixture adds no ephemeral container")
			}
			pod := old.DeepCopy()
		add:
			for _, c := range fx.Add {
				for i := range pod.Spec.EphemeralContainers {
					if pod.Spec.EphemeralContainers[i].Name == c.Name {
						pod.Spec.EphemeralContainers[i] = c
						continue add
					}
				}
				pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, c)
			}

			res := CheckEphemeral(&old, pod, cfg)

			if *update {
				fx.Want = want{Outcome: res.Outcome, Message: fx.Want.Message}
				if fx.Want.Message == "" && res.Outcome == Denied {
					fx.Want.Message = res.Message
				}
				writeFixture(t, file, fx)
				return
			}
			if res.Outcome != fx.Want.Outcome {
				t.Fatalf("outcome %q (message %q), want %q", res.Outcome, res.Message, fx.Want.Outcome)
			}
			if !strings.Contains(res.Message, fx.Want.Message) {
				t.Errorf("message %q\ndoesn't contain %q", res.Message, fx.Want.Message)
			}
			if len(res.Warnings) > 0 || (res.Patch != nil) != (res.Outcome == Patched) {
				t.Errorf("outcome %s with patch %s, warnings %q", res.Outcome, res.Patch, res.Warnings)
			}
			checkValidateEphemeral(t, &old, pod, cfg, res)
		})
	}
}

// checkValidateEphemeral holds the validating webhook to the mutating one
// on every fixture: the same verdict, except that a new container the
// mutating webhook takes NET_RAW from is refused unpatched and admitted
// patched (and the patch drops NET_RAW from every new container).
func checkValidateEphemeral(t *testing.T, old, pod *corev1.Pod, cfg Config, res Result) {
	t.Helper()
	v := ValidateEphemeral(old, pod, cfg)
	if res.Outcome != Patched {
		if v.Outcome != res.Outcome || v.Message != res.Message || v.Patch != nil {
			t.Errorf("ValidateEphemeral: %s %q, want CheckEphemeral's %s %q", v.Outcome, v.Message, res.Outcome, res.Message)
		}
		return
	}
	if v.Outcome != Denied || !strings.Contains(v.Message, "does not drop NET_RAW") {
		t.Errorf("ValidateEphemeral on the unpatched pod: %s %q, want a NET_RAW denial", v.Outcome, v.Message)
	}
	doc, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	var patched corev1.Pod
	if err := json.Unmarshal(applyPatch(t, doc, res.Patch), &patched); err != nil {
		t.Fatal(err)
	}
	checkAddsOnly(t, pod, res.Patch)
	stored := map[string]bool{}
	for _, c := range old.Spec.EphemeralContainers {
		stored[c.Name] = true
	}
	for _, c := range patched.Spec.EphemeralContainers {
		if !stored[c.Name] && !dropsNetRaw(c.SecurityContext) && (!cfg.AllowNetRaw || !addsNetRaw(c.SecurityContext)) {
			t.Errorf("patched ephemeral container %q keeps NET_RAW: %+v", c.Name, c.SecurityContext)
		}
	}
	if v := ValidateEphemeral(old, &patched, cfg); v.Outcome != Skipped {
		t.Errorf("ValidateEphemeral on the patched pod: %s %q", v.Outcome, v.Message)
	}
}

func addsNetRaw(sc *corev1.SecurityContext) bool {
	_, ok := addedCapability(sc, "NET_RAW")
	return ok
}

// TestCheckEphemeralOddInput: requests the API server should not send still
// get an answer, and one that cannot be judged is refused, not allowed.
func TestCheckEphemeralOddInput(t *testing.T) {
	cfg := testConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	netAdmin := corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug",
		SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}}}}}
	injected := func() *corev1.Pod {
		p := &corev1.Pod{}
		p.Name = "app"
		p.Annotations = map[string]string{"podrole.io/status": "injected"}
		return p
	}
	withDebug := injected()
	withDebug.Spec.EphemeralContainers = []corev1.EphemeralContainer{netAdmin}

	tests := []struct {
		name     string
		old, pod *corev1.Pod
		want     Outcome
	}{
		{"no pod at all", nil, nil, Denied},
		{"no old pod: every ephemeral container is new", nil, withDebug, Denied},
		{"status only on the new pod still counts", &corev1.Pod{}, withDebug, Denied},
		{"status only on the old pod still counts", injected(), func() *corev1.Pod { p := withDebug.DeepCopy(); p.Annotations = nil; return p }(), Denied},
		{"nothing new", withDebug, withDebug, Skipped},
		{"no ephemeral containers", injected(), injected(), Skipped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := CheckEphemeral(tt.old, tt.pod, cfg)
			if res.Outcome != tt.want || (res.Outcome == Denied) != strings.HasPrefix(res.Message, "podrole: ") {
				t.Fatalf("outcome %q message %q, want %q", res.Outcome, res.Message, tt.want)
			}
		})
	}
}
