package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWebhookStalledFigure is section 5b of `make bench`: podrole-webhook's
// RSS and /mutate latency for the typical pod (HTTP/2, as the API server
// calls it) while 120 stalled uploads are held open (each announces a 3 MB
// body, sends 4 KiB and stalls; one the server ends at its read timeout is
// opened again), beside the same load without them. Before the webhook
// bounded what requests hold, such uploads took it to 387 MiB RSS against
// the manifests' 256 Mi limit. It asserts only that every admission
// succeeded. It runs only under `make bench` (PODROLE_BENCH=1).
func TestWebhookStalledFigure(t *testing.T) {
	const uploads = 120
	wb := newWebhookBench(t)
	s := wb.startPodrole()
	ctx := context.Background()
	pid := s.cmd.Process.Pid

	type row struct {
		stalled bool
		conc    int
		res     Result
		maxRSS  int64
	}
	var rows []row
	var ended int64
	for _, stalled := range []bool{false, true} {
		var su *StalledUploads
		if stalled {
			var err error
			if su, err = HoldStalledUploads(s.addr, wb.roots, uploads); err != nil {
				t.Fatal(err)
			}
		}
		for _, conc := range []int{1, 8} {
			c := NewWebhookClient(s.url, wb.body, wb.roots, true, conc, `"patch":"`)
			Load(ctx, conc, wb.dur/5, c.Admit) // warm-up
			stop := sampleMaxRSS(pid)
			r := Load(ctx, conc, wb.dur, c.Admit)
			maxRSS := stop()
			c.Close()
			if r.Errors > 0 {
				t.Errorf("stalled uploads %v, conc %d: %d errors, first: %v", stalled, conc, r.Errors, r.FirstError)
			}
			rows = append(rows, row{stalled, conc, r, maxRSS})
		}
		if su != nil {
			ended = su.Ended.Load()
			su.Close()
		}
	}
	peak, err := PeakRSS(pid)
	if err != nil {
		t.Fatal(err)
	}

	var out strings.Builder
	fmt.Fprintf(&out, "## 5b. Webhook under %d stalled uploads (each announces 3 MB, sends 4 KiB, stalls; held open throughout)\n", uploads)
	fmt.Fprintf(&out, "target: RSS under 128 MiB (half the manifests' 256 Mi limit) with them; /mutate p99 within 2x of without them\n\n")
	fmt.Fprintf(&out, "| stalled uploads | proto | conc | adm/s | p50 | p99 | RSS (max during load) | errors |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		n := 0
		if r.stalled {
			n = uploads
		}
		fmt.Fprintf(&out, "| %d | HTTP/2.0 | %d | %.0f | %s | %s | %.1f MiB | %d |\n", n, r.conc, r.res.OpsPerSec(), fmtDur(r.res.P50), fmtDur(r.res.P99), mib(r.maxRSS), r.res.Errors)
	}
	fmt.Fprintln(&out)
	for i := 0; i+2 < len(rows); i++ {
		without, with := rows[i], rows[i+2]
		ratio := float64(with.res.P99) / float64(max(without.res.P99, time.Microsecond))
		fmt.Fprintf(&out, "conc %d: p99 %.2fx of without: %s; RSS %.1f MiB (without: %.1f MiB): %s\n", with.conc, ratio,
			Verdict(ratio <= 2, "above 2x"), mib(with.maxRSS), mib(without.maxRSS), Verdict(with.maxRSS < 128<<20, "%.1f MiB", mib(with.maxRSS)))
	}
	fmt.Fprintf(&out, "\npeak RSS of the run (VmHWM): %.1f MiB; uploads the server ended at its read timeout (and the bench reopened): %d\n\n", mib(peak), ended)
	fmt.Print(out.String())
	if p := os.Getenv("PODROLE_BENCH_OUT"); p != "" {
		if err := os.WriteFile(p, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// sampleMaxRSS samples pid's RSS every 20 ms until the returned stop is
// called, which returns the largest sample.
func sampleMaxRSS(pid int) (stop func() int64) {
	done := make(chan struct{})
	var mu sync.Mutex
	var peak int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if r, err := RSS(pid); err == nil {
				mu.Lock()
				peak = max(peak, r)
				mu.Unlock()
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	return func() int64 {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}
