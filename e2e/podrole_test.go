//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPodrole installs podrole into the running cluster, runs every scenario
// against it in a fixed order, uninstalls it, and checks the host was left as
// it was found. Subtests share the one installation; each makes its own
// namespaces. `-run 'TestPodrole/^1-'` runs one scenario (install and uninstall
// still happen around it).
func TestPodrole(t *testing.T) {
	e := loadEnv(t)
	if _, _, err := e.run(context.Background(), "", "get", "namespace", webhookNS); err == nil {
		t.Log("a previous run left podrole installed: uninstalling first")
		e.uninstall(t)
	}
	fwBefore, socksBefore := snapshotFirewall(t), listeningSockets(t)
	e.install(t)
	if e.overlay() == "" { // installed with helm: a user's next step is an upgrade
		e.upgradeKeepsCABundles(t)
	}

	t.Run("1-annotated-pod-gets-its-role", e.scenarioInjection)
	t.Run("2-each-pod-only-its-own-role", e.scenarioIsolation)
	t.Run("4-host-untouched-while-pods-run", func(t *testing.T) {
		ns := e.namespace(t, "s4", true, nil)
		e.startPod(t, podSpec{name: "a", ns: ns, role: "e2e-role-a"})
		e.startPod(t, podSpec{name: "blocked", ns: ns})
		e.checkHostUnchanged(t, fwBefore, socksBefore)
		// Nor does any pod podrole made or changed ask for a host port.
		if all := e.k(t, "get", "pods", "-A", "-o", "json"); strings.Contains(all, `"hostPort"`) {
			t.Errorf("a pod declares a hostPort")
		}
	})
	t.Run("7-denials-as-kubectl-shows-them", e.scenarioDenials)
	t.Run("5-first-imds-call-at-start-succeeds", e.scenarioFirstCall)
	t.Run("6-job-with-injected-pod-completes", e.scenarioJob)
	t.Run("3-no-path-leaks-the-node-role", e.scenarioNoLeak)
	t.Run("8a-webhook-down-fails-closed", e.scenarioWebhookDown)
	t.Run("8b-sts-outage-serves-cache-and-recovers", e.scenarioSTSOutage)
	t.Run("8c-webhook-cert-rotation", e.scenarioCertRotation)
	t.Run("9-web-identity-verified-against-apiserver-jwks", e.scenarioWebIdentity)
	// e2e/hostile_test.go: the hostile workload and the Kubernetes API routes.
	t.Run("10-hostile-pods-contained", e.scenarioHostilePods)
	t.Run("11-hostile-kubernetes-api-routes", e.scenarioHostileAPI)
	t.Run("12-hostile-pods-contained-web-identity", e.scenarioHostilePodsWebIdentity)
	t.Run("13-pod-security-env-mode", e.scenarioPodSecurityEnvMode) // e2e/psa_test.go
	t.Run("14-session-tags-reach-sts", e.scenarioSessionTags)       // e2e/sessiontags_test.go

	e.uninstall(t)
	t.Run("4-host-untouched-after-uninstall", func(t *testing.T) {
		e.checkHostUnchanged(t, fwBefore, socksBefore)
	})
}

