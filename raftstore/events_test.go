package raftstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/engine"
)

// history reads every retained event from the file.
func history(t *testing.T, s *Store) []engine.LeaseEvent {
	t.Helper()
	var evs []engine.LeaseEvent
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var err error
		evs, _, err = readEventPage(tx, 0, 1<<30)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// renewMany runs renews of jobs j0..j<workers-1> from one goroutine each
// and returns the first error.
func renewMany(ctx context.Context, s *Store, workers, each int) error {
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		job := fmt.Sprintf("j%d", w)
		wg.Go(func() {
			for range each {
				if _, err := s.RenewLease(ctx, engine.RenewRequest{JobID: job, Owner: "a", Token: 1}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func TestWatchDeliversEveryEventOnceInCommitOrder(t *testing.T) {
	s := openStore(t, leaseConfig(t, t.TempDir(), newFakeClock()))
	const workers, each = 8, 50
	for w := range workers {
		acquire(t, s, fmt.Sprintf("j%d", w), "a", time.Minute)
	}
	before := history(t, s)
	fromStart := collect(t, s, 1)
	fromNow := collect(t, s, 0)
	// More than a replay page's worth of events, committed while a third
	// watcher starts from an index in the middle of them.
	var mid *collector
	var midIndex uint64
	renewed := make(chan error, 1)
	go func() { renewed <- renewMany(tctx(t), s, workers, each) }()
	eventually(t, "some renewals commit", func() bool { return len(history(t, s)) > len(before)+100 })
	midIndex = history(t, s)[len(before)+50].Index
	mid = collect(t, s, midIndex)
	if err := <-renewed; err != nil {
		t.Fatalf("renew: %v", err)
	}

	all := history(t, s)
	total := len(before) + workers*each
	if len(all) != total {
		t.Fatalf("%d events in the history, want %d", len(all), total)
	}
	tests := []struct {
		name string
		c    *collector
		want []engine.LeaseEvent
	}{
		{"a watch from index 1 replays everything, then follows", fromStart, all},
		{"a watch from now gets exactly the later events", fromNow, all[len(before):]},
		{"a watch resumed from an index gets exactly the events from there", mid, slices.DeleteFunc(slices.Clone(all), func(ev engine.LeaseEvent) bool { return ev.Index < midIndex })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.c.waitFor(t, "the watch catches up", func(evs []engine.LeaseEvent) bool { return len(evs) >= len(tt.want) })
			if !slices.Equal(eventIDs(got), eventIDs(tt.want)) {
				t.Errorf("watched %d events, want %d; first difference at %d", len(got), len(tt.want), firstDiff(eventIDs(got), eventIDs(tt.want)))
			}
		})
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestWatchFromAnIndexOlderThanTheHistoryIsCompacted(t *testing.T) {
	cfg := leaseConfig(t, t.TempDir(), newFakeClock())
	cfg.LeaseEventRetention = 3
	s := openStore(t, cfg)
	for i := range 6 {
		acquire(t, s, fmt.Sprintf("j%d", i), "a", time.Minute)
	}
	kept := history(t, s)
	if len(kept) != 3 {
		t.Fatalf("%d events kept, want 3", len(kept))
	}
	_, err := s.WatchLeases(t.Context(), 1)
	var ce *CompactedError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCompacted) || ce.Oldest != kept[0].Index {
		t.Fatalf("WatchLeases(1) = %v, want a *CompactedError with Oldest %d", err, kept[0].Index)
	}
	c := collect(t, s, ce.Oldest)
	got := c.waitFor(t, "the retained events", func(evs []engine.LeaseEvent) bool { return len(evs) >= 3 })
	if !slices.Equal(eventIDs(got), eventIDs(kept)) {
		t.Errorf("watch from the oldest index: %v, want %v", eventIDs(got), eventIDs(kept))
	}
}

func TestASlowWatcherIsEndedWithErrWatchLaggedAndCanResume(t *testing.T) {
	s := openStore(t, leaseConfig(t, t.TempDir(), newFakeClock()))
	const workers, each = 16, 80 // 1280 events, more than watchBuffer
	for w := range workers {
		acquire(t, s, fmt.Sprintf("j%d", w), "a", time.Minute)
	}
	from := s.AppliedIndex() + 1
	w, err := s.WatchLeases(t.Context(), from)
	if err != nil {
		t.Fatal(err)
	}
	if err := renewMany(tctx(t), s, workers, each); err != nil { // nobody reads w meanwhile
		t.Fatalf("renew: %v", err)
	}
	eventually(t, "the slow watch ends", func() bool { return w.Err() != nil })
	if !errors.Is(w.Err(), ErrWatchLagged) {
		t.Fatalf("slow watch ended with %v, want ErrWatchLagged", w.Err())
	}
	var last uint64
	for ev := range w.Events() { // closed: at most what was in flight
		last = ev.Index
	}
	// The consumer resumes from the index after its last event.
	resume := max(last+1, from)
	c := collect(t, s, resume)
	want := slices.DeleteFunc(history(t, s), func(ev engine.LeaseEvent) bool { return ev.Index < resume })
	got := c.waitFor(t, "the resumed watch catches up", func(evs []engine.LeaseEvent) bool { return len(evs) >= len(want) })
	if !slices.Equal(eventIDs(got), eventIDs(want)) {
		t.Errorf("resumed watch got %d events, want %d", len(got), len(want))
	}
}

func TestWatchEndsWithItsContextAndWithTheStore(t *testing.T) {
	s := openStore(t, leaseConfig(t, t.TempDir(), newFakeClock()))
	ctx, cancel := context.WithCancel(t.Context())
	byCtx, err := s.WatchLeases(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	byClose, err := s.WatchLeases(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if byCtx.Err() != nil {
		t.Fatalf("a running watch reports %v", byCtx.Err())
	}
	cancel()
	for range byCtx.Events() {
	}
	if !errors.Is(byCtx.Err(), context.Canceled) {
		t.Errorf("cancelled watch: %v", byCtx.Err())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range byClose.Events() {
	}
	if !errors.Is(byClose.Err(), ErrClosed) {
		t.Errorf("watch of a closed store: %v, want ErrClosed", byClose.Err())
	}
	if _, err := s.WatchLeases(t.Context(), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("WatchLeases after Close: %v", err)
	}
}
