package raftstore

import (
	"slices"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/engine"
)

func qlease(job string, token uint64, exp time.Duration, index uint64) engine.Lease {
	return engine.Lease{JobID: job, Token: token, State: engine.LeaseActive, ExpiresAt: t0.Add(exp), Index: index}
}

// stored wraps leases as bucketLeases keeps them, without an owner's
// expiry (it falls back to ExpiresAt).
func stored(ls ...engine.Lease) []storedLease {
	out := make([]storedLease, len(ls))
	for i, l := range ls {
		out[i] = storedLease{Lease: l}
	}
	return out
}

func qevent(typ engine.LeaseEventType, l engine.Lease) engine.LeaseEvent {
	switch typ {
	case engine.LeaseEventExpired:
		l.State = engine.LeaseExpired
	case engine.LeaseEventReleased:
		l.State = engine.LeaseReleased
	}
	return engine.LeaseEvent{Type: typ, Lease: l, Index: l.Index}
}

func dueJobs(q *expiryQueue, at time.Duration) []string {
	var jobs []string
	for _, it := range q.due(t0.Add(at)) {
		jobs = append(jobs, it.job)
	}
	return jobs
}

func TestExpiryQueue(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, q *expiryQueue)
	}{
		{"due returns what has expired, earliest first", func(t *testing.T, q *expiryQueue) {
			q.rebuild(func() ([]storedLease, uint64, error) {
				return stored(qlease("c", 1, 3*time.Second, 3), qlease("a", 1, time.Second, 1), qlease("b", 1, 2*time.Second, 2), qlease("d", 1, 9*time.Second, 4)), 4, nil
			})
			if got := dueJobs(q, 2*time.Second); !slices.Equal(got, []string{"a", "b"}) {
				t.Errorf("due at +2s: %v", got)
			}
			if next, _ := q.next(); !next.Equal(t0.Add(time.Second)) {
				t.Errorf("next %s", next)
			}
		}},
		{"events update, move and remove items", func(t *testing.T, q *expiryQueue) {
			q.rebuild(func() ([]storedLease, uint64, error) { return stored(qlease("a", 1, time.Second, 1)), 1, nil })
			q.observe([]engine.LeaseEvent{
				qevent(engine.LeaseEventRenewed, qlease("a", 1, 5*time.Second, 2)),
				qevent(engine.LeaseEventAcquired, qlease("b", 1, time.Second, 3)),
			})
			if got := dueJobs(q, 2*time.Second); !slices.Equal(got, []string{"b"}) {
				t.Errorf("due after renew of a: %v", got)
			}
			q.observe([]engine.LeaseEvent{qevent(engine.LeaseEventReleased, qlease("b", 1, time.Second, 4))})
			if q.len() != 1 {
				t.Errorf("len %d after release, want 1", q.len())
			}
		}},
		{"events the rebuild already read are ignored", func(t *testing.T, q *expiryQueue) {
			q.rebuild(func() ([]storedLease, uint64, error) {
				return stored(qlease("a", 2, 5*time.Second, 7)), 7, nil
			})
			// A late delivery of an older batch: a's first lease expiring.
			q.observe([]engine.LeaseEvent{
				qevent(engine.LeaseEventAcquired, qlease("x", 1, time.Second, 5)),
				qevent(engine.LeaseEventExpired, qlease("a", 1, time.Second, 6)),
			})
			if got := dueJobs(q, 10*time.Second); !slices.Equal(got, []string{"a"}) {
				t.Errorf("due %v, want only a's newer lease", got)
			}
		}},
		{"events committed while the rebuild reads are applied after it", func(t *testing.T, q *expiryQueue) {
			q.rebuild(func() ([]storedLease, uint64, error) {
				// Commits land while the file is read: one the view holds
				// (index 3), one it does not (index 4).
				q.observe([]engine.LeaseEvent{qevent(engine.LeaseEventAcquired, qlease("a", 1, time.Second, 3))})
				q.observe([]engine.LeaseEvent{qevent(engine.LeaseEventExpired, qlease("a", 1, time.Second, 4))})
				return stored(qlease("a", 1, time.Second, 3)), 3, nil
			})
			if q.len() != 0 {
				t.Errorf("len %d, want 0: a expired after the view", q.len())
			}
		}},
		{"a resync keeps newer information", func(t *testing.T, q *expiryQueue) {
			q.rebuild(func() ([]storedLease, uint64, error) { return nil, 1, nil })
			q.observe([]engine.LeaseEvent{qevent(engine.LeaseEventAcquired, qlease("a", 1, time.Second, 9))})
			q.resync("a", nil, 8)
			if q.len() != 1 {
				t.Error("a resync from an older view removed a newer item")
			}
			q.resync("a", nil, 9)
			if q.len() != 0 {
				t.Error("a resync from a current view kept a stale item")
			}
		}},
		{"the owner's expiry comes from the file, events and graces", func(t *testing.T, q *expiryQueue) {
			owned := storedLease{Lease: qlease("a", 1, 3*time.Second, 1), OwnerExpiresAt: t0.Add(time.Second)}
			q.rebuild(func() ([]storedLease, uint64, error) { return []storedLease{owned}, 1, nil })
			if it := q.byJob["a"]; !it.ownerExpiresAt.Equal(t0.Add(time.Second)) {
				t.Errorf("rebuilt item's owner expiry %s, want the stored one", it.ownerExpiresAt)
			}
			// A renew: the owner's expiry is the new ExpiresAt.
			q.observe([]engine.LeaseEvent{qevent(engine.LeaseEventRenewed, qlease("a", 1, 4*time.Second, 2))})
			if it := q.byJob["a"]; !it.ownerExpiresAt.Equal(t0.Add(4 * time.Second)) {
				t.Errorf("renewed item's owner expiry %s, want its ExpiresAt", it.ownerExpiresAt)
			}
			// A grace: ExpiresAt moves, the owner's expiry does not.
			graced := storedLease{Lease: qlease("a", 1, 6*time.Second, 3), OwnerExpiresAt: t0.Add(4 * time.Second)}
			q.observeItems([]expiryItem{itemOf(graced)})
			if it := q.byJob["a"]; !it.expiresAt.Equal(t0.Add(6*time.Second)) || !it.ownerExpiresAt.Equal(t0.Add(4*time.Second)) {
				t.Errorf("graced item expires %s (owner %s), want +6s (owner +4s)", it.expiresAt, it.ownerExpiresAt)
			}
		}},
		{"an inactive queue ignores everything", func(t *testing.T, q *expiryQueue) {
			q.observe([]engine.LeaseEvent{qevent(engine.LeaseEventAcquired, qlease("a", 1, time.Second, 1))})
			if q.len() != 0 {
				t.Error("an inactive queue took an event")
			}
			q.rebuild(func() ([]storedLease, uint64, error) { return stored(qlease("a", 1, time.Second, 1)), 1, nil })
			q.deactivate()
			if q.len() != 0 {
				t.Error("deactivate kept items")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, &expiryQueue{}) })
	}
}
