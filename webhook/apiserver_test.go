package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podrole/podrole/certs"
	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/internal/kubetest"
	"github.com/podrole/podrole/internal/testenv"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// syncBuffer collects the webhook's logs for failure output.
type syncBuffer = testenv.Buffer

const (
	testImage = "registry.example/podrole-sidecar:test"
	testBase  = "arn:aws:iam::111122223333:role/"
)

func writeServing(t *testing.T, dir string, ca *certs.CA) string {
	t.Helper()
	kp, err := ca.Issue("podrole-webhook", []string{"127.0.0.1"}, nil, true, false, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{certs.CertFile: kp.CertPEM, certs.KeyFile: kp.KeyPEM} {
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := kp.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.String()
}

// webhookConfig is the MutatingWebhookConfiguration of manifests/base (so
// its rules, selectors and reinvocation policy are what is tested), with a
// URL client config for the in-process webhook.
func webhookConfig(t *testing.T, url string, caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "manifests", "base", "mutatingwebhookconfiguration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(raw, &mwc); err != nil {
		t.Fatalf("manifests/base/mutatingwebhookconfiguration.yaml: %v", err)
	}
	if len(mwc.Webhooks) == 0 {
		t.Fatal("manifests/base/mutatingwebhookconfiguration.yaml has no webhook")
	}
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle}
	}
	return &mwc
}

func testPod(name string, annotations, labels map[string]string, mod func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations, Labels: labels},
		Spec: corev1.PodSpec{
			// No kubelet runs: the pod is bound to a node that does not
			// exist and needs no token; only what the API server stores matters.
			NodeName:                     "node-1",
			AutomountServiceAccountToken: new(false),
			InitContainers:               []corev1.Container{{Name: "migrate", Image: "registry.example/migrate:1"}},
			Containers:                   []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
		},
	}
	if mod != nil {
		mod(p)
	}
	return p
}

