package redirect

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podrole/podrole/contract"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func initConfig(mod func(*contract.InitConfig)) contract.InitConfig {
	c := contract.DefaultInitConfig()
	if mod != nil {
		mod(&c)
	}
	return c
}

// The dry-run output is the plan users and reviewers read; the golden files
// pin it for each configuration. `go test ./sidecar/redirect -update` rewrites them.
func TestDryRunGolden(t *testing.T) {
	tests := []struct {
		golden string
		cfg    contract.InitConfig
		ipv6   bool // what auto detection finds
	}{
		// --source=node: the agent's mark is exempt.
		{"redirect-v4", initConfig(func(c *contract.InitConfig) { c.AgentMark = contract.DefaultAgentMark; c.IPv6 = contract.IPv6False }), false},
		{"redirect-v4-v6", initConfig(func(c *contract.InitConfig) { c.AgentMark = contract.DefaultAgentMark; c.IPv6 = contract.IPv6True }), false},
		{"redirect-auto-detected-v6", initConfig(func(c *contract.InitConfig) { c.AgentMark = contract.DefaultAgentMark }), true},
		{"redirect-custom-port-mark", initConfig(func(c *contract.InitConfig) { c.Port = 8080; c.AgentMark = 42; c.IPv6 = contract.IPv6True }), false},
		// --source=web-identity (and the defaults): nothing is exempt.
		{"redirect-no-exemption-v4", initConfig(func(c *contract.InitConfig) { c.IPv6 = contract.IPv6False }), false},
		{"redirect-no-exemption-v4-v6", initConfig(func(c *contract.InitConfig) { c.IPv6 = contract.IPv6True }), false},
		{"block-v4", initConfig(func(c *contract.InitConfig) { c.Block = true; c.IPv6 = contract.IPv6False }), true},
		{"block-v4-v6", initConfig(func(c *contract.InitConfig) { c.Block = true; c.IPv6 = contract.IPv6True }), false},
		{"cleanup", initConfig(func(c *contract.InitConfig) { c.Cleanup = true }), false},
		{"cleanup-v4", initConfig(func(c *contract.InitConfig) { c.Cleanup = true; c.IPv6 = contract.IPv6False }), true},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			tc.cfg.DryRun = true
			sys := newFakeSystem(tc.ipv6)
			// A dry run must not even look at iptables.
			sys.tblErr[IPv4] = errors.New("dry run touched iptables")
			sys.tblErr[IPv6] = sys.tblErr[IPv4]
			var out bytes.Buffer
			if err := Run(context.Background(), tc.cfg, sys, &out, quiet()); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.golden+".golden")
			if *update {
				if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if out.String() != string(want) {
				t.Errorf("dry run differs from %s (rerun with -update if intended):\n--- got\n%s--- want\n%s", path, out.String(), want)
			}
		})
	}
}

