package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

// TestLoggerBridgesKlog: what client-go logs through klog (plain,
// structured, errors, contextual) comes out of the webhook's logger as JSON
// lines, filtered by --log-level, and klog writes no text to stderr.
func TestLoggerBridgesKlog(t *testing.T) {
	tests := []struct {
		name  string
		level slog.Level
		log   func()
		// want is the JSON line's fields; nil: no line at all.
		want map[string]any
	}{
		{"klog.Infof", slog.LevelInfo, func() { klog.Infof("caches populated for %s", "namespaces") },
			map[string]any{"level": "INFO", "msg": "caches populated for namespaces"}},
		{"klog.InfoS", slog.LevelInfo, func() { klog.InfoS("watch started", "resource", "namespaces") },
			map[string]any{"level": "INFO", "msg": "watch started", "resource": "namespaces"}},
		{"klog.ErrorS", slog.LevelInfo, func() { klog.ErrorS(errors.New("connection refused"), "watch failed", "resource", "secrets") },
			map[string]any{"level": "ERROR", "msg": "watch failed", "resource": "secrets", "err": "connection refused"}},
		{"klog.Errorf", slog.LevelInfo, func() { klog.Errorf("list of %s failed", "namespaces") },
			map[string]any{"level": "ERROR", "msg": "list of namespaces failed"}},
		{"contextual", slog.LevelInfo, func() { klog.FromContext(context.Background()).Info("reflector started", "type", "namespaces") },
			map[string]any{"level": "INFO", "msg": "reflector started", "type": "namespaces"}},
		{"contextual V(4) at debug", slog.LevelDebug, func() { klog.FromContext(context.Background()).V(4).Info("watch event") },
			map[string]any{"level": "DEBUG", "msg": "watch event"}},
		{"contextual V(4) at info", slog.LevelInfo, func() { klog.FromContext(context.Background()).V(4).Info("watch event") }, nil},
		{"klog.V(2) at debug", slog.LevelDebug, func() { klog.V(2).InfoS("request", "verb", "GET") }, nil},
		{"klog.Info below --log-level", slog.LevelWarn, func() { klog.Info("caches populated") }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			newLogger(&out, tc.level)
			t.Cleanup(klog.ClearLogger)
			stderr := captureStderr(t, tc.log)
			if stderr != "" {
				t.Errorf("klog wrote to stderr: %q", stderr)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if tc.want == nil {
				if out.Len() != 0 {
					t.Fatalf("logged %q, want nothing", out.String())
				}
				return
			}
			if len(lines) != 1 {
				t.Fatalf("%d lines, want 1 JSON line: %q", len(lines), out.String())
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
				t.Fatalf("not a JSON line: %q: %v", lines[0], err)
			}
			if _, ok := got["time"]; !ok {
				t.Errorf("no time field: %v", got)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v (line %s)", k, got[k], v, lines[0])
				}
			}
		})
	}
}

// captureStderr runs f with os.Stderr a pipe and returns what f wrote
// there: klog writes its text output to os.Stderr as it is at the call.
func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	func() {
		defer func() { os.Stderr = saved }()
		f()
		klog.Flush()
	}()
	w.Close()
	b, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
