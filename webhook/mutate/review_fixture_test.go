package mutate

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// runFixtures runs decide on every file of testdata/<dir>/*.yaml, decoded by
// load into a value whose want decide's result must match: the outcome, a
// message substring, and never a patch (the validating webhook patches
// nothing). With -update the outcome (and an empty message of a denial) is
// rewritten from the result.
func runFixtures(t *testing.T, dir string, load func(t *testing.T, file string) (fx any, w *want, decide func() Result)) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures in testdata/%s: %v", dir, err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			fx, w, decide := load(t, file)
			res := decide()
			if *update {
				w.Outcome = res.Outcome
				if w.Message == "" && res.Outcome == Denied {
					w.Message = res.Message
				}
				writeFixture(t, file, fx)
				return
			}
			if res.Outcome != w.Outcome {
				t.Fatalf("outcome %q (message %q), want %q", res.Outcome, res.Message, w.Outcome)
			}
			if !strings.Contains(res.Message, w.Message) {
				t.Errorf("message %q\ndoes not contain %q", res.Message, w.Message)
			}
			if res.Outcome == Denied && !strings.HasPrefix(res.Message, "podrole: ") {
				t.Errorf("denial %q does not say it comes from podrole", res.Message)
			}
			if res.Patch != nil || len(res.Warnings) > 0 {
				t.Errorf("validating decision with a patch %s or warnings %q", res.Patch, res.Warnings)
			}
		})
	}
}

// TestValidateCreateFixtures runs testdata/validate/*.yaml: a pod CREATE
// as the validating webhook sees it (after every mutating webhook), in a
// namespace, under a configuration.
func TestValidateCreateFixtures(t *testing.T) {
	runFixtures(t, "validate", func(t *testing.T, file string) (any, *want, func() Result) {
		var fx fixture
		cfg := loadFixture(t, file, &fx, func() json.RawMessage { return fx.Config })
		var pod corev1.Pod
		if err := json.Unmarshal(fx.Pod, &pod); err != nil {
			t.Fatalf("pod: %v", err)
		}
		return &fx, &fx.Want, func() Result { return ValidateCreate(&pod, fx.Namespace, cfg) }
	})
}

// updateFixture is one testdata/update/*.yaml case: a stored pod, the
// JSONPatch a user's update applies to it, and the answer.
type updateFixture struct {
	Description string          `json:"description"`
	Config      json.RawMessage `json:"config,omitempty"`
	// Pod is the stored pod (oldObject).
	Pod json.RawMessage `json:"pod"`
	// Patch (RFC 6902) turns Pod into the update's object.
	Patch json.RawMessage `json:"patch"`
	Want  want            `json:"want"`
}

// TestValidateUpdateFixtures runs testdata/update/*.yaml through ValidateUpdate.
func TestValidateUpdateFixtures(t *testing.T) {
	runFixtures(t, "update", func(t *testing.T, file string) (any, *want, func() Result) {
		var fx updateFixture
		cfg := loadFixture(t, file, &fx, func() json.RawMessage { return fx.Config })
		var old, pod corev1.Pod
		if err := json.Unmarshal(fx.Pod, &old); err != nil {
			t.Fatalf("pod: %v", err)
		}
		if err := json.Unmarshal(applyPatch(t, fx.Pod, fx.Patch), &pod); err != nil {
			t.Fatalf("patched pod: %v", err)
		}
		return &fx, &fx.Want, func() Result { return ValidateUpdate(&old, &pod, cfg) }
	})
}

// connectFixture is one testdata/connect/*.yaml case: a CONNECT of
// pods/exec or pods/attach, as its options name the container.
type connectFixture struct {
	Description string `json:"description"`
	Subresource string `json:"subresource"`
	Pod         string `json:"pod"`
	Container   string `json:"container"`
	Want        want   `json:"want"`
}

// TestCheckConnectFixtures runs testdata/connect/*.yaml through CheckConnect.
func TestCheckConnectFixtures(t *testing.T) {
	runFixtures(t, "connect", func(t *testing.T, file string) (any, *want, func() Result) {
		var fx connectFixture
		loadFixture(t, file, &fx, func() json.RawMessage { return nil })
		return &fx, &fx.Want, func() Result { return CheckConnect(fx.Subresource, fx.Pod, fx.Container) }
	})
}
