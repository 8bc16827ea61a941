//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podrole/podrole/internal/kubetest"
	"github.com/podrole/podrole/internal/testenv"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The suite installs podrole from the chart, as a user would with helm, with
// the values of the local cluster (e2e/values.yaml: local images, the AWS
// stand-ins' endpoints). The chart creates and owns podrole-system, so the
// release record lives in another namespace.
const (
	helmRelease   = "podrole"
	helmReleaseNS = "default"
)

// overlay is a kustomize directory to install instead of the chart
// (PODROLE_E2E_OVERLAY, e.g. a cert-manager variant), or "".
func (e *env) overlay() string { return os.Getenv("PODROLE_E2E_OVERLAY") }

// e2eOverlay is the kustomization that installs the same objects as the
// chart with e2e/values.yaml (charts/podrole_test.go proves it); make demo
// uses it.
func (e *env) e2eOverlay() string { return filepath.Join(e.root, "e2e", "manifests") }

// helmChart runs `helm install` or `helm upgrade` (verb) of the release
// from charts/podrole with e2e/values.yaml, as installCommand says.
func (e *env) helmChart(t testing.TB, verb string) (string, error) {
	t.Helper()
	return e.helm(t, verb, helmRelease, filepath.Join(e.root, "charts", "podrole"),
		"--namespace", helmReleaseNS, "--values", filepath.Join(e.root, "e2e", "values.yaml"), "--timeout", "2m")
}

// installCommand says how podrole is installed, for messages.
func (e *env) installCommand() string {
	if o := e.overlay(); o != "" {
		return "kubectl apply -k " + o
	}
	return "helm install " + helmRelease + " charts/podrole -f e2e/values.yaml --namespace " + helmReleaseNS
}

// helmBin is the helm CLI scripts/build-tools.sh builds into the cache
// (HELM overrides it).
func (e *env) helmBin(t testing.TB) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	p := filepath.Join(testenv.CacheDir(), "bin", "helm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the e2e suite installs podrole with helm, and %s is missing: run `make tools` "+
			"(scripts/build-tools.sh builds it from the Go module proxy), set HELM, or set "+
			"PODROLE_E2E_OVERLAY=e2e/manifests to install with kubectl apply -k", p)
	}
	return p
}