// The plan's security properties, asserted on the data rather than the text.
func TestPlanProperties(t *testing.T) {
	const mark = "0x504f4452"
	for _, ipv6 := range []bool{false, true} {
		marked := Build(Config{Port: 9181, AgentMark: contract.DefaultAgentMark, IPv6: ipv6})
		unmarked := Build(Config{Port: 9181, IPv6: ipv6})
		block := Build(Config{Port: 9181, IPv6: ipv6, Block: true})
		for _, p := range []Plan{marked, unmarked, block} {
			if got, want := len(p.Families), map[bool]int{false: 1, true: 2}[ipv6]; got != want {
				t.Fatalf("ipv6=%v: %d families, want %d", ipv6, got, want)
			}
		}
		for _, fp := range block.Families {
			text := planText(fp)
			if strings.Contains(text, "mark") || strings.Contains(text, "owner") || strings.Contains(text, "RETURN") ||
				strings.Contains(text, "DNAT") || strings.Contains(text, "*nat") {
				t.Errorf("block %s must exempt nothing and redirect nothing:\n%s", fp.Family, text)
			}
			if strings.Contains(text, "DROP") || !strings.Contains(text, "tcp-reset") {
				t.Errorf("block %s must reject (tcp reset), not drop:\n%s", fp.Family, text)
			}
		}
		for _, p := range []Plan{marked, unmarked} {
			for _, fp := range p.Families {
				text := planText(fp)
				if strings.Contains(text, "owner") || strings.Contains(text, "uid") {
					t.Errorf("redirect %s: nothing may be exempt by UID any more:\n%s", fp.Family, text)
				}
				filter := fp.Tables[1]
				last := strings.Join(filter.Rules[len(filter.Rules)-1], " ")
				if filter.Table != "filter" || strings.Contains(last, "-p ") || strings.Contains(last, "--dport") || !strings.Contains(last, "REJECT") {
					t.Errorf("redirect %s: the last filter rule must reject every protocol and port: %q", fp.Family, last)
				}
			}
		}
		for _, fp := range marked.Families {
			filter, nat := fp.Tables[1], fp.Tables[0]
			if got := strings.Join(filter.Rules[0], " "); !strings.HasSuffix(got, "-m mark --mark "+mark+" -j RETURN") {
				t.Errorf("redirect %s: the agent's mark must be exempt first in filter: %q", fp.Family, got)
			}
			if got := strings.Join(nat.Rules[0], " "); !strings.Contains(got, "-m mark ! --mark "+mark+" -j DNAT") {
				t.Errorf("redirect %s: the agent's mark must not be redirected: %q", fp.Family, got)
			}
		}
		for _, fp := range unmarked.Families {
			if text := planText(fp); strings.Contains(text, "mark") || strings.Contains(text, "RETURN") {
				t.Errorf("redirect %s without a mark must exempt nothing:\n%s", fp.Family, text)
			}
		}
	}
}

func planText(fp FamilyPlan) string {
	var b bytes.Buffer
	_ = Plan{Families: []FamilyPlan{fp}}.Format(&b)
	return b.String()
}

// Installing twice gives the same rules, verification passes, and cleanup
// returns every table to exactly what it was, leaving others' rules alone.
func TestApplyIdempotentAndCleanupExact(t *testing.T) {
	for _, block := range []bool{false, true} {
		sys := newFakeSystem(true)
		// Someone else's rules must survive us.
		for _, ft := range sys.tables {
			_ = ft.Append("nat", "OUTPUT", "-p", "tcp", "-j", "ISTIO_OUTPUT")
			_ = ft.Append("filter", "OUTPUT", "-o", "lo", "-j", "ACCEPT")
		}
		before := map[Family]string{IPv4: sys.tables[IPv4].save(), IPv6: sys.tables[IPv6].save()}
		cfg := initConfig(func(c *contract.InitConfig) {
			c.Block = block
			if !block {
				c.AgentMark = contract.DefaultAgentMark
			}
		})
		if err := Run(context.Background(), cfg, sys, io.Discard, quiet()); err != nil {
			t.Fatal(err)
		}
		once := map[Family]string{IPv4: sys.tables[IPv4].save(), IPv6: sys.tables[IPv6].save()}
		if err := Run(context.Background(), cfg, sys, io.Discard, quiet()); err != nil {
			t.Fatal(err)
		}
		for f, ft := range sys.tables {
			if got := ft.save(); got != once[f] {
				t.Errorf("block=%v %s: second run changed the rules:\n%s\nwant\n%s", block, f, got, once[f])
			}
			if rules, _ := ft.List("nat", "OUTPUT"); !block && rules[1] != "-A OUTPUT -j PODROLE_OUTPUT" {
				t.Errorf("%s: our jump must be first in nat OUTPUT, got %q", f, rules)
			}
		}
		cfg.Cleanup = true
		for range 2 { // cleanup is idempotent too
			if err := Run(context.Background(), cfg, sys, io.Discard, quiet()); err != nil {
				t.Fatal(err)
			}
			for f, ft := range sys.tables {
				if got := ft.save(); got != before[f] {
					t.Errorf("block=%v %s: cleanup left\n%s\nwant\n%s", block, f, got, before[f])
				}
			}
		}
	}
}

