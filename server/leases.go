package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
)

// watchPing is how often an idle watch stream gets a comment line, so that
// proxies keep it open and a vanished client is noticed.
const watchPing = 15 * time.Second

// leaseRoutes registers the lease API. "watch" is not a valid job id, so
// /v1/leases/watch never shadows a job.
func (s *Server) leaseRoutes(handle func(string, route)) {
	handle("/v1/leases", route{http.MethodGet: s.leaderRead(s.listLeases)})
	// Events are committed ones: every node serves the stream itself.
	handle("/v1/leases/watch", route{http.MethodGet: s.watchLeases})
	handle("/v1/leases/{job_id}", route{http.MethodGet: s.leaderRead(s.getLease)})
	handle("/v1/leases/{job_id}/acquire", route{http.MethodPost: s.leaderOnly(s.acquireLease)})
	handle("/v1/leases/{job_id}/renew", route{http.MethodPost: s.leaderOnly(s.renewLease)})
	handle("/v1/leases/{job_id}/release", route{http.MethodPost: s.leaderOnly(s.releaseLease)})
	handle("/v1/leases/{job_id}/check", route{http.MethodPost: s.leaderRead(s.checkLease)})
}

func leaseResource(jobID string) map[string]any {
	return map[string]any{"kind": "lease", "job_id": jobID}
}

// leaseJob authorises action on the job named in the path and checks the id.
func (s *Server) leaseJob(r *http.Request, caller engine.Claims, action string) (string, error) {
	jobID := r.PathValue("job_id")
	if err := s.authorize(r, caller, action, leaseResource(jobID)); err != nil {
		return "", err
	}
	if err := engine.ValidateJobID(jobID); err != nil {
		return "", errorf(http.StatusBadRequest, "invalid_job_id", "job_id", "%v", err)
	}
	return jobID, nil
}

// parseTTL reads an optional duration field ("" is zero: the default) and
// checks it against the cluster's limits before anything is proposed.
func (s *Server) parseTTL(v string) (time.Duration, error) {
	ttl, err := parseDuration(v)
	if err != nil || ttl == 0 {
		return ttl, err
	}
	if err := s.cfg.Raft.LeaseLimits.CheckTTL(ttl); err != nil {
		return 0, errorf(http.StatusBadRequest, "invalid_ttl", "ttl", "%v", err)
	}
	return ttl, nil
}

func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, "invalid_ttl", "ttl", "ttl %q is not a duration such as \"10s\" or \"1500ms\"", s)
	}
	if d <= 0 {
		return 0, errorf(http.StatusBadRequest, "invalid_ttl", "ttl", "ttl %s must be positive", d)
	}
	return d, nil
}

func requireToken(t *uint64) (uint64, error) {
	switch {
	case t == nil:
		return 0, errorf(http.StatusBadRequest, "missing_field", "token", "token is required: the fencing token the lease was acquired with")
	case *t == 0:
		return 0, errorf(http.StatusBadRequest, "invalid_token", "token", "token 0 is never issued; tokens start at 1")
	}
	return *t, nil
}

// decodeOptionalJSON is decodeJSON for endpoints whose body may be empty.
func (s *Server) decodeOptionalJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength == 0 && r.Header.Get("Content-Type") == "" {
		return nil
	}
	if err := requireContentType(r, "application/json"); err != nil {
		return err
	}
	body, err := s.readBody(w, r)
	if err != nil || len(strings.TrimSpace(string(body))) == 0 {
		return err
	}
	return decodeStrict(body, v)
}

func (s *Server) acquireLease(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	jobID, err := s.leaseJob(r, caller, "lease.acquire")
	if err != nil {
		return err
	}
	var req api.AcquireRequest
	if err := checkQuery(r); err != nil {
		return err
	}
	if err := s.decodeOptionalJSON(w, r, &req); err != nil {
		return err
	}
	if req.Force {
		// Taking a lease over fences its holder: a decision of its own.
		if err := s.authorize(r, caller, "lease.force", leaseResource(jobID)); err != nil {
			return err
		}
	}
	ttl, err := s.parseTTL(req.TTL)
	if err != nil {
		return err
	}
	l, err := s.store.AcquireLease(r.Context(), engine.AcquireRequest{
		JobID: jobID, Owner: caller.Node, OwnerID: caller.SPIFFEID, OwnerDC: caller.Datacenter, TTL: ttl, Force: req.Force,
	})
	s.metrics.leaseOps.WithLabelValues("acquire", leaseResult(err)).Inc()
	if err != nil {
		return leaseError(err, jobID)
	}
	s.writeJSON(w, r, http.StatusOK, leaseToAPI(l))
	return nil
}

