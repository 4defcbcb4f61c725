package raftstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"

	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/policies"
)

// maxPolicyIDLen keeps ids usable as URL path segments and log fields.
const maxPolicyIDLen = 128

// PutPolicy creates or replaces the policy p.ID through Raft and returns it
// as stored. The caller sets ID, Rego, Mode, UpdatedBy and UpdatedAt (the
// time is stamped by the caller, never read here); Revision and Version are
// assigned when the write is applied: Revision becomes the new policy-set
// revision (previous + 1) and Version the id's previous version + 1. A
// deleted and re-created id continues its version count, so (id, version)
// always names one text.
//
// The Rego text is stored as given: compile and validate it (package
// policies) before calling, so that no node ever commits a policy it cannot
// prepare.
//
// If expectRevision is non-nil the write succeeds only while the policy-set
// revision equals *expectRevision, otherwise it fails with a
// *ConflictError (ErrConflict). Seeding the built-in default policy passes
// new(uint64(0)): it is installed only if no policy was ever written, and
// every later attempt, on any node, gets ErrConflict.
//
// Changing the only enforce-mode policy to audit fails with
// ErrLastEnforcingPolicy. Other errors: ErrInvalid, ErrNotLeader (as
// *NotLeaderError), ErrNoLeader, ErrLeadershipLost, ErrTimeout, ErrClosed.
// When PutPolicy returns, OnPoliciesChanged has already run on this node.
func (s *Store) PutPolicy(ctx context.Context, p policies.Policy, expectRevision *uint64) (policies.Policy, error) {
	if err := validatePolicy(p.ID, p.Mode, p.Rego, p.UpdatedAt); err != nil {
		return policies.Policy{}, s.errorf("put policy %q: %w", p.ID, err)
	}
	body := putPolicyBody{
		Policy: policies.Policy{
			ID:        p.ID,
			Rego:      p.Rego,
			Mode:      p.Mode,
			UpdatedBy: p.UpdatedBy,
		},
		ExpectRevision: expectRevision,
	}
	resp, err := s.apply(ctx, opPutPolicy, p.UpdatedAt, body)
	var stored policies.Policy
	if err == nil {
		stored, err = resultAs[policies.Policy](resp)
	}
	if err != nil {
		return policies.Policy{}, s.errorf("put policy %q: %w", p.ID, err)
	}
	return stored, nil
}

// DeletePolicy removes policy id through Raft and returns the new
// policy-set revision. at is the caller's time of the delete; it travels in
// the log entry like every command's time, though the state keeps no
// deletion record beyond the id's version counter. It fails with
// ErrNotFound if the policy does not exist and with ErrLastEnforcingPolicy
// if it is the only enforce-mode policy; other errors as for PutPolicy.
func (s *Store) DeletePolicy(ctx context.Context, id string, at time.Time) (uint64, error) {
	if err := validatePolicyID(id); err != nil {
		return 0, s.errorf("delete policy %q: %w", id, err)
	}
	if at.IsZero() {
		return 0, s.errorf("delete policy %q: %w: time is not stamped", id, ErrInvalid)
	}
	resp, err := s.apply(ctx, opDeletePolicy, at, deletePolicyBody{ID: id})
	var rev uint64
	if err == nil {
		rev, err = resultAs[uint64](resp)
	}
	if err != nil {
		return 0, s.errorf("delete policy %q: %w", id, err)
	}
	return rev, nil
}

// Policy returns the policy id from this node's state, which may lag the
// leader's; call LinearizableRead first when that matters. It fails with
// ErrNotFound.
func (s *Store) Policy(id string) (policies.Policy, error) {
	var p policies.Policy
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var found bool
		var err error
		p, found, err = getPolicy(tx.Bucket(bucketPolicies), id)
		if err == nil && !found {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return policies.Policy{}, s.errorf("policy %q: %w", id, err)
	}
	return p, nil
}

// Policies returns every policy sorted by id, and the policy-set revision
// they form, from one consistent view of this node's state.
func (s *Store) Policies() ([]policies.Policy, uint64, error) {
	var (
		list []policies.Policy
		rev  uint64
	)
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var err error
		list, rev, err = readPolicies(tx)
		return err
	})
	if err != nil {
		return nil, 0, s.errorf("policies: %w", err)
	}
	return list, rev, nil
}

// PolicyRevision returns this node's policy-set revision without touching
// the file; 0 means no policy was ever written.
func (s *Store) PolicyRevision() uint64 {
	return s.fsm.revision.Load()
}

func validatePolicyID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: policy id is empty", ErrInvalid)
	case len(id) > maxPolicyIDLen:
		return fmt.Errorf("%w: policy id is longer than %d bytes", ErrInvalid, maxPolicyIDLen)
	case strings.ContainsFunc(id, func(r rune) bool { return r == '/' || unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return fmt.Errorf("%w: policy id %q contains '/', space or a control character", ErrInvalid, id)
	}
	return nil
}

