package scenario

import (
	"context"
	"sync"
	"time"
)

// loadResult is what a closed-loop load run saw.
type loadResult struct {
	Lat      []time.Duration
	Errors   int
	FirstErr error
	Elapsed  time.Duration
}

// Rate is completed requests per second.
func (l loadResult) Rate() float64 {
	if l.Elapsed <= 0 {
		return 0
	}
	return float64(len(l.Lat)) / l.Elapsed.Seconds()
}

// load runs fn from clients goroutines in a closed loop (each sends its
// next request when the previous answer is in) until dur has passed or
// max requests have been sent (0: no limit), timing every call.
func load(ctx context.Context, clients int, dur time.Duration, max int, fn func(ctx context.Context, worker, seq int) error) loadResult {
	var mu sync.Mutex
	var out loadResult
	var wg sync.WaitGroup
	var issued int
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(dur)
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			var errs int
			var first error
			for ctx.Err() == nil && time.Now().Before(deadline) {
				mu.Lock()
				if max > 0 && issued >= max {
					mu.Unlock()
					break
				}
				seq := issued
				issued++
				mu.Unlock()
				t := time.Now()
				err := fn(ctx, w, seq)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			out.Lat = append(out.Lat, lat...)
			out.Errors += errs
			if out.FirstErr == nil {
				out.FirstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.Elapsed = time.Since(start)
	return out
}
