package creds

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Policy says when credentials are refreshed and when they stop being served.
// The durations are for sessions of an hour or more; shorter sessions scale
// them down (see schedule) so that they too refresh before the margin.
type Policy struct {
	// RefreshBefore: the background refresh starts when this much lifetime
	// remains, so clients always get credentials with >= MinRemaining left.
	RefreshBefore time.Duration
	// RefreshJitter: the refresh starts up to this much earlier, at random,
	// so that pods started together do not call STS together.
	RefreshJitter time.Duration
	// MinRemaining is the safety margin: credentials with this much lifetime
	// left or less are never served. 30 minutes because botocore and the AWS
	// CLI rewrite an expiry less than 17-25 min ahead to now+17-25 min and then
	// sign with expired credentials; any expiry we serve is beyond that window,
	// and every client refetches well before it (botocore at 15/10 min, Go v2
	// and JS v3 earlier still), when it gets the refreshed set.
	MinRemaining time.Duration
	// RetryMin and RetryMax bound the exponential backoff after a failure.
	RetryMin, RetryMax time.Duration
	// FetchTimeout bounds one Source.Fetch.
	FetchTimeout time.Duration
	// MaxWait bounds how long a request waits for an in-flight fetch when no
	// usable credentials exist (only at start or after a long STS outage). It
	// is below the 500 ms header timeout of the Go SDK's IMDS client, so a
	// client always gets an answer it can retry on.
	MaxWait time.Duration
}

// DefaultPolicy is the policy of the sidecar.
func DefaultPolicy() Policy {
	return Policy{
		RefreshBefore: 45 * time.Minute,
		RefreshJitter: 5 * time.Minute,
		MinRemaining:  30 * time.Minute,
		RetryMin:      time.Second,
		RetryMax:      time.Minute,
		FetchTimeout:  30 * time.Second,
		MaxWait:       250 * time.Millisecond,
	}
}

// schedule is the policy applied to credentials that live for lifetime.
// For a one-hour session: refresh with 45-50 min left, serve while > 30 min
// left. For a 15-minute session: refresh with 11.25-12.5 min left, serve
// while > 7.5 min left.
type schedule struct {
	refreshBefore, jitter, margin time.Duration
}

func (p Policy) schedule(lifetime time.Duration) schedule {
	return schedule{
		refreshBefore: min(p.RefreshBefore, lifetime*3/4),
		jitter:        min(p.RefreshJitter, lifetime/12),
		margin:        min(p.MinRemaining, lifetime/2),
	}
}

// Options are the optional dependencies of a Cache.
type Options struct {
	Clock   Clock        // default RealClock
	Policy  Policy       // default DefaultPolicy()
	Logger  *slog.Logger // default discards
	Metrics Metrics      // default none
	Rand    *rand.Rand   // jitter source; default seeded randomly
}

// Cache holds the current credentials and refreshes them. Credentials is safe
// for concurrent use and never waits when usable credentials exist.
type Cache struct {
	src     Source
	clock   Clock
	pol     Policy
	log     *slog.Logger
	metrics Metrics

	started     chan struct{} // closed once the first credentials are cached
	startedOnce sync.Once

	mu        sync.Mutex
	rnd       *rand.Rand
	cur       Credentials
	have      bool
	margin    time.Duration // safety margin for cur
	refreshAt time.Time     // when the background refresh of cur starts
	inflight  *call         // the one fetch in progress, shared by all waiters
	failures  int           // consecutive failed fetches
	retryAt   time.Time     // no new fetch before this after a failure
	lastErr   error
}

// call is one fetch; done is closed when creds/err are set.
type call struct {
	done  chan struct{}
	creds Credentials
	err   error
}

// New returns a cache over src. Call Run to fetch and keep refreshing.
func New(src Source, o Options) *Cache {
	if o.Clock == nil {
		o.Clock = RealClock{}
	}
	if o.Policy == (Policy{}) {
		o.Policy = DefaultPolicy()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) //nolint:gosec // G404: jitter of refresh times, not a secret
	}
	return &Cache{
		src: src, clock: o.Clock, pol: o.Policy, log: o.Logger, metrics: o.Metrics,
		rnd: o.Rand, started: make(chan struct{}),
	}
}

