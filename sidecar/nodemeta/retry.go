package nodemeta

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is a bounded exponential backoff with jitter: after the n-th
// consecutive failure the wait is Initial·2^(n-1), capped at Max, of which
// the upper half is random, so that the pods of a node that all missed the
// node's IMDS at once (a real one throttles at 1024 packets/s per
// interface) do not come back at once either.
type Backoff struct {
	Initial, Max time.Duration
}

// DefaultBackoff is the agent's: 1 s doubling to a 5 min cap.
func DefaultBackoff() Backoff { return Backoff{Initial: time.Second, Max: 5 * time.Minute} }

// Delay is the wait after the failures-th consecutive failure (from 1):
// uniformly in [d/2, d] for d = min(Initial·2^(failures-1), Max). rnd(n)
// returns a number in [0, n) (rand.Int64N when nil).
func (b Backoff) Delay(failures int, rnd func(int64) int64) time.Duration {
	if rnd == nil {
		rnd = rand.Int64N
	}
	d := b.Max
	if n := failures - 1; n >= 0 && n < 62 && b.Initial <= b.Max>>n {
		d = b.Initial << n
	}
	if half := d / 2; half > 0 {
		return d - half + time.Duration(rnd(int64(half)+1))
	}
	return d
}

// RetryOptions configure FetchUntil. Zero fields take the defaults.
type RetryOptions struct {
	Backoff Backoff // DefaultBackoff()
	// AttemptTimeout bounds one Fetch (default 3 s).
	AttemptTimeout time.Duration
	// After is time.After; tests pass a fake clock's.
	After func(time.Duration) <-chan time.Time
	// Rand is the jitter source, as in Backoff.Delay.
	Rand func(int64) int64
	// OnFailure, if set, hears of every failed attempt (from 1) and the wait
	// before the next one.
	OnFailure func(attempt int, wait time.Duration, err error)
}

// FetchUntil calls Fetch until the node's metadata service answers every
// item without error, waiting Backoff between attempts, and returns what it
// read and the number of failed attempts before. It returns ctx's error
// (and the attempts that failed) if ctx ends first.
func FetchUntil(ctx context.Context, client Doer, endpoint string, o RetryOptions) (Metadata, int, error) {
	if o.Backoff == (Backoff{}) {
		o.Backoff = DefaultBackoff()
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 3 * time.Second
	}
	if o.After == nil {
		o.After = time.After
	}
	for failures := 0; ; failures++ {
		actx, cancel := context.WithTimeout(ctx, o.AttemptTimeout)
		md, err := Fetch(actx, client, endpoint)
		cancel()
		if err == nil {
			return md, failures, nil
		}
		if ctx.Err() != nil {
			return Metadata{}, failures, ctx.Err()
		}
		wait := o.Backoff.Delay(failures+1, o.Rand)
		if o.OnFailure != nil {
			o.OnFailure(failures+1, wait, err)
		}
		select {
		case <-ctx.Done():
			return Metadata{}, failures + 1, ctx.Err()
		case <-o.After(wait):
		}
	}
}
