package bench

import (
	"context"
	"sync"
	"time"
)

// Paced runs op at a fixed rate (ops per second) spread over workers until
// duration has passed, and reports how many ran and how many failed. Unlike
// Load it does not push the server to its limit: it models steady traffic.
func Paced(ctx context.Context, rate, workers int, duration time.Duration, op Op) (ops, errs int) {
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	tick := make(chan struct{}, workers)
	go func() {
		defer close(tick)
		interval := time.Second / time.Duration(rate)
		next := time.Now()
		for {
			next = next.Add(interval)
			if d := time.Until(next); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
			select {
			case tick <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, e := 0, 0
			for range tick {
				if err := op(ctx); err != nil && ctx.Err() == nil {
					e++
				}
				n++
			}
			mu.Lock()
			ops += n
			errs += e
			mu.Unlock()
		}()
	}
	wg.Wait()
	return ops, errs
}
