package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/podrole/podrole/internal/kubetest"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
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
		done <- run(whCtx, append(args, "--probe-listen=127.0.0.1:"+strconv.Itoa(probePort)), func(string) (string, bool) { return "", false }, logs)
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

// validatingConfig is manifests/base's ValidatingWebhookConfiguration (so
// its rules and selectors are what is tested), with a URL client config for
// the in-process webhook (url ends in /validate) and caBundle.
func validatingConfig(t *testing.T, url string, caBundle []byte) *admissionregistrationv1.ValidatingWebhookConfiguration {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "manifests", "base", "validatingwebhookconfiguration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(raw, &vwc); err != nil || len(vwc.Webhooks) == 0 {
		t.Fatalf("manifests/base/validatingwebhookconfiguration.yaml: %v (%d webhooks)", err, len(vwc.Webhooks))
	}
	for i := range vwc.Webhooks {
		vwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle}
	}
	return &vwc
}
