package kubetest

import (
	"strings"
	"testing"
)

// TestSplitYAML: documents come back in order, and the empty ones a template
// that renders nothing (or only comments) leaves in a stream are dropped.
func TestSplitYAML(t *testing.T) {
	tests := []struct {
		name, stream string
		want         []string // first line of each document, after a leading "---"
	}{
		{"one", "kind: A\n", []string{"kind: A"}},
		{"separators", "---\nkind: A\n---\nkind: B\n", []string{"kind: A", "kind: B"}},
		{"empty and comment-only documents", "---\n# Source: x.yaml\n---\n\n---\nkind: A\n---\n# c\n# d\n", []string{"kind: A"}},
		{"comments kept in a document", "# why\nkind: A\n", []string{"# why"}},
		{"nothing", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := SplitYAML([]byte(tt.stream))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range docs {
				doc := strings.TrimPrefix(strings.TrimSpace(string(d)), "---\n")
				got = append(got, strings.SplitN(doc, "\n", 2)[0])
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("SplitYAML(%q) = %q, want %q", tt.stream, got, tt.want)
			}
		})
	}
}
