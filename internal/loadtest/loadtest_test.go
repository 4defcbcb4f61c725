package loadtest

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunCountsOperationsErrorsAndPercentiles(t *testing.T) {
	var n atomic.Int64
	boom := errors.New("boom")
	rep, err := Run(context.Background(), Config{Workers: 4, Duration: 200 * time.Millisecond, Warmup: 20 * time.Millisecond}, func(ctx context.Context, w int) error {
		if n.Add(1)%10 == 0 {
			return boom
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops == 0 || rep.Errors == 0 || !errors.Is(rep.FirstError, boom) {
		t.Fatalf("report %+v", rep)
	}
	if rep.P50 < time.Millisecond || rep.P50 > rep.P99 || rep.P99 > rep.Max {
		t.Fatalf("percentiles out of order or below the op's own time: %+v", rep)
	}
	// About 9 of 10 ops succeed.
	if ratio := float64(rep.Errors) / float64(rep.Ops+rep.Errors); ratio < 0.05 || ratio > 0.2 {
		t.Fatalf("error ratio %.2f", ratio)
	}
}

func TestRunRejectsABadConfig(t *testing.T) {
	for _, cfg := range []Config{{Workers: 0, Duration: time.Second}, {Workers: 1}} {
		if _, err := Run(context.Background(), cfg, func(context.Context, int) error { return nil }); err == nil {
			t.Fatalf("config %+v accepted", cfg)
		}
	}
}