func capNames(cs []corev1.Capability) []string {
	var out []string
	for _, c := range cs {
		out = append(out, string(c))
	}
	return out
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// TestAgainstAPIServer runs the webhook in-process behind a real
// kube-apiserver and checks what the API server stores and what users see:
// injection, block step, selectors, denials (client-go and kubectl), a
// certificate rotation to a new CA with pods created throughout, and failing
// closed when the webhook is gone.
func TestAgainstAPIServer(t *testing.T) {
	cluster := kubetest.Start(t, kubetest.Options{})
	kubectl := kubetest.Kubectl(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	certDir := t.TempDir()
	ca1, err := certs.NewCA("webhook-ca-1", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serial1 := writeServing(t, certDir, ca1)
	port, probePort := kubetest.FreePort(t), kubetest.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	logs := &syncBuffer{}
	defer func() {
		if t.Failed() {
			t.Logf("--- webhook logs\n%s", logs.String())
		}
	}()
	var stopWebhook context.CancelFunc
	var whDone chan error
	// startWebhook runs the webhook in-process, configured partly through
	// the environment as the Deployment does, and waits until it is ready.
	startWebhook := func() {
		t.Helper()
		var whCtx context.Context
		whCtx, stopWebhook = context.WithCancel(ctx)
		whDone = make(chan error, 1)
		go func(done chan error) {
			done <- run(whCtx, []string{
				"--listen=" + addr, "--probe-listen=127.0.0.1:" + strconv.Itoa(probePort),
				"--cert-dir=" + certDir, "--cert-reload-interval=100ms",
				"--kubeconfig=" + cluster.Kubeconfig, "--log-level=info",
			}, func(k string) (string, bool) {
				v, ok := map[string]string{
					"PODROLE_SIDECAR_IMAGE": testImage,
					"PODROLE_BASE_ROLE_ARN": strings.TrimSuffix(testBase, "/"),
					"PODROLE_REGION":        "eu-west-1",
				}[k]
				return v, ok
			}, logs)
		}(whDone)
		if err := kubetest.WaitHTTPS(ctx, "http://127.0.0.1:"+strconv.Itoa(probePort)+"/readyz", nil); err != nil {
			t.Fatalf("webhook not ready: %v", err)
		}
	}
	stopAndWait := func() {
		t.Helper()
		stopWebhook()
		select {
		case err := <-whDone:
			if err != nil {
				t.Fatalf("webhook exited with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("webhook did not stop")
		}
	}
	defer func() { stopWebhook() }()
	startWebhook()

	c := cluster.Client
	cluster.Namespace(ctx, t, "team-a", map[string]string{contract.LabelInject: contract.InjectEnabled}, nil)
	cluster.Namespace(ctx, t, "strict", map[string]string{contract.LabelInject: contract.InjectEnabled},
		map[string]string{contract.AnnotationAllowedRoles: `["web-*"]`})
	cluster.Namespace(ctx, t, "plain", nil, nil)
	// Hostile allow-lists: a kiam expression that would match everything
	// once wrapped in anchors, and a kube2iam list that does not parse.
	cluster.Namespace(ctx, t, "kiam-breakout", map[string]string{contract.LabelInject: contract.InjectEnabled},
		map[string]string{contract.AnnotationPermitted: `a)|(.*`})
	cluster.Namespace(ctx, t, "bad-list", map[string]string{contract.LabelInject: contract.InjectEnabled},
		map[string]string{contract.AnnotationAllowedRoles: `["app", null]`})

	mwcs := c.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := mwcs.Create(ctx, webhookConfig(t, "https://"+addr+"/mutate", ca1.CertPEM), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vwcs := c.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if _, err := vwcs.Create(ctx, validatingConfig(t, "https://"+addr+"/validate", ca1.CertPEM), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The API server picks webhook configurations up asynchronously: dry-run
	// creates (sideEffects None allows them) until one comes back injected.
	waitInjected := func(what string) {
		t.Helper()
		for i := 0; ; i++ {
			p, err := c.CoreV1().Pods("team-a").Create(ctx, testPod("probe", map[string]string{contract.AnnotationRole: "app"}, nil, nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err == nil && p.Annotations[contract.AnnotationStatus] == contract.StatusInjected {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: webhook never took effect: %v", what, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	waitInjected("initial configuration")
	// And until the validating configuration is in use: a pod labelled out
	// of the mutating webhook that carries podrole's status is refused.
	for {
		_, err := c.CoreV1().Pods("team-a").Create(ctx, testPod("vprobe", map[string]string{contract.AnnotationStatus: contract.StatusInjected},
			map[string]string{contract.LabelInject: contract.InjectDisabled}, nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil && strings.Contains(err.Error(), `admission webhook "validate.pods.podrole.io" denied the request`) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("validating webhook never took effect: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}

	t.Run("stored pods", func(t *testing.T) {
		role := map[string]string{contract.AnnotationRole: "app", contract.AnnotationSessionName: "app-session"}
		p, err := c.CoreV1().Pods("team-a").Create(ctx, testPod("with-role", role, nil, nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := names(p.Spec.InitContainers), []string{contract.InitContainerName, contract.AgentContainerName, "migrate"}; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("init containers %v, want %v", got, want)
		}
		agent := p.Spec.InitContainers[1]
		serve := contract.DefaultServeConfig()
		serve.RoleARN, serve.Region, serve.SessionName = testBase+"app", "eu-west-1", "app-session"
		serve.AgentMark, serve.IgnoreEnv = contract.DefaultAgentMark, true
		serve.PodName, serve.PodNamespace = "$(PODROLE_POD_NAME)", "$(PODROLE_POD_NAMESPACE)"
		if got, want := strings.Join(agent.Args, " "), strings.Join(serve.Args(), " "); got != want {
			t.Errorf("agent args %q, want %q", got, want)
		}
		if sc := agent.SecurityContext; sc == nil || *sc.RunAsUser != 0 || strings.Join(capNames(sc.Capabilities.Add), ",") != "NET_RAW" {
			t.Errorf("agent security context %+v, want root with NET_RAW only", sc)
		}
		if sc := p.Spec.Containers[0].SecurityContext; sc == nil || sc.Capabilities == nil || strings.Join(capNames(sc.Capabilities.Drop), ",") != "NET_RAW" {
			t.Errorf("app container security context %+v, want NET_RAW dropped", sc)
		}
		if agent.RestartPolicy == nil || *agent.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Error("agent is not a native sidecar")
		}
		if agent.StartupProbe == nil || agent.StartupProbe.HTTPGet.Path != contract.PathStarted || agent.StartupProbe.HTTPGet.Port.IntValue() != contract.DefaultHealthPort {
			t.Errorf("startup probe %+v", agent.StartupProbe)
		}
		if got := strings.Join(p.Spec.InitContainers[0].Args, " "); got != "init --agent-mark=0x504f4452 --ignore-env" {
			t.Errorf("init args %q", got)
		}
		if p.Annotations[contract.AnnotationStatus] != contract.StatusInjected || p.Annotations[contract.AnnotationRoleARN] != testBase+"app" {
			t.Errorf("annotations %v", p.Annotations)
		}

		// Re-creating the stored pod (a backup restore) is admitted as is,
		// with everything the API server defaulted; a copy whose agent was
		// edited to serve another role is refused.
		restored := p.DeepCopy()
		restored.ObjectMeta = metav1.ObjectMeta{Name: "restored", Annotations: p.Annotations}
		restored.Status = corev1.PodStatus{}
		r, err := c.CoreV1().Pods("team-a").Create(ctx, restored, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("re-creating an injected pod: %v", err)
		}
		if got := names(r.Spec.InitContainers); strings.Join(got, ",") != "podrole-init,podrole-agent,migrate" {
			t.Fatalf("restored pod init containers %v", got)
		}
		forged := restored.DeepCopy()
		forged.Name = "forged"
		forged.Spec.InitContainers[1].Args = []string{"serve", "--role-arn=arn:aws:iam::111122223333:role/admin"}
		if _, err := c.CoreV1().Pods("team-a").Create(ctx, forged, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "its podrole-agent container's args differs") {
			t.Fatalf("forged agent: %v", err)
		}

		p, err = c.CoreV1().Pods("team-a").Create(ctx, testPod("no-role", nil, nil, nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := names(p.Spec.InitContainers); strings.Join(got, ",") != "podrole-init,migrate" {
			t.Fatalf("block-only pod init containers %v", got)
		}
		if got := strings.Join(p.Spec.InitContainers[0].Args, " "); got != "init --block --ignore-env" {
			t.Errorf("block args %q", got)
		}
		if p.Annotations[contract.AnnotationStatus] != "blocked" {
			t.Errorf("annotations %v", p.Annotations)
		}

		for _, tc := range []struct {
			ns, name string
			labels   map[string]string
		}{
			{"plain", "unlabelled-ns", nil},
			{"team-a", "opted-out", map[string]string{contract.LabelInject: contract.InjectDisabled}},
		} {
			p, err := c.CoreV1().Pods(tc.ns).Create(ctx, testPod(tc.name, map[string]string{contract.AnnotationRole: "app"}, tc.labels, nil), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := names(p.Spec.InitContainers); strings.Join(got, ",") != "migrate" || p.Annotations[contract.AnnotationStatus] != "" {
				t.Errorf("%s/%s was changed: init %v annotations %v", tc.ns, tc.name, got, p.Annotations)
			}
		}
	})

	// Every patched pod the fixtures expect (web identity, legacy mode, moved
	// ports, block step...) must pass the real API server's validation:
	// server-side dry-run creates in the unlabelled namespace, so the
	// webhook itself is not involved.
	t.Run("fixture outputs are valid pods", func(t *testing.T) {
		files, err := filepath.Glob(filepath.Join("mutate", "testdata", "*.yaml"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no fixtures: %v", err)
		}
		checked := 0
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var fx struct {
				Want struct {
					Pod *corev1.Pod `json:"pod"`
				} `json:"want"`
			}
			if err := yaml.Unmarshal(raw, &fx); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if fx.Want.Pod == nil {
				continue
			}
			p := fx.Want.Pod
			p.Namespace, p.Name, p.GenerateName = "plain", "fixture-"+strconv.Itoa(checked), ""
			if _, err := c.CoreV1().Pods("plain").Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
				t.Errorf("%s: the API server rejects the patched pod: %v", filepath.Base(f), err)
				continue
			}
			checked++
		}
		t.Logf("%d patched fixture pods accepted by kube-apiserver", checked)
	})

	t.Run("denials as users see them", func(t *testing.T) {
		// Allow-lists never match more than they say, on the real API server.
		for _, tc := range []struct{ ns, role, want string }{
			{"kiam-breakout", "arn:aws:iam::999999999999:role/evil", `admission webhook "pods.podrole.io" denied the request: podrole: `},
			{"bad-list", "app", `admission webhook "pods.podrole.io" denied the request: podrole: `},
		} {
			_, err := c.CoreV1().Pods(tc.ns).Create(ctx, testPod("hostile-list", map[string]string{contract.AnnotationRole: tc.role}, nil, nil), metav1.CreateOptions{})
			if err == nil || !apierrors.IsForbidden(err) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("namespace %s, role %s: got %v, want a refusal", tc.ns, tc.role, err)
			}
			ann := contract.AnnotationPermitted
			if tc.ns == "bad-list" {
				ann = contract.AnnotationAllowedRoles
			}
			if !strings.Contains(err.Error(), ann) {
				t.Fatalf("namespace %s: the refusal does not name %s: %v", tc.ns, ann, err)
			}
			t.Logf("namespace %s: %v", tc.ns, err)
		}
		_, err := c.CoreV1().Pods("strict").Create(ctx, testPod("wrong-role", map[string]string{contract.AnnotationRole: "app"}, nil, nil), metav1.CreateOptions{})
		want := `admission webhook "pods.podrole.io" denied the request: podrole: role "app" is not allowed in namespace "strict": its iam.amazonaws.com/allowed-roles ["web-*"] does not match arn:aws:iam::111122223333:role/app; ask a cluster admin to add it or use an allowed role`
		if err == nil || !apierrors.IsForbidden(err) || err.Error() != want {
			t.Fatalf("client-go error:\n got %v\nwant %s", err, want)
		}
		_, err = c.CoreV1().Pods("team-a").Create(ctx, testPod("host-net", map[string]string{contract.AnnotationRole: "app"}, nil, func(p *corev1.Pod) { p.Spec.HostNetwork = true }), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "uses hostNetwork: true") {
			t.Fatalf("hostNetwork pod: %v", err)
		}

		manifest := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"kubectl-pod","namespace":"team-a","annotations":{"iam.amazonaws.com/role":"arn:aws:iam::1234:role/x"}},"spec":{"nodeName":"node-1","automountServiceAccountToken":false,"containers":[{"name":"app","image":"registry.example/app:1"}]}}`
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		cmd := exec.CommandContext(cctx, kubectl, "--kubeconfig="+cluster.Kubeconfig, "create", "-f", "-")
		cmd.Stdin = strings.NewReader(manifest)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), `admission webhook "pods.podrole.io" denied the request: podrole: role "arn:aws:iam::1234:role/x" is malformed`) {
			t.Fatalf("kubectl create: %v\n%s", err, out)
		}
		t.Logf("kubectl shows: %s", strings.TrimSpace(string(out)))
	})

	// kubectl debug adds ephemeral containers through the
	// pods/ephemeralcontainers subresource (an UPDATE, never a pod CREATE):
	// one that could delete the redirect is refused with podrole's message,
	// a harmless one is stored.
	t.Run("ephemeral containers", func(t *testing.T) {
		pods := c.CoreV1().Pods("team-a")
		p, err := pods.Create(ctx, testPod("debug-target", map[string]string{contract.AnnotationRole: "app"}, nil, nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Annotations[contract.AnnotationStatus] != contract.StatusInjected {
			t.Fatalf("pod not injected: %v", p.Annotations)
		}
		addDebug := func(name string, sc *corev1.SecurityContext) (*corev1.Pod, error) {
			cur, err := pods.Get(ctx, "debug-target", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cur.Spec.EphemeralContainers = append(cur.Spec.EphemeralContainers, corev1.EphemeralContainer{
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: name, Image: "registry.example/busybox:1",
					TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent, SecurityContext: sc},
				TargetContainerName: "app",
			})
			return pods.UpdateEphemeralContainers(ctx, "debug-target", cur, metav1.UpdateOptions{})
		}

		_, err = addDebug("netadmin", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}})
		want := `admission webhook "pods.podrole.io" denied the request: podrole: ephemeral container "netadmin" of pod "debug-target" adds capability "NET_ADMIN": it could delete podrole's metadata rules`
		if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) {
			t.Fatalf("NET_ADMIN ephemeral container:\n got %v\nwant %s...", err, want)
		}
		// Route 7: a debug container targeting podrole-agent would share its
		// processes (and trace them with the general profile's SYS_PTRACE).
		cur, err := pods.Get(ctx, "debug-target", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.EphemeralContainers = append(cur.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "at-agent", Image: "registry.example/busybox:1",
				TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent,
				SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}}}},
			TargetContainerName: contract.AgentContainerName,
		})
		_, err = pods.UpdateEphemeralContainers(ctx, "debug-target", cur, metav1.UpdateOptions{})
		if err == nil || !strings.Contains(err.Error(), `ephemeral container "at-agent" of pod "debug-target" targets podrole-agent`) {
			t.Fatalf("ephemeral container targeting the agent: %v", err)
		}

		// The agent's former UID grants nothing now; like every debug
		// container it loses NET_RAW (the mutating webhook's patch).
		if _, err := addDebug("as-agent", &corev1.SecurityContext{RunAsUser: new(int64(contract.DefaultSidecarUID))}); err != nil {
			t.Fatalf("ephemeral container as 47181: %v", err)
		}
		stored, err := addDebug("harmless", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}}})
		if err != nil {
			t.Fatalf("harmless ephemeral container: %v", err)
		}
		var got []string
		for _, e := range stored.Spec.EphemeralContainers {
			got = append(got, e.Name)
			if sc := e.SecurityContext; sc == nil || sc.Capabilities == nil || !slices.Contains(capNames(sc.Capabilities.Drop), "NET_RAW") {
				t.Errorf("stored ephemeral container %q keeps NET_RAW: %+v", e.Name, sc)
			}
		}
		if strings.Join(got, ",") != "as-agent,harmless" {
			t.Fatalf("stored ephemeral containers %v, want [as-agent harmless]", got)
		}

		// What a user sees from kubectl debug itself (a PATCH of the
		// subresource): netadmin refused, then the general profile allowed
		// even though the pod already has an ephemeral container.
		debug := func(profile, name string) (string, error) {
			cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
			defer ccancel()
			out, err := exec.CommandContext(cctx, kubectl, "--kubeconfig="+cluster.Kubeconfig, "-n", "team-a", "debug", "debug-target",
				"--image=registry.example/busybox:1", "--profile="+profile, "--container="+name, "--target=app").CombinedOutput()
			return string(out), err
		}
		if out, err := debug("netadmin", "kubectl-netadmin"); err == nil || !strings.Contains(out, `denied the request: podrole: ephemeral container "kubectl-netadmin" of pod "debug-target" adds capability "NET_ADMIN"`) {
			t.Fatalf("kubectl debug --profile=netadmin: %v\n%s", err, out)
		} else {
			t.Logf("kubectl debug --profile=netadmin shows: %s", strings.TrimSpace(out))
		}
		if out, err := debug("sysadmin", "kubectl-sysadmin"); err == nil || !strings.Contains(out, `ephemeral container "kubectl-sysadmin" of pod "debug-target" is privileged`) {
			t.Fatalf("kubectl debug --profile=sysadmin: %v\n%s", err, out)
		}
		if out, err := debug("general", "kubectl-general"); err != nil {
			t.Fatalf("kubectl debug --profile=general: %v\n%s", err, out)
		}
		// What a user sees from kubectl debug --target=podrole-agent.
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(cctx, kubectl, "--kubeconfig="+cluster.Kubeconfig, "-n", "team-a", "debug", "debug-target",
			"--image=registry.example/busybox:1", "--profile=general", "--container=kubectl-at-agent", "--target="+contract.AgentContainerName).CombinedOutput()
		ccancel()
		if err == nil || !strings.Contains(string(out), `denied the request: podrole: ephemeral container "kubectl-at-agent" of pod "debug-target" targets podrole-agent`) {
			t.Fatalf("kubectl debug --target=podrole-agent: %v\n%s", err, out)
		}
		t.Logf("kubectl debug --target=podrole-agent shows: %s", strings.TrimSpace(string(out)))

		// A pod podrole did not inject is not judged.
		if _, err := c.CoreV1().Pods("team-a").Create(ctx, testPod("opted-out-debug", nil, map[string]string{contract.LabelInject: contract.InjectDisabled}, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cctx, ccancel = context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		if out, err := exec.CommandContext(cctx, kubectl, "--kubeconfig="+cluster.Kubeconfig, "-n", "team-a", "debug", "opted-out-debug",
			"--image=registry.example/busybox:1", "--profile=netadmin", "--container=dbg").CombinedOutput(); err != nil {
			t.Fatalf("kubectl debug of an opted-out pod: %v\n%s", err, out)
		}
	})

	// Webhooks run in name order, so one sorting after podrole's sees the
	// injected pod and may add to it. With reinvocationPolicy IfNeeded the
	// API server calls podrole again: an added NET_ADMIN container is refused;
	// a harmless one is stored next to podrole's containers, injected once.
	t.Run("later mutating webhook", func(t *testing.T) {
		later := laterWebhook(t)
		fail := admissionregistrationv1.Fail
		none := admissionregistrationv1.SideEffectClassNone
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: "zz-later-webhook"},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{
				Name:                    "later.example.com",
				ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &later.url, CABundle: later.caPEM},
				FailurePolicy:           &fail,
				SideEffects:             &none,
				AdmissionReviewVersions: []string{"v1"},
				Rules: []admissionregistrationv1.RuleWithOperations{{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				}},
				ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: laterLabel, Operator: metav1.LabelSelectorOpExists}}},
			}},
		}
		if _, err := mwcs.Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := mwcs.Delete(context.Background(), cfg.Name, metav1.DeleteOptions{}); err != nil {
				t.Errorf("delete %s: %v", cfg.Name, err)
			}
		}()
		harmless := func(name string) *corev1.Pod {
			return testPod(name, map[string]string{contract.AnnotationRole: "app"}, map[string]string{laterLabel: "harmless"}, nil)
		}
		// Wait (dry-run) until the API server uses the new configuration.
		for {
			p, err := c.CoreV1().Pods("team-a").Create(ctx, harmless("later-probe"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err == nil && len(p.Spec.Containers) == 2 {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("later webhook never took effect: %v", err)
			case <-time.After(100 * time.Millisecond):
			}
		}

		p, err := c.CoreV1().Pods("team-a").Create(ctx, harmless("later-harmless"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("pod with a harmless container added by a later webhook: %v", err)
		}
		if got := strings.Join(names(p.Spec.InitContainers), ",") + " | " + strings.Join(names(p.Spec.Containers), ","); got != "podrole-init,podrole-agent,migrate | app,log-shipper" {
			t.Fatalf("stored containers %s", got)
		}
		// The re-invoked podrole took NET_RAW from the container the later
		// webhook added (and the validating webhook checked it).
		if sc := p.Spec.Containers[1].SecurityContext; sc == nil || sc.Capabilities == nil || !slices.Contains(capNames(sc.Capabilities.Drop), "NET_RAW") {
			t.Errorf("log-shipper keeps NET_RAW: %+v", sc)
		}
		if p.Annotations[contract.AnnotationStatus] != contract.StatusInjected {
			t.Fatalf("annotations %v", p.Annotations)
		}

		_, err = c.CoreV1().Pods("team-a").Create(ctx, testPod("later-net-admin", map[string]string{contract.AnnotationRole: "app"}, map[string]string{laterLabel: "net-admin"}, nil), metav1.CreateOptions{})
		want := `admission webhook "pods.podrole.io" denied the request: podrole: container "mesh-proxy" of pod "later-net-admin" adds capability "NET_ADMIN"`
		if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) {
			t.Fatalf("NET_ADMIN container added by a later webhook:\n got %v\nwant %s...", err, want)
		}
		if n := later.calls.Load(); n < 3 {
			t.Errorf("later webhook called %d times; the test did not exercise it", n)
		}
	})

	// What a pod's author can do to a running injected pod, through the
	// API server, each refused with the message they see: exec into the
	// agent (route 3), set image on it (route 4), a forged copy (route 5),
	// relabelling it out of the mutating webhook; and what in-tree plugins
	// add after podrole's patch (LimitRanger's defaults, the ServiceAccount
	// plugin's token mount) is admitted.
	t.Run("attacks on a running pod", func(t *testing.T) {
		pods := c.CoreV1().Pods("team-a")
		p, err := pods.Create(ctx, testPod("victim", map[string]string{contract.AnnotationRole: "app"}, nil, nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}

		// exec and attach: the API server sends the CONNECT to admission
		// before it looks for a kubelet (there is none here: an allowed exec
		// fails later, finding no node).
		connect := func(sub, container string) error {
			req := c.CoreV1().RESTClient().Post().Namespace("team-a").Resource("pods").Name("victim").SubResource(sub).
				Param("container", container).Param("stdout", "true")
			if sub == "exec" {
				req = req.Param("command", "id")
			}
			return req.Do(ctx).Error()
		}
		err = connect("exec", contract.AgentContainerName)
		want := `admission webhook "validate.pods.podrole.io" denied the request: podrole: kubectl exec into container "podrole-agent" of pod "victim" is refused: it holds the pod's credentials and, with --source=node, the capability that reaches the node's instance metadata service (the node role); exec into the app's container instead (kubectl exec victim -c <app container>)`
		if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) {
			t.Fatalf("exec into podrole-agent:\n got %v\nwant %s", err, want)
		}
		if err := connect("attach", contract.InitContainerName); err == nil || !strings.Contains(err.Error(), `kubectl attach into container "podrole-init" of pod "victim" is refused`) {
			t.Fatalf("attach to podrole-init: %v", err)
		}
		if err := connect("exec", "app"); err == nil || strings.Contains(err.Error(), "podrole") {
			t.Fatalf("exec into the app must pass admission and fail only for want of a node: %v", err)
		}
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(cctx, kubectl, "--kubeconfig="+cluster.Kubeconfig, "-n", "team-a", "exec", "victim", "-c", contract.AgentContainerName, "--", "id").CombinedOutput()
		ccancel()
		if err == nil || !strings.Contains(string(out), `kubectl exec into container "podrole-agent" of pod "victim" is refused`) {
			t.Fatalf("kubectl exec -c podrole-agent: %v\n%s", err, out)
		}
		t.Logf("kubectl exec -c podrole-agent shows: %s", strings.TrimSpace(string(out)))

		// kubectl set image pod/victim podrole-agent=...
		cctx, ccancel = context.WithTimeout(ctx, 30*time.Second)
		out, err = exec.CommandContext(cctx, kubectl, "--kubeconfig="+cluster.Kubeconfig, "-n", "team-a", "set", "image", "pod/victim", contract.AgentContainerName+"=registry.example/evil:1").CombinedOutput()
		ccancel()
		if err == nil || !strings.Contains(string(out), `denied the request: podrole: pod "victim": init container "podrole-agent" cannot be changed (kubectl set image and edits included)`) {
			t.Fatalf("kubectl set image on podrole-agent: %v\n%s", err, out)
		}
		t.Logf("kubectl set image pod/victim podrole-agent=... shows: %s", strings.TrimSpace(string(out)))
		cur, err := pods.Get(ctx, "victim", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.Containers[0].Image = "registry.example/app:2"
		if _, err := pods.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("set image on the app container: %v", err)
		}
		cur, err = pods.Get(ctx, "victim", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Labels = map[string]string{contract.LabelInject: contract.InjectDisabled}
		if _, err := pods.Update(ctx, cur, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "the label podrole.io/inject=disabled cannot be added") {
			t.Fatalf("relabelling an injected pod out of podrole: %v", err)
		}
		cur.Labels = nil
		delete(cur.Annotations, contract.AnnotationStatus)
		if _, err := pods.Update(ctx, cur, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "the podrole.io/status annotation cannot be removed") {
			t.Fatalf("removing podrole.io/status: %v", err)
		}

		// Route 5: a copy keeping podrole.io/status whose podrole-init reads
		// its flags from a ConfigMap (PODROLE_DRY_RUN=true would install
		// nothing) is refused by the mutating webhook; the same copy labelled
		// out of the mutating webhook is refused by the validating one.
		copyOf := func(name string) *corev1.Pod {
			cp := p.DeepCopy()
			cp.ObjectMeta = metav1.ObjectMeta{Name: name, Annotations: p.Annotations}
			cp.Status = corev1.PodStatus{}
			cp.Spec.InitContainers[0].EnvFrom = []corev1.EnvFromSource{{Prefix: "PODROLE_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "evil"}}}}
			return cp
		}
		_, err = pods.Create(ctx, copyOf("forged-envfrom"), metav1.CreateOptions{})
		want = `admission webhook "pods.podrole.io" denied the request: podrole: pod "forged-envfrom" carries podrole.io/status=injected but its podrole-init container's envFrom differs from the one podrole injects`
		if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) {
			t.Fatalf("forged copy:\n got %v\nwant %s...", err, want)
		}
		optedOut := copyOf("forged-opted-out")
		optedOut.Labels = map[string]string{contract.LabelInject: contract.InjectDisabled}
		_, err = pods.Create(ctx, optedOut, metav1.CreateOptions{})
		want = `admission webhook "validate.pods.podrole.io" denied the request: podrole: pod "forged-opted-out" is labelled podrole.io/inject=disabled but carries podrole's podrole.io/status annotation`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("forged copy labelled out of the mutating webhook:\n got %v\nwant %s...", err, want)
		}

		// In-tree admission plugins change podrole's containers after its
		// patch (they run again when a webhook changed the pod): a
		// LimitRange's default CPU limit, the ServiceAccount plugin's API
		// token mount. Such pods are admitted, and so is their re-creation.
		cluster.Namespace(ctx, t, "limited", map[string]string{contract.LabelInject: contract.InjectEnabled}, nil)
		if _, err := c.CoreV1().LimitRanges("limited").Create(ctx, &corev1.LimitRange{ObjectMeta: metav1.ObjectMeta{Name: "defaults"},
			Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{Type: corev1.LimitTypeContainer,
				Default: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		withToken := testPod("with-token", map[string]string{contract.AnnotationRole: "app"}, nil, func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = nil })
		lp, err := c.CoreV1().Pods("limited").Create(ctx, withToken, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("injected pod in a namespace with a LimitRange and a service-account token: %v", err)
		}
		agent := lp.Spec.InitContainers[1]
		// If these fail, the API server no longer re-runs its plugins after
		// a webhook's patch and the tolerance is untested, not wrong.
		if q := agent.Resources.Limits[corev1.ResourceCPU]; q.String() != "500m" || len(agent.VolumeMounts) != 1 {
			t.Errorf("LimitRanger and the ServiceAccount plugin did not change podrole-agent (cpu limit %q, mounts %v): this test no longer covers their changes", q.String(), agent.VolumeMounts)
		}
		again := lp.DeepCopy()
		again.ObjectMeta = metav1.ObjectMeta{Name: "with-token-again", Annotations: lp.Annotations}
		again.Status = corev1.PodStatus{}
		if _, err := c.CoreV1().Pods("limited").Create(ctx, again, metav1.CreateOptions{}); err != nil {
			t.Fatalf("re-creating it: %v", err)
		}
	})

	t.Run("certificate rotation under load", func(t *testing.T) {
		var created, failed atomic.Int64
		var firstErr atomic.Value
		stop := make(chan struct{})
		loadDone := make(chan struct{})
		go func() {
			defer close(loadDone)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p, err := c.CoreV1().Pods("team-a").Create(ctx, testPod(fmt.Sprintf("load-%d", i), map[string]string{contract.AnnotationRole: "app"}, nil, nil), metav1.CreateOptions{})
				if err == nil && p.Annotations[contract.AnnotationStatus] != contract.StatusInjected {
					err = fmt.Errorf("pod %s stored without injection", p.Name)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				created.Add(1)
			}
		}()
		roots := x509.NewCertPool()
		servedSerial := func() string {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots})
			if err != nil {
				return ""
			}
			defer conn.Close()
			return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
		}
		waitServed := func(serial string) {
			t.Helper()
			for servedSerial() != serial {
				select {
				case <-ctx.Done():
					t.Fatalf("webhook never served certificate %s", serial)
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
		waitCreated := func(n int64) {
			t.Helper()
			target := created.Load() + n
			for created.Load() < target {
				select {
				case <-ctx.Done():
					t.Fatalf("pods stopped being created: %d created, %d failed, first error %v", created.Load(), failed.Load(), firstErr.Load())
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		setBundle := func(bundle []byte) {
			t.Helper()
			mwc, err := mwcs.Get(ctx, "podrole-webhook", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			mwc.Webhooks[0].ClientConfig.CABundle = bundle
			if _, err := mwcs.Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			vwc, err := vwcs.Get(ctx, "podrole-webhook", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			vwc.Webhooks[0].ClientConfig.CABundle = bundle
			if _, err := vwcs.Update(ctx, vwc, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		roots.AddCert(ca1.Cert)
		waitServed(serial1)
		waitCreated(10)

		// Same CA, new leaf: nothing else changes.
		serial2 := writeServing(t, certDir, ca1)
		waitServed(serial2)
		waitCreated(10)

		// New CA, in the order an operator must follow: trust both, switch
		// the leaf, then drop the old CA.
		ca2, err := certs.NewCA("webhook-ca-2", time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		roots.AddCert(ca2.Cert)
		setBundle(append(append([]byte{}, ca1.CertPEM...), ca2.CertPEM...))
		waitCreated(10)
		serial3 := writeServing(t, certDir, ca2)
		waitServed(serial3)
		waitCreated(10)
		setBundle(ca2.CertPEM)
		waitCreated(20)
		close(stop)
		<-loadDone
		if failed.Load() != 0 {
			t.Fatalf("%d of %d pod creations failed during rotation; first: %v", failed.Load(), created.Load()+failed.Load(), firstErr.Load())
		}
		t.Logf("%d pods created and injected across two rotations (new leaf; new CA), none failed", created.Load())

		// The API server keeps using connections it already has after a
		// caBundle change, so the above cannot show that it verifies the new
		// certificate. Restart the webhook (all connections drop): pods must
		// still be injected, over new handshakes checked against the new
		// bundle alone. (Serving a leaf of the old CA here fails this.)
		stopAndWait()
		startWebhook()
		for i := range 5 {
			p, err := c.CoreV1().Pods("team-a").Create(ctx, testPod(fmt.Sprintf("after-restart-%d", i), map[string]string{contract.AnnotationRole: "app"}, nil, nil), metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("after restart with only the new CA trusted: %v", err)
			}
			if p.Annotations[contract.AnnotationStatus] != contract.StatusInjected {
				t.Fatalf("pod %s not injected", p.Name)
			}
		}
	})

	t.Run("fails closed without the webhook", func(t *testing.T) {
		stopAndWait()
		_, err := c.CoreV1().Pods("team-a").Create(ctx, testPod("no-webhook", map[string]string{contract.AnnotationRole: "app"}, nil, nil), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), `failed calling webhook "pods.podrole.io"`) {
			t.Fatalf("pod in a labelled namespace without the webhook: %v", err)
		}
		if _, err := c.CoreV1().Pods("plain").Create(ctx, testPod("no-webhook", nil, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Fatalf("pod in an unlabelled namespace must not depend on the webhook: %v", err)
		}
	})
}

// laterLabel selects the pods the later webhook changes: "harmless" gets a
// plain container, "net-admin" one that adds NET_ADMIN.
const laterLabel = "later-webhook"

type later struct {
	url   string
	caPEM []byte
	calls atomic.Int64
}

// laterWebhook serves a second mutating webhook, as a service mesh or log
// shipper injector would be, that appends a container to pods labelled
// laterLabel.
func laterWebhook(t *testing.T) *later {
	t.Helper()
	ca, err := certs.NewCA("later-ca", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Issue("later", []string{"127.0.0.1"}, nil, true, false, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := kp.TLS()
	if err != nil {
		t.Fatal(err)
	}
	l := &later{caPEM: ca.CertPEM}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.calls.Add(1)
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		var pod corev1.Pod
		if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
			http.Error(w, "bad pod", http.StatusBadRequest)
			return
		}
		c := corev1.Container{Name: "log-shipper", Image: "registry.example/shipper:1"}
		if pod.Labels[laterLabel] == "net-admin" {
			c = corev1.Container{Name: "mesh-proxy", Image: "registry.example/proxy:1",
				SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}}
		}
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		// Add once: the API server may call this webhook again too.
		if !slices.Contains(names(pod.Spec.Containers), c.Name) {
			patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/containers/-", "value": c}})
			pt := admissionv1.PatchTypeJSONPatch
			resp.Patch, resp.PatchType = patch, &pt
		}
		out, _ := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	l.url = srv.URL + "/mutate"
	return l
}