// A jump pushed down by another init container, or duplicated, is put back
// as the single first rule.
func TestApplyRepairsJump(t *testing.T) {
	ft := newFakeTables()
	fp := Build(Config{Port: 9181, AgentMark: contract.DefaultAgentMark}).Families[0]
	if err := Apply(ft, fp); err != nil {
		t.Fatal(err)
	}
	_ = ft.Insert("nat", "OUTPUT", 1, "-j", "OTHER")
	_ = ft.Append("nat", "OUTPUT", "-j", Chain)
	if err := Verify(ft, fp); err == nil {
		t.Fatal("Verify accepted a shadowed, duplicated jump")
	}
	if err := Apply(ft, fp); err != nil {
		t.Fatal(err)
	}
	if err := Verify(ft, fp); err != nil {
		t.Fatal(err)
	}
	got, _ := ft.List("nat", "OUTPUT")
	want := []string{"-P OUTPUT ACCEPT", "-A OUTPUT -j PODROLE_OUTPUT", "-A OUTPUT -j OTHER"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("nat OUTPUT = %q, want %q", got, want)
	}
}

// Verification fails closed on any difference between kernel and plan.
func TestVerifyDetectsDrift(t *testing.T) {
	fp := Build(Config{Port: 9181, AgentMark: contract.DefaultAgentMark, IPv6: true}).Families[1]
	tests := map[string]func(*fakeTables){
		"rule missing": func(ft *fakeTables) { ft.chains["filter"][Chain] = ft.chains["filter"][Chain][1:] },
		"extra rule":   func(ft *fakeTables) { _ = ft.Append("nat", Chain, "-j", "RETURN") },
		"rule rewritten": func(ft *fakeTables) {
			// e.g. a kernel or iptables version printing the port differently
			ft.chains["nat"][Chain][0] = strings.Replace(ft.chains["nat"][Chain][0], "9181", "9182", 1)
		},
		"exempt mark changed": func(ft *fakeTables) {
			ft.chains["filter"][Chain][0] = strings.Replace(ft.chains["filter"][Chain][0], "0x504f4452", "0x1", 1)
		},
		"no jump":    func(ft *fakeTables) { _ = ft.Delete("filter", "OUTPUT", "-j", Chain) },
		"chain gone": func(ft *fakeTables) { delete(ft.chains["nat"], Chain) },
	}
	for name, mod := range tests {
		t.Run(name, func(t *testing.T) {
			ft := newFakeTables()
			if err := Apply(ft, fp); err != nil {
				t.Fatal(err)
			}
			if err := Verify(ft, fp); err != nil {
				t.Fatalf("clean apply does not verify: %v", err)
			}
			mod(ft)
			if err := Verify(ft, fp); err == nil {
				t.Fatal("Verify accepted rules that differ from the plan")
			}
		})
	}
}

