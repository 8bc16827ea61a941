package stsdouble

import (
	"testing"
	"time"
)

// Long runs must not grow without bound: past maxSessions, sessions expired
// for over an hour are dropped and their keys stop working.
func TestSessionsPruned(t *testing.T) {
	f := newFixture(t, nil)
	role := f.d.roles[appRole]
	old := f.d.issue(role, "old", 900, "AssumeRole", "test", nil, nil)
	f.clk.Advance(3 * time.Hour)
	defer f.clk.Advance(-3 * time.Hour)
	for i := 0; i < maxSessions; i++ {
		f.d.issue(role, "new", 900, "AssumeRole", "test", nil, nil)
	}
	is := f.d.Issued(appRole)
	if len(is) != maxSessions || is[0].SessionName != "new" {
		t.Fatalf("%d sessions kept, first %q", len(is), is[0].SessionName)
	}
	if f.d.Expire(old.AccessKeyID) {
		t.Errorf("the old session is still known")
	}
}
