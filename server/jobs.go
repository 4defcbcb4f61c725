package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/reporters"
)

const (
	// maxJobResultBytes bounds the body of POST /v1/jobs/{id}/results; the
	// event built from it must fit reporters.MaxEventBytes.
	maxJobResultBytes = 48 << 10
	// maxJobFieldLen bounds workflow, datacenter and source.
	maxJobFieldLen = 128
	// retryAfterQueueFull is the Retry-After of a 429 from a full reporter
	// queue: the queue holds seconds of events, so a second frees plenty.
	retryAfterQueueFull = time.Second
)

// jobRoutes registers the job result API.
func (s *Server) jobRoutes(handle func(string, route)) {
	// Only the leader dispatches to reporters (see reporters' package
	// documentation), so results go to it and its results are read there.
	handle("/v1/jobs/{job_id}/results", route{http.MethodPost: s.leaderOnly(s.postJobResult)})
	handle("/v1/jobs/{job_id}/reporters", route{http.MethodGet: s.leaderRead(s.getJobReporters)})
}

func jobResource(jobID string) map[string]any {
	return map[string]any{"kind": "job", "job_id": jobID}
}

// jobFromPath authorises action on the job named in the path and checks
// its id.
func (s *Server) jobFromPath(r *http.Request, caller engine.Claims, action string) (string, error) {
	jobID := r.PathValue("job_id")
	if err := s.authorize(r, caller, action, jobResource(jobID)); err != nil {
		return "", err
	}
	if err := engine.ValidateJobID(jobID); err != nil {
		return "", errorf(http.StatusBadRequest, "invalid_job_id", "job_id", "%v", err)
	}
	return jobID, nil
}

func (s *Server) postJobResult(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	jobID, err := s.jobFromPath(r, caller, "job.report")
	if err != nil {
		return err
	}
	if err := checkQuery(r); err != nil {
		return err
	}
	var req api.JobResultRequest
	if err := s.decodeJobResult(w, r, &req); err != nil {
		return err
	}
	if err := validateJobResult(req); err != nil {
		return err
	}
	if s.reporters == nil {
		return errorf(http.StatusServiceUnavailable, "reporters_unavailable", "", "node %s runs no reporter pipeline", s.cfg.NodeID)
	}
	names, err := s.reporters.pipeline.SubmitJobResult(reporters.JobResult{
		JobID: jobID, Workflow: req.Workflow, Datacenter: req.Datacenter, Source: req.Source, Stats: req.Stats,
	})
	switch {
	case errors.Is(err, reporters.ErrQueueFull):
		ae := errorf(http.StatusTooManyRequests, "reporter_queue_full", "",
			"the reporter queue of node %s is full (%d events); the result was not accepted, report it again after the Retry-After delay",
			s.cfg.NodeID, s.reporters.pipeline.QueueCap())
		ae.retryAfter = retryAfterQueueFull
		return ae
	case errors.Is(err, reporters.ErrClosed):
		ae := errorf(http.StatusServiceUnavailable, "shutting_down", "", "node %s is shutting down; report the result again", s.cfg.NodeID)
		ae.retryAfter = retryAfterNoLeader
		return ae
	case errors.Is(err, reporters.ErrInvalidEvent):
		return errorf(http.StatusBadRequest, "invalid_job_result", "body", "%v", err)
	case err != nil:
		return err
	}
	s.writeJSON(w, r, http.StatusAccepted, api.JobResultAccepted{JobID: jobID, Accepted: true, Reporters: names})
	return nil
}

// decodeJobResult is decodeJSON with the job result's own, smaller, body
// limit.
func (s *Server) decodeJobResult(w http.ResponseWriter, r *http.Request, v *api.JobResultRequest) error {
	if err := requireContentType(r, "application/json"); err != nil {
		return err
	}
	limit := min(s.cfg.MaxBodyBytes, maxJobResultBytes)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return errorf(http.StatusRequestEntityTooLarge, "body_too_large", "body",
				"a job result is at most %d bytes", tooLarge.Limit)
		}
		return errorf(http.StatusBadRequest, "unreadable_body", "body", "reading the request body: %v", err)
	}
	return decodeStrict(body, v)
}

