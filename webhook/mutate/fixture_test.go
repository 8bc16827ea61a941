package mutate

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the want section of testdata/*.yaml from the current output")

// fixture is one testdata/*.yaml case: a pod created in a namespace under a
// configuration, and what the webhook must answer.
type fixture struct {
	Description string `json:"description"`
	// Config overrides testConfig field by field.
	Config    json.RawMessage `json:"config,omitempty"`
	Namespace Namespace       `json:"namespace"`
	Pod       json.RawMessage `json:"pod"`
	Want      want            `json:"want"`
}

type want struct {
	Outcome Outcome `json:"outcome"`
	// Message must be a substring of the denial (or skip reason).
	Message string `json:"message,omitempty"`
	Warning string `json:"warning,omitempty"`
	// Pod is the pod after applying the patch (injected, blocked and patched only).
	Pod json.RawMessage `json:"pod,omitempty"`
}

func testConfig() Config {
	c := DefaultConfig()
	c.SidecarImage = "registry.example/podrole-sidecar:test"
	c.BaseRoleARN = "arn:aws:iam::111122223333:role/"
	return c
}

// TestFixtures runs every testdata/*.yaml case: the outcome, the denial
// message, and the pod exactly as the API server would store it after the
// patch. `go test ./webhook/mutate -run TestFixtures -update` regenerates want.
func TestFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures in testdata: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			var fx fixture
			cfg := loadFixture(t, file, &fx, func() json.RawMessage { return fx.Config })
			var pod corev1.Pod
			if err := json.Unmarshal(fx.Pod, &pod); err != nil {
				t.Fatalf("pod: %v", err)
			}
			before, _ := json.Marshal(&pod)

			res := Mutate(&pod, fx.Namespace, cfg)

			if after, _ := json.Marshal(&pod); !bytes.Equal(before, after) {
				t.Fatal("Mutate modified its input pod")
			}
			var got json.RawMessage
			if res.Patch != nil {
				got = applyPatch(t, fx.Pod, res.Patch)
				checkAddsOnly(t, &pod, res.Patch)
				// The API server applies the patch to its own serialization
				// (no empty lists): it must apply there too.
				applyPatch(t, before, res.Patch)
			}
			if *update {
				fx.Want.Outcome = res.Outcome
				fx.Want.Pod = got
				if fx.Want.Message == "" && res.Outcome == Denied {
					fx.Want.Message = res.Message
				}
				if fx.Want.Warning == "" && len(res.Warnings) > 0 {
					fx.Want.Warning = res.Warnings[0]
				}
				writeFixture(t, file, fx)
				return
			}
			if res.Outcome != fx.Want.Outcome {
				t.Fatalf("outcome %q (message %q), want %q", res.Outcome, res.Message, fx.Want.Outcome)
			}
			if !strings.Contains(res.Message, fx.Want.Message) {
				t.Errorf("message %q\ndoes not contain %q", res.Message, fx.Want.Message)
			}
			if fx.Want.Warning != "" && !strings.Contains(strings.Join(res.Warnings, "\n"), fx.Want.Warning) {
				t.Errorf("warnings %q do not contain %q", res.Warnings, fx.Want.Warning)
			}
			if fx.Want.Warning == "" && len(res.Warnings) > 0 {
				t.Errorf("unexpected warnings %q", res.Warnings)
			}
			switch res.Outcome {
			case Injected, Blocked, Patched:
				if len(fx.Want.Pod) == 0 {
					t.Fatal("fixture has no want.pod")
				}
				if !jsonEqual(t, got, fx.Want.Pod) {
					g, _ := yaml.JSONToYAML(got)
					w, _ := yaml.JSONToYAML(fx.Want.Pod)
					t.Fatalf("patched pod differs\n--- got\n%s\n--- want\n%s", g, w)
				}
			default:
				if res.Patch != nil {
					t.Fatalf("%s pod has a patch: %s", res.Outcome, res.Patch)
				}
			}
			checkValidateCreate(t, &pod, got, fx.Namespace, cfg, res)
		})
	}
}

// checkValidateCreate holds the validating webhook to the mutating one on
// every fixture: what Mutate refuses, ValidateCreate refuses too (with the
// same message); what Mutate patches, ValidateCreate refuses unpatched
// ("podrole did not inject this pod", or a missing NET_RAW drop) and admits
// patched; what Mutate admits unchanged, ValidateCreate admits.
func checkValidateCreate(t *testing.T, pod *corev1.Pod, patched json.RawMessage, ns Namespace, cfg Config, res Result) {
	t.Helper()
	v := ValidateCreate(pod, ns, cfg)
	switch res.Outcome {
	case Denied:
		if v.Outcome != Denied || v.Message != res.Message {
			t.Errorf("ValidateCreate on a pod Mutate refuses: %s %q, want the same denial %q", v.Outcome, v.Message, res.Message)
		}
	case Skipped:
		if v.Outcome != Skipped {
			t.Errorf("ValidateCreate on a pod Mutate admits unchanged: %s %q", v.Outcome, v.Message)
		}
	default:
		if v.Outcome != Denied {
			t.Errorf("ValidateCreate admitted the pod without Mutate's patch: %s %q", v.Outcome, v.Message)
		}
		var after corev1.Pod
		if err := json.Unmarshal(patched, &after); err != nil {
			t.Fatal(err)
		}
		if v := ValidateCreate(&after, ns, cfg); v.Outcome != Skipped {
			t.Errorf("ValidateCreate refuses the patched pod: %s %q", v.Outcome, v.Message)
		}
	}
}

func applyPatch(t *testing.T, doc, p []byte) json.RawMessage {
	t.Helper()
	decoded, err := jsonpatch.DecodePatch(p)
	if err != nil {
		t.Fatalf("decode patch %s: %v", p, err)
	}
	out, err := decoded.Apply(doc)
	if err != nil {
		t.Fatalf("apply patch %s: %v", p, err)
	}
	return out
}

// checkAddsOnly asserts the patch only adds, and replaces a whole list or map
// only where the pod had none: the pod's own containers, volumes and
// annotations must survive.
func checkAddsOnly(t *testing.T, pod *corev1.Pod, p []byte) {
	t.Helper()
	var ops []struct{ Op, Path string }
	if err := json.Unmarshal(p, &ops); err != nil {
		t.Fatal(err)
	}
	existing := map[string]bool{
		"/spec/initContainers":  len(pod.Spec.InitContainers) > 0,
		"/spec/containers":      len(pod.Spec.Containers) > 0,
		"/spec/volumes":         len(pod.Spec.Volumes) > 0,
		"/metadata/annotations": len(pod.Annotations) > 0,
	}
	for _, o := range ops {
		if o.Op != "add" {
			t.Errorf("patch op %q at %s: only add is allowed", o.Op, o.Path)
		}
		if existing[o.Path] {
			t.Errorf("patch adds %s, replacing the pod's existing list", o.Path)
		}
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// loadFixture reads a YAML fixture file into fx (unknown fields are errors)
// and returns the webhook config it describes: testConfig() with the
// fixture's config overrides, validated. The mutate, ephemeral and cache
// tests share it so that every fixture means the same thing everywhere.
func loadFixture(t *testing.T, file string, fx any, overrides func() json.RawMessage) Config {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, fx); err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	cfg := testConfig()
	if o := overrides(); len(o) > 0 {
		dec := json.NewDecoder(bytes.NewReader(o))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			t.Fatalf("%s: config: %v", file, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: config: %v", file, err)
	}
	return cfg
}

// writeFixture rewrites a fixture file with fx (go test -update).
func writeFixture(t *testing.T, file string, fx any) {
	t.Helper()
	out, err := yaml.Marshal(fx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
