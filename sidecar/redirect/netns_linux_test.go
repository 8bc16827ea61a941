//go:build linux

package redirect_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/internal/testenv"
)

// The real test: podrole-sidecar init in a fresh network namespace, against
// the kernel, with both iptables backends. Nothing touches the host's
// namespace: the "node IMDS" (169.254.169.254 and fd00:ec2::254) lives in a
// second test namespace reached over a veth pair from the benchmarking ranges
// 198.18.0.0/30 and 2001:2::/64, and the host's rule sets are compared byte
// for byte before and after.

const cmdTimeout = 30 * time.Second

// who is a process identity in the pod: a UID and capabilities, set with
// setpriv before the program starts.
type who struct {
	name string
	priv []string // setpriv options
}

func asUID(uid string, caps ...string) who {
	name := "uid " + uid
	priv := []string{"--reuid=" + uid, "--regid=" + uid, "--clear-groups"}
	if len(caps) > 0 {
		name += " caps " + strings.Join(caps, ",")
		// The bounding set decides what root keeps across exec; inheritable
		// and ambient are emptied so nothing else sneaks back.
		priv = append(priv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set="+strings.Join(caps, ","))
	}
	return who{name, priv}
}

var (
	mark     = contract.FormatMark(contract.DefaultAgentMark)
	oldAgent = strconv.Itoa(contract.DefaultSidecarUID) // the UID the redirect used to exempt
	// app is an ordinary non-root app container.
	app = asUID("1000")
	// exAgentUID runs as the UID that used to be exempt (image USER 47181,
	// or a root app that called setuid(47181)).
	exAgentUID = asUID(oldAgent)
	// rootApp is a root app container as podrole admits it: the container
	// runtime's default capabilities without NET_RAW (NET_ADMIN is not in
	// the default set and the webhook refuses it).
	rootApp = asUID("0", "-all", "+chown", "+dac_override", "+fsetid", "+fowner", "+mknod", "+setgid", "+setuid",
		"+setfcap", "+setpcap", "+net_bind_service", "+sys_chroot", "+kill", "+audit_write")
	// agent is podrole-agent with --source=node: root with NET_RAW only.
	agent = asUID("0", "-all", "+net_raw")
	// rootNoPtrace has every capability but SYS_PTRACE: only the agent's
	// non-dumpable flag keeps it out of the agent's /proc files.
	rootNoPtrace = asUID("0", "-sys_ptrace")
	// root is plain root, for the servers standing in for the node and STS.
	root = asUID("0")
	// clients are the pod's processes that must never get past the redirect.
	clients = []who{app, exAgentUID, rootApp}
)

// run runs a command with a timeout and returns its combined output.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	return testenv.Run(t, nil, name, args...)
}

var (
	runEnv = testenv.Run
	must   = testenv.MustRun
)

// bins are the programs the test runs, in a directory every test UID can read.
type bins struct {
	sidecar, helper, stsDouble string
	stsConfig, nodeCreds       string // the double's config; the node role's key, for the node's IMDS
	nodeKeyID                  string
	token                      string // a projected service-account token the double trusts for role/app
}

