package creds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock moves only when told; After channels fire on Advance.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 28, 4, 0, 0, 0, time.UTC)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- f.now
		return ch
	}
	f.waiters = append(f.waiters, fakeWaiter{at: f.now.Add(d), ch: ch})
	return ch
}

// Set moves the clock to t (never back) and fires due timers.
func (f *fakeClock) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t.After(f.now) {
		f.now = t
	}
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if !w.at.After(f.now) {
			w.ch <- f.now
		} else {
			kept = append(kept, w)
		}
	}
	f.waiters = kept
}

func (f *fakeClock) Advance(d time.Duration) { f.Set(f.Now().Add(d)) }

// pending returns the deadlines of the timers not yet fired.
func (f *fakeClock) pending() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for _, w := range f.waiters {
		out = append(out, w.at)
	}
	return out
}

// fakeSource hands out numbered credentials living for lifetime, or err.
type fakeSource struct {
	clock    *fakeClock
	mu       sync.Mutex
	lifetime time.Duration
	err      error
	calls    int
	gate     chan struct{} // when non-nil, Fetch waits for it
}

func (s *fakeSource) API() string { return "AssumeRole" }

func (s *fakeSource) Fetch(ctx context.Context) (Credentials, error) {
	s.mu.Lock()
	s.calls++
	n, err, gate, lifetime := s.calls, s.err, s.gate, s.lifetime
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Credentials{}, ctx.Err()
		}
	}
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{
		AccessKeyID: fmt.Sprintf("ASIA%d", n), SecretAccessKey: fmt.Sprintf("secret-%d", n),
		SessionToken: fmt.Sprintf("token-%d", n), Expiration: s.clock.Now().Add(lifetime), AccountID: "111122223333",
	}, nil
}

func (s *fakeSource) set(f func(*fakeSource)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *fakeSource) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

type countingMetrics struct {
	mu          sync.Mutex
	calls, errs int
}

func (m *countingMetrics) STSCall(_ string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if err != nil {
		m.errs++
	}
}

// waitFor polls cond (the cache works in goroutines) for at most 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type fixture struct {
	clock  *fakeClock
	src    *fakeSource
	cache  *Cache
	cancel context.CancelFunc
}