// Scenario 1: an annotated pod in a labelled namespace gets podrole-init and
// podrole-agent, and the app gets the role's credentials through
// 169.254.169.254 with IMDSv2 and IMDSv1; STS (the double) confirms who it is.
func (e *env) scenarioInjection(t *testing.T) {
	ns := e.namespace(t, "s1", true, nil)
	p := e.startPod(t, podSpec{name: "app", ns: ns, role: "e2e-app"})

	desc := e.k(t, "-n", ns, "describe", "pod", "app")
	for _, want := range []string{"  " + initName + ":", "  " + agentName + ":", "  app:"} {
		if !strings.Contains(desc, want) {
			t.Errorf("kubectl describe pod lacks %q:\n%s", want, desc)
		}
	}
	t.Logf("kubectl describe pod (containers):\n%s", describeExcerpt(desc))
	if got := p.initNames(); len(got) < 2 || got[0] != initName || got[1] != agentName {
		t.Errorf("init containers = %v, want %s then %s first", got, initName, agentName)
	}
	if rp := p.Spec.InitContainers[1].RestartPolicy; rp != "Always" {
		t.Errorf("%s restartPolicy = %q, want Always (a native sidecar)", agentName, rp)
	}
	if got := p.Metadata.Annotations[annStatus]; got != "injected" {
		t.Errorf("annotation %s = %q, want injected", annStatus, got)
	}
	if got := p.Metadata.Annotations[annRoleARN]; got != roleARN("e2e-app") {
		t.Errorf("annotation %s = %q, want %s", annRoleARN, got, roleARN("e2e-app"))
	}

	r := e.creds(t, ns, "app", "app")
	if !r.OK {
		t.Fatalf("the SDK's default chain failed in the pod: %s", r.Error)
	}
	t.Logf("app got AccessKeyId %s for role %q; sts:GetCallerIdentity = %s (%d ms)", r.AccessKeyID, r.Role, r.CallerARN, r.Millis)
	if r.Role != "e2e-app" || !strings.HasPrefix(r.CallerARN, assumedPrefix("e2e-app")) {
		t.Errorf("role %q, caller %q: want e2e-app and %s...", r.Role, r.CallerARN, assumedPrefix("e2e-app"))
	}
	if r.AccessKeyID == e.nodeAKID {
		t.Fatalf("the app got the node role's AccessKeyId")
	}
	if r.Source != "EC2RoleProvider" {
		t.Errorf("credentials source = %q, want EC2RoleProvider (the instance-role path of the SDK)", r.Source)
	}
	for _, mode := range [][]string{nil, {"-v1"}} {
		name := "IMDSv2"
		if mode != nil {
			name = "IMDSv1"
		}
		list := e.imds(t, ns, "app", "app", append(mode, "/latest/meta-data/iam/security-credentials/")...)
		if list.Status != 200 || strings.TrimSpace(list.Body) != "e2e-app" {
			t.Errorf("%s role listing = %d %q, want 200 e2e-app (%s)", name, list.Status, list.Body, list.Error)
		}
		doc := e.imds(t, ns, "app", "app", append(mode, "/latest/meta-data/iam/security-credentials/e2e-app")...)
		var c struct{ Code, AccessKeyId, Type string }
		if doc.Status != 200 || json.Unmarshal([]byte(doc.Body), &c) != nil || c.Code != "Success" || c.AccessKeyId != r.AccessKeyID {
			t.Errorf("%s credentials = %d %s (%s), want 200 Success with AccessKeyId %s", name, doc.Status, doc.Body, doc.Error, r.AccessKeyID)
		}
	}
	// The pods of this cluster are dual-stack: the IPv6 endpoint serves the
	// same role through podrole-init's IPv6 redirect.
	v6 := e.imds(t, ns, "app", "app", "-endpoint", "http://[fd00:ec2::254]", "/latest/meta-data/iam/security-credentials/")
	if v6.Status != 200 || strings.TrimSpace(v6.Body) != "e2e-app" {
		t.Errorf("IPv6 endpoint role listing = %d %q (%s), want 200 e2e-app", v6.Status, v6.Body, v6.Error)
	}
	// The credentials are the double's, issued by AssumeRole for this role.
	var issued []struct {
		AccessKeyID string `json:"access_key_id"`
		Action      string `json:"action"`
	}
	if err := json.Unmarshal(e.double(t, "GET", "/_double/issued?role="+roleARN("e2e-app")), &issued); err != nil {
		t.Fatalf("decode /_double/issued: %v", err)
	}
	found := false
	for _, i := range issued {
		found = found || i.AccessKeyID == r.AccessKeyID
	}
	if !found {
		t.Errorf("the STS double never issued %s for %s (issued: %+v)", r.AccessKeyID, roleARN("e2e-app"), issued)
	}
}

