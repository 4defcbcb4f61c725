package raftstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/engine"
)

// The state machine's correlation side: one record, the correlation
// engine's committed view. Only the Raft leader runs the engine; every
// decision that changes what the cluster should see (a datacenter's state,
// the severity, an episode starting or ending, the set of datacenters whose
// leases are held) is committed as a new record with op correlation.put,
// and the last record wins. So every node shows the same state, every
// node's expiry hook (Config.Hold) reads the same held set, and a new
// leader continues the episode it finds in the record instead of starting
// over.
//
// A record that releases datacenters from the hold (the episode ended, a
// datacenter recovered, a correlation module narrowed the set) carries
// their names in Grace: in the same entry, every active lease owned there
// gets ExpiresAt = max(ExpiresAt, min(At+TTL, OwnerExpiresAt+MaxLeaseHold+TTL)),
// one TTL to be renewed before it can expire, so that the end of a
// partition does not expire every lease it held at once. The bound
// (graceTarget) counts from the expiry the lease's owner last set
// (storedLease.OwnerExpiresAt), which neither a hold nor a grace moves, so
// a partition that blips (heals, fails again, a new episode) cannot keep a
// lease alive forever: a lease its owner does not renew is held for at
// most MaxLeaseHold past that expiry (holdCapReached) and graced to at
// most one TTL after that. MaxLeaseHold is the proposer's
// Config.MaxLeaseHold, stamped into the command (putCorrelationBody) so
// that every node applies the same bound; an entry without it (written
// before the field existed, or by a node with no cap) grants the grace
// unbounded, as before.

var (
	// bucketCorrelation holds keyCorrelationRecord.
	bucketCorrelation = []byte("correlation")
	// keyCorrelationRecord is the JSON of the last CorrelationRecord.
	keyCorrelationRecord = []byte("record")
)

// correlationBuckets are created by openStateDB beside the others.
var correlationBuckets = [][]byte{bucketCorrelation}

// MaxCorrelationEvents is how many of the most recent correlation events a
// record keeps (CorrelationRecord.Events), for the API.
const MaxCorrelationEvents = 100

// maxCorrelationDatacenters bounds the datacenters one record names, and
// with it the size of an entry.
const maxCorrelationDatacenters = 1024

// Hold decision sources (HoldDecision.Source).
const (
	// DecisionBuiltIn: the engine's own decision: hold the episode's
	// datacenters.
	DecisionBuiltIn = "builtin"
	// DecisionModules: correlation modules' outputs decided.
	DecisionModules = "modules"
)

// DatacenterState is one datacenter's state as the leader's engine
// decided it.
type DatacenterState struct {
	Name  string         `json:"name"`
	State engine.DCState `json:"state"`
	// Since is when the datacenter entered State.
	Since time.Time `json:"since"`
}

// HoldDecision says who decided a record's held set.
type HoldDecision struct {
	// Source is DecisionBuiltIn or DecisionModules.
	Source string `json:"source"`
	// Modules are the correlation modules whose outputs made the decision
	// (Source modules), in name order.
	Modules []string `json:"modules,omitempty"`
	// Hold is what the decision said: hold leases in the held set or not.
	Hold bool `json:"hold"`
	// Notes are the modules' notes, each prefixed with its module's name.
	Notes []string `json:"notes,omitempty"`
	// Event is the correlation event the decision answered, and At its
	// time.
	Event engine.CorrelationEventType `json:"event,omitempty"`
	At    time.Time                   `json:"at,omitzero"`
}

// CorrelationRecord is the correlation engine's committed view. Records are
// immutable once returned: Store.Correlation hands out a shared pointer.
type CorrelationRecord struct {
	// Revision counts the records committed, from 1.
	Revision uint64 `json:"revision"`
	// Index is the Raft index of the entry that wrote the record.
	Index uint64 `json:"index"`
	// At is the leader's time of the record, Leader the node that
	// committed it.
	At     time.Time `json:"at"`
	Leader string    `json:"leader"`
	// Severity is the engine's current severity.
	Severity engine.Severity `json:"severity"`
	// Episode is the partition episode in progress; nil when none.
	Episode *engine.Episode `json:"episode,omitempty"`
	// Held are the datacenters whose leases are held, not expired, until
	// HoldUntil (sorted). Empty outside an episode, and when the decision
	// was not to hold.
	Held []string `json:"held,omitempty"`
	// HoldUntil is the cap: no lease is held at or after it (the episode's
	// detection plus the leader's maximum lease hold). Zero outside an
	// episode.
	HoldUntil time.Time `json:"hold_until,omitzero"`
	// Decision says who decided Held.
	Decision HoldDecision `json:"decision"`
	// Datacenters are the datacenters the engine knows, sorted by name.
	Datacenters []DatacenterState `json:"datacenters"`
	// Events are the most recent correlation events, oldest first, at most
	// MaxCorrelationEvents.
	Events []engine.CorrelationEvent `json:"events"`
}

