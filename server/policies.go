package server

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/policies"
	"github.com/coordinatord/coordinatord/raftstore"
)

func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	if err := s.authorize(r, caller, "policy.read", map[string]any{"kind": "policy"}); err != nil {
		return err
	}
	if err := s.readConsistency(r, "stale"); err != nil {
		return err
	}
	ps, rev, err := s.store.Policies()
	if err != nil {
		return storeError(err, "", "")
	}
	out := api.PolicyList{Revision: rev, Policies: make([]api.Policy, 0, len(ps))}
	for _, p := range ps {
		p.Rego = ""
		out.Policies = append(out.Policies, policyToAPI(p))
	}
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	id := r.PathValue("id")
	if err := s.authorize(r, caller, "policy.read", map[string]any{"kind": "policy", "id": id}); err != nil {
		return err
	}
	if err := policies.ValidateID(id); err != nil {
		return errorf(http.StatusBadRequest, "invalid_id", "id", "%v", err)
	}
	if err := s.readConsistency(r, "stale"); err != nil {
		return err
	}
	p, err := s.store.Policy(id)
	if err != nil {
		return storeError(err, "policy", id)
	}
	s.writeJSON(w, r, http.StatusOK, policyToAPI(p))
	return nil
}

func policyToAPI(p policies.Policy) api.Policy {
	return api.Policy{ID: p.ID, Rego: p.Rego, Mode: string(p.Mode), Revision: p.Revision, Version: p.Version, UpdatedAt: p.UpdatedAt, UpdatedBy: p.UpdatedBy}
}

// putPolicy validates and compiles the policy before anything is written:
// a policy that would not load never reaches the log, and the active set
// stays as it was.
func (s *Server) putPolicy(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	id := r.PathValue("id")
	if err := s.authorize(r, caller, "policy.write", map[string]any{"kind": "policy", "id": id}); err != nil {
		return err
	}
	if err := policies.ValidateID(id); err != nil {
		return errorf(http.StatusBadRequest, "invalid_id", "id", "%v", err)
	}
	if err := checkQuery(r, "mode"); err != nil {
		return err
	}
	req, err := s.readPolicyBody(w, r)
	if err != nil {
		return err
	}
	if req.Mode == "" {
		req.Mode = string(policies.ModeEnforce)
	}
	mode, err := policies.ParseMode(req.Mode)
	if err != nil {
		return errorf(http.StatusBadRequest, "invalid_mode", "mode", "%v", err)
	}
	if _, err := policies.Compile(id, req.Rego); err != nil {
		return compileError(err)
	}
	expect, err := ifMatch(r)
	if err != nil {
		return err
	}
	p := policies.Policy{ID: id, Rego: req.Rego, Mode: mode, UpdatedAt: s.clock(), UpdatedBy: caller.SPIFFEID}
	stored, err := s.store.PutPolicy(r.Context(), p, expect)
	if err != nil {
		return storeError(err, "policy", id)
	}
	s.log.Info("policy written", "policy", id, "mode", stored.Mode, "policy_revision", stored.Revision,
		"version", stored.Version, "by", caller.SPIFFEID)
	w.Header().Set("ETag", strconv.FormatUint(stored.Revision, 10))
	stored.Rego = ""
	s.writeJSON(w, r, http.StatusOK, policyToAPI(stored))
	return nil
}

// readPolicyBody accepts the Rego text itself (text/plain, mode in the
// query, as OPA's API does) or a JSON object {"rego", "mode"}.
func (s *Server) readPolicyBody(w http.ResponseWriter, r *http.Request) (api.PutPolicyRequest, error) {
	if err := requireContentType(r, "text/plain", "application/json"); err != nil {
		return api.PutPolicyRequest{}, err
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return api.PutPolicyRequest{}, err
	}
	var req api.PutPolicyRequest
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if r.URL.Query().Has("mode") {
			return req, errorf(http.StatusBadRequest, "ambiguous_mode", "mode", "give the mode in the JSON body or in the query, not both")
		}
		if err := decodeStrict(body, &req); err != nil {
			return req, err
		}
	} else {
		req.Rego = string(body)
		req.Mode = r.URL.Query().Get("mode")
	}
	if strings.TrimSpace(req.Rego) == "" {
		return req, errorf(http.StatusBadRequest, "empty_policy", "rego", "the policy is empty")
	}
	return req, nil
}

