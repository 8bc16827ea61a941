package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/internal/kubetest"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// kustomize builds an overlay with kubectl and splits it into documents.
func kustomize(t *testing.T, kubectl, overlay string) (string, map[string][]byte) {
	t.Helper()
	out := kubetest.Kustomize(t, kubectl, filepath.Join("..", "manifests", "overlays", overlay))
	split, err := kubetest.SplitYAML(out)
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string][]byte{}
	for _, doc := range split {
		var meta metav1.PartialObjectMetadata
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		docs[meta.Kind+"/"+meta.Name] = doc
	}
	return string(out), docs
}

func decodeDoc[T any](t *testing.T, docs map[string][]byte, key string) *T {
	t.Helper()
	doc, ok := docs[key]
	if !ok {
		t.Fatalf("overlay has no %s", key)
	}
	var v T
	if err := yaml.UnmarshalStrict(doc, &v); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return &v
}

// TestManifests builds both overlays and checks what an admin relies on:
// fail-closed webhook with the documented selectors, 2 replicas with probes
// and a restricted security context, the sidecar image wired through, and
// RBAC no wider than each mode needs.
func TestManifests(t *testing.T) {
	kubectl := kubetest.Kubectl(t)
	for _, overlay := range []string{"cert-manager", "self-signed"} {
		t.Run(overlay, func(t *testing.T) {
			_, docs := kustomize(t, kubectl, overlay)
			mwc := decodeDoc[admissionregistrationv1.MutatingWebhookConfiguration](t, docs, "MutatingWebhookConfiguration/podrole-webhook")
			wh := mwc.Webhooks[0]
			if *wh.FailurePolicy != admissionregistrationv1.Fail || *wh.SideEffects != admissionregistrationv1.SideEffectClassNone ||
				*wh.TimeoutSeconds != 5 || *wh.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy ||
				strings.Join(wh.AdmissionReviewVersions, ",") != "v1" {
				t.Errorf("webhook settings %+v", wh)
			}
			// Pod creation, and kubectl debug's ephemeral containers (an
			// UPDATE of the subresource, never a pod CREATE), core v1 only.
			var rules []string
			for _, r := range wh.Rules {
				scope := "<unset>"
				if r.Scope != nil {
					scope = string(*r.Scope)
				}
				rules = append(rules, fmt.Sprintf("%v %s/%s %v %s", r.Operations, strings.Join(r.APIGroups, ","), strings.Join(r.APIVersions, ","), r.Resources, scope))
			}
			if got, want := strings.Join(rules, "; "), "[CREATE] /v1 [pods] Namespaced; [UPDATE] /v1 [pods/ephemeralcontainers] Namespaced"; got != want {
				t.Errorf("rules\n got %s\nwant %s", got, want)
			}
			if wh.NamespaceSelector.MatchLabels[contract.LabelInject] != contract.InjectEnabled ||
				strings.Join(wh.NamespaceSelector.MatchExpressions[0].Values, ",") != "kube-system,podrole-system" ||
				wh.ObjectSelector.MatchExpressions[0].Key != contract.LabelInject || wh.ObjectSelector.MatchExpressions[0].Values[0] != contract.InjectDisabled {
				t.Errorf("selectors %+v %+v", wh.NamespaceSelector, wh.ObjectSelector)
			}
			if s := wh.ClientConfig.Service; s == nil || s.Name != "podrole-webhook" || s.Namespace != "podrole-system" || *s.Path != "/mutate" {
				t.Errorf("client config %+v", wh.ClientConfig)
			}
			if overlay == "cert-manager" && mwc.Annotations["cert-manager.io/inject-ca-from"] != "podrole-system/podrole-webhook-serving" {
				t.Errorf("annotations %v", mwc.Annotations)
			}

			// The validating configuration: the same server at /validate,
			// fail closed, the same namespaces, and no objectSelector (a
			// relabelled pod must not escape it). Pod CREATE and UPDATE,
			// kubectl debug, exec and attach.
			vwc := decodeDoc[admissionregistrationv1.ValidatingWebhookConfiguration](t, docs, "ValidatingWebhookConfiguration/podrole-webhook")
			if len(vwc.Webhooks) != 1 {
				t.Fatalf("validating webhooks %d, want 1", len(vwc.Webhooks))
			}
			vw := vwc.Webhooks[0]
			if vw.Name != "validate.pods.podrole.io" || *vw.FailurePolicy != admissionregistrationv1.Fail || *vw.SideEffects != admissionregistrationv1.SideEffectClassNone ||
				*vw.TimeoutSeconds != 5 || strings.Join(vw.AdmissionReviewVersions, ",") != "v1" {
				t.Errorf("validating webhook settings %+v", vw)
			}
			rules = nil
			for _, r := range vw.Rules {
				scope := "<unset>"
				if r.Scope != nil {
					scope = string(*r.Scope)
				}
				rules = append(rules, fmt.Sprintf("%v %s/%s %v %s", r.Operations, strings.Join(r.APIGroups, ","), strings.Join(r.APIVersions, ","), r.Resources, scope))
			}
			if got, want := strings.Join(rules, "; "), "[CREATE UPDATE] /v1 [pods] Namespaced; [UPDATE] /v1 [pods/ephemeralcontainers] Namespaced; [CONNECT] /v1 [pods/exec pods/attach] Namespaced"; got != want {
				t.Errorf("validating rules\n got %s\nwant %s", got, want)
			}
			if vw.ObjectSelector != nil && (len(vw.ObjectSelector.MatchLabels) > 0 || len(vw.ObjectSelector.MatchExpressions) > 0) {
				t.Errorf("validating webhook has an objectSelector %+v: relabelling a pod would escape it", vw.ObjectSelector)
			}
			if fmt.Sprint(vw.NamespaceSelector) != fmt.Sprint(wh.NamespaceSelector) {
				t.Errorf("validating namespaceSelector %+v differs from the mutating one %+v", vw.NamespaceSelector, wh.NamespaceSelector)
			}
			if s := vw.ClientConfig.Service; s == nil || s.Name != "podrole-webhook" || s.Namespace != "podrole-system" || *s.Path != "/validate" {
				t.Errorf("validating client config %+v", vw.ClientConfig)
			}
			if overlay == "cert-manager" && vwc.Annotations["cert-manager.io/inject-ca-from"] != "podrole-system/podrole-webhook-serving" {
				t.Errorf("validating annotations %v: cert-manager's CA injector would not write its caBundle", vwc.Annotations)
			}

			d := decodeDoc[appsv1.Deployment](t, docs, "Deployment/podrole-webhook")
			if *d.Spec.Replicas != 2 || len(d.Spec.Template.Spec.TopologySpreadConstraints) == 0 {
				t.Errorf("replicas %d, spread %v", *d.Spec.Replicas, d.Spec.Template.Spec.TopologySpreadConstraints)
			}
			c := d.Spec.Template.Spec.Containers[0]
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			if got, want := env["PODROLE_SIDECAR_IMAGE"], d.Spec.Template.Spec.InitContainers[0].Image; got != want || !strings.Contains(got, "/") {
				t.Errorf("PODROLE_SIDECAR_IMAGE %q, sidecar-image-check image %q", got, want)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Error("probes missing")
			}
			if sc := c.SecurityContext; sc == nil || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || sc.Capabilities.Drop[0] != "ALL" {
				t.Errorf("container security context %+v", sc)
			}
			if _, cert := env["PODROLE_CERT_DIR"]; cert != (overlay == "cert-manager") || (env["PODROLE_SELF_SIGNED"] == "true") != (overlay == "self-signed") {
				t.Errorf("certificate mode env %v", env)
			}
			// Every flag in the Deployment's env must be one the binary knows.
			args := []string{}
			for name, v := range env {
				args = append(args, "--"+strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, "PODROLE_")), "_", "-")+"="+v)
			}
			if _, err := parseFlags(args, func(string) (string, bool) { return "", false }, io.Discard); err != nil {
				t.Errorf("Deployment env does not parse as webhook flags: %v", err)
			}

			svc := decodeDoc[corev1.Service](t, docs, "Service/podrole-webhook")
			if svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.StrVal != "https" {
				t.Errorf("service ports %+v", svc.Spec.Ports)
			}
			if _, ok := docs["PodDisruptionBudget/podrole-webhook"]; !ok {
				t.Error("no PodDisruptionBudget")
			}

			cr := decodeDoc[rbacv1.ClusterRole](t, docs, "ClusterRole/podrole-webhook")
			if len(cr.Rules) != 1 || strings.Join(cr.Rules[0].Resources, ",") != "namespaces" || strings.Join(cr.Rules[0].Verbs, ",") != "get,list,watch" {
				t.Errorf("base ClusterRole %+v", cr.Rules)
			}
			_, hasSecretRole := docs["Role/podrole-webhook-certs"]
			if hasSecretRole != (overlay == "self-signed") {
				t.Errorf("secret Role present=%v in %s", hasSecretRole, overlay)
			}
			if overlay == "self-signed" {
				// Exactly the two configurations' caBundles, by name.
				ca := decodeDoc[rbacv1.ClusterRole](t, docs, "ClusterRole/podrole-webhook-cabundle")
				if len(ca.Rules) != 1 || strings.Join(ca.Rules[0].APIGroups, ",") != "admissionregistration.k8s.io" ||
					strings.Join(ca.Rules[0].Resources, ",") != "mutatingwebhookconfigurations,validatingwebhookconfigurations" ||
					strings.Join(ca.Rules[0].ResourceNames, ",") != "podrole-webhook" || strings.Join(ca.Rules[0].Verbs, ",") != "get,patch,update" {
					t.Errorf("caBundle ClusterRole %+v, want get,patch,update on the two podrole-webhook configurations only", ca.Rules)
				}
				// The Secret Role: everything but create limited to the one
				// Secret; list/watch are there for the rotation watch.
				role := decodeDoc[rbacv1.Role](t, docs, "Role/podrole-webhook-certs")
				var named, unnamed []string
				for _, r := range role.Rules {
					if strings.Join(r.Resources, ",") != "secrets" {
						t.Errorf("secret Role grants %v", r.Resources)
					}
					if strings.Join(r.ResourceNames, ",") == "podrole-webhook-tls" {
						named = append(named, r.Verbs...)
					} else {
						unnamed = append(unnamed, r.Verbs...)
					}
				}
				if strings.Join(named, ",") != "get,list,watch,update" || strings.Join(unnamed, ",") != "create" {
					t.Errorf("secret Role: by name %v, unnamed %v; want get,list,watch,update by name and only create unnamed", named, unnamed)
				}
			}
		})
	}
}

