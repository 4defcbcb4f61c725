package raftstore

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/coordinatord/coordinatord/policies"
)

func openTestFSM(t *testing.T, onPolicies func(uint64, []policies.Policy)) *fsm {
	t.Helper()
	f, err := openFSM(t.TempDir(), slog.New(slog.DiscardHandler), onPolicies)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.close() })
	return f
}

func fsmPolicies(t *testing.T, f *fsm) ([]policies.Policy, uint64) {
	t.Helper()
	s := &Store{fsm: f, nodeID: "test"}
	list, rev, err := s.Policies()
	if err != nil {
		t.Fatal(err)
	}
	return list, rev
}

func TestUndecodableEntriesAreRejectedWithoutChangingState(t *testing.T) {
	envelope := func(version byte, json string) []byte { return append([]byte{version}, json...) }
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"an unknown op is rejected", envelope(commandVersion, `{"op":"lease.frobnicate","at":"2025-01-01T00:00:00Z"}`), ErrUnsupportedCommand},
		{"an unknown envelope version is rejected", envelope(commandVersion+1, `{"op":"policy.put"}`), ErrUnsupportedCommand},
		{"an empty entry is rejected", nil, ErrUnsupportedCommand},
		{"a malformed envelope is rejected", envelope(commandVersion, `{"op":`), ErrUnsupportedCommand},
		{"a put whose body is not an object is rejected", envelope(commandVersion, `{"op":"policy.put","at":"2025-01-01T00:00:00Z","body":5}`), ErrUnsupportedCommand},
		{"a put the proposer should have refused is re-validated", envelope(commandVersion, `{"op":"policy.put","at":"2025-01-01T00:00:00Z","body":{"policy":{"id":"x","rego":"r","mode":"block"}}}`), ErrInvalid},
		{"a put without a stamped time is re-validated", envelope(commandVersion, `{"op":"policy.put","body":{"policy":{"id":"x","rego":"r","mode":"audit"}}}`), ErrInvalid},
	}
	rec := &recorder{}
	cfg := testConfig(t, t.TempDir())
	cfg.OnPoliciesChanged = rec.record
	s := openStore(t, cfg)
	mustPut(t, s, pol("a", policies.ModeEnforce))
	before, beforeRev, _ := s.Policies()
	calls := len(rec.revisions())

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Through Raft, as a buggy or newer node would propose it.
			f := s.raft.Apply(tt.data, waitTimeout)
			if err := f.Error(); err != nil {
				t.Fatalf("raft apply: %v", err)
			}
			_, err := resultAs[policies.Policy](f.Response())
			if !errors.Is(err, tt.want) {
				t.Errorf("response error %v, want %v", err, tt.want)
			}
			after, afterRev, _ := s.Policies()
			if afterRev != beforeRev || !samePolicies(after, before) {
				t.Errorf("state changed: revision %d→%d, policies %+v→%+v", beforeRev, afterRev, before, after)
			}
			if n := len(rec.revisions()); n != calls {
				t.Errorf("OnPoliciesChanged called %d times for a rejected entry", n-calls)
			}
			if err := s.fsm.failed(); err != nil {
				t.Errorf("a rejected entry put the state machine in the failed state: %v", err)
			}
		})
	}
	// The node keeps working after rejecting entries.
	if got := mustPut(t, s, pol("b", policies.ModeAudit)); got.Revision != beforeRev+1 {
		t.Errorf("revision after rejected entries %d, want %d", got.Revision, beforeRev+1)
	}
}

func TestApplySkipsEntriesAlreadyInTheFile(t *testing.T) {
	f := openTestFSM(t, nil)
	first := cmdLog(t, 5, opPutPolicy, putPolicyBody{Policy: pol("a", policies.ModeEnforce)})
	if _, err := resultAs[policies.Policy](f.Apply(first)); err != nil {
		t.Fatal(err)
	}
	// A restart replays the same entry, and an older one.
	for _, idx := range []uint64{5, 3} {
		replay := *first
		replay.Index = idx
		if _, err := resultAs[policies.Policy](f.Apply(&replay)); err == nil {
			t.Errorf("replayed index %d was applied again", idx)
		}
	}
	if p, rev := fsmPolicies(t, f); rev != 1 || p[0].Version != 1 {
		t.Errorf("after replay revision %d version %d, want 1 and 1", rev, p[0].Version)
	}
	if got := f.appliedIndex(); got != 5 {
		t.Errorf("applied index %d, want 5", got)
	}
}