// describeExcerpt keeps the container names and their images/args from
// kubectl describe, which is what a user looks at.
func describeExcerpt(desc string) string {
	var out []string
	keep := regexp.MustCompile(`^(Init Containers:|Containers:|  [a-z0-9-]+:$|    Image:|    Args:|      (serve|init|--)|    Restart Policy:|    State:)`)
	for _, l := range strings.Split(desc, "\n") {
		if strings.HasPrefix(l, "Conditions:") || strings.HasPrefix(l, "Volumes:") {
			break
		}
		if keep.MatchString(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Scenario 2: two pods with two roles each get only their own; a pod that
// asks for no role in a labelled namespace gets only the blocking init step
// and no credentials, quickly; a pod in an unlabelled namespace is untouched.
func (e *env) scenarioIsolation(t *testing.T) {
	ns := e.namespace(t, "s2", true, nil)
	specs := []podSpec{{name: "pod-a", ns: ns, role: "e2e-role-a"}, {name: "pod-b", ns: ns, role: "e2e-role-b"}, {name: "no-role", ns: ns}}
	for _, s := range specs {
		e.apply(t, s.yaml(e))
	}
	for _, s := range specs {
		e.waitReady(t, s.ns, s.name)
	}
	ra, rb := e.creds(t, ns, "pod-a", "app"), e.creds(t, ns, "pod-b", "app")
	for _, c := range []struct {
		pod  string
		r    credsResult
		role string
	}{{"pod-a", ra, "e2e-role-a"}, {"pod-b", rb, "e2e-role-b"}} {
		if !c.r.OK || c.r.Role != c.role || !strings.HasPrefix(c.r.CallerARN, assumedPrefix(c.role)) {
			t.Errorf("%s: got %+v, want role %s", c.pod, c.r, c.role)
		}
		t.Logf("%s got role %s (caller %s)", c.pod, c.r.Role, c.r.CallerARN)
	}
	if ra.AccessKeyID == rb.AccessKeyID || ra.AccessKeyID == e.nodeAKID || rb.AccessKeyID == e.nodeAKID {
		t.Errorf("AccessKeyIds not distinct: a=%s b=%s", ra.AccessKeyID, rb.AccessKeyID)
	}
	// Asking pod A's agent for role B by name gets nothing.
	for _, mode := range [][]string{nil, {"-v1"}} {
		r := e.imds(t, ns, "pod-a", "app", append(mode, "/latest/meta-data/iam/security-credentials/e2e-role-b")...)
		if r.Status == 200 || strings.Contains(r.Body, "AccessKeyId") {
			t.Errorf("pod A asked for role B: %d %s", r.Status, r.Body)
		}
	}

	np := e.getPod(t, ns, "no-role")
	if got := np.initNames(); len(got) != 1 || got[0] != initName {
		t.Errorf("pod without a role: init containers %v, want only %s", got, initName)
	} else if args := strings.Join(append(np.Spec.InitContainers[0].Command, np.Spec.InitContainers[0].Args...), " "); !strings.Contains(args, "--block") {
		t.Errorf("pod without a role: %s runs %q, want the --block mode", initName, args)
	}
	nr := e.creds(t, ns, "no-role", "app")
	t.Logf("pod without a role: creds ok=%v after %d ms: %s", nr.OK, nr.Millis, nr.Error)
	if nr.OK || nr.AccessKeyID != "" {
		t.Errorf("pod without a role got credentials %s", nr.AccessKeyID)
	}
	// Fast failure: metadata traffic is rejected, not left to time out.
	if strings.Contains(nr.Error, "timeout") || strings.Contains(nr.Error, "deadline") {
		t.Errorf("pod without a role: metadata call timed out instead of being refused: %s", nr.Error)
	}

	for _, ep := range []string{"http://169.254.169.254", "http://[fd00:ec2::254]"} {
		r := e.imds(t, ns, "no-role", "app", "-v1", "-endpoint", ep, "/latest/meta-data/")
		if r.Status != 0 || !strings.Contains(r.Error, "refused") {
			t.Errorf("pod without a role, %s: %d %q %s, want the connection refused", ep, r.Status, r.Body, r.Error)
		}
	}

	un := e.namespace(t, "s2-unlabelled", false, nil)
	u := e.startPod(t, podSpec{name: "untouched", ns: un, role: "e2e-role-a"})
	if len(u.Spec.InitContainers) != 0 || u.Metadata.Annotations[annStatus] != "" {
		t.Errorf("pod in an unlabelled namespace was changed: init %v, annotations %v", u.initNames(), u.Metadata.Annotations)
	}
	ur := e.creds(t, un, "untouched", "app")
	if ur.OK || ur.AccessKeyID == e.nodeAKID {
		t.Errorf("pod in an unlabelled namespace got credentials: %+v", ur)
	}
}

// checkHostUnchanged compares the host's firewall (three views) and its
// listening sockets with the snapshot taken before podrole was installed.
func (e *env) checkHostUnchanged(t *testing.T, fw firewall, socks []string) {
	now := snapshotFirewall(t)
	for _, c := range []struct{ name, before, after string }{
		{"iptables-save", fw.iptables, now.iptables},
		{"iptables-legacy-save", fw.legacy, now.legacy},
		{"nft list ruleset", fw.nft, now.nft},
	} {
		if c.before != c.after {
			t.Errorf("host %s changed:\n%s", c.name, diffLines(c.before, c.after))
		} else {
			t.Logf("host %s: identical (%d lines)", c.name, strings.Count(c.after, "\n"))
		}
	}
	if d := diffLines(strings.Join(socks, "\n"), strings.Join(listeningSockets(t), "\n")); d != "" {
		t.Errorf("host listening sockets changed:\n%s", d)
	}
}

// Scenario 7: pods podrole cannot protect are refused at admission with a
// message saying why and what to do.
func (e *env) scenarioDenials(t *testing.T) {
	ns := e.namespace(t, "s7", true, map[string]string{annAllowed: `["e2e-role-a"]`})
	cases := []struct {
		name string
		spec podSpec
		want []string
	}{
		{"hostNetwork", podSpec{name: "hostnet", ns: ns, role: "e2e-role-a", hostNetwork: true}, []string{"hostNetwork"}},
		{"role not allowed in namespace", podSpec{name: "notallowed", ns: ns, role: "e2e-role-b"}, []string{"e2e-role-b", "not allowed"}},
		{"malformed role", podSpec{name: "malformed", ns: ns, role: "arn:aws:iam::12:role/x y"}, []string{"malformed"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := e.tryApply(c.spec.yaml(e))
			t.Logf("$ kubectl apply -f %s.yaml\n%s", c.spec.name, strings.TrimSpace(out))
			if err == nil {
				t.Fatalf("pod was admitted")
			}
			for _, w := range append([]string{"denied the request", "podrole:"}, c.want...) {
				if !strings.Contains(out, w) {
					t.Errorf("kubectl output lacks %q", w)
				}
			}
			if _, _, err := e.run(context.Background(), "", "-n", ns, "get", "pod", c.spec.name); err == nil {
				t.Errorf("a refused pod exists")
			}
		})
	}
	// The allowed role in the same namespace is admitted.
	e.startPod(t, podSpec{name: "allowed", ns: ns, role: "e2e-role-a"})
	// So is an app running as the agent's UID: the redirect exempts a socket
	// mark, not a UID, so that UID gets the pod's role like any other
	// (scenario 10 tries every route as it).
	e.startPod(t, podSpec{name: "sameuid", ns: ns, role: "e2e-role-a", runAsUser: sidecarUID})
	if r := e.creds(t, ns, "sameuid", "app"); !r.OK || r.Role != "e2e-role-a" || r.AccessKeyID == e.nodeAKID {
		t.Errorf("an app running as UID %d: %+v, want the pod's role e2e-role-a", sidecarUID, r)
	}
}

// Scenario 5: the app's very first IMDS call, made the instant its container
// starts, already gets the role (the agent reports started only with
// credentials cached, and the app starts after it).
func (e *env) scenarioFirstCall(t *testing.T) {
	ns := e.namespace(t, "s5", true, nil)
	const n = 3
	for i := range n {
		e.apply(t, podSpec{name: fmt.Sprintf("first-%d", i), ns: ns, role: "e2e-app"}.yaml(e))
	}
	for i := range n {
		name := fmt.Sprintf("first-%d", i)
		e.waitReady(t, ns, name)
		var line string
		e.waitFor(t, 30*time.Second, "the first-call line in "+name+"'s log", func() bool {
			out, _, err := e.run(context.Background(), "", "-n", ns, "logs", name, "-c", "app")
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "first-call: ") {
					line = strings.TrimPrefix(l, "first-call: ")
				}
			}
			return err == nil && line != ""
		})
		var r credsResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: first-call line %q: %v", name, line, err)
		}
		if !r.OK || r.Role != "e2e-app" {
			t.Errorf("%s: the first call at container start failed: %+v", name, r)
		} else {
			t.Logf("%s: first call at start got %s in %d ms", name, r.Role, r.Millis)
		}
	}
}

