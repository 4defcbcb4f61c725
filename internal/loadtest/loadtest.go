// Package loadtest runs an operation from many concurrent workers for a
// while and reports throughput and latency percentiles. It is the engine of
// `coordinatord loadtest` and of the cluster benchmarks.
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Op is one operation by worker w. It returns an error when the operation
// failed; errors are counted, not fatal.
type Op func(ctx context.Context, w int) error

// Config says how hard and how long to push.
type Config struct {
	// Workers is how many goroutines run Op concurrently (≥1).
	Workers int
	// Duration is how long to run after Warmup.
	Duration time.Duration
	// Warmup runs Op without measuring, so that connections are open and
	// caches warm when measuring starts.
	Warmup time.Duration
}

// Report is what a run measured.
type Report struct {
	Workers  int
	Duration time.Duration
	Ops      int
	Errors   int
	// FirstError is the first error seen, to tell what went wrong.
	FirstError         error
	P50, P90, P99, Max time.Duration
}

// OpsPerSecond is the rate of successful operations.
func (r Report) OpsPerSecond() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Duration.Seconds()
}

func (r Report) String() string {
	s := fmt.Sprintf("%d workers, %s: %d ops (%.0f ops/s), %d errors; latency p50 %s p90 %s p99 %s max %s",
		r.Workers, r.Duration.Round(time.Millisecond), r.Ops, r.OpsPerSecond(), r.Errors,
		round(r.P50), round(r.P90), round(r.P99), round(r.Max))
	if r.FirstError != nil {
		s += fmt.Sprintf("; first error: %v", r.FirstError)
	}
	return s
}

func round(d time.Duration) time.Duration {
	switch {
	case d > 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d > 10*time.Microsecond:
		return d.Round(time.Microsecond)
	}
	return d
}

// Run runs op from cfg.Workers goroutines and measures the successful ones.
// It stops early when ctx ends.
func Run(ctx context.Context, cfg Config, op Op) (Report, error) {
	if cfg.Workers < 1 {
		return Report{}, errors.New("loadtest: at least one worker is required")
	}
	if cfg.Duration <= 0 {
		return Report{}, errors.New("loadtest: duration must be positive")
	}
	type result struct {
		lat    []time.Duration
		errs   int
		first  error
		firstT time.Time
	}
	results := make([]result, cfg.Workers)
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	runCtx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			res := &results[w]
			for runCtx.Err() == nil {
				t0 := time.Now()
				err := op(runCtx, w)
				t1 := time.Now()
				if t0.Before(measureFrom) || t1.After(end) {
					continue
				}
				if err != nil {
					if runCtx.Err() != nil {
						return
					}
					res.errs++
					if res.first == nil {
						res.first, res.firstT = err, t1
					}
					continue
				}
				res.lat = append(res.lat, t1.Sub(t0))
			}
		}(w)
	}
	wg.Wait()
	rep := Report{Workers: cfg.Workers, Duration: cfg.Duration}
	if now := time.Now(); now.Before(end) {
		rep.Duration = now.Sub(measureFrom)
	}
	var all []time.Duration
	var firstT time.Time
	for _, r := range results {
		all = append(all, r.lat...)
		rep.Errors += r.errs
		if r.first != nil && (rep.FirstError == nil || r.firstT.Before(firstT)) {
			rep.FirstError, firstT = r.first, r.firstT
		}
	}
	rep.Ops = len(all)
	if len(all) > 0 {
		slices.Sort(all)
		at := func(q float64) time.Duration { return all[min(len(all)-1, int(q*float64(len(all))))] }
		rep.P50, rep.P90, rep.P99, rep.Max = at(0.50), at(0.90), at(0.99), all[len(all)-1]
	}
	return rep, ctx.Err()
}
