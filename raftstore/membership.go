package raftstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// The members registry: one record per node of the cluster, so that every
// node can map a Raft server id (the leader's, above all) to the node's API
// address and datacenter. Raft's own configuration knows ids and transport
// addresses only. Records are written by commands like everything else, so
// the registry is replicated, snapshotted and identical on every node.
//
// The registry and the Raft configuration are changed in two steps (Raft
// cannot commit both in one entry). AddMember adds the voter first and then
// the record; RemoveMember deletes the record first and then the voter.
// A step interrupted by a crash or a leader change is repaired by repeating
// the call: both are idempotent.

// bucketMembers maps node id to the Member's JSON. It is created by the
// first member write, so state files written before it existed stay valid.
var bucketMembers = []byte("members")

// Membership errors. Like the package's other sentinels, callers test them
// with errors.Is.
var (
	// ErrMemberConflict is returned when a join names a node id that is
	// already a member at other addresses, or an address another node uses.
	// The error is a *MemberConflictError.
	ErrMemberConflict = errors.New("member conflict")

	// ErrLastVoter is returned when a removal would leave the cluster without
	// a voter, which nothing could ever repair.
	ErrLastVoter = errors.New("would remove the last voter")

	// ErrPeerUnreachable is returned when a joining node's Raft address does
	// not answer as that node. Adding it anyway could cost the cluster its
	// quorum (a two-node cluster needs both), so the join is refused.
	ErrPeerUnreachable = errors.New("raft address unreachable")
)

// MemberConflictError explains an ErrMemberConflict.
type MemberConflictError struct {
	// ID is the node id of the refused join.
	ID string
	// Reason names what clashes, with both values.
	Reason string
}

func (e *MemberConflictError) Error() string {
	return fmt.Sprintf("member conflict: node %s: %s", e.ID, e.Reason)
}

// Unwrap lets errors.Is match ErrMemberConflict.
func (e *MemberConflictError) Unwrap() error { return ErrMemberConflict }

// Member is one node's registry record.
type Member struct {
	// ID is the node's Raft server id and certificate node claim.
	ID string `json:"id"`
	// RaftAddr is its advertised Raft transport address, as in the Raft
	// configuration.
	RaftAddr string `json:"raft_addr"`
	// HTTPAddr is its advertised API address.
	HTTPAddr string `json:"http_addr"`
	// Datacenter is its certificate's datacenter claim.
	Datacenter string `json:"datacenter"`
	// JoinedAt is stamped by the proposer when the record is first written.
	JoinedAt time.Time `json:"joined_at"`
}

// sameAddresses reports whether m and o describe the node identically.
func (m Member) sameAddresses(o Member) bool {
	return m.RaftAddr == o.RaftAddr && m.HTTPAddr == o.HTTPAddr && m.Datacenter == o.Datacenter
}

// Server is one server of the Raft configuration.
type Server struct {
	ID      string
	Address string
	// Suffrage is "voter", "nonvoter" or "staging".
	Suffrage string
}

type putMemberBody struct {
	Member Member `json:"member"`
}

type deleteMemberBody struct {
	ID string `json:"id"`
}

func validateMember(m Member) error {
	switch {
	case m.ID == "":
		return fmt.Errorf("%w: member id is empty", ErrInvalid)
	case len(m.ID) > maxPolicyIDLen:
		return fmt.Errorf("%w: member id is longer than %d bytes", ErrInvalid, maxPolicyIDLen)
	case m.RaftAddr == "":
		return fmt.Errorf("%w: member %s: raft address is empty", ErrInvalid, m.ID)
	case m.HTTPAddr == "":
		return fmt.Errorf("%w: member %s: HTTP address is empty", ErrInvalid, m.ID)
	case m.JoinedAt.IsZero():
		return fmt.Errorf("%w: member %s: JoinedAt is not stamped", ErrInvalid, m.ID)
	}
	return nil
}

// PutMember creates or replaces the registry record m.ID through Raft. It
// does not touch the Raft configuration: AddMember does both. Errors as for
// PutPolicy.
func (s *Store) PutMember(ctx context.Context, m Member) (Member, error) {
	if err := validateMember(m); err != nil {
		return Member{}, s.errorf("put member %q: %w", m.ID, err)
	}
	resp, err := s.apply(ctx, opPutMember, m.JoinedAt, putMemberBody{Member: m})
	var stored Member
	if err == nil {
		stored, err = resultAs[Member](resp)
	}
	if err != nil {
		return Member{}, s.errorf("put member %q: %w", m.ID, err)
	}
	return stored, nil
}

