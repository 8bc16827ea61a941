package mutate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
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
	files, fixtures := readFixtures[fixture](f, "testdata/*.yaml")
	for i, fx := range fixtures {
		f.Add([]byte(fx.Pod), fx.Namespace.Annotations[contract.AnnotationAllowedRoles], fx.Namespace.Annotations[contract.AnnotationPermitted], uint8(len(files[i])))
	}
	f.Fuzz(func(t *testing.T, podJSON []byte, allowed, permitted string, knobs uint8) {
		var pod corev1.Pod
		if err := json.Unmarshal(podJSON, &pod); err != nil {
			return
		}
		cfg := fuzzConfig(t, knobs)
		for _, psa := range []bool{false, true} {
			fuzzMutateOnce(t, &pod, fuzzNamespace(knobs, psa, allowed, permitted), cfg, psa)
		}
	})
}

// fuzzConfig is the test configuration with knobs' bits 1, 2, 4, 8, 16 and
// 128 switching the source, the sidecar mode, a default role, required
// allow-lists, no base ARN, and NET_RAW and host access allowed.
func fuzzConfig(t *testing.T, knobs uint8) Config {
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
	if knobs&128 != 0 {
		cfg.AllowNetRaw, cfg.AllowHostAccess = true, true
	}
	// Env mode with either source (node needs the flag that admits it).
	cfg.AllowEnvModeNodeSource = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// fuzzNamespace is a labelled namespace, enforcing Pod Security restricted
// (env mode) when psa, with knobs' bits 32 and 64 setting its allowed-roles
// and permitted annotations.
func fuzzNamespace(knobs uint8, psa bool, allowed, permitted string) Namespace {
	ns := Namespace{Name: "fuzz", Labels: map[string]string{contract.LabelInject: contract.InjectEnabled}, Annotations: map[string]string{}}
	if psa {
		ns.Labels[contract.LabelPodSecurityEnforce] = "restricted"
	}
	if knobs&32 != 0 {
		ns.Annotations[contract.AnnotationAllowedRoles] = allowed
	}
	if knobs&64 != 0 {
		ns.Annotations[contract.AnnotationPermitted] = permitted
	}
	return ns
}

// FuzzCaches: the caches change no decision. Three pods, under
// configurations and namespaces the knobs pick per step, go through Mutate
// with caches (one Caches for the whole sequence, small enough to evict)
// and without, twice over, each followed by the pod its patch makes (as
// the API server re-invokes the webhook); so a patch cached for one pod is
// offered to the next one and to the re-invocation. Results must be
// byte-identical: outcome, patch, message, warnings and role. So must
// ValidateCreate's, which re-verifies through the same caches.
func FuzzCaches(f *testing.F) {
	_, fixtures := readFixtures[fixture](f, "testdata/*.yaml")
	for i, fx := range fixtures {
		// Neighbours and a distant fixture: similar pods that should
		// share cache entries and ones that must not.
		n := len(fixtures)
		next, far := fixtures[(i+1)%n], fixtures[(i+n/3)%n]
		f.Add([]byte(fx.Pod), []byte(next.Pod), []byte(far.Pod), fx.Namespace.Annotations[contract.AnnotationAllowedRoles],
			fx.Namespace.Annotations[contract.AnnotationPermitted], uint64(i)*0x9e3779b97f4a7c15)
	}
	f.Fuzz(func(t *testing.T, a, b, c []byte, allowed, permitted string, knobs uint64) {
		var pods []*corev1.Pod
		for _, raw := range [][]byte{a, b, c} {
			var pod corev1.Pod
			if json.Unmarshal(raw, &pod) == nil {
				pods = append(pods, &pod)
			}
		}
		if len(pods) == 0 {
			return
		}
		caches := NewCaches(4)
		for i := range 2 * len(pods) {
			pod := pods[i%len(pods)]
			k := uint8(knobs >> (8 * (i % 6)))
			cfg := fuzzConfig(t, k)
			ns := fuzzNamespace(k, knobs>>(48+i)&1 != 0, allowed, permitted)
			cached := cfg
			cached.Caches = caches
			res := sameResult(t, fmt.Sprintf("step %d", i), func(cfg Config) Result { return Mutate(pod, ns, cfg) }, cfg, cached)
			sameResult(t, fmt.Sprintf("step %d ValidateCreate", i), func(cfg Config) Result { return ValidateCreate(pod, ns, cfg) }, cfg, cached)
			if res.Patch == nil {
				continue
			}
			doc, err := json.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			p, err := jsonpatch.DecodePatch(res.Patch)
			if err != nil {
				t.Fatalf("step %d: decode patch: %v", i, err)
			}
			if doc, err = p.Apply(doc); err != nil {
				t.Fatalf("step %d: apply patch %s: %v", i, res.Patch, err)
			}
			var patched corev1.Pod
			if err := json.Unmarshal(doc, &patched); err != nil {
				t.Fatal(err)
			}
			sameResult(t, fmt.Sprintf("step %d re-invoked", i), func(cfg Config) Result { return Mutate(&patched, ns, cfg) }, cfg, cached)
			sameResult(t, fmt.Sprintf("step %d re-invoked ValidateCreate", i), func(cfg Config) Result { return ValidateCreate(&patched, ns, cfg) }, cfg, cached)
		}
	})
}

// sameResult runs decide without caches and with them (cached), and fails
// unless both results are identical; it returns the uncached one.
func sameResult(t *testing.T, what string, decide func(Config) Result, plain, cached Config) Result {
	t.Helper()
	plain.Caches = nil
	want, got := decide(plain), decide(cached)
	if got.Outcome != want.Outcome || !bytes.Equal(got.Patch, want.Patch) || got.Message != want.Message ||
		!slices.Equal(got.Warnings, want.Warnings) || got.RoleARN != want.RoleARN || got.env != want.env {
		t.Fatalf("%s: with caches %s %q\npatch %s\nwarnings %q role %q\nwithout %s %q\npatch %s\nwarnings %q role %q",
			what, got.Outcome, got.Message, got.Patch, got.Warnings, got.RoleARN, want.Outcome, want.Message, want.Patch, want.Warnings, want.RoleARN)
	}
	return want
}

// fuzzMutateOnce is FuzzMutate's check of one pod in one namespace; env
// says the namespace gets env mode.
func fuzzMutateOnce(t *testing.T, pod *corev1.Pod, ns Namespace, cfg Config, env bool) {
	t.Helper()
	res := Mutate(pod, ns, cfg)
	// The validating webhook must agree: it refuses what Mutate refuses
	// and a pod Mutate would patch, unpatched.
	v := ValidateCreate(pod, ns, cfg)
	switch res.Outcome {
	case Denied:
		if !strings.HasPrefix(res.Message, "podrole: ") || res.Patch != nil {
			t.Fatalf("denial %q patch %s", res.Message, res.Patch)
		}
		if v.Outcome != Denied {
			t.Fatalf("Mutate refuses (%s) but ValidateCreate says %s %q", res.Message, v.Outcome, v.Message)
		}
		return
	case Skipped:
		if res.Patch != nil {
			t.Fatalf("skipped with a patch")
		}
		if v.Outcome != Skipped {
			t.Fatalf("Mutate admits unchanged but ValidateCreate says %s %q", v.Outcome, v.Message)
		}
		return
	case Injected, Blocked, Patched:
		if v.Outcome != Denied {
			t.Fatalf("ValidateCreate admits the pod Mutate would patch: %s %q", v.Outcome, v.Message)
		}
	default:
		t.Fatalf("outcome %q", res.Outcome)
	}
	doc, err := json.Marshal(pod)
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
	if v := ValidateCreate(&got, ns, cfg); v.Outcome != Skipped {
		t.Fatalf("ValidateCreate refuses the patched pod: %s %q\npatch %s", v.Outcome, v.Message, res.Patch)
	}
	if podEnvMode(&got) != (env && got.Annotations[contract.AnnotationStatus] == contract.StatusInjected) {
		t.Fatalf("env mode %v, pod records %q", env, got.Annotations[contract.AnnotationMode])
	}
	if env {
		if _, name, v := missingEnv(&got); name != "" {
			t.Fatalf("container %q lacks %s after the patch", name, v)
		}
		if res.Outcome == Patched {
			return
		}
		if res.Outcome != Injected || len(res.Warnings) == 0 {
			t.Fatalf("env mode: %s with warnings %q", res.Outcome, res.Warnings)
		}
		for _, c := range append(got.Spec.InitContainers, got.Spec.Containers...) {
			if c.Name == contract.InitContainerName && got.Annotations[contract.AnnotationStatus] != "" {
				t.Fatal("podrole-init in env mode")
			}
			if c.Name == contract.AgentContainerName {
				sc := c.SecurityContext
				if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 || strings.Contains(strings.Join(c.Args, " "), "--agent-mark") {
					t.Fatalf("env-mode agent is not restricted-compliant: %+v %v", sc, c.Args)
				}
			}
		}
		if n := len(got.Spec.InitContainers) + len(got.Spec.Containers) - len(pod.Spec.InitContainers) - len(pod.Spec.Containers); n != 1 {
			t.Fatalf("%d containers added in env mode, want 1", n)
		}
		return
	}
	if kind, name := missingNetRawDrop(&got, cfg); name != "" {
		t.Fatalf("%s %q keeps NET_RAW after the patch", kind, name)
	}
	if res.Outcome == Patched {
		return
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
}

// FuzzCheckEphemeral feeds arbitrary stored pods and ephemeral containers to
// CheckEphemeral and ValidateEphemeral. Neither may panic; a denial must say
// it comes from podrole; only the mutating one patches, only to drop NET_RAW,
// and its patch must apply and satisfy the validating one; and a new
// privileged ephemeral container, or one targeting podrole-agent, in a pod
// carrying podrole.io/status must never be allowed.
func FuzzCheckEphemeral(f *testing.F) {
	_, fixtures := readFixtures[ephemeralFixture](f, "testdata/ephemeral/*.yaml")
	for _, fx := range fixtures {
		add, _ := json.Marshal(fx.Add)
		f.Add([]byte(fx.Pod), add, len(fx.Config) > 0)
	}
	f.Fuzz(func(t *testing.T, podJSON, addJSON []byte, allow bool) {
		var old corev1.Pod
		var add []corev1.EphemeralContainer
		if json.Unmarshal(podJSON, &old) != nil || json.Unmarshal(addJSON, &add) != nil {
			return
		}
		cfg := testConfig()
		cfg.AllowNetAdmin, cfg.AllowNetRaw = allow, allow
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		pod := old.DeepCopy()
		pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, add...)
		res := CheckEphemeral(&old, pod, cfg)
		v := ValidateEphemeral(&old, pod, cfg)
		for _, r := range []Result{res, v} {
			if r.Outcome == Denied && !strings.HasPrefix(r.Message, "podrole: ") {
				t.Fatalf("denial %q", r.Message)
			}
		}
		if v.Patch != nil || (v.Outcome != Denied && v.Outcome != Skipped) {
			t.Fatalf("validating outcome %q patch %s", v.Outcome, v.Patch)
		}
		switch res.Outcome {
		case Denied, Skipped:
			if res.Patch != nil || v.Outcome != res.Outcome {
				t.Fatalf("mutating %s (patch %s), validating %s %q", res.Outcome, res.Patch, v.Outcome, v.Message)
			}
		case Patched:
			if v.Outcome != Denied {
				t.Fatalf("validating admits what the mutating webhook patches: %q", v.Message)
			}
			doc, _ := json.Marshal(pod)
			p, err := jsonpatch.DecodePatch(res.Patch)
			if err != nil {
				t.Fatal(err)
			}
			out, err := p.Apply(doc)
			if err != nil {
				t.Fatalf("apply %s: %v", res.Patch, err)
			}
			var patched corev1.Pod
			if err := json.Unmarshal(out, &patched); err != nil {
				t.Fatal(err)
			}
			if v := ValidateEphemeral(&old, &patched, cfg); v.Outcome != Skipped {
				t.Fatalf("validating refuses the patched pod: %s %q", v.Outcome, v.Message)
			}
		default:
			t.Fatalf("outcome %q", res.Outcome)
		}
		if _, ours := old.Annotations[contract.AnnotationStatus]; ours && res.Outcome != Denied {
			stored := map[string]bool{}
			for _, c := range old.Spec.EphemeralContainers {
				stored[c.Name] = true
			}
			for _, c := range add {
				// A repeat of a stored container is not new (the API server
				// refuses duplicate names anyway).
				if stored[c.Name] {
					continue
				}
				if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
					t.Fatalf("privileged ephemeral container %q allowed: %s", c.Name, res.Message)
				}
				if c.TargetContainerName == contract.AgentContainerName {
					t.Fatalf("ephemeral container %q targeting the agent allowed", c.Name)
				}
			}
		}
	})
}

