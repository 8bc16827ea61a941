//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/podrole/podrole/internal/testenv"
)

// Names shared with e2e/cluster/*.sh and e2e/manifests.
const (
	appImage       = "localhost/podrole-e2e-app:dev"
	webhookNS      = "podrole-system"
	account        = "111122223333"
	gateway        = "10.244.0.1"
	labelInject    = "podrole.io/inject"
	annRole        = "iam.amazonaws.com/role"
	annAllowed     = "iam.amazonaws.com/allowed-roles"
	annStatus      = "podrole.io/status"
	annRoleARN     = "podrole.io/role-arn"
	initName       = "podrole-init"
	agentName      = "podrole-agent"
	sidecarUID     = 47181
	defaultTimeout = 90 * time.Second
)

// env is what the harness tells the tests about the cluster.
type env struct {
	root       string // repository root
	work       string // $PODROLE_WORK
	kubeconfig string
	kubectl    string
	stsURL     string // the STS double, as pods and the host reach it
	nodeAKID   string // the node role's AccessKeyId served by the IMDS stand-in
	nodeRole   string
	marker     string // in the node's user-data
}

func loadEnv(t testing.TB) *env {
	t.Helper()
	testenv.Root(t)
	work := os.Getenv("PODROLE_WORK")
	if work == "" {
		work = "/var/tmp/podrole-cluster"
	}
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		kc = filepath.Join(work, "kubeconfig")
	}
	_, err := os.Stat(kc)
	testenv.Need(t, err == nil, "a running local cluster ("+kc+")", "run `make cluster-up images` first")
	kubectl := os.Getenv("KUBECTL")
	if kubectl == "" {
		if p, err := exec.LookPath("kubectl"); err == nil {
			kubectl = p
		} else {
			kubectl = filepath.Join(testenv.CacheDir(), "bin", "kubectl")
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{root: root, work: work, kubeconfig: kc, kubectl: kubectl}
	vals, err := readEnvFile(filepath.Join(work, "standins", "env"))
	testenv.Need(t, err == nil, "the AWS stand-ins ("+work+"/standins/env)", "cluster-up starts them; see its output")
	e.stsURL, e.nodeAKID, e.nodeRole, e.marker = vals["STS_ENDPOINT"], vals["NODE_ACCESS_KEY_ID"], vals["NODE_ROLE"], vals["USERDATA_MARKER"]
	if e.stsURL == "" || e.nodeAKID == "" || e.marker == "" {
		t.Fatalf("%s/standins/env lacks STS_ENDPOINT, NODE_ACCESS_KEY_ID or USERDATA_MARKER", work)
	}
	return e
}

func readEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

// run runs kubectl with a timeout and returns stdout, stderr and the error.
func (e *env) run(ctx context.Context, stdin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.kubectl, append([]string{"--kubeconfig", e.kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), errb.String(), err
}

// k runs kubectl and fails the test on error.
func (e *env) k(t testing.TB, args ...string) string {
	t.Helper()
	out, _, err := e.run(context.Background(), "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// apply applies manifests and fails the test on error.
func (e *env) apply(t testing.TB, yaml string) {
	t.Helper()
	if _, _, err := e.run(context.Background(), yaml, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// tryApply applies manifests and returns kubectl's combined output and error,
// for the cases where the refusal is the point.
func (e *env) tryApply(yaml string) (string, error) {
	out, errOut, err := e.run(context.Background(), yaml, "apply", "-f", "-")
	return out + errOut, err
}

// namespace creates a namespace (labelled for injection or not) that is
// deleted when the test ends; extra holds annotations.
func (e *env) namespace(t testing.TB, prefix string, labelled bool, annotations map[string]string) string {
	t.Helper()
	var labels map[string]string
	if labelled {
		labels = map[string]string{labelInject: "enabled"}
	}
	return e.namespaceWith(t, prefix, labels, annotations)
}

// namespaceWith is namespace with any labels, all set in the one object
// that creates it (the webhook must never see it half-labelled).
func (e *env) namespaceWith(t testing.TB, prefix string, labels, annotations map[string]string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%04x", prefix, rand.IntN(0x10000))
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", name)
	if len(labels) > 0 {
		b.WriteString("  labels:\n")
		for k, v := range labels {
			fmt.Fprintf(&b, "    %q: %q\n", k, v)
		}
	}
	if len(annotations) > 0 {
		b.WriteString("  annotations:\n")
		for k, v := range annotations {
			fmt.Fprintf(&b, "    %q: %q\n", k, v)
		}
	}
	e.apply(t, b.String())
	// The SA controller creates "default"; pods are refused until it exists.
	e.waitFor(t, 30*time.Second, "ServiceAccount "+name+"/default", func() bool {
		_, _, err := e.run(context.Background(), "", "-n", name, "get", "serviceaccount", "default")
		return err == nil
	})
	t.Cleanup(func() {
		if os.Getenv("PODROLE_E2E_KEEP") == "1" {
			return
		}
		_, _, _ = e.run(context.Background(), "", "delete", "namespace", name, "--wait=false")
	})
	return name
}

// waitFor polls cond until it holds or timeout passes.
func (e *env) waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// podSpec describes a test pod running the e2e app.
type podSpec struct {
	name, ns, role string
	command        []string // default: app run
	runAsUser      int      // 0: image default (root)
	hostNetwork    bool
	extraContainer bool // a second app container running as UID 1000
	labels         map[string]string
}

func (p podSpec) yaml(e *env) string {
	cmd := p.command
	if cmd == nil {
		cmd = []string{"/app", "run"}
	}
	q := make([]string, len(cmd))
	for i, c := range cmd {
		q[i] = fmt.Sprintf("%q", c)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n", p.name, p.ns)
	if p.role != "" {
		fmt.Fprintf(&b, "  annotations: {%q: %q}\n", annRole, p.role)
	}
	if len(p.labels) > 0 {
		b.WriteString("  labels:\n")
		for k, v := range p.labels {
			fmt.Fprintf(&b, "    %q: %q\n", k, v)
		}
	}
	b.WriteString("spec:\n  dnsPolicy: Default\n  terminationGracePeriodSeconds: 2\n")
	if p.hostNetwork {
		b.WriteString("  hostNetwork: true\n")
	}
	container := func(name string, uid int) {
		fmt.Fprintf(&b, "  - name: %s\n    image: %s\n    imagePullPolicy: Never\n    command: [%s]\n", name, appImage, strings.Join(q, ", "))
		fmt.Fprintf(&b, "    env:\n    - {name: AWS_REGION, value: us-east-1}\n    - {name: AWS_ENDPOINT_URL_STS, value: %q}\n", e.stsURL)
		if uid != 0 {
			fmt.Fprintf(&b, "    securityContext: {runAsUser: %d, runAsGroup: %d}\n", uid, uid)
		}
	}
	b.WriteString("  containers:\n")
	container("app", p.runAsUser)
	if p.extraContainer {
		container("other-uid", 1000)
	}
	return b.String()
}

// pod is what the tests read back from the apiserver.
type pod struct {
	Metadata struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		InitContainers []container `json:"initContainers"`
		Containers     []container `json:"containers"`
	} `json:"spec"`
	Status struct {
		Phase      string `json:"phase"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

type container struct {
	Name          string   `json:"name"`
	Args          []string `json:"args"`
	Command       []string `json:"command"`
	RestartPolicy string   `json:"restartPolicy"`
}

func (p pod) initNames() []string {
	var n []string
	for _, c := range p.Spec.InitContainers {
		n = append(n, c.Name)
	}
	return n
}

func (p pod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func (e *env) getPod(t testing.TB, ns, name string) pod {
	t.Helper()
	var p pod
	if err := json.Unmarshal([]byte(e.k(t, "-n", ns, "get", "pod", name, "-o", "json")), &p); err != nil {
		t.Fatalf("decode pod %s/%s: %v", ns, name, err)
	}
	return p
}

// startPod creates the pod and waits until it is Ready.
func (e *env) startPod(t testing.TB, p podSpec) pod {
	t.Helper()
	e.apply(t, p.yaml(e))
	e.waitReady(t, p.ns, p.name)
	return e.getPod(t, p.ns, p.name)
}

func (e *env) waitReady(t testing.TB, ns, name string) {
	t.Helper()
	if _, _, err := e.run(context.Background(), "", "-n", ns, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=90s"); err != nil {
		desc, _, _ := e.run(context.Background(), "", "-n", ns, "describe", "pod", name)
		t.Fatalf("pod %s/%s not Ready: %v\n%s", ns, name, err, desc)
	}
}

// credsResult mirrors e2e/cmd/app's output.
type credsResult struct {
	OK          bool   `json:"ok"`
	AccessKeyID string `json:"access_key_id"`
	Source      string `json:"source"`
	Role        string `json:"role"`
	CallerARN   string `json:"caller_arn"`
	Error       string `json:"error"`
	Millis      int64  `json:"ms"`
}

type imdsResult struct {
	Status int    `json:"status"`
	Body   string `json:"body"`
	Error  string `json:"error"`
}

// exec runs the app inside a pod's container and returns its last JSON line.
func (e *env) exec(t testing.TB, ns, podName, ctr string, args ...string) string {
	t.Helper()
	out, _, err := e.run(context.Background(), "", append([]string{"-n", ns, "exec", podName, "-c", ctr, "--", "/app"}, args...)...)
	if err != nil && !strings.Contains(err.Error(), "exit status 1") && !strings.Contains(err.Error(), "exit code 1") {
		t.Fatalf("exec in %s/%s: %v", ns, podName, err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

func (e *env) creds(t testing.TB, ns, podName, ctr string) credsResult {
	t.Helper()
	var r credsResult
	line := e.exec(t, ns, podName, ctr, "creds")
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("app creds in %s/%s printed %q: %v", ns, podName, line, err)
	}
	return r
}

func (e *env) imds(t testing.TB, ns, podName, ctr string, args ...string) imdsResult {
	t.Helper()
	var r imdsResult
	line := e.exec(t, ns, podName, ctr, append([]string{"imds"}, args...)...)
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("app imds %v in %s/%s printed %q: %v", args, ns, podName, line, err)
	}
	return r
}

func roleARN(name string) string { return "arn:aws:iam::" + account + ":role/" + name }

// assumedPrefix is what sts:GetCallerIdentity returns for a session of role.
func assumedPrefix(role string) string {
	return "arn:aws:sts::" + account + ":assumed-role/" + role + "/"
}

// double calls the STS double's admin API from the host.
func (e *env) double(t testing.TB, method, path string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.stsURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("sts double %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("sts double %s %s: %s: %s", method, path, resp.Status, b.String())
	}
	return b.Bytes()
}

// firewall is the host's packet filter as the three tools print it.
type firewall struct{ iptables, legacy, nft string }

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// snapshotFirewall reads the host's rules. iptables-save's "# Generated ...
// on DATE" comment lines and the [packets:bytes] of chain policies change
// with time and traffic, not with rules, so they are dropped; nft is read
// with -s (no counter values).
func snapshotFirewall(t testing.TB) firewall {
	t.Helper()
	run := func(name string, args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, name, args...).Output()
		if err != nil {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		var keep []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "#") {
				continue
			}
			keep = append(keep, counters.ReplaceAllString(l, "[0:0]"))
		}
		return strings.Join(keep, "\n")
	}
	return firewall{
		iptables: run("iptables-save") + run("ip6tables-save"),
		legacy:   run("iptables-legacy-save") + run("ip6tables-legacy-save"),
		nft:      run("nft", "-s", "list", "ruleset"),
	}
}

// listeningSockets lists the host netns's listening TCP and UDP sockets that
// matter here: every one owned by a process of a pod (its cgroup is under
// kubepods: a pod process listening in the host's netns), and every one not
// bound to loopback. Loopback listeners of unrelated processes (other test
// suites on a shared machine) come and go and are left out.
func listeningSockets(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ss", "-H", "-l", "-n", "-t", "-u", "-p").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	var socks []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		local := f[4]
		loopback := strings.HasPrefix(local, "127.") || strings.HasPrefix(local, "[::1]") || strings.HasPrefix(local, "[::ffff:127.")
		owner, inPod := "", false
		if m := ssUser.FindStringSubmatch(l); m != nil {
			owner = m[1]
			cg, _ := os.ReadFile("/proc/" + m[2] + "/cgroup")
			inPod = strings.Contains(string(cg), "kubepods")
		}
		switch {
		case inPod:
			socks = append(socks, f[0]+" "+local+" pod process "+owner)
		case !loopback:
			socks = append(socks, f[0]+" "+local)
		}
	}
	sort.Strings(socks)
	return socks
}

var ssUser = regexp.MustCompile(`users:\(\("([^"]*)",pid=([0-9]+),`)

func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	in := func(l []string) map[string]int {
		m := map[string]int{}
		for _, x := range l {
			m[x]++
		}
		return m
	}
	am, bm := in(al), in(bl)
	var d []string
	for _, x := range al {
		if bm[x] == 0 {
			d = append(d, "- "+x)
		}
	}
	for _, x := range bl {
		if am[x] == 0 {
			d = append(d, "+ "+x)
		}
	}
	return strings.Join(d, "\n")
}
