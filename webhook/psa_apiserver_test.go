package main

import (
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podrole/podrole/certs"
	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/internal/kubetest"
	"github.com/podrole/podrole/internal/testenv"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// warnings collects the Warning headers the API server sends a client:
// what kubectl prints as "Warning: ...".
type warnings struct {
	mu   sync.Mutex
	seen []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, text)
}

// take returns the warnings seen since the last call.
func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.seen
	w.seen = nil
	return out
}

// restrictedPod is a pod that is itself restricted-compliant (non-root,
// no privilege escalation, every capability dropped, RuntimeDefault
// seccomp), with an app init container, asking for role "app".
func restrictedPod(name string) *corev1.Pod {
	sc := &corev1.SecurityContext{AllowPrivilegeEscalation: new(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{contract.AnnotationRole: "app"}},
		Spec: corev1.PodSpec{
			NodeName:                     "node-1",
			AutomountServiceAccountToken: new(false),
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: new(true), RunAsUser: new(int64(1000)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			InitContainers: []corev1.Container{{Name: "migrate", Image: "registry.example/migrate:1", SecurityContext: sc}},
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1", SecurityContext: sc.DeepCopy(),
				Env: []corev1.EnvVar{{Name: "AWS_REGION", Value: "eu-west-1"}}}},
		},
	}
}

// checkEnvMode asserts p was injected in env mode and returns the agent.
func checkEnvMode(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if got := names(p.Spec.InitContainers); strings.Join(got, ",") != contract.AgentContainerName+",migrate" {
		t.Errorf("%s: init containers %v, want [podrole-agent migrate] (no podrole-init in env mode)", p.Name, got)
	}
	if p.Annotations[contract.AnnotationMode] != contract.ModeEnv || p.Annotations[contract.AnnotationStatus] != contract.StatusInjected ||
		p.Annotations[contract.AnnotationRoleARN] != testBase+"app" {
		t.Errorf("%s: annotations %v", p.Name, p.Annotations)
	}
	for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
		if c.Name == contract.AgentContainerName {
			sc := c.SecurityContext
			if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != contract.DefaultSidecarUID || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
				len(sc.Capabilities.Add) != 0 || strings.Contains(strings.Join(c.Args, " "), "--agent-mark") {
				t.Errorf("%s: agent security context %+v args %v", p.Name, sc, c.Args)
			}
			continue
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env[contract.EnvMetadataEndpoint] != "http://127.0.0.1:9181/" || env[contract.EnvMetadataEndpointMode] != "IPv4" || env["AWS_REGION"] != "" && env["AWS_REGION"] != "eu-west-1" {
			t.Errorf("%s: container %s env %v", p.Name, c.Name, c.Env)
		}
	}
}