// Credentials returns credentials that are safe to hand to a client: more
// than the safety margin away from expiry. With none, it joins (or starts,
// unless backing off after a failure) the one fetch in flight and waits at
// most Policy.MaxWait; the error then wraps ErrUnavailable.
func (c *Cache) Credentials(ctx context.Context) (Credentials, error) {
	c.mu.Lock()
	now := c.clock.Now()
	if c.usableLocked(now) {
		cr := c.cur
		c.mu.Unlock()
		return cr, nil
	}
	cl := c.inflight
	if cl == nil {
		if now.Before(c.retryAt) {
			err := fmt.Errorf("%w: the last fetch failed (next attempt in %s): %w",
				ErrUnavailable, c.retryAt.Sub(now).Round(time.Second), c.lastErr)
			c.mu.Unlock()
			return Credentials{}, err
		}
		// Detached: a client hanging up must not cancel a fetch others share.
		cl = c.startLocked(context.WithoutCancel(ctx))
	}
	c.mu.Unlock()

	select {
	case <-cl.done:
	case <-ctx.Done():
		return Credentials{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	case <-c.clock.After(c.pol.MaxWait):
		return Credentials{}, fmt.Errorf("%w: still fetching them after %s", ErrUnavailable, c.pol.MaxWait)
	}
	if cl.err != nil {
		return Credentials{}, fmt.Errorf("%w: %w", ErrUnavailable, cl.err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.usableLocked(c.clock.Now()) {
		return Credentials{}, fmt.Errorf("%w: fetched credentials are already too close to expiry", ErrUnavailable)
	}
	return c.cur, nil
}

// Run fetches the first credentials at once, then refreshes them ahead of
// expiry, retrying failures with backoff, until ctx ends.
func (c *Cache) Run(ctx context.Context) {
	for {
		c.mu.Lock()
		now := c.clock.Now()
		due := c.dueLocked()
		var cl *call
		if !now.Before(due) {
			if cl = c.inflight; cl == nil {
				cl = c.startLocked(ctx)
			}
		}
		c.mu.Unlock()
		if cl == nil {
			select {
			case <-ctx.Done():
				return
			case <-c.clock.After(due.Sub(now)):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-cl.done:
		}
	}
}

// Started reports whether credentials were ever cached (the startup probe).
func (c *Cache) Started() bool {
	select {
	case <-c.started:
		return true
	default:
		return false
	}
}

// WaitStarted blocks until the first credentials are cached or ctx ends.
func (c *Cache) WaitStarted(ctx context.Context) error {
	select {
	case <-c.started:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready reports whether credentials that may be served exist now.
func (c *Cache) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.usableLocked(c.clock.Now())
}

// Expiration returns the expiry of the cached credentials, if any.
func (c *Cache) Expiration() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.Expiration, c.have
}

func (c *Cache) usableLocked(now time.Time) bool {
	return c.have && c.cur.Expiration.Sub(now) > c.margin
}

// dueLocked is when the background loop should fetch next.
func (c *Cache) dueLocked() time.Time {
	switch {
	case !c.retryAt.IsZero():
		return c.retryAt
	case !c.have:
		return time.Time{} // at once
	default:
		return c.refreshAt
	}
}

func (c *Cache) startLocked(ctx context.Context) *call {
	cl := &call{done: make(chan struct{})}
	c.inflight = cl
	go func() {
		fctx, cancel := context.WithTimeout(ctx, c.pol.FetchTimeout)
		defer cancel()
		begin := c.clock.Now()
		cr, err := c.src.Fetch(fctx)
		c.finish(cl, begin, cr, err)
	}()
	return cl
}

func (c *Cache) finish(cl *call, begin time.Time, cr Credentials, err error) {
	api := c.src.API()
	now := c.clock.Now()
	if err == nil {
		if verr := cr.complete(); verr != nil {
			err = fmt.Errorf("%s returned unusable credentials: %w", api, verr)
		} else if !cr.Expiration.After(now) {
			err = fmt.Errorf("%s returned credentials that expired at %s", api, cr.Expiration.UTC().Format(time.RFC3339))
		}
	}
	if c.metrics != nil {
		c.metrics.STSCall(api, err)
	}

	c.mu.Lock()
	c.inflight = nil
	if err != nil {
		c.failures++
		c.lastErr = err
		wait := c.backoffLocked()
		c.retryAt = now.Add(wait)
		attrs := []any{"api", api, "attempt", c.failures, "retry_in", wait.String(), "err", err}
		if c.usableLocked(now) {
			attrs = append(attrs, "serving_previous_until", c.cur.Expiration.Add(-c.margin).UTC())
		} else {
			attrs = append(attrs, "serving", "nothing")
		}
		c.mu.Unlock()
		c.log.Warn("fetching role credentials failed", attrs...)
	} else {
		if cr.LastUpdated.IsZero() {
			cr.LastUpdated = now
		}
		s := c.pol.schedule(cr.Expiration.Sub(now))
		var jitter time.Duration
		if s.jitter > 0 {
			jitter = time.Duration(c.rnd.Int64N(int64(s.jitter) + 1))
		}
		c.cur, c.have, c.margin = cr, true, s.margin
		c.refreshAt = cr.Expiration.Add(-s.refreshBefore - jitter)
		// Absurdly short sessions must not turn the refresh into a busy loop.
		c.refreshAt = later(c.refreshAt, now.Add(c.pol.RetryMin))
		c.failures, c.retryAt, c.lastErr = 0, time.Time{}, nil
		refreshAt := c.refreshAt
		c.mu.Unlock()
		c.startedOnce.Do(func() { close(c.started) })
		c.log.Info("fetched role credentials", "api", api, "took", now.Sub(begin).String(),
			"expiration", cr.Expiration.UTC(), "refresh_at", refreshAt.UTC(), "serve_until", cr.Expiration.Add(-s.margin).UTC())
	}
	cl.creds, cl.err = cr, err
	close(cl.done)
}

// backoffLocked is exponential in the number of failures, capped, with the
// upper half jittered so that retries of many pods spread out.
func (c *Cache) backoffLocked() time.Duration {
	d := c.pol.RetryMax
	if n := c.failures - 1; n < 30 {
		d = min(c.pol.RetryMin<<n, c.pol.RetryMax)
	}
	if half := d / 2; half > 0 {
		return half + time.Duration(c.rnd.Int64N(int64(half)+1))
	}
	return d
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
