package server

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"strconv"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
)

// admission answers "may source do action on target?" for a peer that is
// about to accept a connection. Asking is itself the action admission.check.
func (s *Server) admission(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	if err := s.authorize(r, caller, "admission.check", map[string]any{"kind": "admission"}); err != nil {
		return err
	}
	if err := checkQuery(r); err != nil {
		return err
	}
	var req api.AdmissionRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Action == "" {
		return errorf(http.StatusBadRequest, "missing_field", "action", "action is required, e.g. \"connect\"")
	}
	src, err := s.resolvePeer("source", req.Source, req.SourceCertificate)
	if err != nil {
		return err
	}
	dst, err := s.resolvePeer("target", req.Target, req.TargetCertificate)
	if err != nil {
		return err
	}
	d := s.engine.Decide(r.Context(), engine.Input{Source: src, Target: dst, Action: req.Action, Resource: req.Resource})
	s.writeJSON(w, r, http.StatusOK, api.AdmissionResponse{
		Allowed: d.Allowed, Result: d.Result, Reasons: d.Reasons, DecisionID: d.ID,
		PolicyRevision: d.PolicyRevision, Source: claimsToAPI(d.Source), Target: claimsToAPI(d.Target),
		Policies: policyResultsToAPI(d.Policies),
	})
	return nil
}

// resolvePeer reads one side of the question as strictly as a connecting
// peer's certificate would be read.
func (s *Server) resolvePeer(side string, p *api.Peer, certPEM string) (engine.Claims, error) {
	switch {
	case p != nil && certPEM != "":
		return engine.Claims{}, errorf(http.StatusBadRequest, "ambiguous_peer", side,
			"give %s either as claims or as %s_certificate, not both", side, side)
	case certPEM != "":
		return s.peerFromCertificate(side, certPEM)
	case p == nil:
		return engine.Claims{}, errorf(http.StatusBadRequest, "missing_field", side,
			"%s is required: claims, a spiffe_id, or %s_certificate", side, side)
	}
	if p.SPIFFEID != "" && p.Cluster == "" && p.Env == "" && p.Role == "" && p.Datacenter == "" && p.Node == "" && p.Region == "" {
		c, err := engine.ParseSPIFFEID(p.SPIFFEID, s.cfg.Identity.TrustDomain)
		if err != nil {
			return engine.Claims{}, peerError(side+".spiffe_id", err)
		}
		return c, nil
	}
	c := engine.Claims{
		Cluster: p.Cluster, Env: p.Env, Role: engine.Role(p.Role),
		Datacenter: p.Datacenter, Node: p.Node, Region: p.Region,
	}
	if err := engine.ValidateClaims(c); err != nil {
		return engine.Claims{}, peerError(side, err)
	}
	c.SPIFFEID = engine.SPIFFEID(s.cfg.Identity.TrustDomain, c)
	if p.SPIFFEID != "" && p.SPIFFEID != c.SPIFFEID {
		return engine.Claims{}, errorf(http.StatusBadRequest, "inconsistent_peer", side+".spiffe_id",
			"%s.spiffe_id %q does not match its claims (%s)", side, p.SPIFFEID, c.SPIFFEID)
	}
	return c, nil
}

func (s *Server) peerFromCertificate(side, certPEM string) (engine.Claims, error) {
	field := side + "_certificate"
	var chain []*x509.Certificate
	rest := []byte(certPEM)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return engine.Claims{}, errorf(http.StatusBadRequest, "invalid_certificate", field, "%s holds a PEM block of type %q; only CERTIFICATE blocks are accepted", field, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return engine.Claims{}, errorf(http.StatusBadRequest, "invalid_certificate", field, "%s, certificate %d: %v", field, len(chain)+1, err)
		}
		chain = append(chain, cert)
	}
	if len(chain) == 0 {
		return engine.Claims{}, errorf(http.StatusBadRequest, "invalid_certificate", field, "%s holds no PEM certificate", field)
	}
	c, err := s.verifier.Verify(chain)
	if err != nil {
		return engine.Claims{}, peerError(field, err)
	}
	return c, nil
}

// peerError reports a peer's rejected identity as a 400 naming the claim.
func peerError(field string, err error) error {
	ae := errorf(http.StatusBadRequest, "invalid_identity", field, "%s: %v", field, err)
	var ie *engine.IdentityError
	if errors.As(err, &ie) {
		ae.e.Code = "identity_" + ie.Code()
		if ie.Claim != "" {
			ae.e.Field = field + "." + ie.Claim
		}
	}
	return ae
}

// decisions serves the node's recent decisions, oldest first, optionally
// filtered and after a given sequence number (to poll for new ones).
func (s *Server) decisions(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	if err := s.authorize(r, caller, "decisions.read", map[string]any{"kind": "decisions"}); err != nil {
		return err
	}
	if err := checkQuery(r, "limit", "result", "action", "after"); err != nil {
		return err
	}
	q := r.URL.Query()
	f := engine.DecisionFilter{Limit: 100, Result: q.Get("result"), Action: q.Get("action")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > s.cfg.DecisionLogSize {
			return errorf(http.StatusBadRequest, "invalid_query", "limit", "limit must be a number from 1 to %d, got %q", s.cfg.DecisionLogSize, v)
		}
		f.Limit = n
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid_query", "after", "after must be a decision sequence number, got %q", v)
		}
		f.After = n
	}
	switch f.Result {
	case "", engine.ResultAllow, engine.ResultDeny, engine.ResultAuditDeny:
	default:
		return errorf(http.StatusBadRequest, "invalid_query", "result", "result must be %s, %s or %s, got %q",
			engine.ResultAllow, engine.ResultDeny, engine.ResultAuditDeny, f.Result)
	}
	log := s.engine.Log()
	list := log.List(f)
	out := api.DecisionList{Decisions: make([]api.Decision, 0, len(list)), Dropped: log.Dropped(), Evicted: log.Evicted()}
	for _, d := range list {
		out.Decisions = append(out.Decisions, decisionToAPI(d))
	}
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

func claimsToAPI(c engine.Claims) api.Claims {
	return api.Claims{
		Cluster: c.Cluster, Env: c.Env, Role: string(c.Role), Datacenter: c.Datacenter, Node: c.Node,
		Region: c.Region, SPIFFEID: c.SPIFFEID, Serial: c.Serial, NotAfter: c.NotAfter,
	}
}

func policyResultsToAPI(rs []engine.PolicyResult) []api.PolicyResult {
	out := make([]api.PolicyResult, 0, len(rs))
	for _, r := range rs {
		out = append(out, api.PolicyResult{Policy: r.Policy, Mode: string(r.Mode), Allowed: r.Allowed, ReasonCode: r.Reason, Reasons: r.Reasons})
	}
	return out
}

func decisionToAPI(d engine.Decision) api.Decision {
	return api.Decision{
		ID: d.ID, Seq: d.Seq, Time: d.Time, Source: claimsToAPI(d.Source), Target: claimsToAPI(d.Target),
		Action: d.Action, Resource: d.Resource, Allowed: d.Allowed, Result: d.Result, ReasonCode: d.ReasonCode,
		Reasons: d.Reasons, PolicyRevision: d.PolicyRevision, Policies: policyResultsToAPI(d.Policies),
		LatencyNanos: d.Latency.Nanoseconds(), Cached: d.Cached,
	}
}
