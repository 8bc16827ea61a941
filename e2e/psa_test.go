//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Names of env mode (contract/contract.go; e2e imports no product code).
const (
	annMode          = "podrole.io/mode"
	labelPSAEnforce  = "pod-security.kubernetes.io/enforce"
	envEndpoint      = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
	envEndpointMode  = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"
	nodeIMDSGauge    = "podrole_node_imds_reachable"
	agentHealthPort  = 9182
	agentIMDSPort    = 9181
	psaRejectChain   = "podrole_e2e_psa_input" // in the harness's table (guardTable), removed after use
	nodeIMDSStandIn  = "1338"                  // IMDS_MOCK_PORT of e2e/cluster/lib.sh
	harnessBridge    = "cni0"                  // BRIDGE of e2e/cluster/lib.sh
	envModeWarning   = "runs in env mode"
	envModeRemedy    = "HttpTokens=required"
	restrictedUID    = 1000
	psaRolloutWindow = "120s"
)

// psaNamespace creates a labelled namespace that enforces a Pod Security
// level, with both labels in one object: the webhook must never see it
// without the enforce label (it would pick redirect mode, which Pod
// Security refuses).
func (e *env) psaNamespace(t testing.TB, prefix, level string) string {
	t.Helper()
	return e.namespaceWith(t, prefix, map[string]string{
		labelInject: "enabled", labelPSAEnforce: level, "pod-security.kubernetes.io/warn": level,
	}, nil)
}

// restrictedSpec is a pod spec that is itself restricted-compliant: non-root,
// no privilege escalation, every capability dropped, RuntimeDefault seccomp.
// indent prefixes every line (a pod's spec, or a Deployment's template's).
func (e *env) restrictedSpec(indent string) string {
	s := fmt.Sprintf(`dnsPolicy: Default
terminationGracePeriodSeconds: 2
securityContext:
  runAsNonRoot: true
  runAsUser: %d
  runAsGroup: %d
  seccompProfile: {type: RuntimeDefault}
containers:
- name: app
  image: %s
  imagePullPolicy: Never
  command: ["/app", "run"]
  env:
  - {name: AWS_REGION, value: us-east-1}
  - {name: AWS_ENDPOINT_URL_STS, value: %q}
  securityContext:
    allowPrivilegeEscalation: false
    capabilities: {drop: [ALL]}
`, restrictedUID, restrictedUID, appImage, e.stsURL)
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		b.WriteString(indent + l + "\n")
	}
	return b.String()
}

func (e *env) restrictedPodYAML(ns, name, role string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n  annotations: {%q: %q}\nspec:\n%s",
		name, ns, annRole, role, e.restrictedSpec("  "))
}

// envPod is what the test reads of an env-mode pod.
type envPod struct {
	Metadata struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		InitContainers []envContainer `json:"initContainers"`
		Containers     []envContainer `json:"containers"`
	} `json:"spec"`
}

type envContainer struct {
	Name            string `json:"name"`
	Args            []string
	Env             []struct{ Name, Value string } `json:"env"`
	SecurityContext *struct {
		RunAsUser    *int64 `json:"runAsUser"`
		RunAsNonRoot *bool  `json:"runAsNonRoot"`
		Capabilities *struct {
			Add []string `json:"add"`
		} `json:"capabilities"`
	} `json:"securityContext"`
}

// checkEnvModePod asserts the stored pod is podrole's env-mode injection:
// no podrole-init, a non-root agent without capability or mark, podrole.io/mode
// env, and the app pointed at the agent.
func (e *env) checkEnvModePod(t *testing.T, ns, name string) {
	t.Helper()
	var p envPod
	if err := json.Unmarshal([]byte(e.k(t, "-n", ns, "get", "pod", name, "-o", "json")), &p); err != nil {
		t.Fatal(err)
	}
	a := p.Metadata.Annotations
	if a[annMode] != "env" || a[annStatus] != "injected" || a[annRoleARN] != roleARN("e2e-role-a") {
		t.Errorf("%s: annotations %v, want %s=env, %s=injected", name, a, annMode, annStatus)
	}
	var agent *envContainer
	for i, c := range p.Spec.InitContainers {
		switch c.Name {
		case initName:
			t.Errorf("%s: has %s in env mode", name, initName)
		case agentName:
			agent = &p.Spec.InitContainers[i]
		}
	}
	if agent == nil {
		t.Fatalf("%s: no %s", name, agentName)
	}
	sc := agent.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != sidecarUID || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		(sc.Capabilities != nil && len(sc.Capabilities.Add) > 0) {
		t.Errorf("%s: agent securityContext %+v, want non-root %d with no capability", name, sc, sidecarUID)
	}
	if args := strings.Join(agent.Args, " "); strings.Contains(args, "--agent-mark") || !strings.Contains(args, "--source=web-identity") {
		t.Errorf("%s: agent args %q", name, args)
	}
	for _, c := range p.Spec.Containers {
		env := map[string]string{}
		for _, v := range c.Env {
			env[v.Name] = v.Value
		}
		if env[envEndpoint] != fmt.Sprintf("http://127.0.0.1:%d/", agentIMDSPort) || env[envEndpointMode] != "IPv4" {
			t.Errorf("%s: container %s env %v, want %s and %s", name, c.Name, c.Env, envEndpoint, envEndpointMode)
		}
	}
}