// helm runs the helm CLI against the cluster with a timeout and returns its
// combined output.
func (e *env) helm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args = append([]string{"--kubeconfig", e.kubeconfig}, args...)
	out, err := exec.CommandContext(ctx, e.helmBin(t), args...).CombinedOutput()
	if err != nil {
		err = fmt.Errorf("helm %s: %w: %s", strings.Join(args[2:], " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), err
}

// helmReleaseExists reports whether the release is recorded, whatever its
// state (deployed, failed, pending).
func (e *env) helmReleaseExists(t testing.TB) bool {
	t.Helper()
	out, err := e.helm(t, "list", "--namespace", helmReleaseNS, "--all", "--short", "--filter", "^"+helmRelease+"$")
	if err != nil {
		t.Fatalf("list helm releases: %v", err)
	}
	return strings.TrimSpace(out) != ""
}

// webhookDeployment names the Deployment(s) the install made.
func (e *env) webhookDeployments(t testing.TB) []string {
	t.Helper()
	out := strings.Fields(e.k(t, "-n", webhookNS, "get", "deployments", "-o", "name"))
	if len(out) == 0 {
		t.Fatalf("no Deployment in namespace %s after %s", webhookNS, e.installCommand())
	}
	return out
}

// install installs podrole like a user (helm install of the chart, or
// kubectl apply -k of PODROLE_E2E_OVERLAY), waits for the rollout, and then
// until the apiserver's calls to the webhook actually inject (a server-side
// dry run goes through the mutating webhooks and persists nothing).
func (e *env) install(t testing.TB) {
	t.Helper()
	start := time.Now()
	if o := e.overlay(); o != "" {
		if _, _, err := e.run(context.Background(), "", "apply", "-k", o); err != nil {
			// CRD-less kustomizations apply in one go; a second apply covers
			// objects whose namespace was created by the first.
			if _, _, err2 := e.run(context.Background(), "", "apply", "-k", o); err2 != nil {
				t.Fatalf("install: %v", err)
			}
		}
	} else {
		// No --wait: the rollout and the first injection are awaited below,
		// with the webhook's logs on failure.
		if _, err := e.helmChart(t, "install"); err != nil {
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
	t.Logf("installed with %s in %s", e.installCommand(), time.Since(start).Round(time.Millisecond))
}

// upgradeKeepsCABundles runs `helm upgrade` of the same chart and values, as a
// user upgrading would, and checks that it leaves the webhook configurations'
// caBundles as they were. In self-signed mode the webhook writes them and no
// template has them: if helm reset them, the API server could not call the
// webhook and every pod in a labelled namespace would be refused until the
// webhook wrote them again.
func (e *env) upgradeKeepsCABundles(t testing.TB) {
	t.Helper()
	bundles := func() []string {
		var out []string
		for _, kind := range []string{"mutatingwebhookconfiguration", "validatingwebhookconfiguration"} {
			b := e.k(t, "get", kind, "podrole-webhook", "-o", "jsonpath={.webhooks[*].clientConfig.caBundle}")
			if strings.TrimSpace(b) == "" {
				t.Fatalf("%s podrole-webhook has no caBundle although the webhook injects", kind)
			}
			out = append(out, kind+": "+b)
		}
		return out
	}
	before := bundles()
	if _, err := e.helmChart(t, "upgrade"); err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	after := bundles()
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("helm upgrade changed the caBundle:\nbefore %.120s...\nafter  %.120s...", before[i], after[i])
		}
	}
	e.waitInjecting(t, 30*time.Second)
	t.Logf("helm upgrade kept both caBundles and the webhook injects")
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

// uninstall removes podrole the way it was installed (helm uninstall, or
// kubectl delete -k of PODROLE_E2E_OVERLAY), waits for it to go, and checks
// that no object of the install is left, cluster-scoped ones included.
// podrole-system without a helm release is what make demo (kubectl apply -k
// e2e/manifests) or an interrupted run leaves: that overlay has the chart's
// objects, so it is deleted with kubectl.
func (e *env) uninstall(t testing.TB) {
	t.Helper()
	var installed []string
	switch {
	case e.overlay() != "":
		installed = e.objectNames(t, "kubectl kustomize "+e.overlay(), e.k(t, "kustomize", e.overlay()))
		e.kubectlDelete(t, e.overlay())
	case e.helmReleaseExists(t):
		manifest, err := e.helm(t, "get", "manifest", helmRelease, "--namespace", helmReleaseNS)
		if err != nil {
			t.Fatalf("uninstall: %v", err)
		}
		installed = e.objectNames(t, "helm get manifest", manifest)
		if _, err := e.helm(t, "uninstall", helmRelease, "--namespace", helmReleaseNS, "--wait", "--timeout", "2m"); err != nil {
			t.Fatalf("uninstall: %v", err)
		}
		if e.helmReleaseExists(t) {
			t.Errorf("helm uninstall left the release %s/%s recorded", helmReleaseNS, helmRelease)
		}
	default:
		t.Logf("podrole-system exists but helm has no release %s: deleting what kubectl apply -k e2e/manifests made", helmRelease)
		installed = e.objectNames(t, "kubectl kustomize e2e/manifests", e.k(t, "kustomize", e.e2eOverlay()))
		e.kubectlDelete(t, e.e2eOverlay())
	}
	e.waitFor(t, 120*time.Second, "namespace "+webhookNS+" to be gone", func() bool {
		_, _, err := e.run(context.Background(), "", "get", "namespace", webhookNS)
		return err != nil
	})
	// The namespace took its objects (and the self-signed Secret) with it;
	// this covers the cluster-scoped ones: RBAC and both webhook configurations.
	args := append([]string{"get", "--namespace", webhookNS, "--ignore-not-found", "--output", "name"}, installed...)
	if left := strings.TrimSpace(e.k(t, args...)); left != "" {
		t.Errorf("left behind after uninstall:\n%s", left)
	}
}

func (e *env) kubectlDelete(t testing.TB, kustomization string) {
	t.Helper()
	if _, _, err := e.run(context.Background(), "", "delete", "-k", kustomization, "--ignore-not-found", "--wait=true", "--timeout=120s"); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
}

// objectNames lists the objects of a manifest stream as kubectl get
// arguments (kind.group/name).
func (e *env) objectNames(t testing.TB, what, manifest string) []string {
	t.Helper()
	docs, err := kubetest.SplitYAML([]byte(manifest))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var names []string
	for _, doc := range docs {
		var obj metav1.PartialObjectMetadata
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, doc)
		}
		kind := strings.ToLower(obj.Kind)
		if group := obj.GroupVersionKind().Group; group != "" {
			kind += "." + group
		}
		names = append(names, kind+"/"+obj.Name)
	}
	if len(names) == 0 {
		t.Fatalf("%s: no objects", what)
	}
	return names
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
