// Package readme checks that the README's flag reference matches the flags
// the binaries define, so that neither can change without the other.
package readme

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// flagLine matches a flag in the usage the flag package prints: "  -name type".
var flagLine = regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)

// documented matches a flag as the README writes it: `--name`.
var documented = regexp.MustCompile("`--([a-z0-9-]+)")

// defined builds the package's binary and returns the flags of `bin args... -h`.
func defined(t *testing.T, pkg string, args ...string) []string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	build := exec.Command("go", "build", "-o", bin, "github.com/podrole/podrole/"+pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	// -h exits 0 or 2 depending on the binary; only its output matters.
	out, _ := exec.Command(bin, append(args, "-h")...).CombinedOutput()
	var flags []string
	for _, m := range flagLine.FindAllStringSubmatch(string(out), -1) {
		flags = append(flags, m[1])
	}
	if len(flags) == 0 {
		t.Fatalf("%s %v -h printed no flags:\n%s", pkg, args, out)
	}
	return flags
}

// section returns the README text from the heading line to the next heading
// of the same or a higher level.
func section(t *testing.T, readme, heading string) string {
	t.Helper()
	i := strings.Index(readme, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no heading %q", heading)
	}
	level := strings.Count(strings.Fields(heading)[0], "#")
	rest := readme[i+len(heading)+2:]
	for _, l := range regexp.MustCompile(`(?m)^#{1,6} `).FindAllStringIndex(rest, -1) {
		if strings.Count(strings.Fields(rest[l[0]:])[0], "#") <= level {
			return rest[:l[0]]
		}
	}
	return rest
}

func TestFlagsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, tt := range []struct {
		heading string
		pkg     string
		args    []string
	}{
		{heading: "### `podrole-webhook`", pkg: "webhook"},
		{heading: "### `podrole-sidecar serve` (the agent)", pkg: "sidecar", args: []string{"serve"}},
		{heading: "### `podrole-sidecar init`", pkg: "sidecar", args: []string{"init"}},
		{heading: "### `podrole-sidecar wait`", pkg: "sidecar", args: []string{"wait"}},
	} {
		t.Run(tt.pkg+strings.Join(tt.args, "-"), func(t *testing.T) {
			text := section(t, readme, tt.heading)
			var doc []string
			for _, m := range documented.FindAllStringSubmatch(text, -1) {
				doc = append(doc, m[1])
			}
			have := defined(t, tt.pkg, tt.args...)
			for _, f := range have {
				if !slices.Contains(doc, f) {
					t.Errorf("--%s is a flag of %s %v but README section %q does not document it", f, tt.pkg, tt.args, tt.heading)
				}
			}
			for _, f := range doc {
				if !slices.Contains(have, f) {
					t.Errorf("README section %q documents --%s, which %s %v does not define", tt.heading, f, tt.pkg, tt.args)
				}
			}
		})
	}
}
