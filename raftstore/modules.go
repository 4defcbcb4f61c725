package raftstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The state machine's Wasm module side. A module is two things: a record
// (name, digest, the server's manifest, version) in bucketModules, and its
// bytes in bucketModuleBlobs under their digest, shared by every record
// that names the same digest and deleted with the last of them.
//
// Size of the entries. A module write carries the whole module in one log
// entry, as base64 inside the JSON envelope, so a 16 MiB module is a
// ~21.4 MiB entry. hashicorp/raft has no hard limit on an entry (it
// suggests 512 KiB, raft.SuggestedMaxDataSize, because a large
// AppendEntries delays heartbeats sent on the same connection); bbolt's
// limit on a value is 2 GiB. Module writes are rare operator actions, so
// the cost is accepted: the transport timeout (10 s) carries a 21 MiB RPC
// comfortably on a LAN, heartbeats have their own connection, and the log
// cache keeps at most logCacheSize entries in memory. MaxModuleBytes is the
// hard bound the state machine enforces; the API's configured limit
// (16 MiB by default) is lower.

var (
	// bucketModules maps module name to the Module's JSON.
	bucketModules = []byte("modules")
	// bucketModuleVersions maps module name to the last version ever given
	// to it. It outlives a delete, so (name, version) never names two
	// different modules.
	bucketModuleVersions = []byte("module_versions")
	// bucketModuleBlobs maps a digest ("sha256:<hex>") to the module bytes.
	bucketModuleBlobs = []byte("module_blobs")
	// keyModuleRevision is the module-set revision, in bucketMeta.
	keyModuleRevision = []byte("module_revision")
)

// moduleBuckets are created by openStateDB beside the others.
var moduleBuckets = [][]byte{bucketModules, bucketModuleVersions, bucketModuleBlobs}

// MaxModuleBytes is the largest module the store accepts, whatever the
// API's own (lower) limit says: a bound on the size of one log entry.
const MaxModuleBytes = 64 << 20

// maxManifestBytes bounds a module's manifest, which is small JSON.
const maxManifestBytes = 64 << 10

// moduleNamePattern is what a module name looks like: usable in URL paths,
// file names, metric labels and log fields without escaping.
var moduleNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Module is the record of one Wasm module. The store does not interpret
// Manifest: the server validates it (kind, limits, sinks) before writing.
type Module struct {
	// Name identifies the module: [a-z0-9][a-z0-9._-]{0,63}.
	Name string `json:"name"`
	// Digest is "sha256:" and the hex SHA-256 of the module's bytes,
	// computed by the state machine.
	Digest string `json:"digest"`
	// Size is the length of the module's bytes.
	Size int64 `json:"size"`
	// Manifest is the server's description of the module, a JSON object.
	Manifest json.RawMessage `json:"manifest"`
	// Version counts the writes of this name, from 1; a deleted and
	// re-created name continues counting, so (Name, Version) names one
	// module forever.
	Version uint64 `json:"version"`
	// Revision is the module-set revision this write produced.
	Revision uint64 `json:"revision"`
	// UpdatedAt is the proposer's time of the write.
	UpdatedAt time.Time `json:"updated_at"`
	// UpdatedBy names who wrote it (a SPIFFE ID).
	UpdatedBy string `json:"updated_by"`
}

