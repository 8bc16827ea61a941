package mutate

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestCachesChangeNothing runs every fixture through one shared Caches,
// twice over and with a cache too small to hold them all (so entries are
// evicted and reused across fixtures), and requires exactly the result of
// uncached Mutate: a patch served for the wrong pod, config or role would
// show up here as a different patch or outcome.
func TestCachesChangeNothing(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures in testdata: %v", err)
	}
	type input struct {
		name string
		pod  corev1.Pod
		ns   Namespace
		cfg  Config
	}
	var inputs []input
	for _, file := range files {
		var fx fixture
		cfg := loadFixture(t, file, &fx, func() json.RawMessage { return fx.Config })
		var pod corev1.Pod
		if err := json.Unmarshal(fx.Pod, &pod); err != nil {
			t.Fatalf("%s: pod: %v", file, err)
		}
		inputs = append(inputs, input{filepath.Base(file), pod, fx.Namespace, cfg})
	}
	caches := NewCaches(len(inputs)/3 + 1)
	for round := 0; round < 3; round++ {
		for _, in := range inputs {
			want := Mutate(&in.pod, in.ns, in.cfg)
			cfg := in.cfg
			cfg.Caches = caches
			got := Mutate(&in.pod, in.ns, cfg)
			if got.Outcome != want.Outcome || !bytes.Equal(got.Patch, want.Patch) || got.Message != want.Message ||
				got.RoleARN != want.RoleARN || !reflect.DeepEqual(got.Warnings, want.Warnings) {
				t.Errorf("round %d, %s: cached result differs\n got: %s %q %s\nwant: %s %q %s", round, in.name,
					got.Outcome, got.Message, got.Patch, want.Outcome, want.Message, want.Patch)
			}
		}
	}
	if n, m := len(caches.patches), len(caches.roles); n > caches.max || m > caches.max {
		t.Errorf("caches hold %d patches and %d roles, bound is %d", n, m, caches.max)
	}
}