// validatePolicy runs on the proposer, to fail fast without a log entry,
// and again in the state machine, which must not trust the log's author.
func validatePolicy(id string, mode policies.Mode, rego string, at time.Time) error {
	if err := validatePolicyID(id); err != nil {
		return err
	}
	switch {
	case mode != policies.ModeEnforce && mode != policies.ModeAudit:
		return fmt.Errorf("%w: mode %q is neither %q nor %q", ErrInvalid, mode, policies.ModeEnforce, policies.ModeAudit)
	case strings.TrimSpace(rego) == "":
		return fmt.Errorf("%w: rego is empty", ErrInvalid)
	case at.IsZero():
		return fmt.Errorf("%w: UpdatedAt is not stamped", ErrInvalid)
	}
	return nil
}

// applyPutPolicy is the state machine side of PutPolicy.
func applyPutPolicy(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[putPolicyBody](c)
	if err != nil {
		return nil, reject(err)
	}
	p := body.Policy
	p.UpdatedAt = c.At
	if err := validatePolicy(p.ID, p.Mode, p.Rego, p.UpdatedAt); err != nil {
		return nil, reject(err)
	}
	meta, pb, vb := tx.Bucket(bucketMeta), tx.Bucket(bucketPolicies), tx.Bucket(bucketPolicyVersions)
	rev := getUint64(meta, keyPolicyRevision)
	if body.ExpectRevision != nil && *body.ExpectRevision != rev {
		return nil, reject(&ConflictError{Expected: *body.ExpectRevision, Current: rev})
	}
	old, exists, err := getPolicy(pb, p.ID)
	if err != nil {
		return nil, err
	}
	if exists && old.Mode == policies.ModeEnforce && p.Mode != policies.ModeEnforce {
		if err := checkNotLastEnforcing(pb, p.ID); err != nil {
			return nil, err
		}
	}
	p.Revision = rev + 1
	p.Version = getUint64(vb, []byte(p.ID)) + 1
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if err := pb.Put([]byte(p.ID), raw); err != nil {
		return nil, err
	}
	if err := putUint64(vb, []byte(p.ID), p.Version); err != nil {
		return nil, err
	}
	if err := putUint64(meta, keyPolicyRevision, p.Revision); err != nil {
		return nil, err
	}
	return p, nil
}

// applyDeletePolicy is the state machine side of DeletePolicy. The version
// counter stays behind as the id's tombstone.
func applyDeletePolicy(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[deletePolicyBody](c)
	if err != nil {
		return nil, reject(err)
	}
	meta, pb := tx.Bucket(bucketMeta), tx.Bucket(bucketPolicies)
	old, exists, err := getPolicy(pb, body.ID)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, reject(ErrNotFound)
	}
	if old.Mode == policies.ModeEnforce {
		if err := checkNotLastEnforcing(pb, body.ID); err != nil {
			return nil, err
		}
	}
	if err := pb.Delete([]byte(body.ID)); err != nil {
		return nil, err
	}
	rev := getUint64(meta, keyPolicyRevision) + 1
	if err := putUint64(meta, keyPolicyRevision, rev); err != nil {
		return nil, err
	}
	return rev, nil
}

// checkNotLastEnforcing rejects the removal of id's enforce mode when no
// other enforce-mode policy exists.
func checkNotLastEnforcing(pb *bolt.Bucket, id string) error {
	c := pb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if string(k) == id {
			continue
		}
		var p policies.Policy
		if err := json.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("decode policy %q: %w", k, err)
		}
		if p.Mode == policies.ModeEnforce {
			return nil
		}
	}
	return reject(fmt.Errorf("%w: %q is the only one", ErrLastEnforcingPolicy, id))
}

func getPolicy(pb *bolt.Bucket, id string) (policies.Policy, bool, error) {
	var p policies.Policy
	raw := pb.Get([]byte(id))
	if raw == nil {
		return p, false, nil
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return p, false, fmt.Errorf("decode policy %q: %w", id, err)
	}
	return p, true, nil
}

// readPolicies returns all policies in key order, which is id order because
// bbolt sorts keys bytewise, as Go compares strings.
func readPolicies(tx *bolt.Tx) ([]policies.Policy, uint64, error) {
	pb := tx.Bucket(bucketPolicies)
	list := []policies.Policy{} // never nil: an empty set is still a set
	err := pb.ForEach(func(k, v []byte) error {
		var p policies.Policy
		if err := json.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("decode policy %q: %w", k, err)
		}
		list = append(list, p)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return list, getUint64(tx.Bucket(bucketMeta), keyPolicyRevision), nil
}
