package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/podrole/podrole/internal/kubetest"
)

// runWebhook runs the webhook in-process with args (plus --probe-listen on
// probePort and an empty environment) until the test ends, waits until its
// /readyz answers, and dumps its logs if the test failed. It returns the log
// buffer for tests that read it.
func runWebhook(ctx context.Context, t *testing.T, probePort int, args ...string) *syncBuffer {
	t.Helper()
	logs := &syncBuffer{}
	whCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(whCtx, append(args, "--probe-listen=127.0.0.1:"+strconv.Itoa(probePort)), func(string) string { return "" }, logs)
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("webhook did not stop")
		}
		if t.Failed() {
			t.Logf("--- webhook logs\n%s", logs.String())
		}
	})
	if err := kubetest.WaitHTTPS(ctx, "http://127.0.0.1:"+strconv.Itoa(probePort)+"/readyz", nil); err != nil {
		t.Fatalf("webhook not ready: %v", err)
	}
	return logs
}