// build builds podrole-sidecar (or takes PODROLE_SIDECAR_BIN), the helper
// and the STS double, and writes the node role's key from the double's test
// config for the helper's node IMDS, so the double accepts what the agent
// signs.
func build(t *testing.T) bins {
	t.Helper()
	dir, err := os.MkdirTemp("", "podrole-netns-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	goBin := testenv.Command(t, "go", "install Go")
	gobuild := func(out, pkg string) string {
		p := filepath.Join(dir, out)
		o, err := run(t, goBin, "build", "-o", p, pkg)
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, o)
		}
		return p
	}
	b := bins{stsConfig: filepath.Join("..", "..", "stsdouble", "testdata", "config.json")}
	if b.sidecar = os.Getenv("PODROLE_SIDECAR_BIN"); b.sidecar == "" {
		b.sidecar = gobuild("podrole-sidecar", "..") // github.com/podrole/podrole/sidecar
	} else if b.sidecar, err = filepath.Abs(b.sidecar); err != nil {
		t.Fatal(err)
	}
	b.helper = gobuild("netnshelper", "./testdata/netnshelper")
	b.stsDouble = gobuild("sts-double", "../../stsdouble/cmd/sts-double")
	if b.stsConfig, err = filepath.Abs(b.stsConfig); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(b.stsConfig)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Keys []struct {
			AccessKeyID     string `json:"access_key_id"`
			SecretAccessKey string `json:"secret_access_key"`
			SessionToken    string `json:"session_token"`
			ARN             string `json:"arn"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("%s: %v", b.stsConfig, err)
	}
	for _, k := range cfg.Keys {
		if strings.Contains(k.ARN, ":assumed-role/node-role/") {
			doc, _ := json.Marshal(map[string]string{"AccessKeyId": k.AccessKeyID, "SecretAccessKey": k.SecretAccessKey, "Token": k.SessionToken})
			b.nodeKeyID, b.nodeCreds = k.AccessKeyID, filepath.Join(dir, "node-creds.json")
			if err := os.WriteFile(b.nodeCreds, doc, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if b.nodeCreds == "" {
		t.Fatalf("%s has no assumed-role/node-role key for the node's IMDS", b.stsConfig)
	}
	b.token = filepath.Join(dir, "token")
	// Readable by the agent's UID, like the kubelet's projected volume.
	if err := os.WriteFile(b.token, []byte(serviceAccountToken(t, "system:serviceaccount:default:web")), 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// serviceAccountToken signs a projected-token-like JWT, valid for an hour,
// with stsdouble's test OIDC key (kid rsa-1, trusted by its test config).
func serviceAccountToken(t *testing.T, sub string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "stsdouble", "testdata", "oidc-rsa.key"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		t.Fatal("oidc-rsa.key holds no PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": "rsa-1", "typ": "JWT"})
	now := time.Now().Unix()
	claims, _ := json.Marshal(map[string]any{"iss": "https://oidc.podrole.test", "sub": sub, "aud": []string{contract.TokenAudience},
		"iat": now, "nbf": now, "exp": now + 3600})
	signed := enc(hdr) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + enc(sig)
}

func randSuffix(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// hostSnapshot is the host namespace's rule sets, with what changes on its
// own (timestamps, counters) removed.
func hostSnapshot(t *testing.T) map[string]string {
	t.Helper()
	counters := regexp.MustCompile(`\[\d+:\d+\]|packets \d+ bytes \d+`)
	snap := map[string]string{}
	for _, c := range [][]string{{"iptables-save"}, {"ip6tables-save"}, {"iptables-legacy-save"}, {"ip6tables-legacy-save"}, {"nft", "list", "ruleset"}} {
		out := must(t, c[0], c[1:]...)
		var keep []string
		for _, l := range strings.Split(out, "\n") {
			if !strings.HasPrefix(l, "#") {
				keep = append(keep, counters.ReplaceAllString(l, "[counters]"))
			}
		}
		snap[strings.Join(c, " ")] = strings.Join(keep, "\n")
	}
	return snap
}

// pod is the pod's namespace; node is the second namespace standing in for
// the node and its IMDS.
type testNet struct {
	pod, node, vethPod, vethNode string
}

// newTestNet makes the two namespaces and the veth pair between them, created
// directly inside them, so the host namespace never holds a link of ours.
func newTestNet(t *testing.T, b bins) testNet {
	t.Helper()
	s := randSuffix(t)
	n := testNet{pod: "podrole-test-" + s, node: "podrole-node-" + s, vethPod: "prp" + s, vethNode: "prn" + s}
	must(t, "ip", "netns", "add", n.pod)
	t.Cleanup(func() { _, _ = run(t, "ip", "netns", "del", n.pod) })
	must(t, "ip", "netns", "add", n.node)
	t.Cleanup(func() { _, _ = run(t, "ip", "netns", "del", n.node) })
	must(t, "ip", "-n", n.pod, "link", "add", n.vethPod, "type", "veth", "peer", "name", n.vethNode, "netns", n.node)
	for _, c := range [][]string{
		{"-n", n.pod, "link", "set", "lo", "up"},
		{"-n", n.pod, "link", "set", n.vethPod, "up"},
		{"-n", n.pod, "addr", "add", "198.18.0.1/30", "dev", n.vethPod},
		{"-n", n.pod, "-6", "addr", "add", "2001:2::1/64", "dev", n.vethPod, "nodad"},
		{"-n", n.pod, "route", "add", "default", "via", "198.18.0.2"},
		{"-n", n.pod, "-6", "route", "add", "default", "via", "2001:2::2"},
		{"-n", n.node, "link", "set", "lo", "up"},
		{"-n", n.node, "link", "set", n.vethNode, "up"},
		{"-n", n.node, "addr", "add", "198.18.0.2/30", "dev", n.vethNode},
		{"-n", n.node, "-6", "addr", "add", "2001:2::2/64", "dev", n.vethNode, "nodad"},
		// The node namespace owns the metadata addresses, like the real IMDS behind the node.
		{"-n", n.node, "addr", "add", contract.MetadataIPv4 + "/32", "dev", "lo"},
		{"-n", n.node, "-6", "addr", "add", contract.MetadataIPv6 + "/128", "dev", "lo", "nodad"},
	} {
		must(t, "ip", c...)
	}
	// The node's IMDS answers on :80, on another port (:8080) and on UDP, so
	// every reject the test expects would be a success without our rules.
	start(t, n.node, root, "ready", b.helper, "serve", "-marker", "node-imds", "-node-creds", b.nodeCreds,
		"-tcp", "169.254.169.254:80,169.254.169.254:8080,[fd00:ec2::254]:80,[fd00:ec2::254]:8080",
		"-udp", "169.254.169.254:5353,[fd00:ec2::254]:5353")
	return n
}

// inNetnsAs is the `ip` arguments that run args in ns as w, keeping the
// parent-death signal across the UID change so nothing outlives a killed
// test.
func inNetnsAs(ns string, w who, args ...string) []string {
	a := append([]string{"netns", "exec", ns, "setpriv"}, w.priv...)
	return append(append(a, "--pdeathsig=keep", "--"), args...)
}

// cleanEnv keeps AWS clients in the test away from any file or variable of
// the machine: no shared config, no credentials from the environment.
func cleanEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
}

// start runs a long-lived process in ns as w and, if ready is not empty,
// waits until its first stdout line starts with ready. It returns the
// process's PID (ip netns exec and setpriv exec into it).
func start(t *testing.T, ns string, w who, ready string, args ...string) int {
	t.Helper()
	return startEnv(t, ns, w, nil, ready, args...)
}

// startEnv is start with extra environment variables.
func startEnv(t *testing.T, ns string, w who, env []string, ready string, args ...string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ip", append(inNetnsAs(ns, w), args...)...)
	cmd.Env = append(cleanEnv(), env...)
	// Dies with the test binary even if it is killed before its cleanups run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel() // kills exactly this process (ip netns exec and setpriv exec into it)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(args[0]), stderr.String())
		}
	})
	if ready == "" {
		go func() { _, _ = io.Copy(io.Discard, stdout) }()
		return cmd.Process.Pid
	}
	got := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		got <- line
		_, _ = io.Copy(io.Discard, r) // never let a full pipe block the process
	}()
	select {
	case line := <-got:
		if !strings.HasPrefix(line, ready) {
			t.Fatalf("%v did not start: %q %s", args, line, stderr.String())
		}
	case <-time.After(cmdTimeout):
		t.Fatalf("%v not ready after %s", args, cmdTimeout)
	}
	return cmd.Process.Pid
}

// as runs the helper as w in the pod namespace and returns what it printed:
// the body on success, else refused/reset/timeout/mark-denied/error.
func as(t *testing.T, ns string, w who, helper string, args ...string) string {
	t.Helper()
	out, _ := run(t, "ip", append(inNetnsAs(ns, w, helper), args...)...)
	return strings.TrimSpace(out)
}

// nsSave is the namespace's rules from both backends, counters stripped and
// tables that hold nothing (built-in chains, ACCEPT, no rules) left out:
// iptables instantiates a table on first use and cannot remove it again
// (legacy never can), and such a table changes no packet's fate.
func nsSave(t *testing.T, ns string) (nft, legacy string) {
	t.Helper()
	for _, c := range []string{"iptables-nft-save", "ip6tables-nft-save"} {
		nft += "# " + c + "\n" + meaningful(must(t, "ip", "netns", "exec", ns, c))
	}
	for _, c := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
		legacy += "# " + c + "\n" + meaningful(must(t, "ip", "netns", "exec", ns, c))
	}
	return nft, legacy
}

var (
	counters    = regexp.MustCompile(`\[\d+:\d+\]`)
	emptyPolicy = regexp.MustCompile(`^:[A-Z]+ ACCEPT \[0:0\]$`)
)

func meaningful(save string) string {
	var out strings.Builder
	var block []string
	empty := true
	for _, l := range strings.Split(save, "\n") {
		l = counters.ReplaceAllString(l, "[0:0]")
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
			continue
		case strings.HasPrefix(l, "*"):
			block, empty = []string{l}, true
			continue
		case l == "COMMIT":
			if !empty {
				out.WriteString(strings.Join(append(block, l), "\n") + "\n")
			}
			continue
		case !emptyPolicy.MatchString(l):
			empty = false
		}
		block = append(block, l)
	}
	return out.String()
}

// waitStarted polls the agent's startup probe until it passes.
func waitStarted(t *testing.T, n testNet, helper, url string) {
	t.Helper()
	deadline := time.Now().Add(cmdTimeout)
	for {
		got := as(t, n.pod, root, helper, "get", url)
		if !strings.HasPrefix(got, "refused") && !strings.HasPrefix(got, "error") && !strings.HasPrefix(got, "timeout") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not started after %s: %s", cmdTimeout, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nodeIMDSGauge reads podrole_node_imds_reachable (v1, v2) from the agent's
// /metrics at url, once the agent's node IMDS check has set it.
func nodeIMDSGauge(t *testing.T, n testNet, helper, url string) (v1, v2 string) {
	t.Helper()
	deadline := time.Now().Add(cmdTimeout)
	for {
		got := map[string]string{}
		for _, l := range strings.Split(as(t, n.pod, root, helper, "get", url), "\n") {
			for _, v := range []string{"v1", "v2"} {
				if rest, ok := strings.CutPrefix(l, `podrole_node_imds_reachable{version="`+v+`"} `); ok {
					got[v] = rest
				}
			}
		}
		if len(got) == 2 {
			return got["v1"], got["v2"]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no podrole_node_imds_reachable at %s after %s", url, cmdTimeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func probes(fam string) (metaHTTP, otherPort, udp string) {
	if fam == "v6" {
		return "http://[fd00:ec2::254]/latest/meta-data/iam/", "http://[fd00:ec2::254]:8080/", "[fd00:ec2::254]:5353"
	}
	return "http://169.254.169.254/latest/meta-data/iam/", "http://169.254.169.254:8080/", "169.254.169.254:5353"
}

// expect checks the helper's answer: a marker prefix, or an exact failure kind.
func expect(t *testing.T, n testNet, helper string, w who, want string, args ...string) {
	t.Helper()
	got := as(t, n.pod, w, helper, args...)
	ok := strings.HasPrefix(got, want)
	if want == "rejected" {
		// A reject fails the call at once: tcp-reset shows as refused (or reset
		// mid-connection), the ICMP unreachable as refused, or, when the
		// kernel rejects its own send in OUTPUT, as EPERM from write.
		kind, _, _ := strings.Cut(got, "\n")
		ok = kind == "refused" || kind == "reset" || kind == "denied"
	}
	if !ok {
		t.Errorf("%s %v: got %q, want %s", w.name, args, got, want)
	}
}

func TestNetnsInit(t *testing.T) {
	testenv.Root(t)
	testenv.Command(t, "ip", "apt-get install iproute2")
	testenv.Command(t, "setpriv", "apt-get install util-linux")
	testenv.Command(t, "nft", "apt-get install nftables")
	for _, c := range []string{"iptables-nft", "iptables-legacy", "iptables-save", "iptables-legacy-save"} {
		testenv.Command(t, c, "apt-get install iptables")
	}
	b := build(t)
	sidecar, helper := b.sidecar, b.helper
	before := hostSnapshot(t)
	var created []string

	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			n := newTestNet(t, b)
			created = append(created, n.pod, n.node, n.vethPod, n.vethNode)
			if backend == "legacy" {
				// A namespace already using iptables-legacy (someone else's rule):
				// init must add its rules there too, and cleanup must keep this one.
				must(t, "ip", "netns", "exec", n.pod, "iptables-legacy", "-t", "mangle", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "RETURN")
			}
			pristineNft, pristineLegacy := nsSave(t, n.pod)
			initCmd := func(t *testing.T, args ...string) (string, error) {
				return run(t, "ip", append([]string{"netns", "exec", n.pod, sidecar, "init"}, args...)...)
			}
			mustInit := func(t *testing.T, args ...string) {
				t.Helper()
				if out, err := initCmd(t, args...); err != nil {
					t.Fatalf("init %v: %v\n%s", args, err, out)
				}
			}
			mustCleanup := func(t *testing.T) {
				t.Helper()
				mustInit(t, "--cleanup")
				if nft, legacy := nsSave(t, n.pod); nft != pristineNft || legacy != pristineLegacy {
					t.Fatalf("cleanup left:\nnft:\n%s\nlegacy:\n%s\nwant:\n%s\n%s", nft, legacy, pristineNft, pristineLegacy)
				}
			}

			// Control: without our rules every process reaches the "node IMDS"
			// on every port, so each reject below is our doing.
			for _, fam := range []string{"v4", "v6"} {
				meta, other, udp := probes(fam)
				expect(t, n, helper, app, "node-imds", "get", meta)
				expect(t, n, helper, app, "node-imds", "get", other)
				expect(t, n, helper, app, "node-imds udp", "udp", udp)
			}
			// The mark is the exemption only because these processes cannot
			// set it: NET_RAW or NET_ADMIN is needed, whatever the UID.
			t.Run("only NET_RAW sets the mark", func(t *testing.T) {
				for _, w := range clients {
					expect(t, n, helper, w, "mark-denied", "setmark", mark)
					expect(t, n, helper, w, "mark-denied", "get", "-mark", mark, "http://169.254.169.254/")
				}
				expect(t, n, helper, agent, "mark-set", "setmark", mark)
			})

			t.Run("permission denied is explained", func(t *testing.T) {
				out, err := run(t, "ip", "netns", "exec", n.pod, "setpriv", "--reuid=1000", "--regid=1000",
					"--clear-groups", "--inh-caps=-all", "--pdeathsig=keep", "--", sidecar, "init")
				if err == nil || !strings.Contains(out, "permission denied: the init container needs NET_ADMIN and NET_RAW") {
					t.Fatalf("init without privileges: err=%v\n%s", err, out)
				}
			})

			// An agent that may not set its mark stops at once and says why,
			// instead of calling its own redirect.
			t.Run("agent without NET_RAW is refused", func(t *testing.T) {
				for _, w := range []who{rootApp, exAgentUID} {
					out, err := run(t, "ip", append(inNetnsAs(n.pod, w, sidecar), "serve", "--ignore-env",
						"--role-arn=arn:aws:iam::111122223333:role/app", "--region=us-east-1", "--agent-mark="+mark)...)
					if err == nil || !strings.Contains(out, "setting the socket mark needs CAP_NET_RAW (Linux 5.17+) or CAP_NET_ADMIN") {
						t.Errorf("%s: serve --agent-mark: err=%v\n%s", w.name, err, out)
					}
				}
			})

			t.Run("redirect", func(t *testing.T) {
				// --ipv6=auto must find the namespace's IPv6 address and route.
				dry, err := initCmd(t, "--dry-run", "--agent-mark="+mark)
				if err != nil || !strings.Contains(dry, "--ipv6=auto: IPv6 detected") {
					t.Fatalf("dry run: %v\n%s", err, dry)
				}
				if nft, legacy := nsSave(t, n.pod); nft != pristineNft || legacy != pristineLegacy {
					t.Fatal("--dry-run changed the namespace's rules")
				}
				mustInit(t, "--agent-mark="+mark)
				nft1, legacy1 := nsSave(t, n.pod)
				mine, other := nft1, legacy1
				if backend == "legacy" {
					mine, other = legacy1, nft1
				}
				if !strings.Contains(mine, "PODROLE_OUTPUT") || strings.Contains(other, "PODROLE_OUTPUT") {
					t.Fatalf("rules not (only) in the %s backend:\nnft:\n%s\nlegacy:\n%s", backend, nft1, legacy1)
				}
				if strings.Contains(mine, "owner") || !strings.Contains(mine, "-m mark --mark "+mark+" -j RETURN") {
					t.Fatalf("the exemption must be the mark, not a UID:\n%s", mine)
				}
				mustInit(t, "--agent-mark="+mark)
				if nft2, legacy2 := nsSave(t, n.pod); nft2 != nft1 || legacy2 != legacy1 {
					t.Fatalf("second init changed the rules:\n%s%s\nwant\n%s%s", nft2, legacy2, nft1, legacy1)
				}
				start(t, n.pod, app, "ready", helper, "serve", "-marker", "agent", "-tcp", "127.0.0.1:9181,[::1]:9181")
				for _, fam := range []string{"v4", "v6"} {
					meta, other, udp := probes(fam)
					for _, w := range append(clients, root) {
						// Root with every capability could set the mark; it is
						// here unmarked, as any process's default.
						expect(t, n, helper, w, "agent uid=1000 path=/latest/meta-data/iam/", "get", meta)
						expect(t, n, helper, w, "rejected", "get", other)
						expect(t, n, helper, w, "rejected", "udp", udp)
					}
					// Another mark is no exemption.
					expect(t, n, helper, agent, "agent uid=1000", "get", "-mark", "0x1", meta)
					expect(t, n, helper, agent, "rejected", "get", "-mark", "0x1", other)
					// The agent's mark alone reaches the node's IMDS, on any port.
					expect(t, n, helper, agent, "node-imds", "get", "-mark", mark, meta)
					expect(t, n, helper, agent, "node-imds", "get", "-mark", mark, other)
					expect(t, n, helper, agent, "node-imds udp", "udp", "-mark", mark, udp)
				}
				mustCleanup(t)
				mustInit(t, "--cleanup") // nothing left to remove is fine
				expect(t, n, helper, app, "node-imds", "get", "http://169.254.169.254/")
			})

			// --source=web-identity rules (no --agent-mark): nothing is exempt,
			// not even a socket that carries the agent's mark.
			t.Run("no exemption", func(t *testing.T) {
				mustInit(t)
				nft, legacy := nsSave(t, n.pod)
				for _, l := range strings.Split(nft+legacy, "\n") {
					if strings.Contains(l, "PODROLE_OUTPUT") && (strings.Contains(l, "mark") || strings.Contains(l, "RETURN")) {
						t.Fatalf("rules without --agent-mark exempt something: %s\n%s%s", l, nft, legacy)
					}
				}
				start(t, n.pod, app, "ready", helper, "serve", "-marker", "agent", "-tcp", "127.0.0.1:9181,[::1]:9181")
				for _, fam := range []string{"v4", "v6"} {
					meta, other, udp := probes(fam)
					for _, m := range []string{"0", mark} {
						for _, w := range []who{agent, root} {
							expect(t, n, helper, w, "agent uid=1000", "get", "-mark", m, meta)
							expect(t, n, helper, w, "rejected", "get", "-mark", m, other)
							expect(t, n, helper, w, "rejected", "udp", "-mark", m, udp)
						}
					}
					for _, w := range clients {
						expect(t, n, helper, w, "agent uid=1000", "get", meta)
						expect(t, n, helper, w, "rejected", "udp", udp)
					}
				}
				mustCleanup(t)
			})

			// The real agent (podrole-sidecar serve --source=node) as root with
			// NET_RAW only, marking its sockets: it takes the node role's
			// credentials from the node's IMDS, assumes the pod's role at the
			// STS double, and apps get that role. The double lives in the node
			// namespace on a port of the metadata address that only the mark
			// gets through to, so the STS connections prove marked too.
			t.Run("real agent", func(t *testing.T) {
				mustInit(t, "--agent-mark="+mark)
				start(t, n.node, root, "sts-double ready", b.stsDouble, "--listen=169.254.169.254:8500", "--config="+b.stsConfig, "--quiet")
				// --ignore-env: none of these may change what the agent does.
				hostile := []string{"PODROLE_SOURCE=bogus", "PODROLE_NODE_METADATA_ENDPOINT=http://127.0.0.1:1", "PODROLE_SESSION_DURATION=1s"}
				pid := startEnv(t, n.pod, agent, hostile, "", sidecar, "serve", "--ignore-env", "--role-arn=arn:aws:iam::111122223333:role/app",
					"--agent-mark="+mark, "--sts-endpoint=http://169.254.169.254:8500", "--region=us-east-1", "--health-listen=127.0.0.1:9182")
				waitStarted(t, n, helper, "http://127.0.0.1:9182"+contract.PathStarted)
				// The agent's node IMDS check is unmarked, like an app: the
				// redirect sends it to the agent's port, closed then, so
				// apps cannot reach the node (not: the agent answered itself).
				if v1, v2 := nodeIMDSGauge(t, n, helper, "http://127.0.0.1:9182"+contract.PathMetrics); v1 != "0" || v2 != "0" {
					t.Errorf("podrole_node_imds_reachable in redirect mode: v1=%s v2=%s, want 0 0", v1, v2)
				}
				for _, base := range []string{"http://169.254.169.254", "http://[fd00:ec2::254]"} {
					for _, w := range append(clients, root) {
						got := as(t, n.pod, w, helper, "imds", base)
						if !strings.HasPrefix(got, "role=app code=Success key=ASIA") || strings.Contains(got, b.nodeKeyID) {
							t.Errorf("%s via %s: got %q, want the app role's credentials", w.name, base, got)
						}
					}
					// Only a socket with the mark sees the node's role.
					if got := as(t, n.pod, agent, helper, "imds", "-mark", mark, base); got != "role=node-role code=Success key="+b.nodeKeyID {
						t.Errorf("marked via %s: got %q, want the node role", base, got)
					}
				}
				// The agent is not dumpable: root with every capability but
				// SYS_PTRACE cannot open its memory, root, cwd or executable,
				// nor can a root app (no NET_RAW) or the old agent UID.
				// Control: the same reader opens them of a dumpable process
				// with the agent's credentials.
				control := start(t, n.pod, agent, "ready", helper, "serve", "-marker", "control")
				for _, f := range []string{"mem", "root", "cwd", "exe"} {
					expect(t, n, helper, rootNoPtrace, "open-ok", "open", "/proc/"+strconv.Itoa(control)+"/"+f)
					for _, w := range []who{rootNoPtrace, rootApp, exAgentUID} {
						expect(t, n, helper, w, "open-denied", "open", "/proc/"+strconv.Itoa(pid)+"/"+f)
					}
				}
				mustCleanup(t)
			})

			// The real agent with --source=web-identity under rules without an
			// exemption: it needs nothing from the node, and apps get the role.
			t.Run("real agent, web identity", func(t *testing.T) {
				mustInit(t)
				start(t, n.pod, root, "sts-double ready", b.stsDouble, "--listen=127.0.0.1:8500", "--config="+b.stsConfig, "--quiet")
				pid := start(t, n.pod, exAgentUID, "", sidecar, "serve", "--ignore-env", "--source=web-identity", "--token-file="+b.token,
					"--role-arn=arn:aws:iam::111122223333:role/app", "--sts-endpoint=http://127.0.0.1:8500", "--region=us-east-1",
					"--health-listen=127.0.0.1:9182")
				waitStarted(t, n, helper, "http://127.0.0.1:9182"+contract.PathStarted)
				if v1, v2 := nodeIMDSGauge(t, n, helper, "http://127.0.0.1:9182"+contract.PathMetrics); v1 != "0" || v2 != "0" {
					t.Errorf("podrole_node_imds_reachable in redirect mode (web identity): v1=%s v2=%s, want 0 0", v1, v2)
				}
				for _, base := range []string{"http://169.254.169.254", "http://[fd00:ec2::254]"} {
					for _, c := range []struct {
						w    who
						args []string
					}{{app, nil}, {exAgentUID, nil}, {rootApp, nil}, {agent, []string{"-mark", mark}}} {
						got := as(t, n.pod, c.w, helper, append(append([]string{"imds"}, c.args...), base)...)
						if !strings.HasPrefix(got, "role=app code=Success key=ASIA") || strings.Contains(got, b.nodeKeyID) {
							t.Errorf("%s %v via %s: got %q, want the app role's credentials", c.w.name, c.args, base, got)
						}
					}
				}
				// Not dumpable: a container running as the agent's UID (an
				// image's USER) opens none of its /proc secrets, though it
				// opens them of a dumpable process of that UID.
				control := start(t, n.pod, exAgentUID, "ready", helper, "serve", "-marker", "control")
				for _, f := range []string{"environ", "mem", "root", "cwd", "exe"} {
					expect(t, n, helper, exAgentUID, "open-ok", "open", "/proc/"+strconv.Itoa(control)+"/"+f)
					expect(t, n, helper, exAgentUID, "open-denied", "open", "/proc/"+strconv.Itoa(pid)+"/"+f)
				}
				mustCleanup(t)
			})

			// Env mode: no rules in the pod. The agent (web identity) finds
			// that apps reach the node's IMDS, both versions, as they do here.
			t.Run("real agent, no rules", func(t *testing.T) {
				expect(t, n, helper, app, "node-imds", "get", "http://169.254.169.254/latest/meta-data/")
				start(t, n.pod, root, "sts-double ready", b.stsDouble, "--listen=127.0.0.1:8500", "--config="+b.stsConfig, "--quiet")
				start(t, n.pod, exAgentUID, "", sidecar, "serve", "--ignore-env", "--source=web-identity", "--token-file="+b.token,
					"--role-arn=arn:aws:iam::111122223333:role/app", "--sts-endpoint=http://127.0.0.1:8500", "--region=us-east-1",
					"--health-listen=127.0.0.1:9182")
				waitStarted(t, n, helper, "http://127.0.0.1:9182"+contract.PathStarted)
				if v1, v2 := nodeIMDSGauge(t, n, helper, "http://127.0.0.1:9182"+contract.PathMetrics); v1 != "1" || v2 != "1" {
					t.Errorf("podrole_node_imds_reachable without rules: v1=%s v2=%s, want 1 1", v1, v2)
				}
			})

			t.Run("block", func(t *testing.T) {
				mustInit(t, "--block")
				nft1, legacy1 := nsSave(t, n.pod)
				// Second run with the flag from the environment, as the
				// webhook may pass it: same rules, no duplicates.
				if out, err := runEnv(t, append(cleanEnv(), "PODROLE_BLOCK=true"), "ip", "netns", "exec", n.pod, sidecar, "init"); err != nil {
					t.Fatalf("init with PODROLE_BLOCK=true: %v\n%s", err, out)
				}
				if nft2, legacy2 := nsSave(t, n.pod); nft2 != nft1 || legacy2 != legacy1 {
					t.Fatalf("second init (PODROLE_BLOCK=true) changed the rules:\n%s%s\nwant\n%s%s", nft2, legacy2, nft1, legacy1)
				}
				if strings.Contains(nft1+legacy1, "DNAT") {
					t.Fatal("block mode installed a redirect")
				}
				for _, fam := range []string{"v4", "v6"} {
					meta, other, udp := probes(fam)
					for _, w := range append(clients, root) {
						expect(t, n, helper, w, "rejected", "get", meta)
						expect(t, n, helper, w, "rejected", "get", other)
						expect(t, n, helper, w, "rejected", "udp", udp)
					}
					expect(t, n, helper, agent, "rejected", "get", "-mark", mark, meta)
					expect(t, n, helper, agent, "rejected", "udp", "-mark", mark, udp)
				}
				// --ignore-env: the environment cannot turn block mode off.
				if out, err := runEnv(t, append(cleanEnv(), "PODROLE_BLOCK=false", "PODROLE_CLEANUP=true"), "ip", "netns", "exec", n.pod, sidecar, "init", "--block", "--ignore-env"); err != nil {
					t.Fatalf("init --block --ignore-env: %v\n%s", err, out)
				}
				if nft2, legacy2 := nsSave(t, n.pod); nft2 != nft1 || legacy2 != legacy1 {
					t.Fatalf("PODROLE_* with --ignore-env changed the rules:\n%s%s\nwant\n%s%s", nft2, legacy2, nft1, legacy1)
				}
				mustCleanup(t)
			})
		})
	}

	// Subtests' cleanups have deleted the namespaces (and with them the veths).
	netns := must(t, "ip", "netns", "list")
	links := must(t, "ip", "-o", "link", "show")
	for _, name := range created {
		if strings.Contains(netns, name) || strings.Contains(links, name) {
			t.Errorf("%s left behind:\n%s\n%s", name, netns, links)
		}
	}
	after := hostSnapshot(t)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("host %s changed (another process may also be changing host rules):\n--- before\n%s\n--- after\n%s", k, v, after[k])
		}
	}
}
