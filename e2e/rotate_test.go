//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
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

// rotateWebhookCert replaces the webhook's CA and serving certificate the
// way an operator would after a suspected key leak (delete the Secret, then
// restart the rollout) while server-side dry runs keep probing admission,
// and requires that not one of them fails: the replicas watch the Secret,
// publish the new CA next to the old one before any of them serves a
// certificate from it, and keep the old CA in the caBundle while it may
// still be served. The new caBundle must differ from the old, still hold the
// old CA (the overlap) and the Secret's new CA, and injection must work
// after the rollout.
func rotateWebhookCert(t *testing.T, e *env) {
	t.Helper()
	before := e.webhookCA(t)
	ns := e.namespace(t, "s8c-probe", true, nil)
	probe := podSpec{name: "rotation-probe", ns: ns, role: "e2e-app"}.yaml(e)
	stop := make(chan struct{})
	var ok, failed int
	var errs []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			// One probe every ~100 ms plus its own duration, for the whole
			// switch; each bounded by e.run's timeout and this one.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, errOut, err := e.run(ctx, probe, "apply", "--dry-run=server", "-o", "json", "-f", "-")
			cancel()
			var p pod
			if err == nil && json.Unmarshal([]byte(out), &p) == nil && contains(p.initNames(), agentName) {
				ok++
			} else {
				failed++
				errs = append(errs, time.Now().Format("15:04:05.000")+" "+strings.TrimSpace(errOut))
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	finish := func() {
		close(stop)
		select {
		case <-done:
		case <-time.After(90 * time.Second):
			t.Fatal("admission probe did not stop within 90s")
		}
	}
	// Let some probes pass through the old certificate first.
	time.Sleep(2 * time.Second)
	e.k(t, "-n", webhookNS, "delete", "secret", certSecret, "--ignore-not-found")
	for _, d := range e.webhookDeployments(t) {
		e.k(t, "-n", webhookNS, "rollout", "restart", d)
		e.k(t, "-n", webhookNS, "rollout", "status", d, "--timeout=120s")
	}
	deadline := time.Now().Add(120 * time.Second)
	for e.webhookCA(t) == before {
		if time.Now().After(deadline) {
			finish()
			t.Fatalf("the caBundle did not change within 120s of deleting %s/%s and restarting", webhookNS, certSecret)
		}
		time.Sleep(time.Second)
	}
	e.waitInjecting(t, 90*time.Second)
	// Old pods may still be terminating after the rollout: keep probing a
	// while past it.
	time.Sleep(5 * time.Second)
	finish()
	t.Logf("rotation: admission probes during the switch: %d injected, %d failed", ok, failed)
	if failed > 0 {
		t.Errorf("%d of %d admissions failed during the certificate rotation; want none:\n%s", failed, ok+failed, strings.Join(errs, "\n"))
	}
	if ok < 20 {
		t.Errorf("only %d admission probes ran during the rotation: too few to show it loses none", ok)
	}

	secCA, _, err := e.run(context.Background(), "", "-n", webhookNS, "get", "secret", certSecret, "-o", "jsonpath={.data.ca\\.crt}")
	if err != nil {
		t.Fatalf("the webhook did not recreate %s/%s: %v", webhookNS, certSecret, err)
	}
	after := e.webhookCA(t)
	for _, want := range []struct{ what, b64 string }{{"the old CA", before}, {"the Secret's new CA", secCA}} {
		for _, c := range pemCerts(t, want.b64) {
			if !strings.Contains(decodedBundle(t, after), c) {
				t.Errorf("the caBundle after the rotation does not hold %s (old and new must overlap)", want.what)
			}
		}
	}
}

// pemCerts returns the certificates of a base64 PEM bundle (one or several
// joined with commas, as webhookCA returns them), each PEM encoded.
func pemCerts(t *testing.T, b64 string) []string {
	t.Helper()
	var out []string
	for part := range strings.SplitSeq(b64, ",") {
		raw, err := base64.StdEncoding.DecodeString(part)
		if err != nil {
			t.Fatalf("caBundle is not base64: %v", err)
		}
		for rest := raw; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			out = append(out, string(pem.EncodeToMemory(b)))
		}
	}
	if len(out) == 0 {
		t.Fatal("no certificate in the bundle")
	}
	return out
}

func decodedBundle(t *testing.T, b64 string) string { return strings.Join(pemCerts(t, b64), "") }