// Holds reports whether the record holds leases owned in dc at now.
func (r *CorrelationRecord) Holds(dc string, now time.Time) bool {
	return r != nil && r.Episode != nil && now.Before(r.HoldUntil) && slices.Contains(r.Held, dc)
}

// CorrelationUpdate is what the leader commits: the new view, and the
// events that led to it (appended to the record's history).
type CorrelationUpdate struct {
	Severity    engine.Severity           `json:"severity"`
	Episode     *engine.Episode           `json:"episode,omitempty"`
	Held        []string                  `json:"held,omitempty"`
	HoldUntil   time.Time                 `json:"hold_until,omitzero"`
	Decision    HoldDecision              `json:"decision"`
	Datacenters []DatacenterState         `json:"datacenters"`
	Events      []engine.CorrelationEvent `json:"events,omitempty"`
	// Grace names datacenters released from the hold: their active
	// leases get one TTL from the record's time (see the file comment).
	Grace []string `json:"grace,omitempty"`
	// Leader is set by PutCorrelation: this node's id.
	Leader string `json:"leader"`
}

// putCorrelationBody is the body of a correlation.put entry: the update,
// and the proposer's Config.MaxLeaseHold for the grace's bound (0: none).
type putCorrelationBody struct {
	CorrelationUpdate
	MaxLeaseHold time.Duration `json:"max_lease_hold,omitempty"`
}

// CorrelationResult answers PutCorrelation.
type CorrelationResult struct {
	// Record is the record as stored.
	Record CorrelationRecord
	// Graced are the leases the grace extended, as stored.
	Graced []engine.Lease
}

// PutCorrelation commits u as the new correlation record, stamped with
// the store's clock, and returns it with the leases its grace extended.
// Only the leader's correlation engine calls it. Errors: ErrInvalid, and
// the Raft errors of every write (*NotLeaderError, ErrNoLeader,
// ErrLeadershipLost, ErrTimeout, ErrClosed).
func (s *Store) PutCorrelation(ctx context.Context, u CorrelationUpdate) (CorrelationResult, error) {
	u.Leader = s.nodeID
	at := s.now()
	if err := validateCorrelation(u, at); err != nil {
		return CorrelationResult{}, s.errorf("put correlation record: %w", err)
	}
	resp, err := s.apply(ctx, opPutCorrelation, at, putCorrelationBody{CorrelationUpdate: u, MaxLeaseHold: s.cfg.MaxLeaseHold})
	var res CorrelationResult
	if err == nil {
		res, err = resultAs[CorrelationResult](resp)
	}
	if err != nil {
		return CorrelationResult{}, s.errorf("put correlation record: %w", err)
	}
	return res, nil
}

// Correlation returns the last committed correlation record this node has
// applied, or nil if none was ever committed. It is a shared, immutable
// value: do not modify it. It costs an atomic load, so the expiry hook may
// call it for every due lease.
func (s *Store) Correlation() *CorrelationRecord {
	return s.fsm.corr.Load()
}

func validateCorrelation(u CorrelationUpdate, at time.Time) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	if at.IsZero() {
		return bad("time is not stamped")
	}
	switch u.Severity {
	case engine.SeverityNone, engine.SeverityLow, engine.SeverityMedium, engine.SeverityHigh:
	default:
		return bad("unknown severity %q", u.Severity)
	}
	if u.Episode == nil {
		if len(u.Held) > 0 {
			return bad("datacenters held outside an episode")
		}
	} else {
		if u.Episode.ID == "" || u.Episode.DetectedAt.IsZero() {
			return bad("the episode needs an id and its detection time")
		}
		if u.HoldUntil.IsZero() {
			return bad("an episode needs HoldUntil")
		}
	}
	if len(u.Datacenters) > maxCorrelationDatacenters {
		return bad("%d datacenters, at most %d", len(u.Datacenters), maxCorrelationDatacenters)
	}
	seen := make(map[string]bool, len(u.Datacenters))
	for _, d := range u.Datacenters {
		if err := checkDCName(d.Name); err != nil {
			return bad("datacenters: %v", err)
		}
		if seen[d.Name] {
			return bad("datacenter %q listed twice", d.Name)
		}
		seen[d.Name] = true
	}
	for _, list := range [][]string{u.Held, u.Grace} {
		if len(list) > maxCorrelationDatacenters {
			return bad("%d datacenters, at most %d", len(list), maxCorrelationDatacenters)
		}
		for _, dc := range list {
			if err := checkDCName(dc); err != nil {
				return bad("%v", err)
			}
		}
	}
	return nil
}