// FuzzValidateUpdate feeds arbitrary pairs of pods to ValidateUpdate: never
// a panic or a patch; a denial says it comes from podrole; and a change of
// podrole-agent's image, or of the status annotation, of a pod carrying
// podrole.io/status is never allowed.
func FuzzValidateUpdate(f *testing.F) {
	_, fixtures := readFixtures[updateFixture](f, "testdata/update/*.yaml")
	for _, fx := range fixtures {
		p, err := jsonpatch.DecodePatch(fx.Patch)
		if err != nil {
			f.Fatal(err)
		}
		pod, err := p.Apply(fx.Pod)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(fx.Pod), pod)
	}
	f.Fuzz(func(t *testing.T, oldJSON, podJSON []byte) {
		var old, pod corev1.Pod
		if json.Unmarshal(oldJSON, &old) != nil || json.Unmarshal(podJSON, &pod) != nil {
			return
		}
		cfg := testConfig()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		res := ValidateUpdate(&old, &pod, cfg)
		if res.Patch != nil || (res.Outcome != Denied && res.Outcome != Skipped) {
			t.Fatalf("outcome %q patch %s", res.Outcome, res.Patch)
		}
		if res.Outcome == Denied {
			if !strings.HasPrefix(res.Message, "podrole: ") {
				t.Fatalf("denial %q", res.Message)
			}
			return
		}
		if old.Annotations[contract.AnnotationStatus] != pod.Annotations[contract.AnnotationStatus] {
			t.Fatal("status annotation change allowed")
		}
		if _, ours := old.Annotations[contract.AnnotationStatus]; !ours {
			return
		}
		image := func(p *corev1.Pod) map[string]string {
			m := map[string]string{}
			for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
				if isPodroleContainer(c.Name) {
					m[c.Name] = c.Image
				}
			}
			return m
		}
		if o, n := image(&old), image(&pod); !maps.Equal(o, n) {
			t.Fatalf("podrole container images changed from %v to %v and allowed", o, n)
		}
	})
}