func (s *Server) renewLease(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	jobID, err := s.leaseJob(r, caller, "lease.renew")
	if err != nil {
		return err
	}
	var req api.RenewRequest
	if err := checkQuery(r); err != nil {
		return err
	}
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	token, err := requireToken(req.Token)
	if err != nil {
		return err
	}
	ttl, err := s.parseTTL(req.TTL)
	if err != nil {
		return err
	}
	l, err := s.store.RenewLease(r.Context(), engine.RenewRequest{JobID: jobID, Owner: caller.Node, Token: token, TTL: ttl})
	s.metrics.leaseOps.WithLabelValues("renew", leaseResult(err)).Inc()
	if err != nil {
		return leaseError(err, jobID)
	}
	s.writeJSON(w, r, http.StatusOK, leaseToAPI(l))
	return nil
}

func (s *Server) releaseLease(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	jobID, err := s.leaseJob(r, caller, "lease.release")
	if err != nil {
		return err
	}
	var req api.TokenRequest
	if err := checkQuery(r); err != nil {
		return err
	}
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	token, err := requireToken(req.Token)
	if err != nil {
		return err
	}
	l, err := s.store.ReleaseLease(r.Context(), engine.ReleaseRequest{JobID: jobID, Owner: caller.Node, Token: token})
	s.metrics.leaseOps.WithLabelValues("release", leaseResult(err)).Inc()
	if err != nil {
		return leaseError(err, jobID)
	}
	s.writeJSON(w, r, http.StatusOK, leaseToAPI(l))
	return nil
}

func (s *Server) checkLease(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	jobID, err := s.leaseJob(r, caller, "lease.check")
	if err != nil {
		return err
	}
	var req api.TokenRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	token, err := requireToken(req.Token)
	if err != nil {
		return err
	}
	if err := s.readConsistency(r, "stale"); err != nil {
		return err
	}
	res, err := s.store.CheckLease(jobID, token)
	switch {
	case errors.Is(err, raftstore.ErrNotFound):
		res = engine.CheckResult{Reason: "no_lease"}
	case err != nil:
		return leaseError(err, jobID)
	}
	s.writeJSON(w, r, http.StatusOK, api.CheckResponse{
		JobID: jobID, Current: res.Current, Token: res.Token, State: string(res.State), Owner: res.Owner,
		OwnerDC: res.OwnerDC, ExpiresAt: res.ExpiresAt, Reason: res.Reason,
	})
	return nil
}

func (s *Server) getLease(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	jobID, err := s.leaseJob(r, caller, "lease.read")
	if err != nil {
		return err
	}
	if err := s.readConsistency(r, "stale"); err != nil {
		return err
	}
	l, err := s.store.Lease(jobID)
	if err != nil {
		return leaseError(err, jobID)
	}
	s.writeJSON(w, r, http.StatusOK, leaseToAPI(l))
	return nil
}

func (s *Server) listLeases(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	if err := s.authorize(r, caller, "lease.read", map[string]any{"kind": "lease"}); err != nil {
		return err
	}
	if err := s.readConsistency(r, "stale", "owner", "dc", "state"); err != nil {
		return err
	}
	q := r.URL.Query()
	f := raftstore.LeaseFilter{Owner: q.Get("owner"), Datacenter: q.Get("dc"), State: engine.LeaseState(q.Get("state"))}
	switch f.State {
	case "", engine.LeaseActive, engine.LeaseReleased, engine.LeaseExpired:
	default:
		return errorf(http.StatusBadRequest, "invalid_query", "state", "state must be %s, %s or %s, got %q",
			engine.LeaseActive, engine.LeaseReleased, engine.LeaseExpired, f.State)
	}
	ls, err := s.store.Leases(f)
	if err != nil {
		return leaseError(err, "")
	}
	out := api.LeaseList{Leases: make([]api.Lease, 0, len(ls))}
	for _, l := range ls {
		out.Leases = append(out.Leases, leaseToAPI(l))
	}
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

// watchLeases streams lease events as Server-Sent Events. Each event's id
// is "index.n", the n-th event of Raft entry index; a client resumes with
// Last-Event-ID (or from_index) and gets every later event exactly once.
// Events are committed ones, so any node serves the stream.
func (s *Server) watchLeases(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	if err := s.authorize(r, caller, "lease.read", map[string]any{"kind": "lease", "watch": true}); err != nil {
		return err
	}
	if err := checkQuery(r, "from_index"); err != nil {
		return err
	}
	from, skip, err := watchStart(r, s.store.AppliedIndex())
	if err != nil {
		return err
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		return errorf(http.StatusInternalServerError, "internal", "", "the connection cannot stream")
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	watch, err := s.store.WatchLeases(ctx, from)
	if err != nil {
		return leaseError(err, "")
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	ping := time.NewTicker(watchPing)
	defer ping.Stop()
	var lastIndex uint64
	n := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return nil
			}
			flusher.Flush()
		case ev, open := <-watch.Events():
			if !open {
				s.endWatch(w, flusher, watch.Err())
				return nil
			}
			if ev.Index != lastIndex {
				lastIndex, n = ev.Index, 0
			} else {
				n++
			}
			if ev.Index == from && n < skip {
				continue
			}
			body, err := json.Marshal(leaseEventToAPI(ev))
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "id: %d.%d\nevent: %s\ndata: %s\n\n", ev.Index, n, ev.Type, body); err != nil {
				return nil // the client went away
			}
			flusher.Flush()
		}
	}
}

