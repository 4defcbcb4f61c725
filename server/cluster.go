package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
)

// Cluster membership: the Raft transport, joining, the members registry's
// API and the node's own registration.

const (
	// registerInterval is how often a leader checks that its own registry
	// record is current. The check is a local read.
	registerInterval = 250 * time.Millisecond
	// joinAttemptTimeout bounds one join request, retries across the
	// addresses included, so that a node waiting for its cluster says so
	// in its log now and then.
	joinAttemptTimeout = 15 * time.Second
	// joinMaxBackoff caps the pause between join attempts.
	joinMaxBackoff = 5 * time.Second
)

// clusterState is the Server's cluster machinery.
type clusterState struct {
	// transport is the Raft TLS transport, nil with the in-memory one.
	transport *raftstore.TLSTransport
	// peers calls other nodes' APIs (forwarding, joining).
	peers *peerClient
	// forwarded caches verified forwarded client chains.
	forwarded forwardedChains
	// stop ends the registration loop; done is closed when it has.
	stop context.CancelFunc
	done chan struct{}
}

// openTransport creates the Raft TLS transport when cfg.RaftAddr is set,
// and returns nil (the store's in-memory transport) otherwise. It also
// prepares the client nodes use to call each other.
func (s *Server) openTransport() (raft.Transport, error) {
	s.cluster.peers = s.newPeerClient()
	if s.cfg.RaftAddr == "" {
		return nil, nil
	}
	if err := raftstore.ValidateHostPort(s.cfg.RaftAddr, false); err != nil {
		return nil, fmt.Errorf("node %s: raft address: %w", s.cfg.NodeID, err)
	}
	for _, a := range []struct{ name, addr string }{{"raft advertise address", s.cfg.RaftAdvertise}, {"HTTP advertise address", s.cfg.HTTPAdvertise}} {
		if a.addr == "" {
			continue
		}
		if err := raftstore.ValidateHostPort(a.addr, true); err != nil {
			return nil, fmt.Errorf("node %s: %s: %w", s.cfg.NodeID, a.name, err)
		}
	}
	t, err := raftstore.NewTLSTransport(raftstore.TransportConfig{
		BindAddr:      s.cfg.RaftAddr,
		AdvertiseAddr: s.cfg.RaftAdvertise,
		Certificate:   s.cfg.Certificate,
		Verifier:      s.verifier,
		Self:          s.self,
		Logger:        s.cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", s.cfg.NodeID, err)
	}
	s.cluster.transport = t
	return t, nil
}

// closeTransport closes the Raft transport, after the store, and the
// connections to other nodes' APIs.
func (s *Server) closeTransport() error {
	if s.cluster.peers != nil {
		s.cluster.peers.transport.CloseIdleConnections()
	}
	if s.cluster.transport == nil {
		return nil
	}
	return s.cluster.transport.Close()
}

// httpAdvertise is the API address other nodes reach this node at.
func (s *Server) httpAdvertise() string {
	if s.cfg.HTTPAdvertise != "" {
		return s.cfg.HTTPAdvertise
	}
	return s.Addr()
}

// startRegistration starts the loop that keeps the leader's own registry
// record current: the bootstrap node registers itself once it leads, and a
// node that leads after a restart with new addresses updates its record.
func (s *Server) startRegistration() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cluster.stop = cancel
	s.cluster.done = make(chan struct{})
	go func() {
		defer close(s.cluster.done)
		t := time.NewTicker(registerInterval)
		defer t.Stop()
		for {
			if s.store.IsLeader() {
				s.registerSelf(ctx)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (s *Server) stopRegistration() {
	if s.cluster.stop != nil {
		s.cluster.stop()
		<-s.cluster.done
	}
}

// registerSelf writes this node's record if it is missing or stale.
func (s *Server) registerSelf(ctx context.Context) {
	id, raftAddr := s.store.Leader()
	if id != s.cfg.NodeID {
		return
	}
	want := raftstore.Member{ID: s.cfg.NodeID, RaftAddr: raftAddr, HTTPAddr: s.httpAdvertise(), Datacenter: s.self.Datacenter, JoinedAt: s.clock()}
	have, err := s.store.Member(s.cfg.NodeID)
	switch {
	case err == nil && have.RaftAddr == want.RaftAddr && have.HTTPAddr == want.HTTPAddr && have.Datacenter == want.Datacenter:
		return
	case err == nil:
		want.JoinedAt = have.JoinedAt
	case !errors.Is(err, raftstore.ErrNotFound):
		s.log.Error("read own member record", "error", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Raft.ApplyTimeout)
	defer cancel()
	if _, err := s.store.PutMember(ctx, want); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("register this node in the members registry", "error", err)
		}
		return
	}
	s.log.Info("registered this node in the members registry", "raft_addr", want.RaftAddr, "http_addr", want.HTTPAddr, "datacenter", want.Datacenter)
}

// JoinCluster asks the cluster at addrs (API addresses of any members) to
// add this node, retrying across them with backoff until it is added or
// ctx ends. A node whose data directory had Raft state is a member already
// (or was removed, which joining again would not undo silently): it logs
// that and returns nil. A refusal (bad request, identity, policy, a
// conflicting member) ends the attempts with an error.
func (s *Server) JoinCluster(ctx context.Context, addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	if s.store.HadState() {
		s.log.Info("ignoring --join: this node has Raft state already and rejoins its cluster by itself", "join", addrs)
		return nil
	}
	c, err := client.New(client.Config{Addrs: addrs, TLS: s.cluster.peers.tls, DialContext: s.cluster.peers.dial, Timeout: s.cfg.Raft.ApplyTimeout + 5*time.Second})
	if err != nil {
		return fmt.Errorf("node %s: join: %w", s.cfg.NodeID, err)
	}
	defer c.Close()
	req := api.JoinRequest{NodeID: s.cfg.NodeID, RaftAddr: s.raftAdvertise(), HTTPAddr: s.httpAdvertise(), Datacenter: s.self.Datacenter}
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, joinAttemptTimeout)
		resp, err := c.Join(actx, req)
		cancel()
		if err == nil {
			s.log.Info("joined the cluster", "leader", resp.Leader, "already_member", resp.AlreadyMember,
				"raft_addr", req.RaftAddr, "http_addr", req.HTTPAddr, "attempts", attempt)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("node %s: join via %v: %w (last error: %v)", s.cfg.NodeID, addrs, ctx.Err(), err)
		}
		var ae *api.Error
		if errors.As(err, &ae) && refusal(ae.Status) {
			return fmt.Errorf("node %s: the cluster refused to add it (via %v): %w", s.cfg.NodeID, addrs, err)
		}
		s.log.Warn("join not done yet; retrying", "join", addrs, "attempt", attempt, "retry_in", backoff, "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: join via %v: %w (last error: %v)", s.cfg.NodeID, addrs, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, joinMaxBackoff)
	}
}

// refusal reports statuses that a repeated join cannot change.
func refusal(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusConflict:
		return true
	}
	return false
}