// FuzzCheckConnect: exec and attach into podrole's containers are always
// refused, into any other container never.
func FuzzCheckConnect(f *testing.F) {
	for _, c := range []string{"", "app", contract.AgentContainerName, contract.InitContainerName} {
		f.Add("exec", "app", c)
		f.Add("attach", "app", c)
	}
	f.Fuzz(func(t *testing.T, sub, pod, container string) {
		res := CheckConnect(sub, pod, container)
		if (res.Outcome == Denied) != isPodroleContainer(container) || res.Patch != nil {
			t.Fatalf("container %q: %s %q", container, res.Outcome, res.Message)
		}
		if res.Outcome == Denied && !strings.HasPrefix(res.Message, "podrole: ") {
			t.Fatalf("denial %q", res.Message)
		}
	})
}

// readFixtures reads every fixture file matching glob into a T, for the
// fuzz targets' seeds; files[i] is the file of fixtures[i].
func readFixtures[T any](tb testing.TB, glob string) (files []string, fixtures []T) {
	tb.Helper()
	files, _ = filepath.Glob(glob)
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			tb.Fatal(err)
		}
		var fx T
		if err := yaml.Unmarshal(raw, &fx); err != nil {
			tb.Fatalf("%s: %v", file, err)
		}
		fixtures = append(fixtures, fx)
	}
	return files, fixtures
}