// ModuleDigest returns the digest the store gives wasm: "sha256:<hex>".
func ModuleDigest(wasm []byte) string {
	sum := sha256.Sum256(wasm)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ValidateModuleName reports whether name is a valid module name; the
// error wraps ErrInvalid.
func ValidateModuleName(name string) error {
	if !moduleNamePattern.MatchString(name) {
		return fmt.Errorf("%w: module name %q must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", ErrInvalid, name)
	}
	return nil
}

type putModuleBody struct {
	Name      string          `json:"name"`
	Manifest  json.RawMessage `json:"manifest"`
	UpdatedBy string          `json:"updated_by"`
	// Digest is the proposer's digest of Wasm; the state machine checks it.
	Digest string `json:"digest"`
	Wasm   []byte `json:"wasm"`
	// ExpectVersion, when set, must equal the name's current version (0:
	// the name has no module now) or the write is rejected with a
	// *ConflictError.
	ExpectVersion *uint64 `json:"expect_version,omitempty"`
}

type deleteModuleBody struct {
	Name string `json:"name"`
}

// PutModule creates or replaces module m.Name with wasm through Raft and
// returns the record as stored. The caller sets Name, Manifest, UpdatedAt
// and UpdatedBy; Digest, Size, Version and Revision are assigned when the
// write is applied. The bytes are stored as given: validate and compile
// them (and the manifest) before calling, so that no node ever commits a
// module it cannot load.
//
// If expectVersion is non-nil the write succeeds only while the name's
// current version equals *expectVersion (0: no module of that name
// exists), otherwise it fails with a *ConflictError (ErrConflict).
//
// Errors: ErrInvalid, ErrConflict, ErrNotLeader (as *NotLeaderError),
// ErrNoLeader, ErrLeadershipLost, ErrTimeout, ErrClosed. When PutModule
// returns, OnModulesChanged has already run on this node.
func (s *Store) PutModule(ctx context.Context, m Module, wasm []byte, expectVersion *uint64) (Module, error) {
	body := putModuleBody{
		Name:          m.Name,
		Manifest:      m.Manifest,
		UpdatedBy:     m.UpdatedBy,
		Digest:        ModuleDigest(wasm),
		Wasm:          wasm,
		ExpectVersion: expectVersion,
	}
	if err := validatePutModule(body, m.UpdatedAt); err != nil {
		return Module{}, s.errorf("put module %q: %w", m.Name, err)
	}
	resp, err := s.apply(ctx, opPutModule, m.UpdatedAt, body)
	var stored Module
	if err == nil {
		stored, err = resultAs[Module](resp)
	}
	if err != nil {
		return Module{}, s.errorf("put module %q: %w", m.Name, err)
	}
	return stored, nil
}

// DeleteModule removes module name through Raft and returns the new
// module-set revision. Its bytes are deleted too unless another module has
// the same digest. It fails with ErrNotFound if there is no such module;
// other errors as for PutModule. When it returns, OnModulesChanged has
// already run on this node.
func (s *Store) DeleteModule(ctx context.Context, name string, at time.Time) (uint64, error) {
	if err := ValidateModuleName(name); err != nil {
		return 0, s.errorf("delete module %q: %w", name, err)
	}
	if at.IsZero() {
		return 0, s.errorf("delete module %q: %w: time is not stamped", name, ErrInvalid)
	}
	resp, err := s.apply(ctx, opDeleteModule, at, deleteModuleBody{Name: name})
	var rev uint64
	if err == nil {
		rev, err = resultAs[uint64](resp)
	}
	if err != nil {
		return 0, s.errorf("delete module %q: %w", name, err)
	}
	return rev, nil
}

// Module returns module name's record from this node's state, which may
// lag the leader's. It fails with ErrNotFound.
func (s *Store) Module(name string) (Module, error) {
	var m Module
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var found bool
		var err error
		m, found, err = getModule(tx.Bucket(bucketModules), name)
		if err == nil && !found {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return Module{}, s.errorf("module %q: %w", name, err)
	}
	return m, nil
}

// Modules returns every module record sorted by name, and the module-set
// revision they form, from one consistent view of this node's state.
func (s *Store) Modules() ([]Module, uint64, error) {
	var (
		list []Module
		rev  uint64
	)
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var err error
		list, rev, err = readModules(tx)
		return err
	})
	if err != nil {
		return nil, 0, s.errorf("modules: %w", err)
	}
	return list, rev, nil
}

