package raftstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/engine"
)

// BenchmarkLeaseRenew measures renewals per second on a single-voter store
// with fsync on (bbolt's and raft-boltdb's defaults), from 1 and from 64
// concurrent clients each renewing its own lease. Concurrent renewals are
// grouped by Raft into one log write and by the state machine into one
// bbolt transaction, so the 64-client figure shows what batching buys.
//
//	go test -run '^$' -bench BenchmarkLeaseRenew -benchtime 3s ./raftstore
func BenchmarkLeaseRenew(b *testing.B) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.NodeID, cfg.DataDir, cfg.Bootstrap = "n1", b.TempDir(), true
			cfg.Logger = slog.New(slog.DiscardHandler)
			// Elect the lone voter quickly; nothing else changes.
			cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
			s, err := Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := s.WaitForLeader(ctx); err != nil {
				b.Fatal(err)
			}
			for !s.IsLeader() {
				time.Sleep(time.Millisecond)
			}
			tokens := make([]uint64, clients)
			for c := range clients {
				l, err := s.AcquireLease(ctx, engine.AcquireRequest{JobID: fmt.Sprintf("job-%d", c), Owner: "bench", OwnerDC: "dc1", TTL: time.Hour})
				if err != nil {
					b.Fatal(err)
				}
				tokens[c] = l.Token
			}
			var (
				next     atomic.Int64
				firstErr atomic.Pointer[error]
				wg       sync.WaitGroup
			)
			b.ResetTimer()
			for c := range clients {
				wg.Go(func() {
					r := engine.RenewRequest{JobID: fmt.Sprintf("job-%d", c), Owner: "bench", Token: tokens[c]}
					for next.Add(1) <= int64(b.N) {
						if _, err := s.RenewLease(ctx, r); err != nil {
							firstErr.CompareAndSwap(nil, &err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if p := firstErr.Load(); p != nil {
				b.Fatal(*p)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "renews/s")
		})
	}
}
