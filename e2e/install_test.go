//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// overlay is the kustomize directory users would apply (ours: the
// self-signed overlay with local images and the stand-ins' endpoints).
// PODROLE_E2E_OVERLAY points the suite at another kustomization (e.g. a
// cert-manager variant) without editing it.
func (e *env) overlay() string {
	if o := os.Getenv("PODROLE_E2E_OVERLAY"); o != "" {
		return o
	}
	return filepath.Join(e.root, "e2e", "manifests")
}

// webhookDeployment names the Deployment(s) the overlay installs.
func (e *env) webhookDeployments(t testing.TB) []string {
	t.Helper()
	out := strings.Fields(e.k(t, "-n", webhookNS, "get", "deployments", "-o", "name"))
	if len(out) == 0 {
		t.Fatalf("no Deployment in namespace %s after kubectl apply -k %s", webhookNS, e.overlay())
	}
	return out
}

// install applies the overlay like a user, waits for the rollout, and then
// until the apiserver's calls to the webhook actually inject (a server-side
// dry run goes through the mutating webhooks and persists nothing).
func (e *env) install(t testing.TB) {
	t.Helper()
	start := time.Now()
	if _, _, err := e.run(context.Background(), "", "apply", "-k", e.overlay()); err != nil {
		// CRD-less kustomizations apply in one go; a second apply covers
		// objects whose namespace was created by the first.
		if _, _, err2 := e.run(context.Background(), "", "apply", "-k", e.overlay()); err2 != nil {
			t.Fatalf("install: %v", err)
		}
	}
	for _, d := range e.webhookDeployments(t) {
		if _, _, err := e.run(context.Background(), "", "-n", webhookNS, "rollout", "status", d, "--timeout=120s"); err != nil {
			logs, _, _ := e.run(context.Background(), "", "-n", webhookNS, "logs", d, "--all-containers", "--tail=50")
			t.Fatalf("install: %v\nwebhook logs:\n%s", err, logs)
		}
	}
	e.waitInjecting(t, 90*time.Second)
	t.Logf("installed %s in %s", e.overlay(), time.Since(start).Round(time.Millisecond))
}

// waitInjecting waits until a dry-run pod in a labelled namespace comes back
// with podrole's containers: the webhook is serving and its caBundle is in place.
func (e *env) waitInjecting(t testing.TB, timeout time.Duration) {
	t.Helper()
	ns := e.namespace(t, "podrole-ready", true, nil)
	probe := podSpec{name: "ready-probe", ns: ns, role: "e2e-app"}.yaml(e)
	deadline := time.Now().Add(timeout)
	for {
		out, errOut, err := e.run(context.Background(), probe, "apply", "--dry-run=server", "-o", "json", "-f", "-")
		var p pod
		if err == nil && json.Unmarshal([]byte(out), &p) == nil &&
			contains(p.initNames(), initName) && contains(p.initNames(), agentName) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook does not inject after %s: last answer: %s %s", timeout, strings.TrimSpace(errOut), out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// uninstall deletes everything the overlay created and waits for it to go.
func (e *env) uninstall(t testing.TB) {
	t.Helper()
	if _, _, err := e.run(context.Background(), "", "delete", "-k", e.overlay(), "--ignore-not-found", "--wait=true", "--timeout=120s"); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	e.waitFor(t, 120*time.Second, "namespace "+webhookNS+" to be gone", func() bool {
		_, _, err := e.run(context.Background(), "", "get", "namespace", webhookNS)
		return err != nil
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// withWebhookEnv sets an environment variable (every webhook flag can come
// from PODROLE_<NAME>) on every webhook Deployment, waits for the rollout, and
// returns a func that rolls it back.
func (e *env) withWebhookEnv(t testing.TB, name, value string) (undo func()) {
	t.Helper()
	deps := e.webhookDeployments(t)
	for _, d := range deps {
		e.k(t, "-n", webhookNS, "set", "env", d, name+"="+value)
		e.k(t, "-n", webhookNS, "rollout", "status", d, "--timeout=120s")
	}
	return func() {
		for _, d := range deps {
			e.k(t, "-n", webhookNS, "rollout", "undo", d)
			e.k(t, "-n", webhookNS, "rollout", "status", d, "--timeout=120s")
		}
	}
}

func (e *env) scaleWebhook(t testing.TB, replicas int) {
	t.Helper()
	for _, d := range e.webhookDeployments(t) {
		e.k(t, "-n", webhookNS, "scale", d, fmt.Sprintf("--replicas=%d", replicas))
		if replicas > 0 {
			e.k(t, "-n", webhookNS, "rollout", "status", d, "--timeout=120s")
		}
	}
	if replicas == 0 {
		e.waitFor(t, 60*time.Second, "webhook pods to be gone", func() bool {
			out, _, err := e.run(context.Background(), "", "-n", webhookNS, "get", "pods", "-o", "name")
			return err == nil && strings.TrimSpace(out) == ""
		})
	}
}