// TestPodSecurityAgainstAPIServer: in namespaces that enforce the
// restricted or baseline Pod Security Standard, a pod that is itself
// restricted-compliant and asks for a role is admitted by Pod Security
// admission after podrole's mutation (the API server runs PodSecurity
// after the mutating webhooks, on the patched pod), and so is the pod a
// Deployment's ReplicaSet creates from its template (a real
// kube-controller-manager runs the deployment and replicaset controllers).
// The same pod in redirect mode is refused by Pod Security (podrole-init),
// which is what env mode is for; users see podrole's env-mode warning.
func TestPodSecurityAgainstAPIServer(t *testing.T) {
	cluster := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	certDir := t.TempDir()
	ca, err := certs.NewCA("webhook-ca", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeServing(t, certDir, ca)
	addr := "127.0.0.1:" + strconv.Itoa(kubetest.FreePort(t))
	runWebhook(ctx, t, kubetest.FreePort(t), "--listen="+addr, "--cert-dir="+certDir, "--kubeconfig="+cluster.Kubeconfig,
		"--sidecar-image="+testImage, "--base-role-arn="+testBase, "--source=web-identity", "--region=eu-west-1")

	c := cluster.Client
	on := contract.LabelInject
	cluster.Namespace(ctx, t, "restricted", map[string]string{on: contract.InjectEnabled, contract.LabelPodSecurityEnforce: "restricted"}, nil)
	cluster.Namespace(ctx, t, "baseline", map[string]string{on: contract.InjectEnabled, contract.LabelPodSecurityEnforce: "baseline"}, nil)
	cluster.Namespace(ctx, t, "restricted-redirect", map[string]string{on: contract.InjectEnabled, contract.LabelPodSecurityEnforce: "restricted"},
		map[string]string{contract.AnnotationMode: contract.ModeRedirect})
	if _, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, webhookConfig(t, "https://"+addr+"/mutate", ca.CertPEM), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, validatingConfig(t, "https://"+addr+"/validate", ca.CertPEM), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	warned := &warnings{}
	wcfg := rest.CopyConfig(cluster.Config)
	wcfg.WarningHandler = warned
	wc, err := kubernetes.NewForConfig(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	// The API server picks webhook configurations up asynchronously.
	for {
		p, err := c.CoreV1().Pods("restricted").Create(ctx, restrictedPod("probe"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil && p.Annotations[contract.AnnotationStatus] == contract.StatusInjected {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("webhook never took effect: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}

	for _, ns := range []string{"restricted", "baseline"} {
		t.Run("pod in "+ns, func(t *testing.T) {
			warned.take()
			p, err := wc.CoreV1().Pods(ns).Create(ctx, restrictedPod("app"), metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("Pod Security (or podrole) refused the restricted-compliant pod in env mode: %v", err)
			}
			checkEnvMode(t, p)
			w := strings.Join(warned.take(), "\n")
			if !strings.Contains(w, "runs in env mode") || !strings.Contains(w, "HttpTokens=required") {
				t.Errorf("the client saw no env-mode warning: %q", w)
			}
			t.Logf("kubectl would print: Warning: %s", w)
			// Pod Security really enforces here: the same pod without
			// runAsNonRoot is refused in the restricted namespace.
			if ns == "restricted" {
				bad := restrictedPod("not-compliant")
				bad.Spec.SecurityContext.RunAsNonRoot = nil
				_, err := c.CoreV1().Pods(ns).Create(ctx, bad, metav1.CreateOptions{})
				if err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
					t.Errorf("a non-compliant pod in the restricted namespace: %v, want a PodSecurity refusal", err)
				}
			}
			// A pod without a role gets nothing, and a warning.
			none := restrictedPod("no-role")
			none.Annotations = nil
			p, err = wc.CoreV1().Pods(ns).Create(ctx, none, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("pod without a role: %v", err)
			}
			if got := names(p.Spec.InitContainers); strings.Join(got, ",") != "migrate" || len(p.Annotations) != 0 {
				t.Errorf("pod without a role was changed: init %v annotations %v", got, p.Annotations)
			}
			if w := strings.Join(warned.take(), "\n"); !strings.Contains(w, "asks for no role and runs in env mode") {
				t.Errorf("pod without a role: warnings %q", w)
			}
		})
	}

	t.Run("redirect mode is refused by Pod Security", func(t *testing.T) {
		_, err := c.CoreV1().Pods("restricted-redirect").Create(ctx, restrictedPod("app"), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "violates PodSecurity") || !strings.Contains(err.Error(), contract.InitContainerName) {
			t.Fatalf("redirect mode in a restricted namespace: %v, want Pod Security to refuse podrole-init", err)
		}
		t.Logf("without env mode the user sees: %v", err)
	})

	t.Run("deployment", func(t *testing.T) {
		kcm := testenv.KubeBinary(t, "kube-controller-manager")
		cmd := exec.Command(kcm, "--kubeconfig="+cluster.Kubeconfig, "--authentication-kubeconfig="+cluster.Kubeconfig,
			"--authorization-kubeconfig="+cluster.Kubeconfig, "--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(kubetest.FreePort(t)),
			"--leader-elect=false", "--controllers=deployment,replicaset", "--v=1")
		logs := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				l := logs.String()
				if len(l) > 6000 {
					l = l[len(l)-6000:]
				}
				t.Logf("--- kube-controller-manager log (tail)\n%s", l)
			}
		})
		for _, ns := range []string{"restricted", "baseline"} {
			tmpl := restrictedPod("")
			tmpl.Spec.NodeName = ""
			labels := map[string]string{"app": "web"}
			dep := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Name: "web"},
				Spec: appsv1.DeploymentSpec{
					Replicas: new(int32(2)),
					Selector: &metav1.LabelSelector{MatchLabels: labels},
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: tmpl.Annotations}, Spec: tmpl.Spec},
				},
			}
			warned.take()
			if _, err := wc.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
				t.Fatalf("%s: create Deployment: %v", ns, err)
			}
			// Pod Security checks workload templates too (warn mode follows
			// enforce): a compliant template draws no warning.
			if w := warned.take(); len(w) > 0 {
				t.Errorf("%s: creating the Deployment drew warnings %q", ns, w)
			}
			var pods *corev1.PodList
			for {
				var err error
				pods, err = c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
				if err == nil && len(pods.Items) == 2 {
					break
				}
				select {
				case <-ctx.Done():
					rs, _ := c.AppsV1().ReplicaSets(ns).List(context.Background(), metav1.ListOptions{})
					var conds []string
					if rs != nil {
						for _, r := range rs.Items {
							for _, cd := range r.Status.Conditions {
								conds = append(conds, string(cd.Type)+": "+cd.Message)
							}
						}
					}
					t.Fatalf("%s: the Deployment's pods were not created (%v): ReplicaSet conditions %q", ns, err, conds)
				case <-time.After(200 * time.Millisecond):
				}
			}
			for i := range pods.Items {
				checkEnvMode(t, &pods.Items[i])
			}
			t.Logf("%s: the ReplicaSet's pods %s and %s were admitted by Pod Security in env mode", ns, pods.Items[0].Name, pods.Items[1].Name)
		}
	})
}
