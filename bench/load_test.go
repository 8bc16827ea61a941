package bench

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {0, 1}, {1, 1}} {
		if got := Percentile(d, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("empty input")
	}
}

func TestLoadCountsOpsAndErrors(t *testing.T) {
	var n atomic.Int64
	boom := errors.New("boom")
	r := Load(context.Background(), 4, 50*time.Millisecond, func(ctx context.Context) error {
		if n.Add(1)%2 == 0 {
			return boom
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	if r.Ops == 0 || r.Errors == 0 || r.Errors > r.Ops || !errors.Is(r.FirstError, boom) {
		t.Fatalf("result %+v", r)
	}
	if r.OpsPerSec() <= 0 {
		t.Fatal("no throughput")
	}
}

// CPUTime agrees with the kernel's own account of our CPU time (getrusage):
// the test burns a fixed amount of CPU, not of wall time, so a loaded
// machine that runs it late or slowly changes nothing.
func TestProcSelf(t *testing.T) {
	const burn = 50 * time.Millisecond
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start := rusageCPU(t) // after before: CPUTime truncates to ticks, so before <= start
	deadline := time.Now().Add(time.Minute)
	x := 0
	for rusageCPU(t)-start < burn {
		if time.Now().After(deadline) {
			t.Fatalf("this process got less than %s of CPU in a minute", burn)
		}
		for range 1000 {
			x++
		}
	}
	used := rusageCPU(t) - start
	after, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// /proc truncates utime and stime to ticks separately, so CPUTime lags
	// getrusage by less than two ticks: after > start+used-2 ticks, before <= start.
	if tick := time.Second / clockTick; after-before < used-2*tick {
		t.Fatalf("cpu time grew %v -> %v (%v), but getrusage counted %v (x=%d)", before, after, after-before, used, x)
	}
	rss, err := RSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Fatalf("rss = %d, %v", rss, err)
	}
	if _, err := RSS(1 << 30); err == nil {
		t.Fatal("no error for a missing pid")
	}
}

// rusageCPU is the user+system CPU time of this process by getrusage.
func rusageCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestPacedKeepsRate(t *testing.T) {
	ops, errs := Paced(context.Background(), 200, 4, 500*time.Millisecond, func(context.Context) error { return nil })
	// 200/s for 0.5 s is 100 ops; allow scheduling slack but catch a runaway or a stall.
	if ops < 50 || ops > 110 || errs != 0 {
		t.Fatalf("ops=%d errs=%d, want about 100", ops, errs)
	}
}