// DeleteMember removes the registry record id through Raft; ErrNotFound if
// there is none. It does not touch the Raft configuration.
func (s *Store) DeleteMember(ctx context.Context, id string, at time.Time) error {
	if id == "" || at.IsZero() {
		return s.errorf("delete member %q: %w: id and time are required", id, ErrInvalid)
	}
	resp, err := s.apply(ctx, opDeleteMember, at, deleteMemberBody{ID: id})
	if err == nil {
		_, err = resultAs[string](resp)
	}
	if err != nil {
		return s.errorf("delete member %q: %w", id, err)
	}
	return nil
}

// Member returns the registry record id from this node's state; ErrNotFound
// if there is none.
func (s *Store) Member(id string) (Member, error) {
	var (
		m     Member
		found bool
	)
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var err error
		m, found, err = getMember(tx, id)
		return err
	})
	if err == nil && !found {
		err = ErrNotFound
	}
	if err != nil {
		return Member{}, s.errorf("member %q: %w", id, err)
	}
	return m, nil
}

// Members returns every registry record, sorted by id, from this node's
// state.
func (s *Store) Members() ([]Member, error) {
	list := []Member{}
	err := s.fsm.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMembers)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var m Member
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode member %q: %w", k, err)
			}
			list = append(list, m)
			return nil
		})
	})
	if err != nil {
		return nil, s.errorf("members: %w", err)
	}
	return list, nil
}

