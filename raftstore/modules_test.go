package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

var testManifest = json.RawMessage(`{"kind": "reporter"}`)

func mod(name string) Module {
	return Module{Name: name, Manifest: testManifest, UpdatedAt: t0, UpdatedBy: "spiffe://test/cluster/c/env/e/role/admin/dc/d/node/op"}
}

// moduleRecorder collects OnModulesChanged calls.
type moduleRecorder struct {
	mu    sync.Mutex
	revs  []uint64
	names [][]string
}

func (r *moduleRecorder) record(rev uint64, ms []Module) {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name + "@" + m.Digest[:15]
	}
	r.revs = append(r.revs, rev)
	r.names = append(r.names, names)
}

func (r *moduleRecorder) revisions() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.revs)
}

// blobDigests lists the digests whose bytes the state holds.
func blobDigests(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	err := s.fsm.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketModuleBlobs).ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func TestModuleWritesInSequence(t *testing.T) {
	rec := &moduleRecorder{}
	cfg := testConfig(t, t.TempDir())
	cfg.OnModulesChanged = rec.record
	s := openStore(t, cfg)

	v := func(n uint64) *uint64 { return &n }
	wasmA, wasmB := []byte("\x00asm module a"), []byte("\x00asm module b")
	noManifest := mod("x")
	noManifest.Manifest = json.RawMessage(`[1]`)

	steps := []struct {
		name    string
		put     *Module
		wasm    []byte
		expect  *uint64
		del     string
		wantErr error
		wantRev uint64
		wantVer uint64
	}{
		{name: "the first module gets revision 1 and version 1", put: new(mod("a")), wasm: wasmA, wantRev: 1, wantVer: 1},
		{name: "a second module with the same bytes shares them", put: new(mod("b")), wasm: wasmA, wantRev: 2, wantVer: 1},
		{name: "replacing a module bumps its version", put: new(mod("a")), wasm: wasmB, wantRev: 3, wantVer: 2},
		{name: "a stale expected version is a conflict and changes nothing", put: new(mod("a")), wasm: wasmA, expect: v(1), wantErr: ErrConflict, wantRev: 3},
		{name: "the current expected version succeeds", put: new(mod("a")), wasm: wasmA, expect: v(2), wantRev: 4, wantVer: 3},
		{name: "expected version 0 on an existing name is a conflict", put: new(mod("b")), wasm: wasmB, expect: v(0), wantErr: ErrConflict, wantRev: 4},
		{name: "expected version 0 creates a new name", put: new(mod("c")), wasm: wasmB, expect: v(0), wantRev: 5, wantVer: 1},
		{name: "deleting a missing module is not found", del: "zz", wantErr: ErrNotFound, wantRev: 5},
		{name: "deleting a module succeeds", del: "c", wantRev: 6},
		{name: "a re-created name continues its version count", put: new(mod("c")), wasm: wasmB, wantRev: 7, wantVer: 2},
		{name: "an empty module is rejected", put: new(mod("d")), wasm: nil, wantErr: ErrInvalid, wantRev: 7},
		{name: "a manifest that is not an object is rejected", put: &noManifest, wasm: wasmA, wantErr: ErrInvalid, wantRev: 7},
		{name: "an upper-case name is rejected", put: new(mod("Bad")), wasm: wasmA, wantErr: ErrInvalid, wantRev: 7},
		{name: "a name with a slash is rejected", put: new(mod("a/b")), wasm: wasmA, wantErr: ErrInvalid, wantRev: 7},
		{name: "a name of 65 characters is rejected", put: new(mod(strings.Repeat("a", 65))), wasm: wasmA, wantErr: ErrInvalid, wantRev: 7},
		{name: "deleting with an empty name is rejected", del: "", wantErr: ErrInvalid, wantRev: 7},
	}
	for _, st := range steps {
		var err error
		if st.put != nil {
			var got Module
			got, err = s.PutModule(tctx(t), *st.put, st.wasm, st.expect)
			if err == nil && (got.Version != st.wantVer || got.Revision != st.wantRev || got.Digest != ModuleDigest(st.wasm) || got.Size != int64(len(st.wasm)) || !got.UpdatedAt.Equal(t0)) {
				t.Errorf("%s: stored %+v, want version %d revision %d", st.name, got, st.wantVer, st.wantRev)
			}
		} else {
			_, err = s.DeleteModule(tctx(t), st.del, t0)
		}
		if !errors.Is(err, st.wantErr) || (st.wantErr == nil && err != nil) {
			t.Errorf("%s: error %v, want %v", st.name, err, st.wantErr)
		}
		if _, rev, _ := s.Modules(); rev != st.wantRev {
			t.Errorf("%s: module-set revision %d, want %d", st.name, rev, st.wantRev)
		}
	}
	list, _, err := s.Modules()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range list {
		names = append(names, m.Name)
	}
	if !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Errorf("modules %v, want a b c", names)
	}
	// a and b share wasmA, c has wasmB: both blobs are kept, once each.
	if got, want := blobDigests(t, s), sortedStrings(ModuleDigest(wasmA), ModuleDigest(wasmB)); !slices.Equal(got, want) {
		t.Errorf("blobs %v, want %v", got, want)
	}
	// Open reported the empty set, then each successful write its own.
	if got, want := rec.revisions(), []uint64{0, 1, 2, 3, 4, 5, 6, 7}; !slices.Equal(got, want) {
		t.Errorf("OnModulesChanged revisions %v, want %v", got, want)
	}
}

func sortedStrings(s ...string) []string {
	slices.Sort(s)
	return s
}