func checkDCName(dc string) error {
	if dc == "" || strings.ContainsFunc(dc, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("datacenter name %q is empty or contains whitespace", dc)
	}
	return nil
}

// correlationOutcome is applyPutCorrelation's result: what the proposer
// gets, and what the commit hands on (the record to the cache, the graced
// leases to the expiry queue).
type correlationOutcome struct {
	res CorrelationResult
	// graced are res.Graced as stored, with their owners' expiries.
	graced []storedLease
}

// collect adds the outcome's effects to the batch.
func (o correlationOutcome) collect(b *batchEffects) {
	rec := o.res.Record
	b.correlation = &rec
	for _, l := range o.graced {
		// Only the expiry queue sees a grace: it is no lease event, never
		// stored or published (a grace changes no holder's view).
		b.queueItems = append(b.queueItems, itemOf(l))
	}
}

// applyPutCorrelation replaces the record and applies the grace. Like every
// handler it decides everything before its first write.
func applyPutCorrelation(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[putCorrelationBody](c)
	if err != nil {
		return nil, reject(err)
	}
	u := body.CorrelationUpdate
	if err := validateCorrelation(u, c.At); err != nil {
		return nil, reject(err)
	}
	if body.MaxLeaseHold < 0 {
		return nil, reject(fmt.Errorf("%w: negative max lease hold %s", ErrInvalid, body.MaxLeaseHold))
	}
	cb := tx.Bucket(bucketCorrelation)
	prev, err := getCorrelation(cb)
	if err != nil {
		return nil, err
	}
	rec := CorrelationRecord{
		Index:       c.index,
		At:          c.At,
		Leader:      u.Leader,
		Severity:    u.Severity,
		Episode:     u.Episode,
		Held:        sortedUnique(u.Held),
		HoldUntil:   u.HoldUntil,
		Decision:    u.Decision,
		Datacenters: u.Datacenters,
	}
	if rec.Datacenters == nil {
		rec.Datacenters = []DatacenterState{}
	}
	if prev != nil {
		rec.Revision = prev.Revision + 1
		rec.Events = prev.Events
	} else {
		rec.Revision = 1
	}
	rec.Events = append(slices.Clone(rec.Events), u.Events...)
	if n := len(rec.Events); n > MaxCorrelationEvents {
		rec.Events = rec.Events[n-MaxCorrelationEvents:]
	}
	if rec.Events == nil {
		rec.Events = []engine.CorrelationEvent{}
	}

	var graced []storedLease
	if len(u.Grace) > 0 {
		lb := tx.Bucket(bucketLeases)
		// Collect first: bbolt forbids writing a bucket while iterating it.
		err := lb.ForEach(func(k, v []byte) error {
			var l storedLease
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("decode lease %q: %w", k, err)
			}
			if l.State != engine.LeaseActive || !slices.Contains(u.Grace, l.OwnerDC) {
				return nil
			}
			if target := graceTarget(&l, c.At, body.MaxLeaseHold); l.ExpiresAt.Before(target) {
				graced = append(graced, l.extended(target, c.index))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}

	raw, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	for _, l := range graced {
		if err := putLease(tx.Bucket(bucketLeases), l); err != nil {
			return nil, err
		}
	}
	if err := cb.Put(keyCorrelationRecord, raw); err != nil {
		return nil, err
	}
	res := CorrelationResult{Record: rec}
	for _, l := range graced {
		res.Graced = append(res.Graced, l.Lease)
	}
	return correlationOutcome{res: res, graced: graced}, nil
}

func getCorrelation(cb *bolt.Bucket) (*CorrelationRecord, error) {
	raw := cb.Get(keyCorrelationRecord)
	if raw == nil {
		return nil, nil
	}
	var r CorrelationRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decode correlation record: %w", err)
	}
	return &r, nil
}

// loadCorrelation reads the record of a freshly opened or restored file
// into the cache.
func (f *fsm) loadCorrelation(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		r, err := getCorrelation(tx.Bucket(bucketCorrelation))
		if err != nil {
			return err
		}
		f.corr.Store(r)
		return nil
	})
}

// correlationCommitted publishes a committed batch's record and hands the
// graced leases to the expiry queue. It runs on the state machine
// goroutine after the commit, before applied moves.
func (f *fsm) correlationCommitted(b *batchEffects) {
	if len(b.queueItems) > 0 {
		f.lease.queue.observeItems(b.queueItems)
	}
	if b.correlation != nil {
		f.corr.Store(b.correlation)
	}
}

func sortedUnique(list []string) []string {
	if len(list) == 0 {
		return nil
	}
	out := slices.Clone(list)
	slices.Sort(out)
	return slices.Compact(out)
}