// validateJobResult checks the fields of a job result, naming the first
// one at fault.
func validateJobResult(req api.JobResultRequest) error {
	fields := []struct {
		name, value string
		slash       bool
	}{
		{"workflow", req.Workflow, true},
		{"datacenter", req.Datacenter, false},
		{"source", req.Source, false},
	}
	for _, f := range fields {
		if err := checkJobField(f.value, f.slash); err != nil {
			code := "invalid_field"
			if f.value == "" {
				code = "missing_field"
			}
			return errorf(http.StatusBadRequest, code, f.name, "%s %v", f.name, err)
		}
	}
	stats := req.Stats
	for len(stats) > 0 && (stats[0] == ' ' || stats[0] == '\t' || stats[0] == '\n' || stats[0] == '\r') {
		stats = stats[1:]
	}
	switch {
	case len(stats) == 0 || string(stats) == "null":
		return errorf(http.StatusBadRequest, "missing_field", "stats", "stats is required: a JSON object (it may be empty, {})")
	case stats[0] != '{':
		return errorf(http.StatusBadRequest, "invalid_field", "stats", "stats must be a JSON object, not %s", jsonKind(stats[0]))
	}
	return nil
}

// checkJobField accepts 1 to 128 bytes of A-Z a-z 0-9 . _ : - (and / when
// slash is set): names that are safe in logs, sinks and file names.
func checkJobField(v string, slash bool) error {
	switch {
	case v == "":
		return fmt.Errorf("is required")
	case len(v) > maxJobFieldLen:
		return fmt.Errorf("is longer than %d bytes", maxJobFieldLen)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '-' || (slash && c == '/')
		if !ok {
			allowed := "A-Z a-z 0-9 . _ : -"
			if slash {
				allowed += " /"
			}
			return fmt.Errorf("%q has %q at byte %d; allowed are %s", v, c, i, allowed)
		}
	}
	return nil
}

func jsonKind(first byte) string {
	switch {
	case first == '[':
		return "an array"
	case first == '"':
		return "a string"
	case first == 't' || first == 'f':
		return "a boolean"
	default:
		return "a number"
	}
}

func (s *Server) getJobReporters(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	jobID, err := s.jobFromPath(r, caller, "job.read")
	if err != nil {
		return err
	}
	// Results are in this node's memory: there is nothing to make
	// linearizable, and ?stale=true reads a follower's (empty) results.
	if err := checkQuery(r, "stale"); err != nil {
		return err
	}
	if v := r.URL.Query().Get("stale"); v != "" {
		if _, err := strconv.ParseBool(v); err != nil {
			return errorf(http.StatusBadRequest, "invalid_query", "stale", "stale must be true or false, got %q", v)
		}
	}
	out := api.JobReporters{JobID: jobID, Node: s.cfg.NodeID, Results: []api.ReporterResult{}}
	if s.reporters != nil {
		out.Since = s.reporters.dispatchingSince(s.store.IsLeader(), s.clock())
		for _, res := range s.reporters.pipeline.Results(jobID) {
			out.Results = append(out.Results, reporterResultToAPI(res))
		}
	}
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

func reporterResultToAPI(r reporters.Result) api.ReporterResult {
	out := api.ReporterResult{
		Reporter: r.Reporter, Digest: r.Digest, Datacenter: r.Datacenter, Event: r.Event, EventType: r.EventType,
		Status: r.Status, ErrorKind: r.ErrorKind, Error: r.Error, At: r.At, Records: r.Records,
		Calls: r.Calls, Failures: r.Failures,
	}
	if r.Status != reporters.StatusPending {
		out.Elapsed = r.Elapsed.String()
		if r.SinkElapsed > 0 {
			out.SinkElapsed = r.SinkElapsed.String()
		}
	}
	return out
}
