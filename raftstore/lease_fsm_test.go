package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/engine"
)

// leaseLog builds a lease command entry stamped at.
func leaseLog(t *testing.T, index uint64, op string, at time.Time, body any) *raft.Log {
	t.Helper()
	data, err := encodeCommand(op, at, body)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

func acquireOf(job, owner string, ttl time.Duration) acquireBody {
	return acquireBody{JobID: job, Owner: owner, OwnerDC: "dc-" + owner, TTL: ttl, Limits: testLeaseLimits}
}

// fsmState reads everything lease-related from f.
type fsmState struct {
	leases  map[string]engine.Lease
	tokens  map[string]uint64
	events  []engine.LeaseEvent
	applied uint64
	active  uint64
}

func readFSMState(t *testing.T, f *fsm) fsmState {
	t.Helper()
	st := fsmState{leases: map[string]engine.Lease{}, tokens: map[string]uint64{}}
	err := f.view(func(tx *bolt.Tx) error {
		if err := scanLeases(tx, func(l engine.Lease) bool { st.leases[l.JobID] = l; return true }); err != nil {
			return err
		}
		tb := tx.Bucket(bucketLeaseTokens)
		if err := tb.ForEach(func(k, _ []byte) error { st.tokens[string(k)] = getUint64(tb, k); return nil }); err != nil {
			return err
		}
		var err error
		st.events, _, err = readEventPage(tx, 0, 1<<20)
		meta := tx.Bucket(bucketMeta)
		st.applied, st.active = getUint64(meta, keyAppliedIndex), getUint64(meta, keyActiveLeases)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestARejectedCommandInsideABatchLeavesNoPartialState(t *testing.T) {
	f := openTestFSM(t, nil)
	at := t0
	batch := []*raft.Log{
		leaseLog(t, 1, opAcquireLease, at, acquireOf("x", "a", time.Second)),
		// Held by a: rejected after reading state.
		leaseLog(t, 2, opAcquireLease, at, acquireOf("x", "b", time.Second)),
		// A body the proposer would never send: rejected at decode.
		{Index: 3, Term: 1, Type: raft.LogCommand, Data: append([]byte{commandVersion}, `{"op":"lease.acquire","at":"2025-01-01T00:00:00Z","body":7}`...)},
		{Index: 4, Term: 1, Type: raft.LogConfiguration},
		leaseLog(t, 5, opAcquireLease, at, acquireOf("y", "b", time.Second)),
		// Stale token: rejected after reading state.
		leaseLog(t, 6, opRenewLease, at, renewBody{JobID: "x", Owner: "a", Token: 9, Limits: testLeaseLimits}),
		// Limits that do not validate: rejected before reading state.
		leaseLog(t, 7, opAcquireLease, at, acquireBody{JobID: "z", Owner: "a", Limits: engine.LeaseLimits{}}),
		leaseLog(t, 8, opRenewLease, at.Add(time.Millisecond), renewBody{JobID: "x", Owner: "a", Token: 1, Limits: testLeaseLimits}),
		// Rejected last: the batch's index must still be recorded.
		leaseLog(t, 9, opReleaseLease, at, releaseBody{JobID: "y", Owner: "a", Token: 1}),
	}
	out := f.ApplyBatch(batch)
	if len(out) != len(batch) {
		t.Fatalf("%d responses for %d entries", len(out), len(batch))
	}
	wantErr := map[int]error{1: engine.ErrLeaseHeld, 2: ErrUnsupportedCommand, 5: engine.ErrStaleToken, 6: ErrInvalid, 8: engine.ErrNotOwner}
	for i, resp := range out {
		if batch[i].Type != raft.LogCommand {
			if resp != nil {
				t.Errorf("entry %d (configuration): response %v, want nil", batch[i].Index, resp)
			}
			continue
		}
		_, err := resultAs[engine.Lease](resp)
		if want := wantErr[i]; !errors.Is(err, want) || want == nil && err != nil {
			t.Errorf("entry %d: %v, want %v", batch[i].Index, err, want)
		}
	}
	st := readFSMState(t, f)
	if x := st.leases["x"]; x.Owner != "a" || x.Token != 1 || x.Index != 8 {
		t.Errorf("x = %+v, want a's token 1 renewed at index 8", x)
	}
	if _, ok := st.leases["z"]; ok {
		t.Error("a rejected acquire stored a lease")
	}
	if want := map[string]uint64{"x": 1, "y": 1}; !mapsEqual(st.tokens, want) {
		t.Errorf("tokens %v, want %v", st.tokens, want)
	}
	if got, want := eventIDs(st.events), []string{"acquired:x@1#1", "acquired:y@5#1", "renewed:x@8#1"}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if st.applied != 9 || f.appliedIndex() != 9 {
		t.Errorf("applied index %d (file) %d (memory), want 9", st.applied, f.appliedIndex())
	}
	if st.active != 2 || f.lease.active.Load() != 2 {
		t.Errorf("active count %d (file) %d (memory), want 2", st.active, f.lease.active.Load())
	}
	if err := f.failed(); err != nil {
		t.Errorf("rejections failed the state machine: %v", err)
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestARenewThatFindsItsLeaseOutOfTimeCommitsTheExpiryAndFails(t *testing.T) {
	f := openTestFSM(t, nil)
	f.Apply(leaseLog(t, 1, opAcquireLease, t0, acquireOf("x", "a", time.Second)))
	res := f.Apply(leaseLog(t, 2, opRenewLease, t0.Add(time.Second), renewBody{JobID: "x", Owner: "a", Token: 1, Limits: testLeaseLimits}))
	if _, err := resultAs[engine.Lease](res); !errors.Is(err, engine.ErrLeaseExpired) {
		t.Fatalf("late renew: %v, want ErrLeaseExpired", err)
	}
	// A second late command finds it expired already: no second event.
	f.Apply(leaseLog(t, 3, opReleaseLease, t0.Add(2*time.Second), releaseBody{JobID: "x", Owner: "a", Token: 1}))
	st := readFSMState(t, f)
	if x := st.leases["x"]; x.State != engine.LeaseExpired || !x.EndedAt.Equal(t0.Add(time.Second)) || x.Index != 2 {
		t.Errorf("x = %+v, want expired at index 2", x)
	}
	if got, want := eventIDs(st.events), []string{"acquired:x@1#1", "expired:x@2#1"}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if st.active != 0 {
		t.Errorf("active count %d, want 0", st.active)
	}
}

func TestLeaderPromotedExtendsActiveLeasesPerTheRule(t *testing.T) {
	f := openTestFSM(t, nil)
	// Leases granted at t0 expiring at +1s, +3s and +10s, one released.
	f.ApplyBatch([]*raft.Log{
		leaseLog(t, 1, opAcquireLease, t0, acquireOf("soon", "a", time.Second)),
		leaseLog(t, 2, opAcquireLease, t0, acquireOf("mid", "a", 3*time.Second)),
		leaseLog(t, 3, opAcquireLease, t0, acquireOf("far", "a", 10*time.Second)),
		leaseLog(t, 4, opAcquireLease, t0, acquireOf("gone", "a", time.Second)),
		leaseLog(t, 5, opReleaseLease, t0, releaseBody{JobID: "gone", Owner: "a", Token: 1}),
	})
	at, grace := t0.Add(2*time.Second), 2*time.Second
	res := f.Apply(leaseLog(t, 6, opLeaderPromoted, at, promotedBody{Node: "n2", Grace: grace}))
	if n, err := resultAs[int](res); err != nil || n != 2 {
		t.Fatalf("leader.promoted = %d, %v; want 2 leases extended", n, err)
	}
	st := readFSMState(t, f)
	tests := []struct {
		job   string
		want  time.Time
		index uint64
	}{
		// Out of time by 1s: gains the whole grace, still short of at+grace.
		{"soon", t0.Add(3 * time.Second), 6},
		// 1s left: extended to at+grace (4s), which is less than +grace (5s).
		{"mid", t0.Add(4 * time.Second), 6},
		// Past at+grace already: unchanged.
		{"far", t0.Add(10 * time.Second), 3},
		// Released: unchanged.
		{"gone", t0.Add(time.Second), 5},
	}
	for _, tt := range tests {
		if l := st.leases[tt.job]; !l.ExpiresAt.Equal(tt.want) || l.Index != tt.index {
			t.Errorf("%s expires %s at index %d, want %s at index %d", tt.job, l.ExpiresAt, l.Index, tt.want, tt.index)
		}
	}
	var rec promotionRecord
	_ = f.view(func(tx *bolt.Tx) error { return json.Unmarshal(tx.Bucket(bucketMeta).Get(keyLastPromotion), &rec) })
	if rec.Node != "n2" || rec.Index != 6 || rec.Extended != 2 || !rec.At.Equal(at) {
		t.Errorf("last promotion %+v", rec)
	}
	if len(st.events) != 5 {
		t.Errorf("leader.promoted produced events: %v", eventIDs(st.events))
	}
}

func TestLeaseEventRetentionDropsTheOldestWholeEntries(t *testing.T) {
	f := openTestFSM(t, nil)
	f.lease.retention = 4
	idx := uint64(0)
	apply := func(op string, at time.Time, body any) {
		t.Helper()
		idx++
		if res := f.Apply(leaseLog(t, idx, op, at, body)).(applyResult); res.err != nil {
			t.Fatalf("apply %s: %v", op, res.err)
		}
	}
	apply(opAcquireLease, t0, acquireOf("a", "o", time.Second))                                      // 1: acquired a
	apply(opAcquireLease, t0, acquireOf("b", "o", time.Second))                                      // 2: acquired b
	apply(opAcquireLease, t0, acquireOf("c", "o", time.Second))                                      // 3: acquired c
	apply(opExpireLeases, t0.Add(time.Second), expireBody{Leases: []expireItem{{"a", 1}, {"b", 1}}}) // 4: expired a, b
	// Five events: entry 1 goes; four remain.
	st := readFSMState(t, f)
	if got, want := eventIDs(st.events), []string{"acquired:b@2#1", "acquired:c@3#1", "expired:a@4#1", "expired:b@4#1"}; !slices.Equal(got, want) {
		t.Errorf("after 5 events: %v, want %v", got, want)
	}
	// 5: acquired a. Entry 2 goes; four remain.
	apply(opAcquireLease, t0.Add(time.Second), acquireOf("a", "p", time.Second))
	apply(opExpireLeases, t0.Add(time.Minute), expireBody{Leases: []expireItem{{"c", 1}, {"a", 2}}}) // 6: expired c, a
	// Six events: dropping entry 3 leaves five, still too many, so entry 4
	// goes too, whole: three remain.
	st = readFSMState(t, f)
	if got, want := eventIDs(st.events), []string{"acquired:a@5#2", "expired:c@6#1", "expired:a@6#2"}; !slices.Equal(got, want) {
		t.Errorf("after compaction: %v, want %v", got, want)
	}
	var compacted, count uint64
	_ = f.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		compacted, count = getUint64(meta, keyLeaseEventsCompacted), getUint64(meta, keyLeaseEventCount)
		return nil
	})
	if compacted != 4 || count != 3 {
		t.Errorf("compacted through %d with %d events, want 4 and 3", compacted, count)
	}
}

func TestLeaseStateTravelsInSnapshots(t *testing.T) {
	src := openTestFSM(t, nil)
	src.ApplyBatch([]*raft.Log{
		leaseLog(t, 1, opAcquireLease, t0, acquireOf("x", "a", time.Second)),
		leaseLog(t, 2, opReleaseLease, t0, releaseBody{JobID: "x", Owner: "a", Token: 1}),
		leaseLog(t, 3, opAcquireLease, t0, acquireOf("x", "b", time.Second)),
		leaseLog(t, 4, opExpireLeases, t0.Add(time.Second), expireBody{Leases: []expireItem{{"x", 2}}}),
		leaseLog(t, 5, opAcquireLease, t0, acquireOf("y", "a", time.Minute)),
	})
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	dst := openTestFSM(t, nil)
	// A watcher of the old state is told to resume.
	sub := dst.lease.hub.subscribe()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.gone:
		if !errors.Is(sub.err, ErrWatchLagged) {
			t.Errorf("watcher ended with %v, want ErrWatchLagged", sub.err)
		}
	default:
		t.Error("a restore left a watcher of the old state running")
	}
	want, got := readFSMState(t, src), readFSMState(t, dst)
	if !mapsEqual(got.tokens, want.tokens) || !slices.Equal(eventIDs(got.events), eventIDs(want.events)) || got.active != 1 || dst.lease.active.Load() != 1 {
		t.Errorf("restored tokens %v events %v active %d; want %v %v 1", got.tokens, eventIDs(got.events), got.active, want.tokens, eventIDs(want.events))
	}
	res := dst.Apply(leaseLog(t, 6, opAcquireLease, t0.Add(time.Minute), acquireOf("x", "c", time.Second)))
	if l, err := resultAs[engine.Lease](res); err != nil || l.Token != 3 {
		t.Errorf("acquire after restore: %+v, %v; want token 3", l, err)
	}
}
