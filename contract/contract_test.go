package contract

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"testing"
)

// The webhook runs Entrypoint in every injected container: the image must
// put the binary there. Dockerfile.sidecar cannot import Go, so this reads it
// (the local image build, e2e/cluster/images.sh, takes its ENTRYPOINT too).
func TestEntrypointIsTheImages(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile.sidecar")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ENTRYPOINT (\[.*\])$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("Dockerfile.sidecar has no exec-form ENTRYPOINT")
	}
	var ep []string
	if err := json.Unmarshal(m[1], &ep); err != nil {
		t.Fatalf("ENTRYPOINT %s: %v", m[1], err)
	}
	if !slices.Equal(ep, []string{Entrypoint}) {
		t.Errorf("Dockerfile.sidecar: ENTRYPOINT %q, want [%q] (contract.Entrypoint, which the webhook runs)", ep, Entrypoint)
	}
}