// raftAdvertise is the Raft address other nodes reach this node at.
func (s *Server) raftAdvertise() string {
	if s.cluster.transport != nil {
		return string(s.cluster.transport.LocalAddr())
	}
	return s.cfg.NodeID
}

// joinCluster serves POST /v1/cluster/join on the leader: a node asks, with
// its own certificate, to be added as a voter.
func (s *Server) joinCluster(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	if err := checkQuery(r); err != nil {
		return err
	}
	var req api.JoinRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := s.authorize(r, caller, "cluster.join", map[string]any{"kind": "cluster", "node": req.NodeID}); err != nil {
		return err
	}
	if err := engine.ValidateClaimValue("node", req.NodeID); err != nil {
		return errorf(http.StatusBadRequest, "invalid_node_id", "node_id", "node_id: %v", err)
	}
	if caller.Node != req.NodeID {
		return errorf(http.StatusForbidden, "node_mismatch", "node_id",
			"a node joins only as itself: node_id is %q but the certificate's node claim is %q", req.NodeID, caller.Node)
	}
	if req.Datacenter == "" {
		req.Datacenter = caller.Datacenter
	}
	if req.Datacenter != caller.Datacenter {
		return errorf(http.StatusForbidden, "datacenter_mismatch", "datacenter",
			"datacenter is %q but the certificate's datacenter claim is %q", req.Datacenter, caller.Datacenter)
	}
	for _, f := range []struct{ name, addr string }{{"raft_addr", req.RaftAddr}, {"http_addr", req.HTTPAddr}} {
		if f.addr == "" {
			return errorf(http.StatusBadRequest, "missing_field", f.name, "%s is required", f.name)
		}
		if err := raftstore.ValidateHostPort(f.addr, true); err != nil {
			return errorf(http.StatusBadRequest, "invalid_address", f.name, "%s: %v", f.name, err)
		}
	}
	m := raftstore.Member{ID: req.NodeID, RaftAddr: req.RaftAddr, HTTPAddr: req.HTTPAddr, Datacenter: req.Datacenter, JoinedAt: s.clock()}
	stored, existing, err := s.store.AddMember(r.Context(), m)
	if err != nil {
		return clusterError(err, req.NodeID)
	}
	if existing {
		s.log.Info("join repeated; node already a member", "member", req.NodeID, "by", caller.SPIFFEID)
	} else {
		s.log.Info("node joined", "member", req.NodeID, "raft_addr", req.RaftAddr, "http_addr", req.HTTPAddr, "datacenter", req.Datacenter, "by", caller.SPIFFEID)
	}
	s.writeJSON(w, r, http.StatusOK, api.JoinResponse{Member: memberToAPI(stored), AlreadyMember: existing, Leader: s.cfg.NodeID})
	return nil
}