// checkRole asserts the app of pod gets role through the SDK's default chain.
func (e *env) checkRole(t *testing.T, ns, pod, role string) {
	t.Helper()
	r := e.creds(t, ns, pod, "app")
	if !r.OK || r.Role != role || !strings.HasPrefix(r.CallerARN, assumedPrefix(role)) || r.AccessKeyID == e.nodeAKID {
		t.Fatalf("%s/%s: the SDK's default chain got %+v, want role %s", ns, pod, r, role)
	}
	if r.Source != "EC2RoleProvider" {
		t.Errorf("%s/%s: credentials source %q, want EC2RoleProvider (the instance-role path, via %s)", ns, pod, r.Source, envEndpoint)
	}
	t.Logf("%s/%s: app got role %s (caller %s, %d ms) via %s", ns, pod, r.Role, r.CallerARN, r.Millis, envEndpoint)
}

var gaugeLine = regexp.MustCompile(`(?m)^` + nodeIMDSGauge + `\{version="(v[12])"\} ([0-9.e+-]+)$`)

// nodeIMDSGaugeOf reads podrole_node_imds_reachable from the pod's agent:
// its /metrics on the health port, through the apiserver's pod proxy (the
// apiserver runs on the node, which reaches pod addresses, as the kubelet's
// probes do). ok is false when the agent has no such metric (the sidecar
// predates it, or never ran it). The check runs at the agent's start; it is
// waited for, 30 s at most.
func (e *env) nodeIMDSGaugeOf(t *testing.T, ns, pod string) (map[string]string, bool) {
	t.Helper()
	path := fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:%d/proxy/metrics", ns, pod, agentHealthPort)
	deadline := time.Now().Add(30 * time.Second)
	for {
		body := e.k(t, "get", "--raw", path)
		got := map[string]string{}
		for _, m := range gaugeLine.FindAllStringSubmatch(body, -1) {
			got[m[1]] = m[2]
		}
		if len(got) > 0 {
			return got, true
		}
		// A gauge without values is not exported at all: absent means the
		// check has not finished yet, or this agent has none.
		if time.Now().After(deadline) {
			return nil, false
		}
		time.Sleep(time.Second)
	}
}

// nft runs nft with a script on stdin.
func nft(t *testing.T, script string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f - <<%q: %w: %s", script, err, out)
	}
	return nil
}

// rejectNodeIMDSStandIn makes the node's IMDS stand-in unreachable from
// pods: a chain of its own in the harness's table rejects pod traffic (from
// cni0) to the gateway's port 1338. The returned func removes the chain; it
// also runs at cleanup, so the rule goes even when the test fails.
func rejectNodeIMDSStandIn(t *testing.T) (remove func()) {
	t.Helper()
	drop := fmt.Sprintf("flush chain inet %s %s\ndelete chain inet %s %s\n", guardTable, psaRejectChain, guardTable, psaRejectChain)
	_ = nft(t, drop) // a chain left by a killed run
	add := fmt.Sprintf(`add chain inet %s %s { type filter hook input priority filter - 10; policy accept; }
add rule inet %s %s iifname %q ip daddr %s tcp dport %s counter reject with tcp reset
`, guardTable, psaRejectChain, guardTable, psaRejectChain, harnessBridge, gateway, nodeIMDSStandIn)
	if err := nft(t, add); err != nil {
		t.Fatal(err)
	}
	done := false
	remove = func() {
		if done {
			return
		}
		done = true
		if err := nft(t, drop); err != nil {
			t.Errorf("removing the test's reject chain: %v", err)
		}
	}
	t.Cleanup(remove)
	return remove
}

