// Package testenv lets tests that need something from the machine (root, a
// real AWS client, a Kubernetes binary) say so in one line. Run by hand they
// skip with the reason; under `make test` (PODROLE_STRICT=1) a missing piece
// fails the test, so CI can never go green by skipping what it should prove.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Strict reports whether missing prerequisites fail tests instead of skipping them.
func Strict() bool { return os.Getenv("PODROLE_STRICT") == "1" }

// Need skips (or, in strict mode, fails) t when ok is false. what names the
// missing piece, how says how to get it.
func Need(t testing.TB, ok bool, what, how string) {
	t.Helper()
	if ok {
		return
	}
	if Strict() {
		t.Fatalf("%s is missing (PODROLE_STRICT=1): %s", what, how)
	}
	t.Skipf("%s is missing: %s", what, how)
}

// Root requires uid 0 (network namespaces, iptables).
func Root(t testing.TB) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "root", "run the test as root (make test does)")
}

// Command requires an executable on PATH (or an absolute path) and returns its path.
func Command(t testing.TB, name, how string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Need(t, err == nil, name, how)
	return p
}

// CacheDir is where scripts keep built tools and Kubernetes binaries between runs.
func CacheDir() string {
	if d := os.Getenv("PODROLE_CACHE"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "podrole")
}

// KubeBinary requires a Kubernetes (or etcd) binary built by scripts/build-k8s.sh
// and returns its path.
func KubeBinary(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("PODROLE_KUBE_BIN")
	if dir == "" {
		dir = filepath.Join(CacheDir(), "bin")
	}
	p := filepath.Join(dir, name)
	_, err := os.Stat(p)
	Need(t, err == nil, p, "run `make kube` to build the Kubernetes binaries from the Go module proxy")
	return p
}

// CommandTimeout bounds every command Run starts.
const CommandTimeout = 60 * time.Second

// Run runs name with args (environment env; nil inherits) and returns its
// combined output. The command is killed after CommandTimeout and when the
// test process dies, so a hung ip/iptables call cannot hang the suite.
func Run(t testing.TB, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s", name, strings.Join(args, " "), CommandTimeout)
	}
	return string(out), err
}

// MustRun is Run with the inherited environment that fails t on any error.
func MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Run(t, nil, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// Buffer is an io.Writer safe for concurrent use: it collects the output of
// a server or subprocess that a test reads while it runs.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
