package redirect

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// fakeTables is an in-memory iptables for one family that prints rules the
// way `iptables -S` does, so Apply, Verify and Clean run against the same
// text they see on a real kernel (netns_test.go checks the real thing).
type fakeTables struct {
	chains map[string]map[string][]string // table -> chain -> rule specs
	calls  int                            // mutating calls, to prove no-ops
	fail   error                          // returned by every call when set
}

var builtin = map[string][]string{
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
}

func newFakeTables() *fakeTables {
	f := &fakeTables{chains: map[string]map[string][]string{}}
	for t, cs := range builtin {
		f.chains[t] = map[string][]string{}
		for _, c := range cs {
			f.chains[t][c] = nil
		}
	}
	return f
}

func (f *fakeTables) chain(table, chain string) ([]string, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	t, ok := f.chains[table]
	if !ok {
		return nil, fmt.Errorf("iptables v1.8.9: can't initialize iptables table `%s': Table does not exist (do you need to insmod?)", table)
	}
	rules, ok := t[chain]
	if !ok {
		return nil, errors.New("iptables: No chain/target/match by that name.")
	}
	return rules, nil
}

func (f *fakeTables) ChainExists(table, chain string) (bool, error) {
	_, err := f.chain(table, chain)
	if err != nil && strings.Contains(err.Error(), "No chain") {
		return false, nil
	}
	return err == nil, err
}

func (f *fakeTables) ClearChain(table, chain string) error {
	if _, err := f.chain(table, chain); err != nil && !strings.Contains(err.Error(), "No chain") {
		return err
	}
	f.calls++
	f.chains[table][chain] = nil
	return nil
}

func (f *fakeTables) ClearAndDeleteChain(table, chain string) error {
	if ok, err := f.ChainExists(table, chain); err != nil || !ok {
		return err
	}
	f.calls++
	delete(f.chains[table], chain)
	return nil
}

func (f *fakeTables) Append(table, chain string, spec ...string) error {
	rules, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	f.calls++
	f.chains[table][chain] = append(rules, strings.Join(spec, " "))
	return nil
}

func (f *fakeTables) Insert(table, chain string, pos int, spec ...string) error {
	rules, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	f.calls++
	f.chains[table][chain] = slices.Insert(slices.Clone(rules), pos-1, strings.Join(spec, " "))
	return nil
}

func (f *fakeTables) Delete(table, chain string, spec ...string) error {
	rules, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	i := slices.Index(rules, strings.Join(spec, " "))
	if i < 0 {
		return errors.New("iptables: Bad rule (does a matching rule exist in that chain?).")
	}
	f.calls++
	f.chains[table][chain] = slices.Delete(slices.Clone(rules), i, i+1)
	return nil
}

func (f *fakeTables) List(table, chain string) ([]string, error) {
	rules, err := f.chain(table, chain)
	if err != nil {
		return nil, err
	}
	out := []string{"-N " + chain}
	if slices.Contains(builtin[table], chain) {
		out = []string{"-P " + chain + " ACCEPT"}
	}
	for _, r := range rules {
		out = append(out, "-A "+chain+" "+r)
	}
	return out, nil
}

// save renders every table like iptables-save without counters, sorted, for
// before/after comparisons.
func (f *fakeTables) save() string {
	var b strings.Builder
	for _, t := range slices.Sorted(maps.Keys(f.chains)) {
		fmt.Fprintf(&b, "*%s\n", t)
		for _, c := range slices.Sorted(maps.Keys(f.chains[t])) {
			l, _ := f.List(t, c)
			b.WriteString(strings.Join(l, "\n") + "\n")
		}
	}
	return b.String()
}

// fakeSystem hands out one fakeTables per family.
type fakeSystem struct {
	ipv6    bool
	ipv6Err error
	tables  map[Family]*fakeTables
	tblErr  map[Family]error
}

func newFakeSystem(ipv6 bool) *fakeSystem {
	return &fakeSystem{ipv6: ipv6, tables: map[Family]*fakeTables{IPv4: newFakeTables(), IPv6: newFakeTables()}, tblErr: map[Family]error{}}
}

func (s *fakeSystem) HasIPv6(context.Context) (bool, error) { return s.ipv6, s.ipv6Err }

func (s *fakeSystem) Tables(_ context.Context, f Family) (Tables, error) {
	if err := s.tblErr[f]; err != nil {
		return nil, err
	}
	return s.tables[f], nil
}
