package mutate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podrole/podrole/contract"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// FuzzMutate feeds arbitrary pods and namespace allow-lists to Mutate. It must
// never panic; a patch must apply to the pod; an injected pod must have the
// init step first, keep every container it had, and mount the token only in
// the agent; a denial must say it comes from podrole.
func FuzzMutate(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var fx fixture
		if err := yaml.Unmarshal(raw, &fx); err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(fx.Pod), fx.Namespace.Annotations[contract.AnnotationAllowedRoles], fx.Namespace.Annotations[contract.AnnotationPermitted], uint8(len(file)))
	}
	f.Fuzz(func(t *testing.T, podJSON []byte, allowed, permitted string, knobs uint8) {
		var pod corev1.Pod
		if err := json.Unmarshal(podJSON, &pod); err != nil {
			return
		}
		cfg := testConfig()
		if knobs&1 != 0 {
			cfg.Source = contract.SourceWebIdentity
		}
		if knobs&2 != 0 {
			cfg.SidecarMode = contract.SidecarModeLegacy
		}
		if knobs&4 != 0 {
			cfg.DefaultRole = "arn:aws:iam::111122223333:role/default"
		}
		if knobs&8 != 0 {
			cfg.RequireAllowedRoles = true
		}
		if knobs&16 != 0 {
			cfg.BaseRoleARN = ""
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		ns := Namespace{Name: "fuzz", Labels: map[string]string{contract.LabelInject: contract.InjectEnabled}, Annotations: map[string]string{}}
		if knobs&32 != 0 {
			ns.Annotations[contract.AnnotationAllowedRoles] = allowed
		}
		if knobs&64 != 0 {
			ns.Annotations[contract.AnnotationPermitted] = permitted
		}
		res := Mutate(&pod, ns, cfg)
		switch res.Outcome {
		case Denied:
			if !strings.HasPrefix(res.Message, "podrole: ") || res.Patch != nil {
				t.Fatalf("denial %q patch %s", res.Message, res.Patch)
			}
			return
		case Skipped:
			if res.Patch != nil {
				t.Fatalf("skipped with a patch")
			}
			return
		case Injected, Blocked:
		default:
			t.Fatalf("outcome %q", res.Outcome)
		}
		doc, err := json.Marshal(&pod)
		if err != nil {
			t.Fatal(err)
		}
		p, err := jsonpatch.DecodePatch(res.Patch)
		if err != nil {
			t.Fatalf("decode patch: %v", err)
		}
		out, err := p.Apply(doc)
		if err != nil {
			t.Fatalf("apply patch %s: %v", res.Patch, err)
		}
		var got corev1.Pod
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.InitContainers[0].Name != contract.InitContainerName {
			t.Fatalf("first init container %q", got.Spec.InitContainers[0].Name)
		}
		if got.Annotations[contract.AnnotationStatus] == "" {
			t.Fatal("no status annotation")
		}
		added := 1
		if res.Outcome == Injected {
			added = 2
		}
		if n := len(got.Spec.InitContainers) + len(got.Spec.Containers) - len(pod.Spec.InitContainers) - len(pod.Spec.Containers); n != added {
			t.Fatalf("%d containers added, want %d", n, added)
		}
		for _, c := range append(got.Spec.InitContainers, got.Spec.Containers...) {
			for _, m := range c.VolumeMounts {
				if m.MountPath == tokenDir() && c.Name != contract.AgentContainerName {
					t.Fatalf("container %q mounts the token", c.Name)
				}
			}
		}
	})
}

// FuzzCheckEphemeral feeds arbitrary stored pods and ephemeral containers to
// CheckEphemeral. It must never panic or patch; a denial must say it comes
// from podrole; and a new privileged ephemeral container in a pod carrying
// podrole.io/status must never be allowed.
func FuzzCheckEphemeral(f *testing.F) {
	files, _ := filepath.Glob("testdata/ephemeral/*.yaml")
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var fx ephemeralFixture
		if err := yaml.Unmarshal(raw, &fx); err != nil {
			f.Fatal(err)
		}
		add, _ := json.Marshal(fx.Add)
		f.Add([]byte(fx.Pod), add, len(fx.Config) > 0)
	}
	f.Fuzz(func(t *testing.T, podJSON, addJSON []byte, allowNetAdmin bool) {
		var old corev1.Pod
		var add []corev1.EphemeralContainer
		if json.Unmarshal(podJSON, &old) != nil || json.Unmarshal(addJSON, &add) != nil {
			return
		}
		cfg := testConfig()
		cfg.AllowNetAdmin = allowNetAdmin
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		pod := old.DeepCopy()
		pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, add...)
		res := CheckEphemeral(&old, pod, cfg)
		if res.Patch != nil || (res.Outcome != Denied && res.Outcome != Skipped) {
			t.Fatalf("outcome %q patch %s", res.Outcome, res.Patch)
		}
		if res.Outcome == Denied && !strings.HasPrefix(res.Message, "podrole: ") {
			t.Fatalf("denial %q", res.Message)
		}
		if _, ours := old.Annotations[contract.AnnotationStatus]; ours && res.Outcome != Denied {
			stored := map[string]bool{}
			for _, c := range old.Spec.EphemeralContainers {
				stored[c.Name] = true
			}
			for _, c := range add {
				// A repeat of a stored container is not new (the API server
				// refuses duplicate names anyway).
				if !stored[c.Name] && c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
					t.Fatalf("privileged ephemeral container %q allowed: %s", c.Name, res.Message)
				}
			}
		}
	})
}