// Configuration returns the servers of the latest Raft configuration this
// node knows (committed or not), sorted by id.
func (s *Store) Configuration(ctx context.Context) ([]Server, error) {
	if s.closed.Load() {
		return nil, s.errorf("configuration: %w", ErrClosed)
	}
	f := s.raft.GetConfiguration()
	if err := s.await(ctx, f); err != nil {
		return nil, s.errorf("configuration: %w", err)
	}
	cfg := f.Configuration()
	out := make([]Server, 0, len(cfg.Servers))
	for _, srv := range cfg.Servers {
		out = append(out, Server{ID: string(srv.ID), Address: string(srv.Address), Suffrage: suffrageName(srv.Suffrage)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func suffrageName(v raft.ServerSuffrage) string {
	switch v {
	case raft.Voter:
		return "voter"
	case raft.Nonvoter:
		return "nonvoter"
	case raft.Staging:
		return "staging"
	}
	return v.String()
}

// PeerProber is an optional capability of a Config.Transport: Probe checks
// that addr answers as node id (TLSTransport dials it and verifies the
// certificate's node claim). AddMember uses it when the transport has it.
type PeerProber interface {
	Probe(ctx context.Context, addr, id string) error
}

// AddMember makes m a voter and registers it, on the leader. A node that is
// already a voter at m.RaftAddr with the same record is left as it is and
// existing is true: a repeated join is harmless. A node id that is a
// server or a member at other addresses, or an address that belongs to
// another node, fails with a *MemberConflictError; so does a node whose
// record differs. Joins and removals on one leader are serialised.
//
// m.JoinedAt is the time to record for a new member. Other errors: those of
// PutMember, ErrPeerUnreachable, and ErrTimeout when Raft did not commit the
// configuration change in time (the change may still commit; repeating the
// call is safe).
func (s *Store) AddMember(ctx context.Context, m Member) (stored Member, existing bool, err error) {
	if err := validateMember(m); err != nil {
		return Member{}, false, s.errorf("add member %q: %w", m.ID, err)
	}
	s.membership.mu.Lock()
	defer s.membership.mu.Unlock()
	// The checks below read the registry: it must hold every committed
	// write, which it does on the leader after a read barrier.
	if err := s.LinearizableRead(ctx); err != nil {
		return Member{}, false, s.errorf("add member %q: %w", m.ID, err)
	}
	servers, err := s.Configuration(ctx)
	if err != nil {
		return Member{}, false, err
	}
	members, err := s.Members()
	if err != nil {
		return Member{}, false, err
	}
	conflict := func(format string, args ...any) (Member, bool, error) {
		return Member{}, false, s.errorf("add member %q: %w", m.ID, &MemberConflictError{ID: m.ID, Reason: fmt.Sprintf(format, args...)})
	}
	isVoter := false
	for _, srv := range servers {
		switch {
		case srv.ID == m.ID && srv.Address != m.RaftAddr:
			return conflict("node %s is already a Raft server at %s, not %s; remove it first", m.ID, srv.Address, m.RaftAddr)
		case srv.ID == m.ID:
			isVoter = srv.Suffrage == "voter"
		case srv.Address == m.RaftAddr:
			return conflict("raft address %s belongs to node %s", m.RaftAddr, srv.ID)
		}
	}
	var record *Member
	for i := range members {
		o := members[i]
		switch {
		case o.ID == m.ID && !o.sameAddresses(m):
			return conflict("node %s is already a member (raft %s, http %s, datacenter %s); it asked for raft %s, http %s, datacenter %s; remove it first",
				m.ID, o.RaftAddr, o.HTTPAddr, o.Datacenter, m.RaftAddr, m.HTTPAddr, m.Datacenter)
		case o.ID == m.ID:
			record = &members[i]
		case o.HTTPAddr == m.HTTPAddr:
			return conflict("HTTP address %s belongs to node %s", m.HTTPAddr, o.ID)
		case o.RaftAddr == m.RaftAddr:
			return conflict("raft address %s belongs to node %s", m.RaftAddr, o.ID)
		}
	}
	if isVoter && record != nil {
		return *record, true, nil
	}
	if !isVoter {
		if p, ok := s.cfg.Transport.(PeerProber); ok {
			if err := p.Probe(ctx, m.RaftAddr, m.ID); err != nil {
				return Member{}, false, s.errorf("add member %q: %w: %w", m.ID, ErrPeerUnreachable, err)
			}
		}
		ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
		defer cancel()
		deadline, _ := ctx.Deadline()
		f := s.raft.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), 0, time.Until(deadline))
		if err := s.await(ctx, f); err != nil {
			return Member{}, false, s.errorf("add member %q: add voter at %s: %w", m.ID, m.RaftAddr, err)
		}
		s.logger.Info("added voter", "member", m.ID, "raft_addr", m.RaftAddr, "index", f.Index())
	}
	if record != nil {
		return *record, false, nil
	}
	stored, err = s.PutMember(ctx, m)
	if err != nil {
		return Member{}, false, err
	}
	return stored, false, nil
}

// RemoveMember deletes node id's registry record and removes it from the
// Raft configuration, on the leader. It fails with ErrNotFound when the id
// is neither, and with ErrLastVoter when it is the only voter. Removing the
// leader itself is allowed: it commits the change and steps down.
func (s *Store) RemoveMember(ctx context.Context, id string, at time.Time) error {
	if id == "" || at.IsZero() {
		return s.errorf("remove member %q: %w: id and time are required", id, ErrInvalid)
	}
	s.membership.mu.Lock()
	defer s.membership.mu.Unlock()
	if err := s.LinearizableRead(ctx); err != nil {
		return s.errorf("remove member %q: %w", id, err)
	}
	servers, err := s.Configuration(ctx)
	if err != nil {
		return err
	}
	inConfig := false
	for _, srv := range servers {
		if srv.ID != id {
			continue
		}
		inConfig = true
		if srv.Suffrage == "voter" && countVoters(servers) == 1 {
			return s.errorf("remove member %q: %w", id, ErrLastVoter)
		}
	}
	_, err = s.Member(id)
	registered := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if !inConfig && !registered {
		return s.errorf("remove member %q: %w", id, ErrNotFound)
	}
	if registered {
		if err := s.DeleteMember(ctx, id, at); err != nil {
			return err
		}
	}
	if inConfig {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
		defer cancel()
		deadline, _ := ctx.Deadline()
		f := s.raft.RemoveServer(raft.ServerID(id), 0, time.Until(deadline))
		if err := s.await(ctx, f); err != nil {
			return s.errorf("remove member %q: remove server: %w", id, err)
		}
		s.logger.Info("removed server", "member", id, "index", f.Index())
	}
	return nil
}

func countVoters(servers []Server) int {
	n := 0
	for _, srv := range servers {
		if srv.Suffrage == "voter" {
			n++
		}
	}
	return n
}

// Term returns the current Raft term.
func (s *Store) Term() uint64 { return s.raft.CurrentTerm() }

// CommitIndex returns the Raft commit index this node knows.
func (s *Store) CommitIndex() uint64 { return s.raft.CommitIndex() }

// LastContact returns when this node last heard from a leader; zero if
// never. On the leader it is the last time it was confirmed by a quorum.
func (s *Store) LastContact() time.Time { return s.raft.LastContact() }

// HadState reports whether the data directory held Raft state when the
// store was opened: a node that had none and did not bootstrap waits to be
// added by a leader.
func (s *Store) HadState() bool { return s.membership.hadState }

// HeartbeatFailures returns, on the leader, the followers it currently
// fails to reach and when it last heard from each. It is empty on a
// follower and right after an election.
func (s *Store) HeartbeatFailures() map[string]time.Time {
	s.membership.peerMu.Lock()
	defer s.membership.peerMu.Unlock()
	out := make(map[string]time.Time, len(s.membership.failing))
	for id, t := range s.membership.failing {
		out[id] = t
	}
	return out
}

// membership is the Store's cluster-membership state.
type membership struct {
	// mu serialises AddMember and RemoveMember: each reads the registry and
	// the configuration, then changes them.
	mu sync.Mutex
	// hadState is set by Open.
	hadState bool

	// peerMu guards failing.
	peerMu   sync.Mutex
	failing  map[string]time.Time
	observer *raft.Observer
	obsCh    chan raft.Observation
	obsDone  chan struct{}
}

// watchPeers registers a Raft observer that records which followers the
// leader cannot reach. Raft drops observations when the channel is full
// rather than block, which only makes the record less precise.
func (s *Store) watchPeers() {
	m := &s.membership
	m.failing = map[string]time.Time{}
	m.obsCh = make(chan raft.Observation, 64)
	m.obsDone = make(chan struct{})
	m.observer = raft.NewObserver(m.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.LeaderObservation, raft.PeerObservation:
			return true
		}
		return false
	})
	s.raft.RegisterObserver(m.observer)
	go func() {
		defer close(m.obsDone)
		for o := range m.obsCh {
			m.peerMu.Lock()
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				m.failing[string(d.PeerID)] = d.LastContact
			case raft.ResumedHeartbeatObservation:
				delete(m.failing, string(d.PeerID))
			case raft.PeerObservation:
				if d.Removed {
					delete(m.failing, string(d.Peer.ID))
				}
			case raft.LeaderObservation:
				clear(m.failing)
			}
			m.peerMu.Unlock()
		}
	}()
}

