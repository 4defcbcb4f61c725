package server

import (
	"net/http"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
)

// health answers whether the process serves at all. It needs a valid
// certificate but no policy decision: a broken policy must not make a node
// look dead to whatever restarts it.
func (s *Server) health(w http.ResponseWriter, r *http.Request, _ engine.Claims) error {
	s.writeJSON(w, r, http.StatusOK, api.Health{Status: "ok", Node: s.cfg.NodeID, Time: s.clock().UTC().Format(time.RFC3339Nano)})
	return nil
}

// ready answers whether the node can decide: it knows a leader and has
// loaded a policy set. Like health, it is exempt from policy.
func (s *Server) ready(w http.ResponseWriter, r *http.Request, _ engine.Claims) error {
	resp := api.Ready{Node: s.cfg.NodeID, RaftState: s.store.State(), PolicyRevision: s.engine.Revision()}
	leader, _ := s.store.Leader()
	resp.Leader = leader
	if leader == "" {
		resp.Problems = append(resp.Problems, "no Raft leader is known")
	}
	if resp.PolicyRevision == 0 {
		resp.Problems = append(resp.Problems, "no admission policy is loaded")
	}
	resp.Ready = len(resp.Problems) == 0
	status := http.StatusOK
	if !resp.Ready {
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
	}
	s.writeJSON(w, r, status, resp)
	return nil
}
