package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/podrole/podrole/bench"
)

func benchFirstCredentials(ctx context.Context, o options, out io.Writer) error {
	const stsDelay = 300 * time.Millisecond
	fmt.Fprintf(out, "## 2. First credentials (STS double answering after %s)\n", stsDelay)
	fmt.Fprintf(out, "target: the first app request after start is as fast as a cached one (no STS call on the request path)\n\n")
	d, stsURL, stop, err := startDouble(o)
	if err != nil {
		return err
	}
	defer stop()
	d.SetLatency(stsDelay)
	t0 := time.Now()
	s, base, _, err := startSidecar(ctx, o, stsURL, "sidecar-first")
	if err != nil {
		return err
	}
	defer s.Stop()
	toStarted := time.Since(t0)
	cl := bench.NewIMDSClient(base, 1)
	t1 := time.Now()
	if err := cl.Sequence(ctx); err != nil {
		return fmt.Errorf("first request: %w", err)
	}
	first := time.Since(t1)
	var cached []time.Duration
	for i := 0; i < 50; i++ {
		t := time.Now()
		if err := cl.Sequence(ctx); err != nil {
			return fmt.Errorf("cached request: %w", err)
		}
		cached = append(cached, time.Since(t))
	}
	med := bench.Median(cached)
	calls := d.Calls(benchRole).AssumeRole
	fmt.Fprintf(out, "| figure | value |\n|---|---|\n")
	fmt.Fprintf(out, "| process start -> /started (includes the %s STS call) | %s |\n", stsDelay, round(toStarted))
	fmt.Fprintf(out, "| first app credential sequence after started (new connection) | %s |\n", round(first))
	fmt.Fprintf(out, "| cached credential sequence, median of 50 | %s |\n", round(med))
	fmt.Fprintf(out, "| AssumeRole calls | %d |\n\n", calls)
	// A new TCP connection costs ~100 µs here; anything near the STS delay means an STS call on the path.
	fmt.Fprintf(out, "first request within 3x of cached + 1 ms and far below the STS delay: %s\n\n",
		bench.Verdict(first < 3*med+time.Millisecond && first < stsDelay/10, "first %s vs cached %s", first, med))
	return nil
}

func benchSTSEconomy(ctx context.Context, o options, out io.Writer) error {
	const clients, dur = 1000, 60 * time.Second
	fmt.Fprintf(out, "## 3. STS economy: %d concurrent clients for %s\n", clients, dur)
	fmt.Fprintf(out, "target: exactly one AssumeRole per refresh (here: the start-up fetch, no refresh is due within %s)\n\n", dur)
	d, stsURL, stop, err := startDouble(o)
	if err != nil {
		return err
	}
	defer stop()
	s, base, _, err := startSidecar(ctx, o, stsURL, "sidecar-sts")
	if err != nil {
		return err
	}
	defer s.Stop()
	cl := bench.NewIMDSClient(base, clients)
	r := bench.Load(ctx, clients, dur, cl.Sequence)
	calls := d.Calls(benchRole)
	fmt.Fprintf(out, "| figure | value |\n|---|---|\n")
	fmt.Fprintf(out, "| credential sequences served | %d (%.0f/s), %d errors |\n", r.Ops, r.OpsPerSec(), r.Errors)
	fmt.Fprintf(out, "| AssumeRole calls to STS | %d |\n", calls.AssumeRole)
	refreshes := stsCallsPerHour(o)
	fmt.Fprintf(out, "| STS calls per pod per hour at the default 1 h session | %s |\n\n", refreshes)
	fmt.Fprintf(out, "one AssumeRole for the whole run: %s\n\n", bench.Verdict(calls.AssumeRole == 1 && r.Errors == 0, "%d calls, %d errors (first: %v)", calls.AssumeRole, r.Errors, r.FirstError))
	return nil
}

func benchFootprint(ctx context.Context, o options, out io.Writer) error {
	const rate, dur = 2000, 60 * time.Second
	fmt.Fprintf(out, "## 4. Footprint\n")
	fmt.Fprintf(out, "target: sidecar RSS under 15 MiB idle and after %s at %d req/s, and flat; sidecar image under 30 MiB\n\n", dur, rate)
	_, stsURL, stop, err := startDouble(o)
	if err != nil {
		return err
	}
	defer stop()
	s, base, _, err := startSidecar(ctx, o, stsURL, "sidecar-footprint")
	if err != nil {
		return err
	}
	defer s.Stop()
	time.Sleep(2 * time.Second)
	idle, err := bench.RSS(s.Pid())
	if err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		samples []int64
	)
	sctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				if v, err := bench.RSS(s.Pid()); err == nil {
					mu.Lock()
					samples = append(samples, v)
					mu.Unlock()
				}
			}
		}
	}()
	cl := bench.NewIMDSClient(base, 16)
	// Each sequence is 3 requests: pace sequences at rate/3 for rate requests/s.
	ops, errs := bench.Paced(ctx, rate/3, 16, dur, cl.Sequence)
	cancel()
	after, err := bench.RSS(s.Pid())
	if err != nil {
		return err
	}
	anon, file := bench.RSSSplit(s.Pid())
	mu.Lock()
	defer mu.Unlock()
	var peak int64
	var series []string
	for _, v := range samples {
		peak = max(peak, v)
		series = append(series, mib(v))
	}
	fmt.Fprintf(out, "| figure | value |\n|---|---|\n")
	fmt.Fprintf(out, "| sidecar RSS idle | %s |\n", mib(idle))
	fmt.Fprintf(out, "| sidecar RSS every 5 s under load | %s |\n", strings.Join(series, ", "))
	fmt.Fprintf(out, "| sidecar RSS after load | %s (peak %s; anon %s, file-backed %s) |\n", mib(after), mib(peak), mib(anon), mib(file))
	fmt.Fprintf(out, "| load | %d sequences = %d requests in %s, %d errors |\n", ops, 3*ops, dur, errs)
	flat := len(samples) >= 4 && samples[len(samples)-1] <= samples[1]*11/10
	fmt.Fprintf(out, "\nRSS under 15 MiB: %s; flat (last sample within 10%% of the second): %s\n",
		bench.Verdict(peak < 15<<20 && idle < 15<<20, "peak %s", mib(peak)), bench.Verdict(flat, "%s", strings.Join(series, " -> ")))
	imgs, _ := filepath.Glob(filepath.Join(o.images, "*.tar"))
	sort.Strings(imgs)
	if len(imgs) == 0 {
		fmt.Fprintf(out, "image sizes: no tarballs in %s yet (scripts/bench.sh prints them after `make images`)\n\n", o.images)
		return nil
	}
	fmt.Fprintf(out, "\n| image tarball | size |\n|---|---|\n")
	for _, p := range imgs {
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(out, "| %s | %s |\n", filepath.Base(p), mib(st.Size()))
			if strings.Contains(filepath.Base(p), "sidecar") {
				defer fmt.Fprintf(out, "sidecar image under 30 MiB: %s\n\n", bench.Verdict(st.Size() < 30<<20, "%s", mib(st.Size())))
			}
		}
	}
	return nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
