//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// webhookCA returns the caBundle of every webhook of podrole's
// MutatingWebhookConfiguration(s), joined: what the apiserver trusts.
func (e *env) webhookCA(t testing.TB) string {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Webhooks []struct {
				ClientConfig struct {
					CABundle string `json:"caBundle"`
					Service  *struct {
						Namespace string `json:"namespace"`
					} `json:"service"`
				} `json:"clientConfig"`
			} `json:"webhooks"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(e.k(t, "get", "mutatingwebhookconfigurations", "-o", "json")), &list); err != nil {
		t.Fatalf("decode mutatingwebhookconfigurations: %v", err)
	}
	var cas []string
	for _, m := range list.Items {
		for _, w := range m.Webhooks {
			if w.ClientConfig.Service != nil && w.ClientConfig.Service.Namespace == webhookNS {
				cas = append(cas, w.ClientConfig.CABundle)
			}
		}
	}
	if len(cas) == 0 {
		t.Fatalf("no MutatingWebhookConfiguration points at a Service in %s", webhookNS)
	}
	return strings.Join(cas, ",")
}

// certSecret is the Secret that holds the webhook's CA and serving
// certificate in the self-signed overlay (--self-signed-secret's default).
const certSecret = "podrole-webhook-tls"

// rotateWebhookCert replaces the webhook's CA and serving certificate and
// checks admissions go on. The self-signed mode re-reads its Secret only at
// start and then hourly (webhook/main.go), so the rotation is forced the way an
// operator would after a suspected key leak: delete the Secret and restart the
// rollout. Server-side dry runs probe admission all along; the new caBundle
// must differ from the old and injection must work after the rollout. How many
// probes failed during the switch is reported, not asserted (the old replica
// serves the old certificate until it is gone).
func rotateWebhookCert(t *testing.T, e *env) {
	t.Helper()
	before := e.webhookCA(t)
	ns := e.namespace(t, "s8c-probe", true, nil)
	probe := podSpec{name: "rotation-probe", ns: ns, role: "e2e-app"}.yaml(e)
	stop := make(chan struct{})
	var ok, failed int
	var lastErr string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			out, errOut, err := e.run(context.Background(), probe, "apply", "--dry-run=server", "-o", "json", "-f", "-")
			var p pod
			if err == nil && json.Unmarshal([]byte(out), &p) == nil && contains(p.initNames(), agentName) {
				ok++
			} else {
				failed++
				lastErr = strings.TrimSpace(errOut)
			}
		}
	}()
	e.k(t, "-n", webhookNS, "delete", "secret", certSecret, "--ignore-not-found")
	for _, d := range e.webhookDeployments(t) {
		e.k(t, "-n", webhookNS, "rollout", "restart", d)
		e.k(t, "-n", webhookNS, "rollout", "status", d, "--timeout=120s")
	}
	deadline := time.Now().Add(120 * time.Second)
	for e.webhookCA(t) == before {
		if time.Now().After(deadline) {
			close(stop)
			<-done
			t.Fatalf("the caBundle did not change within 120s of deleting %s/%s and restarting", webhookNS, certSecret)
		}
		time.Sleep(time.Second)
	}
	e.waitInjecting(t, 90*time.Second)
	close(stop)
	<-done
	t.Logf("rotation: new caBundle published; admission probes during the switch: %d injected, %d failed (last error: %s)", ok, failed, lastErr)
	if _, _, err := e.run(context.Background(), "", "-n", webhookNS, "get", "secret", certSecret); err != nil {
		t.Errorf("the webhook did not recreate %s/%s: %v", webhookNS, certSecret, err)
	}
}
