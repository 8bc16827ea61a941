package imds

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/podrole/podrole/sidecar/creds"
)

// goSDKHeaderTimeout is the Go SDK's IMDS client's response header timeout,
// the tightest budget of the clients (botocore, the CLI and JS v3 allow 1 s).
const goSDKHeaderTimeout = 500 * time.Millisecond

// hungSTS answers the first fetch at once and holds every later one until
// release is closed (or the fetch's context ends): an STS as slow as the
// test says, with no clock involved.
type hungSTS struct {
	lifetime time.Duration
	release  chan struct{}
	fetches  atomic.Int32
	held     atomic.Int32 // fetches that reached the hold
	holding  atomic.Int32 // fetches in the hold now
}

func (s *hungSTS) API() string { return "AssumeRole" }

func (s *hungSTS) Fetch(ctx context.Context) (creds.Credentials, error) {
	n := s.fetches.Add(1)
	if n > 1 {
		s.held.Add(1)
		s.holding.Add(1)
		defer s.holding.Add(-1)
		select {
		case <-s.release:
		case <-ctx.Done():
			return creds.Credentials{}, ctx.Err()
		}
	}
	c := testCreds()
	c.AccessKeyID = fmt.Sprintf("ASIAFETCH%011d", n)
	c.LastUpdated = time.Now()
	c.Expiration = c.LastUpdated.Add(s.lifetime)
	return c, nil
}

// TestSlowUpstream (checklist 16) is conformance's TestSlowUpstream on a
// fake clock (testing/synctest), where "how long did the request wait" has an
// exact answer: while STS hangs, a request with good cached credentials gets
// them without waiting at all; once they are too old to serve, it gets 503
// Retry-After: 1 within the cache's MaxWait, below the Go SDK's 500 ms header
// timeout; never a hang until STS answers. When STS answers again, the new
// credentials are served.
func TestSlowUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sts := &hungSTS{lifetime: time.Hour, release: make(chan struct{})}
		// The real clock, which is the bubble's; a fixed jitter source, so
		// that every run has the same timeline.
		cache := creds.New(sts, creds.Options{Rand: rand.New(rand.NewPCG(1, 2))})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go cache.Run(ctx)
		if err := cache.WaitStarted(ctx); err != nil {
			t.Fatal(err)
		}
		first, err := cache.Credentials(ctx)
		if err != nil {
			t.Fatal(err)
		}
		h, err := New(Config{RoleARN: testRoleARN, Credentials: cache, Tokens: newTokens(t, nil)})
		if err != nil {
			t.Fatal(err)
		}
		get := func() (*httptest.ResponseRecorder, time.Duration) {
			start := time.Now()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, credsPath, nil))
			return rec, time.Since(start)
		}
		keyOf := func(rec *httptest.ResponseRecorder) string {
			var doc struct{ AccessKeyId string }
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
				t.Fatalf("credentials document: %v\n%s", err, rec.Body)
			}
			return doc.AccessKeyId
		}

		// The background refresh starts (with 45-50 min left) and hangs.
		for sts.held.Load() == 0 {
			if !time.Now().Before(first.Expiration) {
				t.Fatal("no refresh reached STS before the credentials expired")
			}
			time.Sleep(time.Second)
		}
		rec, took := get()
		if rec.Code != http.StatusOK || keyOf(rec) != first.AccessKeyID {
			t.Fatalf("cached credentials while the refresh hangs: %d %q", rec.Code, rec.Body)
		}
		if took != 0 {
			t.Errorf("cached credentials took %s while STS hangs, want no wait at all", took)
		}

		// Too old to serve (30 min left, the margin of an hour's session):
		// STS still hangs, and the answer is a refusal, soon.
		// Whether a fetch is in flight (the request joins it for MaxWait) or
		// the cache is backing off after one timed out (no wait).
		time.Sleep(time.Until(first.Expiration.Add(-creds.DefaultPolicy().MinRemaining)))
		for _, inFlight := range []bool{true, false, true} {
			for (sts.holding.Load() > 0) != inFlight {
				time.Sleep(100 * time.Millisecond)
			}
			rec, took = get()
			if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" || strings.Contains(rec.Body.String(), "AccessKeyId") {
				t.Fatalf("too old while STS hangs: %d Retry-After %q %q, want 503 Retry-After: 1 and no credentials", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
			}
			if maxWait := creds.DefaultPolicy().MaxWait; took > maxWait || took >= goSDKHeaderTimeout {
				t.Errorf("the refusal took %s (a fetch in flight: %v), want at most MaxWait %s (< the Go SDK's %s)", took, inFlight, maxWait, goSDKHeaderTimeout)
			}
		}
		if sts.held.Load() < 2 {
			t.Errorf("STS was asked %d times while it hung, want the refresh retried", sts.held.Load())
		}

		// STS answers again: the next fetch's credentials are served (the
		// backoff is capped at a minute).
		close(sts.release)
		deadline := time.Now().Add(2 * time.Minute)
		for {
			rec, _ = get()
			if rec.Code == http.StatusOK {
				if k := keyOf(rec); k == first.AccessKeyID {
					t.Fatalf("served the old key %s after STS came back", k)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("still %d two minutes after STS came back", rec.Code)
			}
			time.Sleep(time.Second)
		}
		cancel()
		synctest.Wait()
	})
}