func TestModuleBytesAreDeletedWithTheirLastReference(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	one, two := []byte("\x00asm one"), []byte("\x00asm two")
	for _, p := range []struct {
		name string
		wasm []byte
	}{{"a", one}, {"b", one}} {
		if _, err := s.PutModule(tctx(t), mod(p.name), p.wasm, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Replacing a: one is still b's.
	if _, err := s.PutModule(tctx(t), mod("a"), two, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ModuleBytes(ModuleDigest(one)); err != nil || !bytes.Equal(got, one) {
		t.Fatalf("bytes of b after a was replaced: %q, %v", got, err)
	}
	// Deleting b: one has no reference left.
	if _, err := s.DeleteModule(tctx(t), "b", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ModuleBytes(ModuleDigest(one)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bytes of a deleted module: %v, want ErrNotFound", err)
	}
	// Replacing a with the bytes it already has keeps them.
	if _, err := s.PutModule(tctx(t), mod("a"), two, nil); err != nil {
		t.Fatal(err)
	}
	if got := blobDigests(t, s); !slices.Equal(got, []string{ModuleDigest(two)}) {
		t.Fatalf("blobs %v, want only two's", got)
	}
	if _, err := s.DeleteModule(tctx(t), "a", t0); err != nil {
		t.Fatal(err)
	}
	if got := blobDigests(t, s); len(got) != 0 {
		t.Fatalf("blobs left after every module was deleted: %v", got)
	}
	if _, err := s.Module("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Module of a deleted name: %v", err)
	}
}

func TestARejectedModuleCommandInsideABatchLeavesNoPartialState(t *testing.T) {
	f := openTestFSM(t, nil)
	rec := &moduleRecorder{}
	f.onModules = rec.record
	good, other := []byte("\x00asm good"), []byte("\x00asm other")
	put := func(name string, wasm []byte, expect *uint64) putModuleBody {
		return putModuleBody{Name: name, Manifest: testManifest, Digest: ModuleDigest(wasm), Wasm: wasm, ExpectVersion: expect}
	}
	zero := uint64(0)
	badDigest := put("x", other, nil)
	badDigest.Digest = ModuleDigest(good)
	batch := []*raft.Log{
		cmdLog(t, 1, opPutModule, put("a", good, nil)),
		// Conflict: rejected after reading a's record, before writing.
		cmdLog(t, 2, opPutModule, put("a", other, &zero)),
		// The digest does not match the bytes.
		cmdLog(t, 3, opPutModule, badDigest),
		cmdLog(t, 4, opDeleteModule, deleteModuleBody{Name: "nope"}),
		cmdLog(t, 5, opPutModule, put("b", other, nil)),
	}
	out := f.ApplyBatch(batch)
	wantErr := map[int]error{1: ErrConflict, 2: ErrInvalid, 3: ErrNotFound}
	for i, resp := range out {
		_, err := resultAs[Module](resp)
		if i == 3 {
			_, err = resultAs[uint64](resp)
		}
		if want := wantErr[i]; !errors.Is(err, want) || want == nil && err != nil {
			t.Errorf("entry %d: %v, want %v", i+1, err, want)
		}
	}
	s := &Store{fsm: f, nodeID: "test"}
	list, rev, err := s.Modules()
	if err != nil {
		t.Fatal(err)
	}
	if rev != 2 || len(list) != 2 || list[0].Digest != ModuleDigest(good) || list[1].Name != "b" {
		t.Errorf("after the batch: revision %d, %+v", rev, list)
	}
	if got, want := blobDigests(t, s), sortedStrings(ModuleDigest(good), ModuleDigest(other)); !slices.Equal(got, want) {
		t.Errorf("blobs %v, want %v", got, want)
	}
	if got := rec.revisions(); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("OnModulesChanged revisions %v, want [1 2]: one call per successful write", got)
	}
}

func TestModulesTravelInSnapshotsAndAreReportedAfterRestore(t *testing.T) {
	src := openTestFSM(t, nil)
	wasm := []byte("\x00asm snap")
	body := putModuleBody{Name: "m", Manifest: testManifest, Digest: ModuleDigest(wasm), Wasm: wasm}
	if res := src.Apply(cmdLog(t, 1, opPutModule, body)).(applyResult); res.err != nil {
		t.Fatal(res.err)
	}
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
	rec := &moduleRecorder{}
	dst.onModules = rec.record
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := rec.revisions(); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("OnModulesChanged after restore: %v, want [1]", got)
	}
	s := &Store{fsm: dst, nodeID: "test"}
	if got, err := s.ModuleBytes(ModuleDigest(wasm)); err != nil || !bytes.Equal(got, wasm) {
		t.Fatalf("restored bytes %q, %v", got, err)
	}
	// The version counter travelled too.
	again := cmdLog(t, 2, opPutModule, body)
	res := dst.Apply(again).(applyResult)
	if m, _ := res.value.(Module); res.err != nil || m.Version != 2 {
		t.Fatalf("re-put after restore: %+v, want version 2", res)
	}
}

func TestModulesAreReportedAtOpenAfterARestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, s)
	if _, err := s.PutModule(tctx(t), mod("kept"), []byte("\x00asm kept"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rec := &moduleRecorder{}
	cfg.OnModulesChanged = rec.record
	openStore(t, cfg)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.revs) == 0 || rec.revs[0] != 1 || len(rec.names[0]) != 1 || !strings.HasPrefix(rec.names[0][0], "kept@sha256:") {
		t.Fatalf("first OnModulesChanged after restart: %v %v, want revision 1 with kept", rec.revs, rec.names)
	}
}
