package imds

import (
	"strings"
	"sync"
	"testing"
	"time"
)

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2026, 11, 28, 4, 0, 0, 0, time.UTC)}
}

func newTokens(t testing.TB, now func() time.Time) *Tokens {
	t.Helper()
	tk, err := NewTokens(now)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// A token is valid for exactly its whole TTL, for every allowed TTL.
func TestTokenValidForWholeTTL(t *testing.T) {
	for _, ttl := range []time.Duration{MinTokenTTL, 300 * time.Second, MaxTokenTTL} {
		clock := newTestClock()
		tk := newTokens(t, clock.Now)
		tok, err := tk.Issue(ttl)
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(ttl - time.Nanosecond)
		if !tk.Valid(tok) {
			t.Fatalf("ttl %s: invalid before the end of its TTL", ttl)
		}
		clock.Advance(time.Nanosecond)
		if tk.Valid(tok) {
			t.Fatalf("ttl %s: still valid at the end of its TTL", ttl)
		}
	}
}

// Any change to a token, or a token of another sidecar, is refused.
func TestTokenTampering(t *testing.T) {
	clock := newTestClock()
	tk := newTokens(t, clock.Now)
	tok, err := tk.Issue(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range len(tok) {
		for _, c := range []byte{alphabet[(strings.IndexByte(alphabet, tok[i])+1)%64], alphabet[(strings.IndexByte(alphabet, tok[i])+32)%64]} {
			bad := tok[:i] + string(c) + tok[i+1:]
			if tk.Valid(bad) {
				t.Fatalf("token with byte %d changed to %q accepted", i, c)
			}
		}
	}
	other := newTokens(t, clock.Now)
	foreign, _ := other.Issue(time.Hour)
	for name, bad := range map[string]string{
		"empty": "", "truncated": tok[:len(tok)-1], "extended": tok + "A", "foreign key": foreign,
		"padded": tok + "=", "spaces": " " + tok[1:], "std base64": strings.NewReplacer("-", "+", "_", "/").Replace(tok) + "+",
	} {
		if tk.Valid(bad) {
			t.Fatalf("%s token accepted", name)
		}
	}
	if !tk.Valid(tok) {
		t.Fatal("original token refused")
	}
}

// Tokens issued concurrently are all distinct and all valid: there is no
// shared table to race on.
func TestTokensConcurrent(t *testing.T) {
	tk := newTokens(t, nil)
	const n = 64
	toks := make([]string, n*10)
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			for i := range 10 {
				tok, err := tk.Issue(time.Duration(1+i) * time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				toks[g*10+i] = tok
				if !tk.Valid(tok) {
					t.Error("fresh token invalid")
				}
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, tok := range toks {
		if seen[tok] || !tk.Valid(tok) {
			t.Fatalf("duplicate or invalid token among concurrent issues")
		}
		seen[tok] = true
	}
}