// watchStart reads where a watch begins: after Last-Event-ID "index.n" if
// the client resumes, else at from_index, else with the next entry.
func watchStart(r *http.Request, applied uint64) (from uint64, skip int, err error) {
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		idx, n, ok := strings.Cut(id, ".")
		i, err1 := strconv.ParseUint(idx, 10, 64)
		k, err2 := strconv.Atoi(n)
		if !ok || err1 != nil || err2 != nil || k < 0 {
			return 0, 0, errorf(http.StatusBadRequest, "invalid_header", "Last-Event-ID", "Last-Event-ID %q is not an event id of this stream (index.n)", id)
		}
		return i, k + 1, nil
	}
	v := r.URL.Query().Get("from_index")
	if v == "" {
		return applied + 1, 0, nil
	}
	i, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, 0, errorf(http.StatusBadRequest, "invalid_query", "from_index", "from_index must be a Raft index, got %q", v)
	}
	return i, 0, nil
}

// endWatch tells the client why the stream ends, as a last "error" event.
func (s *Server) endWatch(w http.ResponseWriter, flusher http.Flusher, err error) {
	if err == nil {
		return
	}
	ae := leaseError(err, "")
	var apiErr *apiError
	if !errors.As(ae, &apiErr) {
		apiErr = errorf(http.StatusInternalServerError, "internal", "", "%v", err)
	}
	body, mErr := json.Marshal(api.ErrorBody{Error: &apiErr.e})
	if mErr != nil {
		s.log.Error("encode watch error", "error", mErr)
		return
	}
	if _, err := fmt.Fprintf(w, "event: error\ndata: %s\n\n", body); err == nil {
		flusher.Flush()
	}
}

// leaseResult is the bounded label of a lease operation's outcome.
func leaseResult(err error) string {
	if err == nil {
		return "ok"
	}
	if code := engine.LeaseErrorCode(err); code != "" {
		return code
	}
	return "error"
}

// leaseError maps lease rule and store errors onto HTTP answers.
func leaseError(err error, jobID string) error {
	code := engine.LeaseErrorCode(err)
	status := map[string]int{
		"lease_held":       http.StatusConflict,
		"stale_token":      http.StatusConflict,
		"lease_not_active": http.StatusConflict,
		"lease_expired":    http.StatusConflict,
		"not_owner":        http.StatusForbidden,
		"no_lease":         http.StatusNotFound,
		"invalid_ttl":      http.StatusBadRequest,
		"invalid_job_id":   http.StatusBadRequest,
	}[code]
	field := map[string]string{"stale_token": "token", "invalid_ttl": "ttl", "invalid_job_id": "job_id", "no_lease": "job_id"}[code]
	var compacted *raftstore.CompactedError
	switch {
	case status != 0:
		return errorf(status, code, field, "%v", err)
	case errors.As(err, &compacted):
		return errorf(http.StatusGone, "compacted", "from_index", "%v; resume from index %d or later", err, compacted.Oldest)
	case errors.Is(err, raftstore.ErrWatchLagged):
		return errorf(http.StatusServiceUnavailable, "watch_lagged", "", "%v; resume from the last event id", err)
	case errors.Is(err, raftstore.ErrNotFound):
		return errorf(http.StatusNotFound, "no_lease", "job_id", "job %q has no lease", jobID)
	}
	return storeError(err, "job", jobID)
}

func leaseToAPI(l engine.Lease) api.Lease {
	return api.Lease{
		JobID: l.JobID, Owner: l.Owner, OwnerID: l.OwnerID, OwnerDC: l.OwnerDC, Token: l.Token,
		TTL: l.TTL.String(), State: string(l.State), AcquiredAt: l.AcquiredAt, RenewedAt: l.RenewedAt,
		ExpiresAt: l.ExpiresAt, EndedAt: l.EndedAt, Index: l.Index,
	}
}

func leaseEventToAPI(ev engine.LeaseEvent) api.LeaseEvent {
	return api.LeaseEvent{Type: string(ev.Type), Lease: leaseToAPI(ev.Lease), Index: ev.Index}
}