// start runs a cache over a fake source with the default policy and waits
// for the first fetch and for the loop to go to sleep until the refresh.
func start(t *testing.T, lifetime time.Duration, seed uint64) *fixture {
	t.Helper()
	clock := newFakeClock()
	src := &fakeSource{clock: clock, lifetime: lifetime}
	c := New(src, Options{Clock: clock, Rand: rand.New(rand.NewPCG(seed, seed)), Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go c.Run(ctx)
	waitFor(t, "first credentials", c.Started)
	waitFor(t, "refresh timer", func() bool { return len(clock.pending()) == 1 })
	return &fixture{clock: clock, src: src, cache: c, cancel: cancel}
}

func mustCreds(t *testing.T, c *Cache) Credentials {
	t.Helper()
	cr, err := c.Credentials(context.Background())
	if err != nil {
		t.Fatalf("Credentials: %v", err)
	}
	return cr
}

func TestFetchesAtStartThenServesFromCache(t *testing.T) {
	f := start(t, time.Hour, 1)
	if !f.cache.Ready() {
		t.Fatal("not ready after the first fetch")
	}
	for range 100 {
		if cr := mustCreds(t, f.cache); cr.AccessKeyID != "ASIA1" || cr.LastUpdated != f.clock.Now() {
			t.Fatalf("got %s (%s), want the first set dated now", cr.AccessKeyID, cr.LastUpdated)
		}
	}
	if n := f.src.count(); n != 1 {
		t.Fatalf("%d STS calls for 100 requests, want 1", n)
	}
}

// The refresh starts with 45-50 min left of a one-hour session (at random in
// that window), and with proportionally less for short sessions.
func TestRefreshAheadWithJitter(t *testing.T) {
	tests := []struct {
		lifetime       time.Duration
		earliest, last time.Duration // refresh window, as time left before expiry
	}{
		{time.Hour, 50 * time.Minute, 45 * time.Minute},
		{12 * time.Hour, 50 * time.Minute, 45 * time.Minute},
		{15 * time.Minute, 12*time.Minute + 30*time.Second, 11*time.Minute + 15*time.Second},
		{2 * time.Minute, 100 * time.Second, 90 * time.Second}, // test STS capping lifetimes
	}
	for _, tt := range tests {
		t.Run(tt.lifetime.String(), func(t *testing.T) {
			seen := map[time.Time]bool{}
			for seed := range uint64(8) {
				f := start(t, tt.lifetime, seed)
				exp := mustCreds(t, f.cache).Expiration
				at := f.clock.pending()[0]
				if left := exp.Sub(at); left > tt.earliest || left < tt.last {
					t.Fatalf("seed %d: refresh with %s left, want %s..%s", seed, left, tt.last, tt.earliest)
				}
				seen[at] = true
				f.clock.Set(at.Add(-time.Second))
				if n := f.src.count(); n != 1 {
					t.Fatalf("refreshed early: %d calls", n)
				}
				f.clock.Set(at)
				waitFor(t, "the refresh", func() bool { return f.src.count() == 2 })
				waitFor(t, "the new credentials", func() bool { return mustCreds(t, f.cache).AccessKeyID == "ASIA2" })
				f.cancel()
			}
			if len(seen) < 4 {
				t.Fatalf("refresh times do not vary with the seed: %v", seen)
			}
		})
	}
}

// Credentials that live only seconds do not make the refresh a busy loop.
func TestTinySessionsRefreshAtMostEveryRetryMin(t *testing.T) {
	f := start(t, 400*time.Millisecond, 1)
	if at := f.clock.pending()[0]; at.Sub(f.clock.Now()) < DefaultPolicy().RetryMin {
		t.Fatalf("next refresh in %s", at.Sub(f.clock.Now()))
	}
}

// Over hours of normal operation every served set has >= 30 min left.
func TestServedExpirationAlwaysFarAhead(t *testing.T) {
	f := start(t, time.Hour, 7)
	for range 6 * 60 {
		f.clock.Advance(time.Minute)
		// Let the loop act on the new time before asking.
		waitFor(t, "the loop to settle", func() bool { return len(f.clock.pending()) == 1 && f.cache.Ready() })
		cr := mustCreds(t, f.cache)
		if left := cr.Expiration.Sub(f.clock.Now()); left < 30*time.Minute {
			t.Fatalf("served credentials with %s left", left)
		}
	}
	// 6 h of one-hour sessions refreshed with 45-50 min left: 6h/(10..15 min).
	if n := f.src.count(); n < 24 || n > 37 {
		t.Fatalf("%d STS calls in 6 h", n)
	}
}

// N callers arriving before any credentials exist share one STS call.
func TestSingleflight(t *testing.T) {
	clock := newFakeClock()
	gate := make(chan struct{})
	src := &fakeSource{clock: clock, lifetime: time.Hour, gate: gate}
	c := New(src, Options{Clock: clock})
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			cr, err := c.Credentials(context.Background())
			if err == nil && cr.AccessKeyID != "ASIA1" {
				err = fmt.Errorf("got %s", cr.AccessKeyID)
			}
			errs <- err
		})
	}
	// Every caller is waiting (each holds a MaxWait timer) on one fetch.
	waitFor(t, "all callers waiting", func() bool { return len(clock.pending()) == n })
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := src.count(); got != 1 {
		t.Fatalf("%d STS calls for %d concurrent callers, want 1", got, n)
	}
}

// A request never waits longer than MaxWait for a slow STS.
func TestRequestWaitIsBounded(t *testing.T) {
	clock := newFakeClock()
	gate := make(chan struct{})
	defer close(gate)
	src := &fakeSource{clock: clock, lifetime: time.Hour, gate: gate}
	c := New(src, Options{Clock: clock})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Credentials(context.Background())
		errc <- err
	}()
	waitFor(t, "the caller to wait", func() bool { return len(clock.pending()) == 1 })
	clock.Advance(DefaultPolicy().MaxWait)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("caller still waiting after MaxWait")
	}
}

