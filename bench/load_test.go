package bench

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
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

func TestProcSelf(t *testing.T) {
	// Burn a little CPU so the counter moves.
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(100 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	after, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Fatalf("cpu time did not grow: %v -> %v (x=%d)", before, after, x)
	}
	rss, err := RSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Fatalf("rss = %d, %v", rss, err)
	}
	if _, err := RSS(1 << 30); err == nil {
		t.Fatal("no error for a missing pid")
	}
}

func TestPacedKeepsRate(t *testing.T) {
	ops, errs := Paced(context.Background(), 200, 4, 500*time.Millisecond, func(context.Context) error { return nil })
	// 200/s for 0.5 s is 100 ops; allow scheduling slack but catch a runaway or a stall.
	if ops < 50 || ops > 110 || errs != 0 {
		t.Fatalf("ops=%d errs=%d, want about 100", ops, errs)
	}
}
