package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"testing"
	"time"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Kustomize runs `kubectl kustomize dir` (kubectl from Kubectl) and returns
// its output, the stream `kubectl apply -k dir` would apply.
func Kustomize(t testing.TB, kubectl, dir string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, kubectl, "kustomize", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
	}
	return out
}

// SplitYAML splits a multi-document YAML stream (kubectl kustomize's, helm's)
// into its documents, leaving out the empty ones (a template that renders
// nothing, comments only).
func SplitYAML(stream []byte) ([][]byte, error) {
	var docs [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("split YAML stream: %w", err)
		}
		if !onlyComments(doc) {
			docs = append(docs, doc)
		}
	}
}

// onlyComments reports whether a YAML document has nothing but blank lines,
// comments and document markers.
func onlyComments(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' && !bytes.Equal(line, []byte("---")) {
			return false
		}
	}
	return true
}