// stopWatchingPeers deregisters the observer; Raft must not send after it,
// which DeregisterObserver guarantees (it takes the observers lock).
func (s *Store) stopWatchingPeers() {
	m := &s.membership
	if m.observer == nil {
		return
	}
	s.raft.DeregisterObserver(m.observer)
	close(m.obsCh)
	<-m.obsDone
	m.observer = nil
}

func getMember(tx *bolt.Tx, id string) (Member, bool, error) {
	var m Member
	b := tx.Bucket(bucketMembers)
	if b == nil {
		return m, false, nil
	}
	raw := b.Get([]byte(id))
	if raw == nil {
		return m, false, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, false, fmt.Errorf("decode member %q: %w", id, err)
	}
	return m, true, nil
}

// applyPutMember is the state machine side of PutMember. JoinedAt comes
// from the command's stamped time.
func applyPutMember(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[putMemberBody](c)
	if err != nil {
		return nil, reject(err)
	}
	m := body.Member
	m.JoinedAt = c.At
	if err := validateMember(m); err != nil {
		return nil, reject(err)
	}
	b, err := tx.CreateBucketIfNotExists(bucketMembers)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := b.Put([]byte(m.ID), raw); err != nil {
		return nil, err
	}
	return m, nil
}

// applyDeleteMember is the state machine side of DeleteMember.
func applyDeleteMember(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[deleteMemberBody](c)
	if err != nil {
		return nil, reject(err)
	}
	b := tx.Bucket(bucketMembers)
	if b == nil || b.Get([]byte(body.ID)) == nil {
		return nil, reject(ErrNotFound)
	}
	if err := b.Delete([]byte(body.ID)); err != nil {
		return nil, err
	}
	return body.ID, nil
}