// STS down: the last good set is served until 30 min before it expires,
// never after; retries back off exponentially with jitter; service resumes
// as soon as STS heals.
func TestFailureKeepsLastGoodNeverExpiredThenRecovers(t *testing.T) {
	m := &countingMetrics{}
	clock := newFakeClock()
	src := &fakeSource{clock: clock, lifetime: time.Hour}
	c := New(src, Options{Clock: clock, Metrics: m, Rand: rand.New(rand.NewPCG(3, 3))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	waitFor(t, "first credentials", c.Started)
	waitFor(t, "refresh timer", func() bool { return len(clock.pending()) == 1 })
	first := mustCreds(t, c)
	src.set(func(s *fakeSource) { s.err = errors.New("sts: Throttling: Rate exceeded") })

	cutoff := first.Expiration.Add(-30 * time.Minute)
	var prevWait time.Duration
	for i := 0; ; i++ {
		due := clock.pending()[0]
		calls := src.count()
		if wait := due.Sub(clock.Now()); i >= 1 {
			// Backoff after failure i (i=0 is the scheduled refresh): base 1s*2^(i-1)
			// capped at 1 min, jittered into [base/2, base].
			base := min(time.Second<<(i-1), time.Minute)
			if wait < base/2 || wait > base {
				t.Fatalf("retry %d after %s, want %s..%s", i, wait, base/2, base)
			}
			prevWait = wait
		}
		clock.Set(due)
		waitFor(t, "a retry", func() bool { return src.count() == calls+1 })
		waitFor(t, "the next retry timer", func() bool { return len(clock.pending()) == 1 })
		now := clock.Now()
		cr, err := c.Credentials(ctx)
		if now.Before(cutoff) {
			if err != nil || cr.AccessKeyID != first.AccessKeyID {
				t.Fatalf("at %s (before the margin) got %v, %v; want the last good set", now, cr, err)
			}
			continue
		}
		// Past the margin: nothing is served, not even the still-valid set.
		if err == nil || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "Throttling") {
			t.Fatalf("at %s (%s before expiry) got %v, %v; want ErrUnavailable naming the cause", now, first.Expiration.Sub(now), cr, err)
		}
		if c.Ready() {
			t.Fatal("ready without servable credentials")
		}
		break
	}
	if prevWait < 30*time.Second {
		t.Fatalf("backoff never reached its cap: last wait %s", prevWait)
	}
	// While backing off, requests do not hammer STS: they fail at once.
	calls := src.count()
	for range 20 {
		if _, err := c.Credentials(ctx); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v", err)
		}
	}
	if src.count() != calls {
		t.Fatalf("requests during backoff called STS %d times", src.count()-calls)
	}
	// Way past expiry, still nothing.
	clock.Set(first.Expiration.Add(-time.Second))
	waitFor(t, "the loop to settle", func() bool { return len(clock.pending()) == 1 })
	if _, err := c.Credentials(ctx); err == nil {
		t.Fatal("served credentials about to expire")
	}

	src.set(func(s *fakeSource) { s.err = nil })
	clock.Set(clock.pending()[0])
	waitFor(t, "recovery", c.Ready)
	cr := mustCreds(t, c)
	if cr.AccessKeyID == first.AccessKeyID || cr.Expiration.Sub(clock.Now()) != time.Hour {
		t.Fatalf("after recovery got %s expiring in %s", cr.AccessKeyID, cr.Expiration.Sub(clock.Now()))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.calls != src.count() || m.errs != src.count()-2 {
		t.Fatalf("metrics: %d calls %d errors, source saw %d calls (2 good)", m.calls, m.errs, src.count())
	}
}

// Credentials STS should never return are refused, not cached.
func TestUnusableCredentialsRefused(t *testing.T) {
	tests := map[string]Credentials{
		"expired":  {AccessKeyID: "A", SecretAccessKey: "S", SessionToken: "T", Expiration: newFakeClock().Now().Add(-time.Second)},
		"no token": {AccessKeyID: "A", SecretAccessKey: "S", Expiration: newFakeClock().Now().Add(time.Hour)},
		"no key":   {SecretAccessKey: "S", SessionToken: "T", Expiration: newFakeClock().Now().Add(time.Hour)},
	}
	for name, bad := range tests {
		t.Run(name, func(t *testing.T) {
			clock := newFakeClock()
			c := New(staticSource{bad}, Options{Clock: clock})
			if cr, err := c.Credentials(context.Background()); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("got %v, %v; want ErrUnavailable", cr, err)
			}
			if c.Started() || c.Ready() {
				t.Fatal("unusable credentials counted as started/ready")
			}
		})
	}
}

type staticSource struct{ c Credentials }

func (staticSource) API() string                                  { return "AssumeRole" }
func (s staticSource) Fetch(context.Context) (Credentials, error) { return s.c, nil }

// Secrets never show in formatted values or logs.
func TestCredentialsRedacted(t *testing.T) {
	c := Credentials{AccessKeyID: "ASIAKEYID", SecretAccessKey: "SECRETVALUE", SessionToken: "SESSIONTOKEN", Expiration: time.Now()}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "creds", c)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "creds", c, "ptr", &c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Errorf("wrap: %v", c).Error(), logged.String()} {
		for _, secret := range []string{"SECRETVALUE", "SESSIONTOKEN", "ASIAKEYID"} {
			if strings.Contains(s, secret) {
				t.Fatalf("%q leaks %s", s, secret)
			}
		}
	}
}