func TestRejectedCommandsRecordTheirIndex(t *testing.T) {
	dir := t.TempDir()
	f, err := openFSM(dir, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Apply(cmdLog(t, 1, opPutPolicy, putPolicyBody{Policy: pol("a", policies.ModeEnforce)}))
	res := f.Apply(cmdLog(t, 2, opDeletePolicy, deletePolicyBody{ID: "missing"}))
	if _, err := resultAs[uint64](res); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of a missing policy: %v", err)
	}
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	// The file, not just memory, must say 2: Open compares it with the
	// newest snapshot's index to decide whether state.db is behind.
	f, err = openFSM(dir, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	if got := f.appliedIndex(); got != 2 {
		t.Errorf("applied index in the file %d, want 2", got)
	}
	if _, rev := fsmPolicies(t, f); rev != 1 {
		t.Errorf("revision %d after a rejected delete, want 1", rev)
	}
}

func TestSnapshotPersistRestoreRoundTrip(t *testing.T) {
	src := openTestFSM(t, nil)
	idx := uint64(0)
	apply := func(f *fsm, op string, body any) {
		t.Helper()
		idx++
		if res, ok := f.Apply(cmdLog(t, idx, op, body)).(applyResult); !ok || res.err != nil {
			t.Fatalf("apply %s: %+v", op, res)
		}
	}
	apply(src, opPutPolicy, putPolicyBody{Policy: pol("a", policies.ModeEnforce)})
	apply(src, opPutPolicy, putPolicyBody{Policy: pol("b", policies.ModeAudit)})
	apply(src, opPutPolicy, putPolicyBody{Policy: pol("b", policies.ModeEnforce)})
	apply(src, opDeletePolicy, deletePolicyBody{ID: "b"})
	wantList, wantRev := fsmPolicies(t, src)
	wantApplied := src.appliedIndex()

	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Persist runs concurrently with Apply: a write after Snapshot must not
	// leak into it.
	apply(src, opPutPolicy, putPolicyBody{Policy: pol("late", policies.ModeAudit)})
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v, want closed", sink.closed, sink.cancelled)
	}

	rec := &recorder{}
	dst := openTestFSM(t, rec.record)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	gotList, gotRev := fsmPolicies(t, dst)
	if gotRev != wantRev || !samePolicies(gotList, wantList) {
		t.Errorf("restored revision %d policies %+v, want %d %+v", gotRev, gotList, wantRev, wantList)
	}
	if got := dst.appliedIndex(); got != wantApplied {
		t.Errorf("restored applied index %d, want %d", got, wantApplied)
	}
	if got := rec.revisions(); !slices.Equal(got, []uint64{wantRev}) {
		t.Errorf("OnPoliciesChanged after restore: %v, want [%d]", got, wantRev)
	}
	// The version counters travel with the snapshot: re-creating the
	// deleted b continues from its last version, 2.
	idx = dst.appliedIndex()
	apply(dst, opPutPolicy, putPolicyBody{Policy: pol("b", policies.ModeAudit)})
	if p, _ := fsmPolicies(t, dst); p[1].ID != "b" || p[1].Version != 3 {
		t.Errorf("re-created b after restore: %+v, want version 3", p[1])
	}
}

func TestRestoreRefusesAStreamThatIsNotAStateFile(t *testing.T) {
	f := openTestFSM(t, nil)
	if res := f.Apply(cmdLog(t, 1, opPutPolicy, putPolicyBody{Policy: pol("a", policies.ModeEnforce)})); res.(applyResult).err != nil {
		t.Fatal(res)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"garbage is refused", []byte("not a bbolt file at all, but long enough to look at its header")},
		{"an empty stream is refused", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := f.Restore(io.NopCloser(bytes.NewReader(tt.data))); err == nil {
				t.Fatal("Restore accepted it")
			}
			if list, rev := fsmPolicies(t, f); rev != 1 || len(list) != 1 {
				t.Errorf("state after refused restore: revision %d, %d policies; want 1, 1", rev, len(list))
			}
			if err := f.failed(); err != nil {
				t.Errorf("refused restore failed the state machine: %v", err)
			}
		})
	}
}

func TestSnapshotOfAnEmptyStoreRestores(t *testing.T) {
	src := openTestFSM(t, nil)
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	dst := openTestFSM(t, nil)
	if err := dst.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	if list, rev := fsmPolicies(t, dst); rev != 0 || len(list) != 0 {
		t.Errorf("restored empty snapshot: revision %d, %d policies", rev, len(list))
	}
}

func TestLastCommand(t *testing.T) {
	logs := raft.NewInmemStore()
	for i, typ := range []raft.LogType{raft.LogConfiguration, raft.LogNoop, raft.LogCommand, raft.LogCommand, raft.LogNoop, raft.LogBarrier} {
		if err := logs.StoreLog(&raft.Log{Index: uint64(i + 3), Type: typ}); err != nil {
			t.Fatal(err)
		}
	}
	// Indexes 1 and 2 are compacted; 3 config, 4 noop, 5 and 6 commands, 7
	// noop, 8 barrier.
	tests := []struct {
		name          string
		lo, hi        uint64
		want          uint64
		wantCompacted bool
	}{
		{"a command at the top is found at once", 4, 6, 6, false},
		{"no-op and barrier entries above the last command are skipped", 0, 8, 6, false},
		{"a range of only non-commands yields lo", 6, 8, 6, false},
		{"an empty range yields lo", 8, 8, 8, false},
		{"reaching compacted entries is reported", 0, 4, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, compacted, err := lastCommand(logs, tt.lo, tt.hi)
			if err != nil || got != tt.want || compacted != tt.wantCompacted {
				t.Errorf("lastCommand(%d, %d) = %d, %v, %v; want %d, %v", tt.lo, tt.hi, got, compacted, err, tt.want, tt.wantCompacted)
			}
		})
	}
}

func TestCommandEnvelopeIsVersionedJSON(t *testing.T) {
	data, err := encodeCommand(opDeletePolicy, t0, deletePolicyBody{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != commandVersion || !strings.Contains(string(data[1:]), `"op":"policy.delete"`) {
		t.Errorf("encoded %q", data)
	}
	c, err := decodeCommand(data)
	if err != nil || c.Op != opDeletePolicy || !c.At.Equal(t0) {
		t.Errorf("decoded %+v, %v", c, err)
	}
}
