// Package bench measures podrole's servers beside reference servers in the
// same run (these machines are noisy: only side-by-side figures mean much).
// It holds the load generator, the /proc readers and the reference servers;
// cmd/podrole-bench wires them into `make bench`.
package bench

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"
)

// Op is one unit of work (for IMDS: the full token + listing + credentials
// sequence). It returns an error when the server answered wrongly.
type Op func(ctx context.Context) error

// Result summarises one load run.
type Result struct {
	Concurrency int
	Ops         int
	Errors      int
	FirstError  error
	Elapsed     time.Duration
	P50, P99    time.Duration
}

// OpsPerSec is the throughput of the run.
func (r Result) OpsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// Load runs op from concurrency workers until duration has passed (or ctx
// ends) and returns latency percentiles over every operation.
func Load(ctx context.Context, concurrency int, duration time.Duration, op Op) Result {
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	var (
		mu       sync.Mutex
		all      []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for i := 0; i < concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			var nerr int
			var ferr error
			for ctx.Err() == nil {
				t0 := time.Now()
				err := op(ctx)
				if ctx.Err() != nil {
					break // the op was cut by the deadline: neither a result nor an error
				}
				lat = append(lat, time.Since(t0))
				if err != nil {
					nerr++
					if ferr == nil {
						ferr = err
					}
				}
			}
			mu.Lock()
			all = append(all, lat...)
			errs += nerr
			if firstErr == nil {
				firstErr = ferr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return Result{
		Concurrency: concurrency, Ops: len(all), Errors: errs, FirstError: firstErr,
		Elapsed: elapsed, P50: Percentile(all, 50), P99: Percentile(all, 99),
	}
}

// Percentile returns the p-th percentile (nearest rank) of sorted latencies.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return sorted[rank]
}

// Median returns the median of unsorted durations.
func Median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return Percentile(s, 50)
}

// Verdict renders a target check as "met" or "MISSED (why)".
func Verdict(ok bool, format string, args ...any) string {
	if ok {
		return "met"
	}
	return "MISSED (" + fmt.Sprintf(format, args...) + ")"
}
