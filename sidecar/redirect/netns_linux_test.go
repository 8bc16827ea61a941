//go:build linux

package redirect_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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

var (
	agentUID = strconv.Itoa(contract.DefaultSidecarUID)
	appUID   = "1000"
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
	stsConfig, nodeCreds       string // the double's config; the node role's credentials document
	nodeKeyID                  string
}

// build builds podrole-sidecar (or takes PODROLE_SIDECAR_BIN), the helper
// and the STS double, and writes the node role's credentials document from
// the double's test config, so the double accepts what the agent signs.
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
			doc, _ := json.Marshal(map[string]string{
				"Code": "Success", "Type": "AWS-HMAC", "LastUpdated": time.Now().UTC().Format(time.RFC3339),
				"AccessKeyId": k.AccessKeyID, "SecretAccessKey": k.SecretAccessKey, "Token": k.SessionToken,
				"Expiration": time.Now().Add(6 * time.Hour).UTC().Format(time.RFC3339),
			})
			b.nodeKeyID, b.nodeCreds = k.AccessKeyID, filepath.Join(dir, "node-creds.json")
			if err := os.WriteFile(b.nodeCreds, doc, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if b.nodeCreds == "" {
		t.Fatalf("%s has no assumed-role/node-role key for the node's IMDS", b.stsConfig)
	}
	return b
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
	start(t, n.node, "0", "ready", b.helper, "serve", "-marker", "node-imds", "-node-creds", b.nodeCreds,
		"-tcp", "169.254.169.254:80,169.254.169.254:8080,[fd00:ec2::254]:80,[fd00:ec2::254]:8080",
		"-udp", "169.254.169.254:5353,[fd00:ec2::254]:5353")
	return n
}

// inNetnsAs is the `ip` arguments that run args in ns as uid (and its group,
// no supplementary groups), keeping the parent-death signal across the UID
// change so nothing outlives a killed test.
func inNetnsAs(ns, uid string, args ...string) []string {
	return append([]string{"netns", "exec", ns, "setpriv", "--reuid=" + uid, "--regid=" + uid, "--clear-groups", "--pdeathsig=keep", "--"}, args...)
}

// cleanEnv keeps AWS clients in the test away from any file or variable of
// the machine: no shared config, no credentials from the environment.
func cleanEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
}

// start runs a long-lived process in ns as uid and, if ready is not empty,
// waits until its first stdout line starts with ready.
func start(t *testing.T, ns, uid, ready string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ip", append(inNetnsAs(ns, uid), args...)...)
	cmd.Env = cleanEnv()
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
		return
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
}