// removeMember serves DELETE /v1/cluster/members/{id} on the leader.
func (s *Server) removeMember(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	id := r.PathValue("id")
	if err := s.authorize(r, caller, "cluster.write", map[string]any{"kind": "cluster", "node": id}); err != nil {
		return err
	}
	if err := checkQuery(r); err != nil {
		return err
	}
	if err := s.store.RemoveMember(r.Context(), id, s.clock()); err != nil {
		return clusterError(err, id)
	}
	s.log.Info("node removed from the cluster", "member", id, "by", caller.SPIFFEID)
	s.writeJSON(w, r, http.StatusOK, api.RemoveMemberResponse{ID: id, Removed: true})
	return nil
}

// clusterStatus serves GET /v1/cluster: the Raft configuration merged with
// the members registry, from the leader (or, with ?stale=true, from this
// node).
func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	if err := s.authorize(r, caller, "cluster.read", map[string]any{"kind": "cluster"}); err != nil {
		return err
	}
	if err := s.readConsistency(r, "stale"); err != nil {
		return err
	}
	servers, err := s.store.Configuration(r.Context())
	if err != nil {
		return clusterError(err, "")
	}
	members, err := s.store.Members()
	if err != nil {
		return clusterError(err, "")
	}
	leader, _ := s.store.Leader()
	failing := s.store.HeartbeatFailures()
	out := api.ClusterStatus{
		Node: s.cfg.NodeID, RaftState: s.store.State(), LeaderID: leader, Term: s.store.Term(),
		CommitIndex: s.store.CommitIndex(), AppliedIndex: s.store.AppliedIndex(), LastIndex: s.store.LastIndex(),
		Members: []api.Member{},
	}
	registered := make(map[string]raftstore.Member, len(members))
	for _, m := range members {
		registered[m.ID] = m
	}
	for _, srv := range servers {
		am := api.Member{ID: srv.ID, RaftAddr: srv.Address, Suffrage: srv.Suffrage, Leader: srv.ID == leader}
		if m, ok := registered[srv.ID]; ok {
			reg := memberToAPI(m)
			am.HTTPAddr, am.Datacenter, am.JoinedAt, am.Registered = reg.HTTPAddr, reg.Datacenter, reg.JoinedAt, true
			delete(registered, srv.ID)
		}
		if t, ok := failing[srv.ID]; ok {
			am.HeartbeatFailing, am.LastContact = true, t
		}
		if am.Leader && srv.ID != s.cfg.NodeID {
			am.LastContact = s.store.LastContact()
		}
		out.Members = append(out.Members, am)
	}
	for _, m := range members {
		if _, left := registered[m.ID]; left {
			am := memberToAPI(m)
			am.Suffrage = "none"
			out.Members = append(out.Members, am)
		}
	}
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

func memberToAPI(m raftstore.Member) api.Member {
	return api.Member{ID: m.ID, RaftAddr: m.RaftAddr, HTTPAddr: m.HTTPAddr, Datacenter: m.Datacenter, JoinedAt: m.JoinedAt, Registered: true}
}

// clusterError maps the store's membership errors onto HTTP answers.
func clusterError(err error, id string) error {
	var ce *raftstore.MemberConflictError
	switch {
	case errors.As(err, &ce):
		return errorf(http.StatusConflict, "duplicate_node", "node_id", "%s", ce.Reason)
	case errors.Is(err, raftstore.ErrPeerUnreachable):
		return errorf(http.StatusUnprocessableEntity, "raft_addr_unreachable", "raft_addr", "%v", err)
	case errors.Is(err, raftstore.ErrLastVoter):
		return errorf(http.StatusConflict, "last_voter", "id", "node %q is the cluster's only voter; removing it would leave nothing to repair the cluster with", id)
	case errors.Is(err, raftstore.ErrNotFound):
		return errorf(http.StatusNotFound, "not_found", "id", "node %q is not a member of the cluster", id)
	case errors.Is(err, raftstore.ErrInvalid):
		return errorf(http.StatusBadRequest, "invalid_member", "", "%v", err)
	case errors.Is(err, raftstore.ErrNotLeader), errors.Is(err, raftstore.ErrNoLeader),
		errors.Is(err, raftstore.ErrTimeout), errors.Is(err, raftstore.ErrClosed):
		return storeError(err, "node", id)
	case errors.Is(err, raftstore.ErrLeadershipLost):
		ae := errorf(http.StatusServiceUnavailable, "leadership_lost", "", "%v; the change may or may not have been made, and repeating it is safe", err)
		ae.retryAfter = retryAfterNoLeader
		return ae
	}
	return fmt.Errorf("cluster: node %q: %w", id, err)
}
