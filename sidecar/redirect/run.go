package redirect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/podrole/podrole/contract"
)

// Tables is the part of go-iptables the redirect uses, for one family and one
// backend. *iptables.IPTables satisfies it; tests use an in-memory fake.
type Tables interface {
	ChainExists(table, chain string) (bool, error)
	ClearChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	Append(table, chain string, rulespec ...string) error
	Insert(table, chain string, pos int, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	List(table, chain string) ([]string, error)
}

// System is what Run needs from the machine. The Linux implementation is
// NewSystem; tests pass their own.
type System interface {
	// HasIPv6 reports whether the current network namespace can reach
	// fd00:ec2::254: an IPv6 address beyond link-local/loopback, or a route.
	HasIPv6(ctx context.Context) (bool, error)
	// Tables returns iptables for family f, on the backend the namespace uses.
	Tables(ctx context.Context, f Family) (Tables, error)
}

// Run does what cfg asks in the current network namespace: print the plan
// (--dry-run), remove our rules (--cleanup), or install and verify them.
func Run(ctx context.Context, cfg contract.InitConfig, sys System, stdout io.Writer, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	ipv6, note, err := resolveIPv6(ctx, cfg, sys)
	if err != nil {
		return err
	}
	var plan Plan
	if cfg.Cleanup {
		plan = BuildCleanup(ipv6)
	} else {
		plan = Build(Config{Port: cfg.Port, AgentMark: cfg.AgentMark, IPv6: ipv6, Block: cfg.Block})
	}
	plan.Note = note
	if cfg.DryRun {
		return plan.Format(stdout)
	}
	if note != "" {
		log.Info("ipv6", "note", note)
	}
	for _, fp := range plan.Families {
		if err := ctx.Err(); err != nil {
			return err
		}
		t, err := sys.Tables(ctx, fp.Family)
		if err != nil {
			if plan.Action == Remove && cfg.IPv6 == contract.IPv6Auto && fp.Family == IPv6 {
				// Nothing of ours can exist where ip6tables cannot run.
				log.Info("cleanup skipped", "family", fp.Family.String(), "reason", err.Error())
				continue
			}
			return err
		}
		switch plan.Action {
		case Install:
			if err := Apply(t, fp); err != nil {
				return fmt.Errorf("%s: apply: %w", fp.Family.command(), err)
			}
			if err := Verify(t, fp); err != nil {
				return fmt.Errorf("%s: verify: %w", fp.Family.command(), err)
			}
		case Remove:
			if err := Clean(t, fp); err != nil {
				return fmt.Errorf("%s: cleanup: %w", fp.Family.command(), err)
			}
		}
		log.Info("rules done", "action", actionName(plan.Action), "family", fp.Family.String(), "block", cfg.Block, "port", cfg.Port, "agent_mark", contract.FormatMark(cfg.AgentMark))
	}
	return nil
}

func actionName(a Action) string {
	if a == Remove {
		return "cleanup"
	}
	return "install"
}

// resolveIPv6 turns --ipv6 into a decision. In auto mode a detection failure
// is an error (fail closed), except in a dry run and in cleanup, where the
// IPv6 part is shown or attempted anyway and a note says why.
func resolveIPv6(ctx context.Context, cfg contract.InitConfig, sys System) (bool, string, error) {
	switch cfg.IPv6 {
	case contract.IPv6True:
		return true, "", nil
	case contract.IPv6False:
		return false, "", nil
	}
	if cfg.Cleanup {
		return true, "--ipv6=auto with --cleanup: IPv6 rules removed too when ip6tables works", nil
	}
	has, err := sys.HasIPv6(ctx)
	if err != nil {
		if cfg.DryRun {
			return true, fmt.Sprintf("--ipv6=auto: could not detect IPv6 (%v); showing the IPv6 rules too", err), nil
		}
		return false, "", fmt.Errorf("--ipv6=auto: %w; pass --ipv6=true or --ipv6=false to decide", err)
	}
	if has {
		return true, "--ipv6=auto: IPv6 detected", nil
	}
	return false, "--ipv6=auto: no IPv6 address or route", nil
}

// Apply makes our chains in fp's tables hold exactly fp's rules, with one
// jump to each first in OUTPUT. Running it again changes nothing.
func Apply(t Tables, fp FamilyPlan) error {
	for _, tp := range fp.Tables {
		// ClearChain creates the chain or flushes it: a rerun starts from empty.
		if err := t.ClearChain(tp.Table, Chain); err != nil {
			return fmt.Errorf("create or flush %s/%s: %w", tp.Table, Chain, explain(err))
		}
		for _, r := range tp.Rules {
			if err := t.Append(tp.Table, Chain, r...); err != nil {
				return fmt.Errorf("append to %s/%s %q: %w", tp.Table, Chain, strings.Join(r, " "), explain(err))
			}
		}
		if err := ensureFirstJump(t, tp.Table); err != nil {
			return err
		}
	}
	return nil
}

// ensureFirstJump leaves exactly one jump to Chain, as rule 1 of OUTPUT, so
// rules other init containers put in OUTPUT cannot shadow ours.
func ensureFirstJump(t Tables, table string) error {
	rules, err := t.List(table, hook)
	if err != nil {
		return fmt.Errorf("list %s/%s: %w", table, hook, explain(err))
	}
	want := jumpLine()
	n, first := 0, false
	for i, r := range outputRules(rules) {
		if r == want {
			n++
			first = first || i == 0
		}
	}
	if n == 1 && first {
		return nil
	}
	for ; n > 0; n-- {
		if err := t.Delete(table, hook, jump()...); err != nil {
			return fmt.Errorf("delete misplaced jump in %s/%s: %w", table, hook, explain(err))
		}
	}
	if err := t.Insert(table, hook, 1, jump()...); err != nil {
		return fmt.Errorf("insert jump into %s/%s: %w", table, hook, explain(err))
	}
	return nil
}

func jumpLine() string { return "-A " + hook + " " + strings.Join(jump(), " ") }

// outputRules keeps the "-A" lines of a -S listing (drops the -P policy line).
func outputRules(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// Verify reads the rules back and fails unless they are exactly the plan's:
// our chain's content, and one jump to it, first in OUTPUT.
func Verify(t Tables, fp FamilyPlan) error {
	for _, tp := range fp.Tables {
		got, err := t.List(tp.Table, Chain)
		if err != nil {
			return fmt.Errorf("list %s/%s: %w", tp.Table, Chain, explain(err))
		}
		for i := range got {
			got[i] = strings.TrimSpace(got[i])
		}
		want := tp.expectedChain()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			return fmt.Errorf("%s/%s holds\n  %s\nwant\n  %s", tp.Table, Chain, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		out, err := t.List(tp.Table, hook)
		if err != nil {
			return fmt.Errorf("list %s/%s: %w", tp.Table, hook, explain(err))
		}
		rules := outputRules(out)
		n := 0
		for _, r := range rules {
			if r == jumpLine() {
				n++
			}
		}
		if n != 1 || rules[0] != jumpLine() {
			return fmt.Errorf("%s/%s: want one %q as rule 1, got %d jumps in %q", tp.Table, hook, jumpLine(), n, rules)
		}
	}
	return nil
}

// Clean deletes every jump to Chain from OUTPUT and then Chain itself, in
// each of fp's tables. What is already gone is fine: cleanup is idempotent.
func Clean(t Tables, fp FamilyPlan) error {
	for _, tp := range fp.Tables {
		exists, err := t.ChainExists(tp.Table, Chain)
		if err != nil {
			if tableMissing(err) {
				continue // no such table in this kernel: nothing of ours in it
			}
			return fmt.Errorf("look for %s/%s: %w", tp.Table, Chain, explain(err))
		}
		if !exists {
			continue
		}
		out, err := t.List(tp.Table, hook)
		if err != nil {
			return fmt.Errorf("list %s/%s: %w", tp.Table, hook, explain(err))
		}
		for _, r := range outputRules(out) {
			if r != jumpLine() {
				continue
			}
			if err := t.Delete(tp.Table, hook, jump()...); err != nil {
				return fmt.Errorf("delete jump from %s/%s: %w", tp.Table, hook, explain(err))
			}
		}
		if err := t.ClearAndDeleteChain(tp.Table, Chain); err != nil {
			return fmt.Errorf("delete %s/%s: %w", tp.Table, Chain, explain(err))
		}
	}
	return nil
}

// explain turns the iptables failures users hit into advice.
func explain(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case isPermission(err):
		return fmt.Errorf("iptables: permission denied: the init container needs NET_ADMIN and NET_RAW and must run as root: %w", err)
	case tableMissing(err):
		return fmt.Errorf("iptables: the kernel has no such table (load iptable_nat/ip6table_nat and the matching filter modules on the node): %w", err)
	}
	return err
}

// tableMissing recognises iptables' "can't initialize iptables table `nat':
// Table does not exist" (legacy) and its nft equivalent.
func tableMissing(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "Table does not exist") || (strings.Contains(msg, "can't initialize") && strings.Contains(msg, "table"))
}

// errNoIptables is returned when neither backend works.
var errNoIptables = errors.New("no working iptables: the image needs iptables-nft or iptables-legacy")

// saveResult is what one backend's *-save commands gave: the number of rules
// in the namespace, or why the backend cannot be used.
type saveResult struct {
	rules int
	err   error
}

// chooseBackend picks the iptables backend the namespace already uses, as
// istio and the Kubernetes iptables wrapper do: the one holding more rules,
// nft on a tie (a fresh pod namespace holds none); a backend whose save
// command is missing or fails is out.
func chooseBackend(nft, legacy saveResult) (string, error) {
	switch {
	case nft.err == nil && legacy.err == nil:
		if legacy.rules > nft.rules {
			return "legacy", nil
		}
		return "nft", nil
	case nft.err == nil:
		return "nft", nil
	case legacy.err == nil:
		return "legacy", nil
	}
	err := fmt.Errorf("%w: iptables-nft-save: %w; iptables-legacy-save: %w", errNoIptables, nft.err, legacy.err)
	if isPermission(nft.err) || isPermission(legacy.err) {
		return "", explain(err)
	}
	return "", err
}

func isPermission(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "Permission denied") || strings.Contains(err.Error(), "Operation not permitted"))
}

// countRuleLines counts the rules ("-A" lines) in iptables-save output.
func countRuleLines(save string) int {
	n := 0
	for _, l := range strings.Split(save, "\n") {
		if strings.HasPrefix(l, "-A ") {
			n++
		}
	}
	return n
}