// Scenario 13: namespaces that enforce the baseline and restricted Pod
// Security Standards. podrole (web identity, --mode=auto) injects only a
// restricted-compliant agent and points the app at it with
// AWS_EC2_METADATA_SERVICE_ENDPOINT (env mode); Pod Security admits the pod
// (it runs after the mutating webhooks, on the patched pod); the pod gets
// Ready; the app gets its role through the SDK's default chain; kubectl
// prints podrole's env-mode warning; a Deployment's pods work the same. If
// the agent exports podrole_node_imds_reachable, it must say the truth both
// ways: the stand-in node IMDS answers pods here (1), and with a rule
// rejecting pod traffic to it (0).
func (e *env) scenarioPodSecurityEnvMode(t *testing.T) {
	undo := e.withWebhookEnv(t, "PODROLE_SOURCE", "web-identity")
	defer func() {
		undo()
		e.waitInjecting(t, 90*time.Second)
	}()
	e.waitInjecting(t, 90*time.Second)

	// Made here, not in the subtests: later subtests use them, and a
	// namespace goes when the test that made it ends.
	namespaces := map[string]string{}
	for _, level := range []string{"baseline", "restricted"} {
		namespaces[level] = e.psaNamespace(t, "s13-"+level, level)
	}
	for _, level := range []string{"baseline", "restricted"} {
		t.Run(level, func(t *testing.T) {
			ns := namespaces[level]
			_, stderr, err := e.run(context.Background(), e.restrictedPodYAML(ns, "app", "e2e-role-a"), "apply", "-f", "-")
			t.Logf("$ kubectl apply -f app.yaml  (namespace %s enforces %s)\n%s", ns, level, strings.TrimSpace(stderr))
			if err != nil {
				t.Fatalf("the restricted-compliant pod was refused: %v", err)
			}
			if !strings.Contains(stderr, envModeWarning) || !strings.Contains(stderr, envModeRemedy) {
				t.Errorf("kubectl printed no env-mode warning naming %s: %q", envModeRemedy, stderr)
			}
			if strings.Contains(stderr, "would violate PodSecurity") {
				t.Errorf("Pod Security warned about the injected pod: %q", stderr)
			}
			e.waitReady(t, ns, "app")
			e.checkEnvModePod(t, ns, "app")
			e.checkRole(t, ns, "app", "e2e-role-a")
		})
	}

	t.Run("deployment-restricted", func(t *testing.T) {
		ns := namespaces["restricted"]
		dep := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: %s}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {%q: e2e-role-a}
    spec:
%s`, ns, annRole, e.restrictedSpec("      "))
		_, stderr, err := e.run(context.Background(), dep, "apply", "-f", "-")
		if err != nil {
			t.Fatalf("Deployment: %v", err)
		}
		if strings.Contains(stderr, "would violate PodSecurity") {
			t.Errorf("Pod Security warned about the Deployment's template: %q", stderr)
		}
		if _, _, err := e.run(context.Background(), "", "-n", ns, "rollout", "status", "deployment/web", "--timeout="+psaRolloutWindow); err != nil {
			events, _, _ := e.run(context.Background(), "", "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
			t.Fatalf("the Deployment did not roll out (Pod Security or podrole refused its pod?): %v\n%s", err, events)
		}
		pod := strings.TrimSpace(e.k(t, "-n", ns, "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"))
		e.waitReady(t, ns, pod)
		e.checkEnvModePod(t, ns, pod)
		e.checkRole(t, ns, pod, "e2e-role-a")
	})

	t.Run("node-imds-reachable-gauge", func(t *testing.T) {
		ns := namespaces["restricted"]
		got, ok := e.nodeIMDSGaugeOf(t, ns, "app")
		if !ok {
			t.Skipf("the agent exports no %s (the sidecar predates the node IMDS check)", nodeIMDSGauge)
		}
		t.Logf("stand-in node IMDS reachable from pods: %s %v", nodeIMDSGauge, got)
		if got["v1"] != "1" && got["v2"] != "1" {
			t.Errorf("%s = %v with the stand-in node IMDS reachable from pods at %s:%s, want 1", nodeIMDSGauge, got, gateway, nodeIMDSStandIn)
		}

		remove := rejectNodeIMDSStandIn(t)
		e.apply(t, e.restrictedPodYAML(ns, "closed", "e2e-role-a"))
		e.waitReady(t, ns, "closed")
		got, _ = e.nodeIMDSGaugeOf(t, ns, "closed")
		remove()
		t.Logf("stand-in node IMDS rejected for pods: %s %v", nodeIMDSGauge, got)
		if got["v1"] != "0" || got["v2"] != "0" {
			t.Errorf("%s = %v with pod traffic to the stand-in rejected, want 0 for v1 and v2", nodeIMDSGauge, got)
		}
		// The app still gets its role: web identity asks the node nothing.
		e.checkRole(t, ns, "closed", "e2e-role-a")
	})
}