func (s *Server) deletePolicy(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	id := r.PathValue("id")
	if err := s.authorize(r, caller, "policy.delete", map[string]any{"kind": "policy", "id": id}); err != nil {
		return err
	}
	if err := policies.ValidateID(id); err != nil {
		return errorf(http.StatusBadRequest, "invalid_id", "id", "%v", err)
	}
	if err := checkQuery(r); err != nil {
		return err
	}
	rev, err := s.store.DeletePolicy(r.Context(), id, s.clock())
	if err != nil {
		return storeError(err, "policy", id)
	}
	s.log.Info("policy deleted", "policy", id, "policy_revision", rev, "by", caller.SPIFFEID)
	s.writeJSON(w, r, http.StatusOK, api.DeletePolicyResponse{ID: id, Deleted: true, Revision: rev})
	return nil
}

// compileError turns a policy compile failure into a 400 whose message
// carries every file:line:col, and whose details list them structurally.
func compileError(err error) error {
	ae := errorf(http.StatusBadRequest, "invalid_policy", "rego", "%v", err)
	var ce *policies.CompileError
	if errors.As(err, &ce) {
		ae.e.Details = ce.Problems
	}
	if errors.Is(err, policies.ErrPolicyTooLarge) {
		ae.e.Status, ae.e.Code = http.StatusRequestEntityTooLarge, "policy_too_large"
	}
	return ae
}

// ifMatch reads an optional If-Match precondition on the policy-set
// revision, for read-modify-write without lost updates.
func ifMatch(r *http.Request) (*uint64, error) {
	h := strings.Trim(r.Header.Get("If-Match"), `" `)
	if h == "" {
		return nil, nil
	}
	v, err := strconv.ParseUint(h, 10, 64)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "invalid_header", "If-Match", "If-Match must be a policy revision number, got %q", h)
	}
	return &v, nil
}

// storeError maps the store's sentinel errors onto HTTP answers; kind and
// id name what the request was about ("policy", "default").
func storeError(err error, kind, id string) error {
	var nl *raftstore.NotLeaderError
	switch {
	case errors.Is(err, raftstore.ErrNotFound):
		return errorf(http.StatusNotFound, "not_found", "id", "%s %q does not exist", kind, id)
	case errors.Is(err, raftstore.ErrConflict):
		return errorf(http.StatusPreconditionFailed, "revision_mismatch", "If-Match", "%v", err)
	case errors.Is(err, raftstore.ErrLastEnforcingPolicy):
		return errorf(http.StatusConflict, "last_enforcing_policy", "id",
			"deleting policy %q would leave no policy in enforce mode and lock every caller out; put a replacement first", id)
	case errors.As(err, &nl):
		ae := errorf(http.StatusServiceUnavailable, "not_leader", "", "this node is not the Raft leader (leader: %s %s)", nl.LeaderID, nl.LeaderAddr)
		ae.retryAfter = time.Second
		return ae
	case errors.Is(err, raftstore.ErrNotLeader), errors.Is(err, raftstore.ErrNoLeader), errors.Is(err, raftstore.ErrTimeout):
		ae := errorf(http.StatusServiceUnavailable, "unavailable", "", "%v", err)
		ae.retryAfter = time.Second
		return ae
	case errors.Is(err, raftstore.ErrLeadershipLost):
		// The entry may or may not commit under the next leader; the client
		// may retry writes that are safe to repeat.
		ae := errorf(http.StatusServiceUnavailable, "leadership_lost", "", "the leader lost its role while the write was in flight; its outcome is unknown: %v", err)
		ae.retryAfter = time.Second
		return ae
	case errors.Is(err, raftstore.ErrClosed):
		return errorf(http.StatusServiceUnavailable, "shutting_down", "", "the node is shutting down")
	}
	if kind == "" {
		return err
	}
	return fmt.Errorf("%s %q: %w", kind, id, err)
}

// readConsistency makes a read linearizable unless the caller asked for a
// stale read with ?stale=true.
func (s *Server) readConsistency(r *http.Request, allowed ...string) error {
	if err := checkQuery(r, allowed...); err != nil {
		return err
	}
	if v := r.URL.Query().Get("stale"); v != "" {
		stale, err := strconv.ParseBool(v)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid_query", "stale", "stale must be true or false, got %q", v)
		}
		if stale {
			return nil
		}
	}
	if err := s.store.LinearizableRead(r.Context()); err != nil {
		return storeError(err, "", "")
	}
	return nil
}

// checkQuery rejects query parameters the endpoint does not know, so that a
// typo is an error rather than a silently ignored option.
func checkQuery(r *http.Request, allowed ...string) error {
	for k := range r.URL.Query() {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			return errorf(http.StatusBadRequest, "unknown_query_parameter", k, "unknown query parameter %q", k)
		}
	}
	return nil
}