// Scenario 6: a Job whose pod is injected completes (the native sidecar does
// not keep it running).
func (e *env) scenarioJob(t *testing.T) {
	ns := e.namespace(t, "s6", true, nil)
	e.apply(t, fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata: {name: job, namespace: %s}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 120
  template:
    metadata:
      annotations: {%q: e2e-job}
    spec:
      restartPolicy: Never
      dnsPolicy: Default
      containers:
      - name: app
        image: %s
        imagePullPolicy: Never
        command: ["/app", "once"]
        env:
        - {name: AWS_REGION, value: us-east-1}
        - {name: AWS_ENDPOINT_URL_STS, value: %q}
`, ns, annRole, appImage, e.stsURL))
	if _, _, err := e.run(context.Background(), "", "-n", ns, "wait", "--for=condition=Complete", "job/job", "--timeout=120s"); err != nil {
		desc, _, _ := e.run(context.Background(), "", "-n", ns, "describe", "pods")
		t.Fatalf("job did not complete: %v\n%s", err, desc)
	}
	out := e.k(t, "-n", ns, "logs", "job/job", "-c", "app")
	if !strings.Contains(out, `"ok":true`) || !strings.Contains(out, `"role":"e2e-job"`) {
		t.Errorf("job's app output: %s", out)
	}
	var pods struct{ Items []pod }
	if err := json.Unmarshal([]byte(e.k(t, "-n", ns, "get", "pods", "-l", "job-name=job", "-o", "json")), &pods); err != nil || len(pods.Items) != 1 {
		t.Fatalf("job pods: %v (%d)", err, len(pods.Items))
	}
	if !contains(pods.Items[0].initNames(), agentName) {
		t.Errorf("job pod was not injected: %v", pods.Items[0].initNames())
	}
	t.Logf("job completed; pod phase %s", pods.Items[0].Status.Phase)
}

// Scenario 3: no request an app can make yields the node role's credentials
// or the node's user-data: other role names, user-data, the -extended path,
// X-Forwarded-For, the IPv6 endpoint, or running as another UID.
func (e *env) scenarioNoLeak(t *testing.T) {
	ns := e.namespace(t, "s3", true, nil)
	e.startPod(t, podSpec{name: "app", ns: ns, role: "e2e-app", extraContainer: true})
	node := e.nodeRole
	markerB64 := base64.StdEncoding.EncodeToString([]byte("# " + e.marker))
	probes := [][]string{
		{"/latest/meta-data/iam/security-credentials/" + node},
		{"/latest/meta-data/iam/security-credentials/e2e-role-b"},
		{"/latest/meta-data/iam/security-credentials-extended/" + node},
		{"/latest/meta-data/iam/security-credentials-extended/e2e-app"},
		{"/latest/meta-data/iam/security-credentials/e2e-app/../" + node},
		{"/latest/meta-data/iam/security-credentials//" + node},
		{"/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance"},
		{"/latest/user-data"},
		{"/latest/user-data/"},
		{"/2009-04-04/user-data"},
		{"/latest/meta-data/iam/info"},
		{"-H", "X-Forwarded-For: 127.0.0.1", "/latest/meta-data/iam/security-credentials/" + node},
		{"-H", "X-Forwarded-For: 10.244.0.1", "/latest/user-data"},
		{"-endpoint", "http://[fd00:ec2::254]", "/latest/meta-data/iam/security-credentials/" + node},
		{"-endpoint", "http://[fd00:ec2::254]", "/latest/user-data"},
	}
	var mu sync.Mutex
	for _, ctr := range []string{"app", "other-uid"} {
		for _, p := range probes {
			for _, mode := range [][]string{nil, {"-v1"}} {
				args := append(append([]string{}, mode...), p...)
				r := e.imds(t, ns, "app", ctr, args...)
				mu.Lock()
				if strings.Contains(r.Body, e.nodeAKID) || strings.Contains(r.Body, e.marker) || strings.Contains(r.Body, markerB64) {
					t.Errorf("LEAK in container %s: imds %v -> %d %s", ctr, args, r.Status, r.Body)
				}
				if strings.Contains(strings.Join(p, " "), node) && r.Status == 200 && strings.Contains(r.Body, "AccessKeyId") {
					t.Errorf("container %s: imds %v served credentials: %s", ctr, args, r.Body)
				}
				mu.Unlock()
			}
		}
		r := e.creds(t, ns, "app", ctr)
		if !r.OK || r.Role != "e2e-app" || r.AccessKeyID == e.nodeAKID {
			t.Errorf("container %s: default chain got %+v, want the pod's role", ctr, r)
		}
	}
	t.Logf("%d probes x 2 IMDS versions x 2 UIDs: no node credentials, no user-data", len(probes))
}

// Scenario 8a: with the webhook down, annotated pods in labelled namespaces
// are refused (fail closed) while other namespaces keep working.
func (e *env) scenarioWebhookDown(t *testing.T) {
	labelled := e.namespace(t, "s8a", true, nil)
	other := e.namespace(t, "s8a-other", false, nil)
	e.scaleWebhook(t, 0)
	restored := false
	restore := func() {
		if !restored {
			restored = true
			e.scaleWebhook(t, 1)
			e.waitInjecting(t, 90*time.Second)
		}
	}
	defer restore()
	out, err := e.tryApply(podSpec{name: "refused", ns: labelled, role: "e2e-app"}.yaml(e))
	t.Logf("webhook at 0 replicas, labelled namespace:\n%s", strings.TrimSpace(out))
	if err == nil {
		t.Errorf("an annotated pod in a labelled namespace was admitted without the webhook")
	}
	e.startPod(t, podSpec{name: "fine", ns: other})
	t.Logf("webhook at 0 replicas: a pod in an unlabelled namespace started")
	restore()
	e.startPod(t, podSpec{name: "after", ns: labelled, role: "e2e-app"})
}

// Scenario 8b: during an STS outage running pods keep serving their cached
// credentials; a pod started during the outage does not report ready without
// credentials, and becomes ready once STS is back.
func (e *env) scenarioSTSOutage(t *testing.T) {
	ns := e.namespace(t, "s8b", true, nil)
	e.startPod(t, podSpec{name: "running", ns: ns, role: "e2e-app"})
	before := e.creds(t, ns, "running", "app")
	if !before.OK {
		t.Fatalf("before the outage: %+v", before)
	}
	e.double(t, "POST", "/_double/outage?on=1&mode=503")
	ended := false
	end := func() {
		if !ended {
			ended = true
			e.double(t, "POST", "/_double/outage?on=0")
		}
	}
	defer end()
	r := e.imds(t, ns, "running", "app", "/latest/meta-data/iam/security-credentials/e2e-app")
	if r.Status != 200 || !strings.Contains(r.Body, before.AccessKeyID) {
		t.Errorf("during the outage the running pod served %d %s, want its cached %s", r.Status, r.Body, before.AccessKeyID)
	}
	e.apply(t, podSpec{name: "late", ns: ns, role: "e2e-app"}.yaml(e))
	time.Sleep(5 * time.Second) // give a broken agent time to wrongly report started
	if p := e.getPod(t, ns, "late"); p.ready() {
		t.Errorf("a pod started during the STS outage is Ready without credentials")
	}
	end()
	e.waitReady(t, ns, "late")
	for _, name := range []string{"running", "late"} {
		if a := e.creds(t, ns, name, "app"); !a.OK || a.Role != "e2e-app" {
			t.Errorf("%s after the outage: %+v", name, a)
		}
	}
}

// Scenario 8c: the webhook's serving certificate is replaced and admissions
// continue without a restart.
func (e *env) scenarioCertRotation(t *testing.T) {
	rotateWebhookCert(t, e)
	ns := e.namespace(t, "s8c", true, nil)
	e.startPod(t, podSpec{name: "after-rotation", ns: ns, role: "e2e-app"})
}

// Scenario 9: with the webhook's --source=web-identity the agent exchanges the pod's
// projected service-account token with AssumeRoleWithWebIdentity, and the
// double accepts it only after verifying it against the apiserver's JWKS.
func (e *env) scenarioWebIdentity(t *testing.T) {
	undo := e.withWebhookEnv(t, "PODROLE_SOURCE", "web-identity")
	defer func() {
		undo()
		e.waitInjecting(t, 90*time.Second)
	}()
	e.waitInjecting(t, 90*time.Second)
	var before map[string]map[string]int
	decodeCalls := func() map[string]map[string]int {
		var s struct {
			Roles map[string]map[string]int `json:"roles"`
		}
		if err := json.Unmarshal(e.double(t, "GET", "/_double/calls"), &s); err != nil {
			t.Fatalf("decode /_double/calls: %v", err)
		}
		return s.Roles
	}
	before = decodeCalls()
	ns := e.namespace(t, "s9", true, nil)
	p := e.startPod(t, podSpec{name: "webid", ns: ns, role: "e2e-role-a"})
	if args := strings.Join(p.Spec.InitContainers[1].Args, " "); !strings.Contains(args, "--source=web-identity") {
		t.Errorf("agent args %q lack --source=web-identity", args)
	}
	r := e.creds(t, ns, "webid", "app")
	if !r.OK || !strings.HasPrefix(r.CallerARN, assumedPrefix("e2e-role-a")) {
		t.Fatalf("web-identity pod: %+v", r)
	}
	after := decodeCalls()
	arn := roleARN("e2e-role-a")
	if after[arn]["assume_role_with_web_identity"] <= before[arn]["assume_role_with_web_identity"] {
		t.Errorf("the double saw no AssumeRoleWithWebIdentity for %s (before %v, after %v)", arn, before[arn], after[arn])
	}
	// The double names the verified token's subject as the caller: the
	// pod's service account, read from a token it checked against the JWKS.
	var issued []struct {
		AccessKeyID string `json:"access_key_id"`
		Action      string `json:"action"`
		Caller      string `json:"caller"`
	}
	if err := json.Unmarshal(e.double(t, "GET", "/_double/issued?role="+arn), &issued); err != nil {
		t.Fatalf("decode /_double/issued: %v", err)
	}
	var got string
	for _, i := range issued {
		if i.AccessKeyID == r.AccessKeyID {
			got = i.Action + " by " + i.Caller
		}
	}
	if want := "AssumeRoleWithWebIdentity by system:serviceaccount:" + ns + ":default"; got != want {
		t.Errorf("the double issued %s as %q, want %q", r.AccessKeyID, got, want)
	}
	t.Logf("web identity: caller %s; issued %s; double counters for %s: %v", r.CallerARN, got, arn, after[arn])
}
