//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

// The hostile workload (e2e/cmd/hostile, /hostile in the e2e app image) run
// in pods the way a pod author could run it, with the harness's guard table
// as the witness: any packet of a pod to a metadata address that gets past
// the pod's own rules reaches the host's forward hook, where the guard
// rejects it and counts it. Scenarios 10-12 below; e2e/README.md lists what
// each route proves.

const (
	hostileRole = "e2e-other" // a role of the STS double no other scenario uses
	// guardTable is NFT_TABLE of e2e/cluster/lib.sh (family inet).
	guardTable = "podrole_harness"
	// The e2e app image's variants (e2e/cluster/images.sh): the same
	// programs and one more file, and the same files with USER 47181:47181.
	appImageOther    = "localhost/podrole-e2e-app:other"
	appImageAgentUID = "localhost/podrole-e2e-app:agent-uid"
)

// hostileResult is one line of e2e/cmd/hostile.
type hostileResult struct {
	Route       string `json:"route"`
	Attempted   bool   `json:"attempted"`
	Outcome     string `json:"outcome"`
	Details     string `json:"details"`
	Role        string `json:"role"`
	AccessKeyID string `json:"access_key_id"`
	Millis      int64  `json:"ms"`
}

func parseHostile(out string) []hostileResult {
	var rs []hostileResult
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r hostileResult
		if strings.HasPrefix(sc.Text(), `{"route"`) && json.Unmarshal(sc.Bytes(), &r) == nil {
			rs = append(rs, r)
		}
	}
	return rs
}

// hostileArgs are the flags of /hostile for a pod with role ("" none).
func (e *env) hostileArgs(role string) []string {
	return []string{"/hostile", "-role", role, "-node-akid", e.nodeAKID}
}

// execHostile runs /hostile in a running container with kubectl exec.
func (e *env) execHostile(t testing.TB, ns, podName, ctr, role string) []hostileResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, errOut, err := e.run(ctx, "", append([]string{"-n", ns, "exec", podName, "-c", ctr, "--"}, e.hostileArgs(role)...)...)
	if err != nil {
		t.Fatalf("kubectl exec %s/%s -c %s -- /hostile: %v\n%s", ns, podName, ctr, err, errOut)
	}
	rs := parseHostile(out)
	if len(rs) == 0 {
		t.Fatalf("/hostile in %s/%s -c %s printed no result:\n%s%s", ns, podName, ctr, out, errOut)
	}
	return rs
}

// ---------------------------------------------------------------- the guard

// guardCounts are the packet counters of the guard's forward chain, by rule.
type guardCounts map[string]uint64

// metadata sums the rules that match a metadata address.
func (g guardCounts) metadata() uint64 {
	var n uint64
	for rule, c := range g {
		if strings.Contains(rule, "169.254.169.254") || strings.Contains(rule, "fd00:ec2::254") {
			n += c
		}
	}
	return n
}

func (g guardCounts) String() string {
	var l []string
	for rule, c := range g {
		l = append(l, fmt.Sprintf("%6d  %s", c, rule))
	}
	sort.Strings(l)
	return strings.Join(l, "\n")
}

// readGuard reads the counters of the harness's guard (nft -j list table inet
// podrole_harness, chain forward); each rule is named by its matches and
// verdict, e.g. "iifname == cni0, ip daddr == 169.254.169.254, l4proto == tcp, reject #4".
func readGuard(t testing.TB) guardCounts {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nft", "-j", "list", "table", "inet", guardTable).Output()
	if err != nil {
		t.Fatalf("nft -j list table inet %s: %v (is the cluster up? e2e/cluster/up.sh installs it)", guardTable, err)
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Chain  string            `json:"chain"`
				Handle int               `json:"handle"`
				Expr   []json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("decode nft -j output: %v", err)
	}
	g := guardCounts{}
	for _, it := range doc.Nftables {
		if it.Rule == nil || it.Rule.Chain != "forward" {
			continue
		}
		var parts []string
		var packets uint64
		counted := false
		for _, raw := range it.Rule.Expr {
			var x map[string]json.RawMessage
			if json.Unmarshal(raw, &x) != nil {
				continue
			}
			for k, v := range x {
				switch k {
				case "counter":
					var c struct{ Packets uint64 }
					_ = json.Unmarshal(v, &c)
					packets, counted = c.Packets, true
				case "match":
					var m struct {
						Op    string `json:"op"`
						Left  map[string]map[string]string
						Right any `json:"right"`
					}
					_ = json.Unmarshal(v, &m)
					left := ""
					for kind, f := range m.Left {
						switch kind {
						case "meta":
							left = f["key"]
						case "payload":
							left = f["protocol"] + " " + f["field"]
						default:
							left = kind
						}
					}
					parts = append(parts, fmt.Sprintf("%s %s %v", left, m.Op, m.Right))
				default:
					parts = append(parts, k)
				}
			}
		}
		if counted {
			g[fmt.Sprintf("%s #%d", strings.Join(parts, ", "), it.Rule.Handle)] = packets
		}
	}
	if len(g) == 0 || !strings.Contains(g.String(), "169.254.169.254") {
		t.Fatalf("the guard table %s has no counted rule for 169.254.169.254:\n%s", guardTable, out)
	}
	return g
}

