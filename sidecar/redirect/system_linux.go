//go:build linux

package redirect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-iptables/iptables"
)

// commandTimeout bounds every iptables invocation, lock waits included.
const commandTimeout = 20 * time.Second

// NewSystem returns the System of the current network namespace: IPv6 from
// /proc/net, iptables through go-iptables on the detected backend.
func NewSystem(log *slog.Logger) System {
	return &linuxSystem{log: log, procNet: "/proc/net"}
}

type linuxSystem struct {
	log     *slog.Logger
	procNet string

	once    sync.Once
	backend string // "nft", "legacy" or "" (plain iptables on PATH)
	err     error
}

func (s *linuxSystem) HasIPv6(ctx context.Context) (bool, error) {
	// /proc/net/dev exists whenever /proc is mounted; if_inet6 is missing only
	// when the kernel has IPv6 off, which is a clear "no".
	if _, err := os.Stat(s.procNet + "/dev"); err != nil {
		return false, fmt.Errorf("cannot read %s (is /proc mounted?): %w", s.procNet, err)
	}
	for _, c := range []struct {
		file string
		fn   func(io.Reader) (bool, error)
	}{
		{"if_inet6", hasUsableIPv6Address},
		{"ipv6_route", hasRouteToMetadata},
	} {
		f, err := os.Open(s.procNet + "/" + c.file)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil // IPv6 disabled in this kernel
		}
		if err != nil {
			return false, fmt.Errorf("detect IPv6: %w", err)
		}
		ok, err := c.fn(f)
		f.Close()
		if err != nil {
			return false, fmt.Errorf("detect IPv6 from %s/%s: %w", s.procNet, c.file, err)
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

func (s *linuxSystem) Tables(ctx context.Context, f Family) (Tables, error) {
	s.once.Do(func() { s.backend, s.err = detectBackend(ctx, s.log) })
	if s.err != nil {
		return nil, s.err
	}
	bin := f.command()
	if s.backend != "" {
		bin += "-" + s.backend
	}
	proto := iptables.ProtocolIPv4
	if f == IPv6 {
		proto = iptables.ProtocolIPv6
	}
	path, err := lookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bin, err)
	}
	t, err := iptables.New(iptables.IPFamily(proto), iptables.Path(path), iptables.Timeout(int(commandTimeout/time.Second)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bin, explain(err))
	}
	return t, nil
}

// detectBackend runs both backends' save commands in the namespace and
// picks one with chooseBackend. With neither working it falls back to
// plain iptables on PATH, unless the failure was a missing privilege.
func detectBackend(ctx context.Context, log *slog.Logger) (string, error) {
	var res [2]saveResult
	for i, b := range []string{"nft", "legacy"} {
		n, err := countRules(ctx, "iptables-"+b+"-save")
		if err == nil {
			// ip6tables may fail on kernels without IPv6; IPv4 decides usability.
			if n6, err6 := countRules(ctx, "ip6tables-"+b+"-save"); err6 == nil {
				n += n6
			}
		}
		res[i] = saveResult{n, err}
	}
	choice, err := chooseBackend(res[0], res[1])
	if errors.Is(err, errNoIptables) {
		if _, lerr := lookPath("iptables"); lerr == nil && !isPermission(err) {
			log.Warn("iptables backend detection failed, using iptables on PATH", "error", err.Error())
			return "", nil
		}
	}
	if err != nil {
		return "", err
	}
	log.Info("iptables backend", "backend", choice, "nft_rules", res[0].rules, "legacy_rules", res[1].rules)
	return choice, nil
}

// countRules runs a *-save command and counts its rule lines.
func countRules(ctx context.Context, cmd string) (int, error) {
	path, err := lookPath(cmd)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	var out, stderr bytes.Buffer
	c := exec.CommandContext(ctx, path)
	c.Stdout, c.Stderr = &out, &stderr
	if err := c.Run(); err != nil {
		return 0, fmt.Errorf("%s: %w: %s", cmd, err, strings.TrimSpace(stderr.String()))
	}
	return countRuleLines(out.String()), nil
}

// lookPath finds cmd on PATH, then in the sbin directories: an image without
// ENV PATH (FROM scratch) may run us with an empty PATH.
func lookPath(cmd string) (string, error) {
	p, err := exec.LookPath(cmd)
	if err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p, serr := exec.LookPath(dir + "/" + cmd); serr == nil {
			return p, nil
		}
	}
	return "", err
}