// ModuleBytes returns a copy of the module bytes stored under digest. It
// fails with ErrNotFound once no module names that digest any more.
func (s *Store) ModuleBytes(digest string) ([]byte, error) {
	var out []byte
	err := s.fsm.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketModuleBlobs).Get([]byte(digest))
		if v == nil {
			return ErrNotFound
		}
		// bbolt's slice is only valid inside the transaction.
		out = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, s.errorf("module bytes %s: %w", digest, err)
	}
	return out, nil
}

// validatePutModule runs on the proposer, to fail fast without a log
// entry, and again in the state machine, which must not trust the log's
// author.
func validatePutModule(b putModuleBody, at time.Time) error {
	if err := ValidateModuleName(b.Name); err != nil {
		return err
	}
	switch {
	case len(b.Wasm) == 0:
		return fmt.Errorf("%w: the module is empty", ErrInvalid)
	case len(b.Wasm) > MaxModuleBytes:
		return fmt.Errorf("%w: the module is %d bytes, more than the store's limit of %d", ErrInvalid, len(b.Wasm), MaxModuleBytes)
	case len(b.Manifest) > maxManifestBytes:
		return fmt.Errorf("%w: the manifest is %d bytes, more than %d", ErrInvalid, len(b.Manifest), maxManifestBytes)
	case !isJSONObject(b.Manifest):
		return fmt.Errorf("%w: the manifest is not a JSON object", ErrInvalid)
	case at.IsZero():
		return fmt.Errorf("%w: UpdatedAt is not stamped", ErrInvalid)
	}
	if d := ModuleDigest(b.Wasm); d != b.Digest {
		return fmt.Errorf("%w: the module's digest is %s, the command says %s", ErrInvalid, d, b.Digest)
	}
	return nil
}

func isJSONObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{' && json.Valid(t)
}

// applyPutModule is the state machine side of PutModule. Like every
// handler it checks everything before its first write.
func applyPutModule(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[putModuleBody](c)
	if err != nil {
		return nil, reject(err)
	}
	if err := validatePutModule(body, c.At); err != nil {
		return nil, reject(err)
	}
	meta, mb, vb, bb := tx.Bucket(bucketMeta), tx.Bucket(bucketModules), tx.Bucket(bucketModuleVersions), tx.Bucket(bucketModuleBlobs)
	old, exists, err := getModule(mb, body.Name)
	if err != nil {
		return nil, err
	}
	if body.ExpectVersion != nil {
		var cur uint64
		if exists {
			cur = old.Version
		}
		if cur != *body.ExpectVersion {
			return nil, reject(&ConflictError{Expected: *body.ExpectVersion, Current: cur})
		}
	}
	m := Module{
		Name:      body.Name,
		Digest:    body.Digest,
		Size:      int64(len(body.Wasm)),
		Manifest:  compactJSON(body.Manifest),
		Version:   getUint64(vb, []byte(body.Name)) + 1,
		Revision:  getUint64(meta, keyModuleRevision) + 1,
		UpdatedAt: c.At,
		UpdatedBy: body.UpdatedBy,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	// The old bytes go when this record was their last reference; this
	// record is about to stop referencing them, so it is skipped.
	var orphan string
	if exists && old.Digest != m.Digest {
		used, err := digestUsed(mb, old.Digest, body.Name)
		if err != nil {
			return nil, err
		}
		if !used {
			orphan = old.Digest
		}
	}
	if bb.Get([]byte(m.Digest)) == nil {
		if err := bb.Put([]byte(m.Digest), body.Wasm); err != nil {
			return nil, err
		}
	}
	if orphan != "" {
		if err := bb.Delete([]byte(orphan)); err != nil {
			return nil, err
		}
	}
	if err := mb.Put([]byte(m.Name), raw); err != nil {
		return nil, err
	}
	if err := putUint64(vb, []byte(m.Name), m.Version); err != nil {
		return nil, err
	}
	if err := putUint64(meta, keyModuleRevision, m.Revision); err != nil {
		return nil, err
	}
	return m, nil
}

// applyDeleteModule is the state machine side of DeleteModule. The version
// counter stays behind as the name's tombstone.
func applyDeleteModule(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[deleteModuleBody](c)
	if err != nil {
		return nil, reject(err)
	}
	if err := ValidateModuleName(body.Name); err != nil {
		return nil, reject(err)
	}
	meta, mb, bb := tx.Bucket(bucketMeta), tx.Bucket(bucketModules), tx.Bucket(bucketModuleBlobs)
	old, exists, err := getModule(mb, body.Name)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, reject(ErrNotFound)
	}
	used, err := digestUsed(mb, old.Digest, body.Name)
	if err != nil {
		return nil, err
	}
	if err := mb.Delete([]byte(body.Name)); err != nil {
		return nil, err
	}
	if !used {
		if err := bb.Delete([]byte(old.Digest)); err != nil {
			return nil, err
		}
	}
	rev := getUint64(meta, keyModuleRevision) + 1
	if err := putUint64(meta, keyModuleRevision, rev); err != nil {
		return nil, err
	}
	return rev, nil
}

