package nodemeta

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/podrole/podrole/sidecar/internal/fakeaws"
)

// 1 s doubling to the 5 min cap, each wait in the upper half of its step.
func TestBackoffDelay(t *testing.T) {
	b := DefaultBackoff()
	low := func(int64) int64 { return 0 }
	high := func(n int64) int64 { return n - 1 }
	steps := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300}
	for i, s := range steps {
		d := s * time.Second
		if got := b.Delay(i+1, low); got != d-d/2 {
			t.Errorf("failure %d: lowest wait %s, want %s", i+1, got, d-d/2)
		}
		if got := b.Delay(i+1, high); got != d {
			t.Errorf("failure %d: highest wait %s, want %s", i+1, got, d)
		}
	}
	for _, n := range []int{40, 62, 63, 1000} { // no overflow past the cap
		if got := b.Delay(n, high); got != 5*time.Minute {
			t.Errorf("failure %d: %s, want the cap", n, got)
		}
	}
	for range 1000 {
		if got := b.Delay(3, nil); got < 2*time.Second || got > 4*time.Second {
			t.Fatalf("random wait after 3 failures: %s, want 2s..4s", got)
		}
	}
}

// A node that fails N times is retried with the backoff (fake clock) until
// it answers, and what it says then is returned.
func TestFetchUntil(t *testing.T) {
	const n = 6
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	node.Fail(http.StatusServiceUnavailable, n) // throttled: each attempt ends at its token PUT
	var waits, reported []time.Duration
	var failed []int
	md, failures, err := FetchUntil(context.Background(), nil, node.URL, RetryOptions{
		After: func(d time.Duration) <-chan time.Time {
			waits = append(waits, d)
			c := make(chan time.Time, 1)
			c <- time.Time{}
			return c
		},
		OnFailure: func(attempt int, wait time.Duration, err error) {
			failed, reported = append(failed, attempt), append(reported, wait)
			if err == nil {
				t.Errorf("attempt %d reported without an error", attempt)
			}
		},
	})
	if calls := node.Count("PUT /latest/api/token"); err != nil || failures != n || calls != n+1 {
		t.Fatalf("FetchUntil: %d failures, %d token calls, err %v", failures, calls, err)
	}
	if md.Region != "eu-west-1" || md.AvailabilityZone != "eu-west-1b" || string(md.IdentityDocument) != node.Document {
		t.Fatalf("got %+v", md)
	}
	if len(waits) != n || len(failed) != n {
		t.Fatalf("waits %v, failures reported %v", waits, failed)
	}
	for i, w := range waits {
		d := time.Second << i
		if w < d/2 || w > d {
			t.Errorf("wait %d = %s, want %s..%s", i+1, w, d/2, d)
		}
		if failed[i] != i+1 || reported[i] != w {
			t.Errorf("failure %d reported as attempt %d, wait %s (slept %s)", i+1, failed[i], reported[i], w)
		}
	}
}

// Shutdown ends the retries at once, whatever the backoff.
func TestFetchUntilCancelled(t *testing.T) {
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	node.Fail(http.StatusServiceUnavailable, -1)
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		_, _, err := FetchUntil(ctx, nil, node.URL, RetryOptions{
			After:     func(time.Duration) <-chan time.Time { return nil }, // never fires
			OnFailure: func(int, time.Duration, error) { once.Do(cancel) },
		})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("FetchUntil kept going after its context ended")
	}
}