// guardWindow reads the guard's counters now and returns a check that fails
// the test if a metadata rule counted a packet in between: some packet of a
// pod to a metadata address got past that pod's own rules.
func (e *env) guardWindow(t testing.TB, what string) (check func()) {
	t.Helper()
	before := readGuard(t)
	return func() {
		t.Helper()
		after := readGuard(t)
		b, a := before.metadata(), after.metadata()
		t.Logf("guard %s, metadata rules: %d packets before %s, %d after", guardTable, b, what, a)
		if a != b {
			msg := fmt.Sprintf("the host's guard counted %d packet(s) to a metadata address during %s: a pod's packet got past its own rules.\nbefore:\n%s\nafter:\n%s", a-b, what, before, after)
			if others := otherE2ERuns(); others != "" {
				msg += "\n(other e2e test binaries ran at the same time and may have sent them: " + others + ")"
			}
			t.Error(msg)
		}
	}
}

// otherE2ERuns lists other e2e test binaries running now (they share the
// cluster and its guard).
func otherE2ERuns() string {
	ents, _ := os.ReadDir("/proc")
	var l []string
	for _, d := range ents {
		if d.Name() == fmt.Sprint(os.Getpid()) || strings.Trim(d.Name(), "0123456789") != "" {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if err == nil && strings.Contains(strings.SplitN(string(b), "\x00", 2)[0], "e2e.test") {
			l = append(l, d.Name())
		}
	}
	return strings.Join(l, " ")
}

// ---------------------------------------------------------------- pods

// hostilePod is a pod running the e2e app (container "app", /app run) with
// the hostile workload in its image.
type hostilePod struct {
	name, ns, role string
	image          string // default appImage
	appSC          string // the app container's securityContext as a YAML flow mapping
	shareProcessNS bool
	hostileInit    bool   // an app init container "hostile-init" runs /hostile at start
	podExtra       string // more lines of spec (2-space indent)
	appExtra       string // more lines of the app container (4-space indent)
}

func (h hostilePod) yaml(e *env) string {
	img := h.image
	if img == "" {
		img = appImage
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n", h.name, h.ns)
	if h.role != "" {
		fmt.Fprintf(&b, "  annotations: {%q: %q}\n", annRole, h.role)
	}
	b.WriteString("spec:\n  dnsPolicy: Default\n  terminationGracePeriodSeconds: 2\n")
	if h.shareProcessNS {
		b.WriteString("  shareProcessNamespace: true\n")
	}
	b.WriteString(h.podExtra)
	if h.hostileInit {
		q := []string{}
		for _, a := range e.hostileArgs(h.role) {
			q = append(q, fmt.Sprintf("%q", a))
		}
		fmt.Fprintf(&b, "  initContainers:\n  - name: hostile-init\n    image: %s\n    imagePullPolicy: Never\n    command: [%s]\n", img, strings.Join(q, ", "))
		if h.appSC != "" {
			fmt.Fprintf(&b, "    securityContext: %s\n", h.appSC)
		}
	}
	fmt.Fprintf(&b, "  containers:\n  - name: app\n    image: %s\n    imagePullPolicy: Never\n    command: [\"/app\", \"run\"]\n", img)
	fmt.Fprintf(&b, "    env:\n    - {name: AWS_REGION, value: us-east-1}\n    - {name: AWS_ENDPOINT_URL_STS, value: %q}\n", e.stsURL)
	if h.appSC != "" {
		fmt.Fprintf(&b, "    securityContext: %s\n", h.appSC)
	}
	b.WriteString(h.appExtra)
	return b.String()
}

// ---------------------------------------------------------------- verdicts

// hostileExpect is what a pod's routes must show.
type hostileExpect struct {
	role        string // the pod's role; "": a blocked pod (no agent)
	akid        string // the pod's AccessKeyId as its app gets it ("": not known)
	procVisible bool   // the agent's process is visible (shareProcessNamespace)
}

// checkHostile judges every route: never "leaked", "sent", "timeout" or
// "error"; never the node's AccessKeyId; raw sockets refused; the agent's
// mark refused or useless; other ports, UDP and ICMP rejected; the agent's
// /proc out of reach; credentials, where any, the pod's own.
func (e *env) checkHostile(t testing.TB, who string, x hostileExpect, rs []hostileResult) {
	t.Helper()
	seen := map[string]bool{}
	tally := map[string]int{}
	for _, r := range rs {
		stem, asUID := r.Route, ""
		if strings.HasPrefix(stem, "uid-") {
			asUID, stem, _ = strings.Cut(stem, "/")
		}
		cat, _, _ := strings.Cut(stem, "/")
		seen[cat] = true
		if asUID != "" {
			seen[asUID] = true
		}
		tally[r.Outcome]++
		var allowed []string
		switch {
		case cat == "imds" && x.role == "":
			allowed = []string{"rejected"}
		case cat == "imds" && asUID == "":
			allowed = []string{"redirected"}
		case cat == "imds":
			allowed = []string{"redirected", "rejected"}
		case cat == "setuid":
			allowed = []string{"eperm"}
		case cat == "raw":
			allowed = []string{"eperm"}
		case cat == "mark" && x.role == "":
			allowed = []string{"eperm", "rejected"}
		case cat == "mark":
			allowed = []string{"eperm", "redirected"}
		case cat == "port":
			allowed = []string{"rejected"}
		case cat == "icmp":
			allowed = []string{"eperm", "rejected"}
		case cat == "proc" && x.procVisible:
			allowed = []string{"eperm"}
		case cat == "proc":
			allowed = []string{"n/a", "eperm"}
		default:
			t.Errorf("%s: unknown route %q: %+v", who, r.Route, r)
			continue
		}
		line := fmt.Sprintf("%s: %-26s %-10s %4d ms  %s", who, r.Route, r.Outcome, r.Millis, r.Details)
		switch {
		case r.Outcome == "leaked":
			t.Errorf("LEAK %s", line)
		case e.nodeAKID != "" && r.AccessKeyID == e.nodeAKID:
			t.Errorf("NODE CREDENTIALS %s", line)
		case !contains(allowed, r.Outcome):
			t.Errorf("%s (want %s)", line, strings.Join(allowed, " or "))
		case r.Outcome == "redirected" && (r.Role != x.role || (x.akid != "" && r.AccessKeyID != x.akid)):
			t.Errorf("%s: got role %q AccessKeyId %s, want the pod's role %q and AccessKeyId %s", line, r.Role, r.AccessKeyID, x.role, x.akid)
		case r.Outcome == "rejected" && r.Millis > 1500:
			t.Errorf("%s: rejected, but slowly (want a reset or an unreachable, not a wait)", line)
		default:
			t.Log(line)
		}
	}
	for _, want := range []string{"imds", "uid-47181", "uid-0", "raw", "mark", "port", "icmp", "proc"} {
		if !seen[want] {
			t.Errorf("%s: no %s route in the results", who, want)
		}
	}
	t.Logf("%s: %d routes: %v", who, len(rs), tally)
}

// hostileVariant is one pod of scenarios 10 and 12.
type hostileVariant struct {
	name         string
	pod          hostilePod
	mayBeRefused bool // admission may refuse it outright (that contains it too)
}

// runHostileVariants starts the variants' pods (in one namespace), then runs
// the hostile workload in each (kubectl exec in "app", or the log of its
// init container), each inside its own window of the guard's counters,
// and all of it inside one window that also covers the pods' start (the
// init containers attack then).
func (e *env) runHostileVariants(t *testing.T, nsPrefix string, variants []hostileVariant) {
	ns := e.namespace(t, nsPrefix, true, nil)
	all := e.guardWindow(t, "the start and the runs of every hostile pod in "+ns)
	defer all()
	admitted := map[string]bool{}
	for _, v := range variants {
		v.pod.ns = ns
		out, err := e.tryApply(v.pod.yaml(e))
		switch {
		case err == nil:
			admitted[v.name] = true
		case v.mayBeRefused && strings.Contains(out, "denied the request"):
			t.Logf("%s: refused at admission, which contains it: %s", v.name, strings.TrimSpace(out))
		default:
			t.Errorf("%s: kubectl apply: %v\n%s", v.name, err, out)
		}
	}
	for _, v := range variants {
		if !admitted[v.name] {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			e.waitReady(t, ns, v.pod.name)
			x := hostileExpect{role: v.pod.role, procVisible: v.pod.shareProcessNS}
			if x.role != "" {
				c := e.creds(t, ns, v.pod.name, "app")
				if !c.OK || c.Role != x.role || c.AccessKeyID == e.nodeAKID {
					t.Errorf("the pod's app did not get its role %s: %+v", x.role, c)
				} else {
					x.akid = c.AccessKeyID
				}
			}
			if v.pod.hostileInit {
				out := e.k(t, "-n", ns, "logs", v.pod.name, "-c", "hostile-init")
				e.checkHostile(t, v.name+" (init container)", x, parseHostile(out))
			}
			check := e.guardWindow(t, "kubectl exec /hostile in "+v.pod.name)
			e.checkHostile(t, v.name, x, e.execHostile(t, ns, v.pod.name, "app", v.pod.role))
			check()
		})
	}
}

// hostileVariants are the pods of scenarios 10 and 12.
func hostileVariants(withBlocked bool) []hostileVariant {
	vs := []hostileVariant{
		{name: "root-default-caps", pod: hostilePod{name: "root", role: hostileRole}},
		{name: "image-user-47181", pod: hostilePod{name: "image-uid", role: hostileRole, image: appImageAgentUID}},
		{name: "runAsUser-47181", pod: hostilePod{name: "spec-uid", role: hostileRole, appSC: fmt.Sprintf("{runAsUser: %d, runAsGroup: %d}", sidecarUID, sidecarUID)}, mayBeRefused: true},
		{name: "runAsUser-0-allowPrivilegeEscalation", pod: hostilePod{name: "root-ape", role: hostileRole, appSC: "{runAsUser: 0, allowPrivilegeEscalation: true}"}},
		{name: "app-init-container", pod: hostilePod{name: "init", role: hostileRole, hostileInit: true}},
		{name: "shareProcessNamespace", pod: hostilePod{name: "shared-pid", role: hostileRole, shareProcessNS: true}},
		// SYS_PTRACE is not in the runtime's default set, but a pod may add
		// it; with the agent's process in sight that is its memory.
		{name: "shareProcessNamespace-SYS_PTRACE", pod: hostilePod{name: "shared-pid-ptrace", role: hostileRole, shareProcessNS: true,
			appSC: "{capabilities: {add: [SYS_PTRACE]}}"}, mayBeRefused: true},
	}
	if withBlocked {
		vs = append(vs,
			hostileVariant{name: "blocked-no-role", pod: hostilePod{name: "blocked"}},
			hostileVariant{name: "blocked-no-role-init-container", pod: hostilePod{name: "blocked-init", hostileInit: true}},
		)
	}
	return vs
}

// Scenario 10: the hostile workload in every kind of pod a pod author can
// make, with --source=node (the agent has a way out to the node's IMDS, so
// this is where a hole would be).
func (e *env) scenarioHostilePods(t *testing.T) {
	e.runHostileVariants(t, "s10", hostileVariants(true))
}

// Scenario 12: the same with --source=web-identity (no exemption at all),
// and an app container that mounts the agent's token volume.
func (e *env) scenarioHostilePodsWebIdentity(t *testing.T) {
	undo := e.withWebhookEnv(t, "PODROLE_SOURCE", "web-identity")
	defer func() {
		undo()
		e.waitInjecting(t, 90*time.Second)
	}()
	e.waitInjecting(t, 90*time.Second)
	e.runHostileVariants(t, "s12", hostileVariants(false))

	// The agent's projected token (audience sts.amazonaws.com) is a pod
	// volume; the webhook names it podrole-token, or podrole-token-N when the
	// pod already has a volume of that name, which a pod author can predict.
	ns := e.namespace(t, "s12-token", true, nil)
	for _, c := range []struct{ name, podExtra, mount string }{
		{"app-mounts-the-agents-token-volume", "", "podrole-token"},
		{"app-mounts-the-agents-renamed-token-volume", "  volumes:\n  - {name: podrole-token, emptyDir: {}}\n", "podrole-token-1"},
	} {
		t.Run(c.name+"-refused", func(t *testing.T) {
			p := hostilePod{name: strings.TrimPrefix(c.name, "app-mounts-the-"), ns: ns, role: hostileRole, podExtra: c.podExtra,
				appExtra: "    volumeMounts:\n    - {name: " + c.mount + ", mountPath: /stolen, readOnly: true}\n"}
			e.refused(t, "an app container mounting volume "+c.mount, p.yaml(e), []string{"apply", "-f", "-"})
		})
	}
}

// ---------------------------------------------------------------- the API

// refused runs kubectl (bounded) and requires that it fails with an
// admission denial naming podrole and each of wants.
func (e *env) refused(t testing.TB, what string, stdin string, args []string, wants ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, errOut, err := e.run(ctx, stdin, args...)
	all := strings.TrimSpace(out + errOut)
	t.Logf("%s:\n$ kubectl %s\n%s", what, strings.Join(args, " "), all)
	if err == nil || ctx.Err() != nil {
		t.Errorf("%s: admitted (err %v); want a refusal", what, err)
		return
	}
	for _, w := range append([]string{"denied the request", "podrole"}, wants...) {
		if !strings.Contains(all, w) {
			t.Errorf("%s: kubectl output lacks %q", what, w)
		}
	}
}

// debugHostile runs kubectl debug POD ARGS... with /hostile as the debug
// container "dbg" and returns its results; when kubectl fails (a refusal),
// its output and error instead. With --copy-to=NAME the results are read
// from the copy.
func (e *env) debugHostile(t testing.TB, ns, podName string, args ...string) ([]hostileResult, string, error) {
	t.Helper()
	from := podName
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--copy-to="); ok {
			from = v
		}
	}
	full := append(append([]string{"-n", ns, "debug", podName}, args...),
		append([]string{"--image=" + appImage, "--image-pull-policy=Never", "-c", "dbg", "--"}, e.hostileArgs(hostileRole)...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, errOut, err := e.run(ctx, "", full...)
	t.Logf("$ kubectl %s\n%s", strings.Join(full, " "), strings.TrimSpace(out+errOut))
	if err != nil {
		return nil, out + errOut, err
	}
	var logs string
	// /hostile prints proc/ptrace last.
	e.waitFor(t, 90*time.Second, "the results of /hostile in "+from+" -c dbg", func() bool {
		logs, _, err = e.run(context.Background(), "", "-n", ns, "logs", from, "-c", "dbg")
		return err == nil && strings.Contains(logs, `"route":"proc/ptrace"`)
	})
	return parseHostile(logs), out + errOut, nil
}

// podObject reads a pod as generic JSON.
func (e *env) podObject(t testing.TB, ns, name string) map[string]any {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal([]byte(e.k(t, "-n", ns, "get", "pod", name, "-o", "json")), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// copyPod turns an existing pod into a new pod object named name: what a
// pod author gets with kubectl get -o json, edited. It keeps the
// annotations (podrole.io/status among them) and the injected containers.
func copyPod(p map[string]any, name string, edit func(spec map[string]any)) string {
	b, _ := json.Marshal(p)
	var c map[string]any
	_ = json.Unmarshal(b, &c)
	delete(c, "status")
	md := c["metadata"].(map[string]any)
	for _, k := range []string{"uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"} {
		delete(md, k)
	}
	if a, ok := md["annotations"].(map[string]any); ok {
		delete(a, "kubectl.kubernetes.io/last-applied-configuration")
	}
	md["name"] = name
	spec := c["spec"].(map[string]any)
	delete(spec, "nodeName")
	if edit != nil {
		edit(spec)
	}
	out, _ := json.Marshal(c)
	return string(out)
}

// initContainer returns the init container called name of a generic pod spec.
func initContainer(spec map[string]any, name string) map[string]any {
	for _, c := range spec["initContainers"].([]any) {
		if m := c.(map[string]any); m["name"] == name {
			return m
		}
	}
	return nil
}

// podImages is "name=image" for every init and app container.
func (e *env) podImages(t testing.TB, ns, name string) string {
	t.Helper()
	return strings.TrimSpace(e.k(t, "-n", ns, "get", "pod", name, "-o",
		`jsonpath={range .spec.initContainers[*]}{.name}={.image} {end}{range .spec.containers[*]}{.name}={.image} {end}`))
}

// Scenario 11: what a pod author can try through the Kubernetes API against
// a running injected pod, as kubectl shows it; and what must keep working.
func (e *env) scenarioHostileAPI(t *testing.T) {
	ns := e.namespace(t, "s11", true, nil)
	// "target" is attacked without being changed if podrole holds;
	// "victim" takes the attempts that would change it if podrole did not.
	for _, name := range []string{"target", "victim"} {
		e.apply(t, hostilePod{name: name, ns: ns, role: hostileRole}.yaml(e))
	}
	e.waitReady(t, ns, "target")
	e.waitReady(t, ns, "victim")
	images, victimImages := e.podImages(t, ns, "target"), e.podImages(t, ns, "victim")
	orig := e.podObject(t, ns, "target")
	window := e.guardWindow(t, "scenario 11")
	defer window()

	t.Run("exec-into-podrole-agent-refused", func(t *testing.T) {
		e.refused(t, "kubectl exec into the agent", "",
			[]string{"-n", ns, "exec", "target", "-c", agentName, "--", "/podrole-sidecar", "init", "--dry-run"}, agentName)
	})
	t.Run("attach-to-podrole-agent-refused", func(t *testing.T) {
		e.refused(t, "kubectl attach to the agent", "",
			[]string{"-n", ns, "attach", "target", "-c", agentName}, agentName)
	})
	t.Run("set-image-of-podrole-containers-refused", func(t *testing.T) {
		for _, c := range []string{agentName, initName} {
			e.refused(t, "kubectl set image "+c, "",
				[]string{"-n", ns, "set", "image", "pod/victim", c + "=" + appImage}, c)
		}
		if now := e.podImages(t, ns, "victim"); now != victimImages {
			t.Errorf("the pod's images changed: %s, was %s", now, victimImages)
		}
	})
	t.Run("debug-targeting-podrole-agent-refused", func(t *testing.T) {
		e.refused(t, "kubectl debug --target=podrole-agent", "",
			[]string{"-n", ns, "debug", "target", "--target=" + agentName, "--profile=general", "--image=" + appImage,
				"--image-pull-policy=Never", "-c", "dbg-agent", "--", "/hostile", "-role", hostileRole, "-node-akid", e.nodeAKID}, agentName)
	})

	// Copies of the injected pod that keep podrole.io/status: podrole must
	// judge the injected containers whole, not trust the annotation.
	e.apply(t, fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: podrole-env, namespace: %s}\ndata: {DRY_RUN: \"true\"}\n", ns))
	cleanup := []any{"/podrole-sidecar", "init", "--cleanup"}
	for _, c := range []struct {
		name, what string
		edit       func(spec map[string]any)
	}{
		{"copy-envfrom-podrole-prefix", "envFrom {prefix: PODROLE_, configMapRef} on podrole-init (DRY_RUN=true)", func(spec map[string]any) {
			initContainer(spec, initName)["envFrom"] = []any{map[string]any{"prefix": "PODROLE_", "configMapRef": map[string]any{"name": "podrole-env"}}}
		}},
		{"copy-env-podrole-dry-run", "env PODROLE_DRY_RUN=true on podrole-init", func(spec map[string]any) {
			ic := initContainer(spec, initName)
			env, _ := ic["env"].([]any)
			ic["env"] = append(env, map[string]any{"name": "PODROLE_DRY_RUN", "value": "true"})
		}},
		{"copy-poststart-hook-on-agent", "a postStart hook on podrole-agent running init --cleanup", func(spec map[string]any) {
			initContainer(spec, agentName)["lifecycle"] = map[string]any{"postStart": map[string]any{"exec": map[string]any{"command": cleanup}}}
		}},
		{"copy-exec-probe-on-agent", "an exec startupProbe on podrole-agent running init --cleanup", func(spec map[string]any) {
			initContainer(spec, agentName)["startupProbe"] = map[string]any{"exec": map[string]any{"command": cleanup}, "periodSeconds": 1}
		}},
	} {
		t.Run(c.name+"-refused", func(t *testing.T) {
			e.refused(t, "a copy of the injected pod with "+c.what, copyPod(orig, c.name, c.edit),
				[]string{"apply", "-f", "-"})
		})
	}
	t.Run("copy-unchanged", func(t *testing.T) {
		// The control: the same copy without an edit. Admitting it is
		// podrole's choice; either way it must run with its redirect.
		out, err := e.tryApply(copyPod(orig, "copy-unchanged", nil))
		t.Logf("an unchanged copy of the injected pod: %v %s", err, strings.TrimSpace(out))
		if err == nil {
			e.waitReady(t, ns, "copy-unchanged")
			if c := e.creds(t, ns, "copy-unchanged", "app"); !c.OK || c.Role != hostileRole {
				t.Errorf("the unchanged copy's app: %+v", c)
			}
		}
	})

	t.Run("service-named-podrole-before-the-pod", func(t *testing.T) {
		sns := e.namespace(t, "s11-svc", true, nil)
		e.apply(t, fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: podrole, namespace: %s}\nspec:\n  ports: [{port: 80, targetPort: 9181}]\n", sns))
		e.apply(t, hostilePod{name: "after-service", ns: sns, role: hostileRole}.yaml(e))
		e.waitReady(t, sns, "after-service")
		// Service links are on by default: the kubelet put PODROLE_PORT=tcp://...,
		// PODROLE_SERVICE_HOST and friends into every container of the pod,
		// podrole-init and podrole-agent included.
		if p := e.podObject(t, sns, "after-service"); p["spec"].(map[string]any)["enableServiceLinks"] != true {
			t.Fatalf("the pod has service links off (%v): this proves nothing", p["spec"].(map[string]any)["enableServiceLinks"])
		}
		if c := e.creds(t, sns, "after-service", "app"); !c.OK || c.Role != hostileRole || c.AccessKeyID == e.nodeAKID {
			t.Errorf("with a Service named podrole the pod's app got %+v, want its role", c)
		}
	})

	for _, c := range []struct {
		name  string
		pod   hostilePod
		wants []string
	}{
		{"app-adds-NET_RAW-refused", hostilePod{name: "net-raw", appSC: "{capabilities: {add: [NET_RAW]}}"}, []string{"NET_RAW"}},
		{"hostPID-refused", hostilePod{name: "host-pid", podExtra: "  hostPID: true\n"}, nil},
		{"hostPath-var-lib-kubelet-refused", hostilePod{name: "host-path",
			podExtra: "  volumes:\n  - {name: kubelet, hostPath: {path: /var/lib/kubelet}}\n",
			appExtra: "    volumeMounts:\n    - {name: kubelet, mountPath: /kubelet, readOnly: true}\n"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.pod.ns, c.pod.role = ns, hostileRole
			e.refused(t, c.name, c.pod.yaml(e), []string{"apply", "-f", "-"}, c.wants...)
		})
	}
	t.Run("relabel-inject-disabled-refused", func(t *testing.T) {
		e.refused(t, "opting a running injected pod out", "",
			[]string{"-n", ns, "label", "pod", "victim", labelInject + "=disabled"})
	})

	// What keeps working.
	t.Run("exec-into-app-works", func(t *testing.T) {
		if c := e.creds(t, ns, "target", "app"); !c.OK || c.Role != hostileRole {
			t.Errorf("kubectl exec -c app -- /app creds: %+v", c)
		}
	})
	t.Run("debug-targeting-app-admitted-and-contained", func(t *testing.T) {
		check := e.guardWindow(t, "the debug container's /hostile")
		defer check()
		rs, out, err := e.debugHostile(t, ns, "target", "--target=app", "--profile=general")
		if err != nil {
			t.Fatalf("kubectl debug --target=app --profile=general was refused: %v\n%s", err, out)
		}
		c := e.creds(t, ns, "target", "app")
		e.checkHostile(t, "kubectl debug --target=app", hostileExpect{role: hostileRole, akid: c.AccessKeyID}, rs)
	})
	for _, p := range []string{"sysadmin", "netadmin"} {
		t.Run("debug-profile-"+p+"-refused", func(t *testing.T) {
			e.refused(t, "kubectl debug --profile="+p, "",
				[]string{"-n", ns, "debug", "target", "--target=app", "--profile=" + p, "--image=" + appImage,
					"--image-pull-policy=Never", "-c", "dbg-" + p, "--", "/hostile", "raw/"})
		})
	}
	// A pod that shares its PID namespace shows the agent's process to every
	// container, ephemeral ones included, whatever their --target; the
	// general profile adds SYS_PTRACE. The same for a copy made by kubectl
	// debug --copy-to (--share-processes is its default).
	sharedPod := hostilePod{name: "shared", ns: ns, role: hostileRole, shareProcessNS: true}
	t.Run("debug-general-on-a-shared-pid-pod-refused-or-contained", func(t *testing.T) {
		e.apply(t, sharedPod.yaml(e))
		e.waitReady(t, ns, "shared")
		check := e.guardWindow(t, "the debug container's /hostile in a shared-PID pod")
		defer check()
		rs, out, err := e.debugHostile(t, ns, "shared", "--target=app", "--profile=general")
		if err != nil {
			if !strings.Contains(out, "denied the request") {
				t.Fatalf("kubectl debug failed, but not by an admission denial: %v\n%s", err, out)
			}
			t.Logf("refused: %s", strings.TrimSpace(out))
			return
		}
		c := e.creds(t, ns, "shared", "app")
		e.checkHostile(t, "kubectl debug (general) in a shared-PID pod", hostileExpect{role: hostileRole, akid: c.AccessKeyID, procVisible: true}, rs)
	})
	t.Run("debug-copy-to-with-shared-processes-refused-or-contained", func(t *testing.T) {
		check := e.guardWindow(t, "the copy's debug container's /hostile")
		defer check()
		rs, out, err := e.debugHostile(t, ns, "target", "--copy-to=target-copy", "--share-processes", "--profile=general",
			"--keep-annotations", "--keep-labels", "--keep-startup", "--keep-liveness", "--keep-readiness")
		if err != nil {
			if !strings.Contains(out, "denied the request") {
				t.Fatalf("kubectl debug --copy-to failed, but not by an admission denial: %v\n%s", err, out)
			}
			t.Logf("refused: %s", strings.TrimSpace(out))
			return
		}
		e.checkHostile(t, "kubectl debug --copy-to (general, shared processes)", hostileExpect{role: hostileRole, procVisible: true}, rs)
	})
	t.Run("set-image-of-app-admitted", func(t *testing.T) {
		out := e.k(t, "-n", ns, "set", "image", "pod/target", "app="+appImageOther)
		t.Logf("$ kubectl set image pod/target app=%s\n%s", appImageOther, strings.TrimSpace(out))
		var last string
		for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			st, _, err := e.run(context.Background(), "", "-n", ns, "get", "pod", "target", "-o",
				`jsonpath={.status.containerStatuses[?(@.name=="app")].image} {.status.containerStatuses[?(@.name=="app")].ready} {.status.conditions[?(@.type=="Ready")].status}`)
			last = st
			if f := strings.Fields(st); err == nil && len(f) == 3 && strings.HasSuffix(f[0], ":other") && f[1] == "true" && f[2] == "True" {
				break
			}
			if time.Now().After(deadline) {
				desc, _, _ := e.run(context.Background(), "", "-n", ns, "describe", "pod", "target")
				t.Fatalf("the app container does not run %s in a Ready pod after 90s (app image, app ready, pod Ready: %s)\n%s", appImageOther, last, desc)
			}
		}
		if c := e.creds(t, ns, "target", "app"); !c.OK || c.Role != hostileRole {
			t.Errorf("after kubectl set image app=...: %+v", c)
		}
		want := strings.Replace(images, "app="+appImage, "app="+appImageOther, 1)
		if now := e.podImages(t, ns, "target"); now != want {
			t.Errorf("images after set image: %s, want %s", now, want)
		}
	})
}