// TestSelfSignedAgainstAPIServer applies overlays/self-signed to a real API
// server, points its two webhook configurations at an in-process webhook
// started with --self-signed that authenticates as the manifests'
// ServiceAccount (so their RBAC is what is tested), and checks that it
// creates its Secret, publishes the caBundle to both, and that pods get
// injected (and validated) through it.
func TestSelfSignedAgainstAPIServer(t *testing.T) {
	cluster := kubetest.Start(t, kubetest.Options{})
	kubectl := kubetest.Kubectl(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	manifest, _ := kustomize(t, kubectl, "self-signed")
	actx, acancel := context.WithTimeout(ctx, time.Minute)
	defer acancel()
	cmd := exec.CommandContext(actx, kubectl, "--kubeconfig="+cluster.Kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply overlays/self-signed: %v\n%s", err, out)
	}

	// No kube-proxy here: reach the webhook by URL. "localhost" is one of the
	// certificate's names with --service-name=localhost.
	port, probePort := kubetest.FreePort(t), kubetest.FreePort(t)
	mwcs := cluster.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	mwc, err := mwcs.Get(ctx, "podrole-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	url := "https://localhost:" + strconv.Itoa(port) + "/mutate"
	mwc.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
	if _, err := mwcs.Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	vwcs := cluster.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	vwc, err := vwcs.Get(ctx, "podrole-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vurl := "https://localhost:" + strconv.Itoa(port) + "/validate"
	vwc.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &vurl}
	if _, err := vwcs.Update(ctx, vwc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The webhook's kubeconfig impersonates its ServiceAccount.
	kc, err := clientcmd.LoadFromFile(cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range kc.AuthInfos {
		ai.Impersonate = "system:serviceaccount:podrole-system:podrole-webhook"
	}
	saKubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, saKubeconfig); err != nil {
		t.Fatal(err)
	}

	logs := runWebhook(ctx, t, probePort,
		"--listen=127.0.0.1:"+strconv.Itoa(port),
		"--self-signed", "--service-name=localhost", "--kubeconfig="+saKubeconfig,
		"--sidecar-image="+testImage, "--base-role-arn="+testBase)

	sec, err := cluster.Client.CoreV1().Secrets("podrole-system").Get(ctx, "podrole-webhook-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("self-signed Secret: %v", err)
	}
	mwc, err = mwcs.Get(ctx, "podrole-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, sec.Data["ca.crt"]) {
		t.Fatal("caBundle is not the Secret's CA")
	}
	if vwc, err = vwcs.Get(ctx, "podrole-webhook", metav1.GetOptions{}); err != nil || !bytes.Equal(vwc.Webhooks[0].ClientConfig.CABundle, sec.Data["ca.crt"]) {
		t.Fatalf("the validating configuration's caBundle is not the Secret's CA (%v)", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(sec.Data["ca.crt"])
	if err := kubetest.WaitHTTPS(ctx, "https://localhost:"+strconv.Itoa(port)+"/healthz", roots); err != nil {
		t.Fatalf("webhook's certificate does not verify against its own CA for localhost: %v", err)
	}

	cluster.Namespace(ctx, t, "apps", map[string]string{contract.LabelInject: contract.InjectEnabled}, nil)
	for {
		p, err := cluster.Client.CoreV1().Pods("apps").Create(ctx, testPod("app", map[string]string{contract.AnnotationRole: "app"}, nil, nil), metav1.CreateOptions{})
		if err == nil {
			if p.Annotations[contract.AnnotationStatus] != contract.StatusInjected || p.Spec.InitContainers[1].Name != contract.AgentContainerName {
				t.Fatalf("pod stored without injection: %v %v", p.Annotations, names(p.Spec.InitContainers))
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod creation through the self-signed webhook never succeeded: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}

	// Forced rotation: deleting the Secret is noticed through the watch the
	// Role allows (list/watch by name), not at the hourly resync; the new CA
	// joins the old one in the caBundle and the new certificate is served.
	oldBundle := mwc.Webhooks[0].ClientConfig.CABundle
	if err := cluster.Client.CoreV1().Secrets("podrole-system").Delete(ctx, "podrole-webhook-tls", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	var newSec *corev1.Secret
	for {
		newSec, err = cluster.Client.CoreV1().Secrets("podrole-system").Get(rctx, "podrole-webhook-tls", metav1.GetOptions{})
		if err == nil && !bytes.Equal(newSec.Data["ca.crt"], sec.Data["ca.crt"]) {
			break
		}
		select {
		case <-rctx.Done():
			t.Fatalf("the webhook did not recreate its Secret within 30s of its deletion (is the watch allowed?): %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	mwc, err = mwcs.Get(ctx, "podrole-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := mwc.Webhooks[0].ClientConfig.CABundle; !bytes.HasPrefix(got, newSec.Data["ca.crt"]) || !bytes.Contains(got, oldBundle) {
		t.Fatal("caBundle after the forced rotation is not the new CA followed by the old one")
	}
	if vwc, err = vwcs.Get(ctx, "podrole-webhook", metav1.GetOptions{}); err != nil || !bytes.Equal(vwc.Webhooks[0].ClientConfig.CABundle, mwc.Webhooks[0].ClientConfig.CABundle) {
		t.Fatalf("the validating configuration's caBundle after the rotation differs from the mutating one (%v)", err)
	}
	newRoots := x509.NewCertPool()
	newRoots.AppendCertsFromPEM(newSec.Data["ca.crt"])
	if err := kubetest.WaitHTTPS(rctx, "https://localhost:"+strconv.Itoa(port)+"/healthz", newRoots); err != nil {
		t.Fatalf("the webhook does not serve the recreated certificate: %v", err)
	}
	if strings.Contains(logs.String(), "forbidden") {
		t.Errorf("the ServiceAccount's RBAC refused something:\n%s", logs.String())
	}
	_ = os.Remove(saKubeconfig)
}
