package raftstore

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/coordinatord/coordinatord/policies"
)

// commandVersion is the first byte of every log entry this package writes.
// Bump it only for an incompatible envelope change; adding an op does not
// need a bump because unknown ops are already rejected by name.
const commandVersion byte = 1

// Op names. They are stored in the Raft log and in snapshots' history, so
// they are part of the on-disk format: never rename or reuse one.
const (
	opPutPolicy    = "policy.put"
	opDeletePolicy = "policy.delete"
	opPutMember    = "member.put"
	opDeleteMember = "member.delete"

	// Leases (lease_fsm.go). lease.expire is proposed only by the leader's
	// expiry loop, leader.promoted by a new leader before that loop starts.
	opAcquireLease   = "lease.acquire"
	opRenewLease     = "lease.renew"
	opReleaseLease   = "lease.release"
	opExpireLeases   = "lease.expire"
	opLeaderPromoted = "leader.promoted"

	// Wasm modules (modules.go).
	opPutModule    = "module.put"
	opDeleteModule = "module.delete"

	// The correlation record (correlation.go), proposed only by the
	// leader's correlation engine.
	opPutCorrelation = "correlation.put"
)

// command is the envelope of one log entry: the version byte, then this
// struct as JSON. JSON keeps the log readable with standard tools and its
// cost is irrelevant next to the fsync that every entry pays anyway.
type command struct {
	Op string `json:"op"`
	// At is the time the proposer stamped. The state machine uses it
	// instead of a clock, so that every node applies the same value.
	At   time.Time       `json:"at"`
	Body json.RawMessage `json:"body,omitempty"`

	// index is the Raft index of the entry being applied. It is not part of
	// the entry: the state machine sets it before calling the op's handler.
	index uint64
}

type putPolicyBody struct {
	Policy policies.Policy `json:"policy"`
	// ExpectRevision, when set, must equal the policy-set revision at apply
	// time or the write is rejected with a *ConflictError.
	ExpectRevision *uint64 `json:"expect_revision,omitempty"`
}

type deletePolicyBody struct {
	ID string `json:"id"`
}

func encodeCommand(op string, at time.Time, body any) ([]byte, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s body: %w", op, err)
	}
	env, err := json.Marshal(command{Op: op, At: at, Body: raw})
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", op, err)
	}
	return append([]byte{commandVersion}, env...), nil
}

func decodeCommand(data []byte) (command, error) {
	var c command
	if len(data) == 0 {
		return c, fmt.Errorf("%w: empty entry", ErrUnsupportedCommand)
	}
	if data[0] != commandVersion {
		return c, fmt.Errorf("%w: envelope version %d, this node knows %d", ErrUnsupportedCommand, data[0], commandVersion)
	}
	if err := json.Unmarshal(data[1:], &c); err != nil {
		return c, fmt.Errorf("%w: malformed envelope: %v", ErrUnsupportedCommand, err)
	}
	return c, nil
}

// decodeBody decodes an op's body. A body that does not parse was written by
// a buggy or incompatible node; it is rejected like an unknown op.
func decodeBody[T any](c command) (T, error) {
	var body T
	if err := json.Unmarshal(c.Body, &body); err != nil {
		return body, fmt.Errorf("%w: malformed %s body: %v", ErrUnsupportedCommand, c.Op, err)
	}
	return body, nil
}

// applyResult is what the state machine returns for every command, and what
// raft hands back through ApplyFuture.Response on the node that proposed it.
// Exactly one of value and err is meaningful. err is one of this package's
// typed errors and is passed in memory, never serialised, so errors.Is works
// on it.
type applyResult struct {
	value any
	err   error
}

// resultAs extracts a typed value from an ApplyFuture response. A response
// of the wrong shape is a bug in this package; it becomes an error rather
// than a panic so that one bad write cannot take the node down.
func resultAs[T any](resp any) (T, error) {
	var zero T
	res, ok := resp.(applyResult)
	if !ok {
		return zero, fmt.Errorf("unexpected apply response %T", resp)
	}
	if res.err != nil {
		return zero, res.err
	}
	v, ok := res.value.(T)
	if !ok {
		return zero, fmt.Errorf("unexpected apply result %T, want %T", res.value, zero)
	}
	return v, nil
}