// digestUsed reports whether a module other than except has digest. Module
// sets are small (tens), so a scan is cheaper than keeping reference counts
// consistent.
func digestUsed(mb *bolt.Bucket, digest, except string) (bool, error) {
	c := mb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if string(k) == except {
			continue
		}
		var m Module
		if err := json.Unmarshal(v, &m); err != nil {
			return false, fmt.Errorf("decode module %q: %w", k, err)
		}
		if m.Digest == digest {
			return true, nil
		}
	}
	return false, nil
}

func getModule(mb *bolt.Bucket, name string) (Module, bool, error) {
	var m Module
	raw := mb.Get([]byte(name))
	if raw == nil {
		return m, false, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, false, fmt.Errorf("decode module %q: %w", name, err)
	}
	return m, true, nil
}

// readModules returns all module records in name order and the module-set
// revision.
func readModules(tx *bolt.Tx) ([]Module, uint64, error) {
	list := []Module{} // never nil: an empty set is still a set
	err := tx.Bucket(bucketModules).ForEach(func(k, v []byte) error {
		var m Module
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("decode module %q: %w", k, err)
		}
		list = append(list, m)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return list, getUint64(tx.Bucket(bucketMeta), keyModuleRevision), nil
}

// compactJSON stores manifests without insignificant space, so that equal
// manifests compare equal byte for byte. raw is known to be valid.
func compactJSON(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}

// moduleSet is the whole module set at one revision, handed to
// OnModulesChanged.
type moduleSet struct {
	revision uint64
	list     []Module
}

// moduleOps are the ops that change the module set, after which
// OnModulesChanged is called.
var moduleOps = map[string]bool{opPutModule: true, opDeleteModule: true}

// collectModules records, inside an entry's transaction, the module set
// the entry produced, when it is a module op that succeeded.
func collectModules(tx *bolt.Tx, op string, b *batchEffects) error {
	if !moduleOps[op] {
		return nil
	}
	list, rev, err := readModules(tx)
	if err != nil {
		return err
	}
	b.moduleSets = append(b.moduleSets, moduleSet{revision: rev, list: list})
	return nil
}

// modulesCommitted runs OnModulesChanged for a committed batch.
func (f *fsm) modulesCommitted(b *batchEffects) {
	if f.onModules == nil {
		return
	}
	for _, set := range b.moduleSets {
		f.onModules(set.revision, set.list)
	}
}

// reportModules reads the whole module set and hands it to
// OnModulesChanged: at Open and after a restore.
func (f *fsm) reportModules() error {
	if f.onModules == nil {
		return nil
	}
	var set moduleSet
	err := f.view(func(tx *bolt.Tx) error {
		var err error
		set.list, set.revision, err = readModules(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("read modules: %w", err)
	}
	f.onModules(set.revision, set.list)
	return nil
}