// Errors users hit say what to do, and failures stop the init (fail closed).
func TestRunErrors(t *testing.T) {
	perm := errors.New("running [/usr/sbin/iptables-nft -t nat -N PODROLE_OUTPUT --wait]: exit status 4: iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)")
	tests := []struct {
		name string
		cfg  contract.InitConfig
		sys  func() *fakeSystem
		want string
	}{
		{"no capabilities", initConfig(func(c *contract.InitConfig) { c.IPv6 = contract.IPv6False }), func() *fakeSystem {
			s := newFakeSystem(false)
			s.tables[IPv4].fail = perm
			return s
		}, "iptables: permission denied: the init container needs NET_ADMIN and NET_RAW"},
		{"ipv6 forced but ip6tables broken", initConfig(func(c *contract.InitConfig) { c.IPv6 = contract.IPv6True }), func() *fakeSystem {
			s := newFakeSystem(false)
			s.tblErr[IPv6] = errors.New("exec: \"ip6tables-nft\": executable file not found in $PATH")
			return s
		}, "ip6tables-nft"},
		{"ipv6 detected but nat table missing", initConfig(nil), func() *fakeSystem {
			s := newFakeSystem(true)
			delete(s.tables[IPv6].chains, "nat")
			return s
		}, "the kernel has no such table"},
		{"ipv6 detection fails", initConfig(nil), func() *fakeSystem {
			s := newFakeSystem(false)
			s.ipv6Err = errors.New("cannot read /proc/net")
			return s
		}, "pass --ipv6=true or --ipv6=false"},
		{"bad port", initConfig(func(c *contract.InitConfig) { c.Port = 0 }), func() *fakeSystem { return newFakeSystem(false) }, "--port=0"},
		{"block with a mark", initConfig(func(c *contract.InitConfig) { c.Block = true; c.AgentMark = contract.DefaultAgentMark }),
			func() *fakeSystem { return newFakeSystem(false) }, "--block with --agent-mark"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Run(context.Background(), tc.cfg, tc.sys(), io.Discard, quiet())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// Cleanup with --ipv6=auto removes IPv6 rules when ip6tables works and is
// not stopped by a host without ip6tables; a dry run with undetectable IPv6
// shows both families and says why.
func TestAutoIPv6EdgeCases(t *testing.T) {
	s := newFakeSystem(false)
	if err := Run(context.Background(), initConfig(func(c *contract.InitConfig) { c.IPv6 = contract.IPv6True }), s, io.Discard, quiet()); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), initConfig(func(c *contract.InitConfig) { c.Cleanup = true }), s, io.Discard, quiet()); err != nil {
		t.Fatal(err)
	}
	for f, ft := range s.tables {
		if ok, _ := ft.ChainExists("nat", Chain); ok {
			t.Errorf("%s: cleanup with --ipv6=auto left %s", f, Chain)
		}
	}
	s = newFakeSystem(false)
	s.tblErr[IPv6] = errors.New("ip6tables: not found")
	if err := Run(context.Background(), initConfig(func(c *contract.InitConfig) { c.Cleanup = true }), s, io.Discard, quiet()); err != nil {
		t.Fatalf("auto cleanup without ip6tables: %v", err)
	}
	s.ipv6Err = errors.New("no /proc")
	var out bytes.Buffer
	if err := Run(context.Background(), initConfig(func(c *contract.InitConfig) { c.DryRun = true }), s, &out, quiet()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "could not detect IPv6") || !strings.Contains(out.String(), "# ip6tables (IPv6)") {
		t.Fatalf("dry run without detection:\n%s", out.String())
	}
}

func TestIPv6Detection(t *testing.T) {
	tests := []struct {
		file string
		fn   func(io.Reader) (bool, error)
		want bool
	}{
		{"if_inet6-lo-only", hasUsableIPv6Address, false},
		{"if_inet6-link-local", hasUsableIPv6Address, false},
		{"if_inet6-global", hasUsableIPv6Address, true},
		{"ipv6_route-local-only", hasRouteToMetadata, false},
		{"ipv6_route-default", hasRouteToMetadata, true},
		{"ipv6_route-ula", hasRouteToMetadata, true},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tc.file+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := tc.fn(f)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := hasRouteToMetadata(strings.NewReader("zz 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n")); err == nil {
		t.Fatal("garbage route accepted")
	}
}

func TestCountRuleLines(t *testing.T) {
	save := "# Generated by iptables-save\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KUBE-SERVICES\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n"
	if got := countRuleLines(save); got != 2 {
		t.Fatalf("countRuleLines = %d, want 2", got)
	}
}

func TestChooseBackend(t *testing.T) {
	missing := errors.New(`exec: "iptables-legacy-save": executable file not found in $PATH`)
	denied := errors.New("iptables-nft-save: exit status 4: Permission denied (you must be root)")
	tests := []struct {
		name        string
		nft, legacy saveResult
		want        string
		wantErr     string
	}{
		{"fresh namespace: nft", saveResult{0, nil}, saveResult{0, nil}, "nft", ""},
		{"tie: nft", saveResult{3, nil}, saveResult{3, nil}, "nft", ""},
		{"legacy holds more rules", saveResult{0, nil}, saveResult{12, nil}, "legacy", ""},
		{"nft holds more rules", saveResult{12, nil}, saveResult{2, nil}, "nft", ""},
		{"legacy binary missing", saveResult{0, nil}, saveResult{0, missing}, "nft", ""},
		{"nft fails", saveResult{0, missing}, saveResult{0, nil}, "legacy", ""},
		{"neither", saveResult{0, missing}, saveResult{0, missing}, "", "no working iptables"},
		{"no privileges", saveResult{0, denied}, saveResult{0, denied}, "", "needs NET_ADMIN and NET_RAW"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chooseBackend(tc.nft, tc.legacy)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
