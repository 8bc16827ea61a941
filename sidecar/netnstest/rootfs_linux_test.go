//go:build linux

package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/internal/testenv"
)

var (
	run  = testenv.Run
	must = testenv.MustRun
)

// rootfs builds the static binary (or takes PODROLE_SIDECAR_BIN) and runs
// scripts/sidecar-rootfs.sh into a temporary directory.
func rootfs(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	bin := os.Getenv("PODROLE_SIDECAR_BIN")
	if bin != "" {
		var err error
		if bin, err = filepath.Abs(bin); err != nil { // the test runs in its package directory
			t.Fatal(err)
		}
	} else {
		goBin := testenv.Command(t, "go", "install Go")
		bin = filepath.Join(tmp, "podrole-sidecar")
		env := append(os.Environ(), "CGO_ENABLED=0")
		if out, err := run(t, env, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "../"); err != nil {
			t.Fatalf("go build ./sidecar: %v\n%s", err, out)
		}
	}
	dest := filepath.Join(tmp, "rootfs")
	out := must(t, "../../scripts/sidecar-rootfs.sh", dest, bin)
	t.Log(strings.TrimSpace(out))
	return dest
}

// The image's root filesystem runs iptables (both backends) and the binary on
// its own, and `init` from it installs and removes the redirect in a fresh
// network namespace: libraries, extensions, /run for the xtables lock and
// /etc/protocols are all there.
func TestRootfs(t *testing.T) {
	testenv.Root(t)
	for _, c := range []string{"chroot", "ldd", "tar", "ip", "unshare", "mount"} {
		testenv.Command(t, c, "apt-get install coreutils libc-bin tar iproute2 util-linux mount")
	}
	testenv.Command(t, "iptables-nft-save", "apt-get install iptables")
	dest := rootfs(t)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"/usr/sbin/iptables", "--version"}, "(nf_tables)"},
		{[]string{"/usr/sbin/ip6tables", "--version"}, "(nf_tables)"},
		{[]string{"/usr/sbin/iptables-legacy", "--version"}, "(legacy)"},
		{[]string{"/usr/sbin/ip6tables-legacy-save", "--version"}, "(legacy)"},
		{[]string{"/usr/sbin/iptables-nft-restore", "--version"}, "(nf_tables)"},
		// No /proc in a bare chroot: auto shows the IPv6 rules too, with a note.
		{[]string{contract.Entrypoint, "init", "--dry-run"}, "-j DNAT --to-destination [::1]:" + strconv.Itoa(contract.DefaultSidecarPort)},
	} {
		out, err := run(t, []string{}, "chroot", append([]string{dest}, c.args...)...)
		if err != nil || !strings.Contains(out, c.want) {
			t.Errorf("chroot %v: err=%v, want %q in:\n%s", c.args, err, c.want, out)
		}
	}

	passwd, err := os.ReadFile(filepath.Join(dest, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	uid := strconv.Itoa(contract.DefaultSidecarUID)
	if !strings.Contains(string(passwd), "podrole-agent:x:"+uid+":"+uid+":") {
		t.Errorf("etc/passwd lacks the agent user %s:\n%s", uid, passwd)
	}
	dockerfile, err := os.ReadFile("../../Dockerfile.sidecar")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^USER ` + uid + `$`).Match(dockerfile) {
		t.Errorf("Dockerfile.sidecar must run as USER %s (contract.DefaultSidecarUID)", uid)
	}

	for _, backend := range []string{"nft", "legacy"} {
		t.Run("init in a namespace/"+backend, func(t *testing.T) {
			b := make([]byte, 3)
			_, _ = rand.Read(b)
			ns := "podrole-rootfs-" + hex.EncodeToString(b)
			must(t, "ip", "netns", "add", ns)
			t.Cleanup(func() { _, _ = run(t, nil, "ip", "netns", "del", ns) })
			must(t, "ip", "-n", ns, "link", "set", "lo", "up")
			if backend == "legacy" {
				must(t, "ip", "netns", "exec", ns, "iptables-legacy", "-t", "mangle", "-A", "OUTPUT", "-j", "RETURN")
			}
			// What a container runtime provides: /proc and /dev. ip netns exec
			// gives a private mount namespace; unshare makes sure these mounts
			// never reach the host's.
			inImage := func(args ...string) (string, error) {
				script := `mount -t proc proc "$0/proc" && mount --bind /dev "$0/dev" && exec chroot "$0" ` + contract.Entrypoint + ` init "$@"`
				return run(t, []string{}, "ip", append([]string{"netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
					"/bin/sh", "-c", script, dest}, args...)...)
			}
			// With the agent's mark (--source=node): the mark match must load
			// from the image (libxt_mark) and print back as planned.
			mark := contract.FormatMark(contract.DefaultAgentMark)
			if out, err := inImage("--agent-mark=" + mark); err != nil {
				t.Fatalf("init from the image: %v\n%s", err, out)
			}
			save := must(t, "ip", "netns", "exec", ns, "iptables-"+backend+"-save")
			for _, want := range []string{
				"-A PODROLE_OUTPUT -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m mark ! --mark " + mark +
					" -j DNAT --to-destination 127.0.0.1:" + strconv.Itoa(contract.DefaultSidecarPort),
				"-A PODROLE_OUTPUT -d 169.254.169.254/32 -m mark --mark " + mark + " -j RETURN",
			} {
				if !strings.Contains(save, want) {
					t.Fatalf("iptables-%s-save in the namespace lacks\n%s\n%s", backend, want, save)
				}
			}
			if out, err := inImage("--cleanup"); err != nil {
				t.Fatalf("init --cleanup from the image: %v\n%s", err, out)
			}
			if save := must(t, "ip", "netns", "exec", ns, "iptables-"+backend+"-save"); strings.Contains(save, "PODROLE") {
				t.Fatalf("cleanup from the image left rules:\n%s", save)
			}
		})
	}
	if strings.Contains(must(t, "findmnt", "-rn", "-o", "TARGET"), dest) {
		t.Error("a mount under the rootfs leaked into the host's mount namespace")
	}
}