// as runs the helper as uid in the pod namespace and returns what it printed:
// the body on success, else refused/reset/timeout/error.
func as(t *testing.T, ns, uid, helper string, args ...string) string {
	t.Helper()
	out, _ := run(t, "ip", append(inNetnsAs(ns, uid, helper), args...)...)
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
		got := as(t, n.pod, "0", helper, "get", url)
		if !strings.HasPrefix(got, "refused") && !strings.HasPrefix(got, "error") && !strings.HasPrefix(got, "timeout") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not started after %s: %s", cmdTimeout, got)
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
func expect(t *testing.T, n testNet, helper, uid, want string, args ...string) {
	t.Helper()
	got := as(t, n.pod, uid, helper, args...)
	ok := strings.HasPrefix(got, want)
	if want == "rejected" {
		// A reject fails the call at once: tcp-reset shows as refused (or reset
		// mid-connection), the ICMP unreachable as refused, or, when the
		// kernel rejects its own send in OUTPUT, as EPERM from write.
		kind, _, _ := strings.Cut(got, "\n")
		ok = kind == "refused" || kind == "reset" || kind == "denied"
	}
	if !ok {
		t.Errorf("uid %s %v: got %q, want %s", uid, args, got, want)
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

			// Control: without our rules every UID reaches the "node IMDS" on
			// every port, so each reject below is our doing.
			for _, fam := range []string{"v4", "v6"} {
				meta, other, udp := probes(fam)
				expect(t, n, helper, appUID, "node-imds", "get", meta)
				expect(t, n, helper, appUID, "node-imds", "get", other)
				expect(t, n, helper, appUID, "node-imds udp", "udp", udp)
			}

			t.Run("permission denied is explained", func(t *testing.T) {
				out, err := run(t, "ip", "netns", "exec", n.pod, "setpriv", "--reuid="+appUID, "--regid="+appUID,
					"--clear-groups", "--inh-caps=-all", "--pdeathsig=keep", "--", sidecar, "init")
				if err == nil || !strings.Contains(out, "permission denied: the init container needs NET_ADMIN and NET_RAW") {
					t.Fatalf("init without privileges: err=%v\n%s", err, out)
				}
			})

			t.Run("redirect", func(t *testing.T) {
				// --ipv6=auto must find the namespace's IPv6 address and route.
				dry, err := initCmd(t, "--dry-run")
				if err != nil || !strings.Contains(dry, "--ipv6=auto: IPv6 detected") {
					t.Fatalf("dry run: %v\n%s", err, dry)
				}
				if nft, legacy := nsSave(t, n.pod); nft != pristineNft || legacy != pristineLegacy {
					t.Fatal("--dry-run changed the namespace's rules")
				}
				mustInit(t)
				nft1, legacy1 := nsSave(t, n.pod)
				mine, other := nft1, legacy1
				if backend == "legacy" {
					mine, other = legacy1, nft1
				}
				if !strings.Contains(mine, "PODROLE_OUTPUT") || strings.Contains(other, "PODROLE_OUTPUT") {
					t.Fatalf("rules not (only) in the %s backend:\nnft:\n%s\nlegacy:\n%s", backend, nft1, legacy1)
				}
				mustInit(t)
				if nft2, legacy2 := nsSave(t, n.pod); nft2 != nft1 || legacy2 != legacy1 {
					t.Fatalf("second init changed the rules:\n%s%s\nwant\n%s%s", nft2, legacy2, nft1, legacy1)
				}
				start(t, n.pod, agentUID, "ready", helper, "serve", "-marker", "agent", "-tcp", "127.0.0.1:9181,[::1]:9181")
				for _, fam := range []string{"v4", "v6"} {
					meta, other, udp := probes(fam)
					for _, uid := range []string{appUID, "0"} {
						expect(t, n, helper, uid, "agent uid="+agentUID+" path=/latest/meta-data/iam/", "get", meta)
						expect(t, n, helper, uid, "rejected", "get", other)
						expect(t, n, helper, uid, "rejected", "udp", udp)
					}
					// The agent alone reaches the node's IMDS, on any port.
					expect(t, n, helper, agentUID, "node-imds", "get", meta)
					expect(t, n, helper, agentUID, "node-imds", "get", other)
					expect(t, n, helper, agentUID, "node-imds udp", "udp", udp)
				}
				mustInit(t, "--cleanup")
				if nft, legacy := nsSave(t, n.pod); nft != pristineNft || legacy != pristineLegacy {
					t.Fatalf("cleanup left:\nnft:\n%s\nlegacy:\n%s\nwant:\n%s\n%s", nft, legacy, pristineNft, pristineLegacy)
				}
				mustInit(t, "--cleanup") // nothing left to remove is fine
				expect(t, n, helper, appUID, "node-imds", "get", "http://169.254.169.254/")
			})

			// The real agent (podrole-sidecar serve, --source=node) as the
			// excluded UID: it takes the node role's credentials from the node's
			// IMDS through the exclusion, assumes the pod's role at the STS
			// double inside the pod namespace, and apps get that role.
			t.Run("real agent", func(t *testing.T) {
				mustInit(t)
				start(t, n.pod, "0", "sts-double ready", b.stsDouble, "--listen=127.0.0.1:8500", "--config="+b.stsConfig, "--quiet")
				start(t, n.pod, agentUID, "", sidecar, "serve", "--role-arn=arn:aws:iam::111122223333:role/app",
					"--sts-endpoint=http://127.0.0.1:8500", "--region=us-east-1", "--health-listen=127.0.0.1:9182")
				waitStarted(t, n, helper, "http://127.0.0.1:9182"+contract.PathStarted)
				for _, base := range []string{"http://169.254.169.254", "http://[fd00:ec2::254]"} {
					for _, uid := range []string{appUID, "0"} {
						got := as(t, n.pod, uid, helper, "imds", base)
						if !strings.HasPrefix(got, "role=app code=Success key=ASIA") || strings.Contains(got, b.nodeKeyID) {
							t.Errorf("uid %s via %s: got %q, want the app role's credentials", uid, base, got)
						}
					}
					// Only the agent sees the node's role.
					if got := as(t, n.pod, agentUID, helper, "imds", base); got != "role=node-role code=Success key="+b.nodeKeyID {
						t.Errorf("agent via %s: got %q, want the node role", base, got)
					}
				}
				mustInit(t, "--cleanup")
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
					for _, uid := range []string{appUID, "0", agentUID} {
						expect(t, n, helper, uid, "rejected", "get", meta)
						expect(t, n, helper, uid, "rejected", "get", other)
						expect(t, n, helper, uid, "rejected", "udp", udp)
					}
				}
				mustInit(t, "--cleanup")
				if nft, legacy := nsSave(t, n.pod); nft != pristineNft || legacy != pristineLegacy {
					t.Fatalf("cleanup after block left:\n%s\n%s", nft, legacy)
				}
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
