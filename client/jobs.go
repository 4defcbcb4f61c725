package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/coordinatord/coordinatord/api"
)

// Pacing of job results refused because the leader's reporter queue is
// full (429): the server asks for about a second.
const (
	queueFullMinBackoff = 250 * time.Millisecond
	queueFullMaxBackoff = 2 * time.Second
)

func jobPath(jobID, op string) string {
	return "/v1/jobs/" + url.PathEscape(jobID) + "/" + op
}

// ReportJobResult reports a job's result to the reporter modules
// (POST /v1/jobs/{job_id}/results). It returns once the leader has queued
// it, with the reporters it will go to. While the leader's reporter queue
// is full (HTTP 429, code "reporter_queue_full") it tries again with a
// growing pause until ctx ends, then returns that error: a result is never
// dropped without the caller knowing.
func (c *Client) ReportJobResult(ctx context.Context, jobID string, req api.JobResultRequest) (*api.JobResultAccepted, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	pause := queueFullMinBackoff
	for {
		var out api.JobResultAccepted
		err := c.do(ctx, request{method: http.MethodPost, path: jobPath(jobID, "results"), contentType: "application/json", body: body}, &out)
		if err == nil {
			return &out, nil
		}
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests {
			return nil, err
		}
		wait := pause/2 + rand.N(pause/2+1)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		pause = min(2*pause, queueFullMaxBackoff)
	}
}

// JobReporters reads the outcome of each reporter module for jobID, per
// datacenter and event kind (GET /v1/jobs/{job_id}/reporters). The leader
// answers; with stale the node called answers with its own results, which
// on a follower are none, since only the leader dispatches.
func (c *Client) JobReporters(ctx context.Context, jobID string, stale bool) (*api.JobReporters, error) {
	var out api.JobReporters
	if err := c.do(ctx, request{method: http.MethodGet, path: jobPath(jobID, "reporters"), query: staleQuery(stale)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
