package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitReturnsOnceStarted(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"wait", "--url=" + srv.URL + "/started", "--timeout=10s"}, &bytes.Buffer{}, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if calls.Load() < 3 {
		t.Fatalf("returned after %d polls, before the agent started", calls.Load())
	}
}

func TestWaitTimesOutWithReason(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no credentials", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	var stderr bytes.Buffer
	start := time.Now()
	code := run(context.Background(), []string{"wait", "--url=" + srv.URL, "--timeout=2s"}, &bytes.Buffer{}, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("did not respect --timeout")
	}
	if !strings.Contains(stderr.String(), "503") || !strings.Contains(stderr.String(), "kubectl logs") {
		t.Fatalf("message does not say why or what to do: %s", stderr.String())
	}
}

func TestWaitRejectsBadURL(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"wait", "--url=127.0.0.1:9182"}, &bytes.Buffer{}, &stderr); code != 1 || !strings.Contains(stderr.String(), "--url") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}
