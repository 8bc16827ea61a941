package mutate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
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
// CheckEphemeral: the outcome, the denial message, and never a patch.
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
				out, err := yaml.Marshal(fx)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if res.Outcome != fx.Want.Outcome {
				t.Fatalf("outcome %q (message %q), want %q", res.Outcome, res.Message, fx.Want.Outcome)
			}
			if !strings.Contains(res.Message, fx.Want.Message) {
				t.Errorf("message %q\ndoes not contain %q", res.Message, fx.Want.Message)
			}
			if res.Patch != nil || len(res.Warnings) > 0 {
				t.Errorf("ephemeral check returned a patch %s or warnings %q", res.Patch, res.Warnings)
			}
		})
	}
}

// TestCheckEphemeralOddInput: requests the API server should not send still
// get an answer, and one that cannot be judged is refused, not allowed.
func TestCheckEphemeralOddInput(t *testing.T) {
	cfg := testConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	netAdmin := corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug",
		SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}}}
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
