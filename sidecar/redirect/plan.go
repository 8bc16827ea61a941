package redirect

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/podrole/podrole/contract"
)

// Chain is our own chain, in the nat and filter tables of each family.
const Chain = "PODROLE_OUTPUT"

// hook is the built-in chain that jumps to Chain: locally generated traffic.
const hook = "OUTPUT"

// Family is an IP family: which of iptables / ip6tables a rule is for.
type Family int

// The families, in the order plans list them.
const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// command is the iptables binary's base name for the family.
func (f Family) command() string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
}

// Action says what a plan does with our chains.
type Action int

// Plan actions.
const (
	// Install fills our chains with the plan's rules and jumps to them.
	Install Action = iota
	// Remove deletes our jumps and chains.
	Remove
)

// Config is what the init step was asked to do, after IPv6 detection.
type Config struct {
	Port int // the agent's port on loopback
	// AgentMark is the socket mark the agent puts on its connections to the
	// node's metadata service (--source=node): packets carrying it are
	// neither redirected nor rejected. 0 exempts nothing (--source=web-identity).
	AgentMark uint32
	IPv6      bool // also handle fd00:ec2::254
	Block     bool // reject all metadata traffic instead of redirecting it
}

// TablePlan is the content of our chain in one table. A table of an Install
// plan with no rules is still created (empty chain, jump) only if listed.
type TablePlan struct {
	Table string
	// Rules are rule specs for Chain, in order, exactly as `iptables -S`
	// prints them after "-A PODROLE_OUTPUT", so verification can compare text.
	Rules [][]string
}

// FamilyPlan is everything for one family.
type FamilyPlan struct {
	Family Family
	Tables []TablePlan
}

// Plan is the complete set of changes, built before anything is touched.
type Plan struct {
	Action   Action
	Summary  string // one line for humans, printed first
	Note     string // how --ipv6=auto was decided, if it was
	Families []FamilyPlan
}

func metadataDest(f Family) string {
	if f == IPv6 {
		return contract.MetadataIPv6 + "/128"
	}
	return contract.MetadataIPv4 + "/32"
}

func loopbackTarget(f Family, port int) string {
	ip := "127.0.0.1"
	if f == IPv6 {
		ip = "::1"
	}
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

func unreachable(f Family) string {
	if f == IPv6 {
		return "icmp6-port-unreachable"
	}
	return "icmp-port-unreachable"
}

// families lists the families cfg covers: IPv4 always, IPv6 when asked.
func families(ipv6 bool) []Family {
	if ipv6 {
		return []Family{IPv4, IPv6}
	}
	return []Family{IPv4}
}

// Build returns the rules for cfg. It validates nothing beyond what it needs:
// contract.InitConfig.Validate has run before.
func Build(cfg Config) Plan {
	p := Plan{Action: Install}
	switch {
	case cfg.Block:
		p.Summary = "block: reject all metadata traffic from every process"
	case cfg.AgentMark != 0:
		p.Summary = fmt.Sprintf("redirect: metadata tcp/80 -> loopback port %d, except socket mark %s", cfg.Port, contract.FormatMark(cfg.AgentMark))
	default:
		p.Summary = fmt.Sprintf("redirect: metadata tcp/80 -> loopback port %d, no exemption", cfg.Port)
	}
	for _, f := range families(cfg.IPv6) {
		dst := metadataDest(f)
		reject := [][]string{
			{"-d", dst, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"},
			{"-d", dst, "-j", "REJECT", "--reject-with", unreachable(f)},
		}
		fp := FamilyPlan{Family: f}
		if cfg.Block {
			fp.Tables = []TablePlan{{Table: "filter", Rules: reject}}
			p.Families = append(p.Families, fp)
			continue
		}
		// Rules are written the way iptables -S prints them back (mark in
		// 0x hex, "-m tcp" made explicit), both backends alike: Verify
		// compares text.
		dnat := []string{"-d", dst, "-p", "tcp", "-m", "tcp", "--dport", "80"}
		filter := reject
		if cfg.AgentMark != 0 {
			mark := contract.FormatMark(cfg.AgentMark)
			dnat = append(dnat, "-m", "mark", "!", "--mark", mark)
			// The exemption comes first: the agent's marked packets to any
			// port of the metadata address leave the pod untouched.
			filter = append([][]string{{"-d", dst, "-m", "mark", "--mark", mark, "-j", "RETURN"}}, reject...)
		}
		dnat = append(dnat, "-j", "DNAT", "--to-destination", loopbackTarget(f, cfg.Port))
		fp.Tables = []TablePlan{
			{Table: "nat", Rules: [][]string{dnat}},
			{Table: "filter", Rules: filter},
		}
		p.Families = append(p.Families, fp)
	}
	return p
}

// BuildCleanup returns the plan that removes whatever Build may have added for
// the given families: our jumps and chains in nat and filter, which are
// absent in block mode and harmless to look for.
func BuildCleanup(ipv6 bool) Plan {
	p := Plan{Action: Remove, Summary: "cleanup: remove " + Chain + " and the jumps to it"}
	for _, f := range families(ipv6) {
		p.Families = append(p.Families, FamilyPlan{Family: f, Tables: []TablePlan{{Table: "nat"}, {Table: "filter"}}})
	}
	return p
}

// jump is the rule spec in OUTPUT that sends traffic through our chain.
func jump() []string { return []string{"-j", Chain} }

// Format writes p as iptables-restore-like text: one block per table and
// family. It is what --dry-run prints and what the golden files pin.
func (p Plan) Format(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# podrole-sidecar init: %s\n", p.Summary)
	if p.Note != "" {
		fmt.Fprintf(&b, "# %s\n", p.Note)
	}
	for _, fp := range p.Families {
		fmt.Fprintf(&b, "# %s (%s)\n", fp.Family.command(), fp.Family)
		for _, tp := range fp.Tables {
			fmt.Fprintf(&b, "*%s\n", tp.Table)
			switch p.Action {
			case Install:
				fmt.Fprintf(&b, ":%s - [0:0]\n", Chain)
				fmt.Fprintf(&b, "-I %s 1 %s\n", hook, strings.Join(jump(), " "))
				for _, r := range tp.Rules {
					fmt.Fprintf(&b, "-A %s %s\n", Chain, strings.Join(r, " "))
				}
			case Remove:
				fmt.Fprintf(&b, "-D %s %s\n", hook, strings.Join(jump(), " "))
				fmt.Fprintf(&b, "-F %s\n", Chain)
				fmt.Fprintf(&b, "-X %s\n", Chain)
			}
			b.WriteString("COMMIT\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// expectedChain is what `iptables -t <table> -S PODROLE_OUTPUT` must print
// once tp is applied.
func (tp TablePlan) expectedChain() []string {
	out := []string{"-N " + Chain}
	for _, r := range tp.Rules {
		out = append(out, "-A "+Chain+" "+strings.Join(r, " "))
	}
	return out
}
