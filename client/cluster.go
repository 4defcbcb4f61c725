package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coordinatord/coordinatord/api"
)

// Retry pacing across a cluster's addresses.
const (
	// retryMinBackoff is the first wait after every address failed.
	retryMinBackoff = 100 * time.Millisecond
	// retryMaxBackoff caps the wait, Retry-After included: an election
	// takes about a second, and a client should notice the new leader soon
	// after.
	retryMaxBackoff = 2 * time.Second
)

// SplitAddrs splits a comma-separated address list, dropping blanks.
func SplitAddrs(list string) []string {
	var out []string
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func parseAddrs(addrs []string) ([]*url.URL, error) {
	if len(addrs) == 0 {
		return nil, errors.New("client: address is required (--addr or COORDINATORD_ADDR)")
	}
	out := make([]*url.URL, 0, len(addrs))
	for _, a := range addrs {
		full := a
		if !strings.Contains(full, "://") {
			full = "https://" + full
		}
		u, err := url.Parse(full)
		if err != nil {
			return nil, fmt.Errorf("client: address %q: %w", a, err)
		}
		if u.Scheme != "https" {
			return nil, fmt.Errorf("client: address %q: the API is served over https only", a)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("client: address %q has no host", a)
		}
		out = append(out, u)
	}
	return out, nil
}

// connError marks a failure to get an answer at all: the next address may
// do better.
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

// unavailableError marks a 503 answer, with the server's Retry-After.
type unavailableError struct {
	err   error
	after time.Duration
}

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

// unavailable wraps err when resp is a 503, so that withRetry tries again.
func unavailable(resp *http.Response, err error) error {
	if resp.StatusCode != http.StatusServiceUnavailable {
		return err
	}
	ue := &unavailableError{err: err}
	if secs, perr := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); perr == nil && secs > 0 {
		ue.after = time.Duration(secs) * time.Second
	}
	return ue
}

// withRetry runs call against the current address, and on a connection
// error or a 503 against the next, pausing after each full round, until
// call succeeds, fails otherwise, or ctx ends (or would end during the
// pause). It returns call's last error, never a wrapper.
func (c *Client) withRetry(ctx context.Context, noRetry bool, call func(base *url.URL) error) error {
	n := int64(len(c.bases))
	start := c.cur.Load()
	backoff := retryMinBackoff
	var wait time.Duration // the longest Retry-After of this round
	for attempt := int64(0); ; attempt++ {
		i := (start + attempt) % n
		err := call(c.bases[i])
		if err == nil {
			c.cur.Store(i)
			return nil
		}
		var (
			ce *connError
			ue *unavailableError
		)
		switch {
		case errors.As(err, &ue) && !noRetry:
			wait = max(wait, ue.after)
			err = ue.err
		case errors.As(err, &ce) && !permanentConnError(ce.err):
			err = ce.err
		case errors.As(err, &ue):
			return ue.err
		case errors.As(err, &ce):
			return ce.err
		default:
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		if (attempt+1)%n != 0 {
			continue // try the next address at once
		}
		pause := min(max(backoff, wait), retryMaxBackoff)
		pause = pause/2 + rand.N(pause/2+1) // jitter, so clients do not march in step
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < pause {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		backoff = min(2*backoff, retryMaxBackoff)
		wait = 0
	}
}

// permanentConnError reports connection errors that another try cannot
// fix: the server's certificate did not verify, or the server refused the
// handshake. (An ended context is checked by the caller.)
func permanentConnError(err error) bool {
	var (
		cv    *tls.CertificateVerificationError
		alert tls.AlertError
	)
	return errors.As(err, &cv) || errors.As(err, &alert)
}

// ClusterStatus calls GET /v1/cluster: the leader's view of the cluster,
// or with stale the view of whichever node answers.
func (c *Client) ClusterStatus(ctx context.Context, stale bool) (*api.ClusterStatus, error) {
	var q url.Values
	if stale {
		q = url.Values{"stale": {"true"}}
	}
	var out api.ClusterStatus
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/cluster", query: q}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Join asks the cluster to add the caller's node (POST /v1/cluster/join).
// It must be called with the joining node's own certificate.
func (c *Client) Join(ctx context.Context, req api.JoinRequest) (*api.JoinResponse, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	var out api.JoinResponse
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/cluster/join", contentType: "application/json", body: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveMember removes node id from the cluster (DELETE
// /v1/cluster/members/{id}).
func (c *Client) RemoveMember(ctx context.Context, id string) (*api.RemoveMemberResponse, error) {
	var out api.RemoveMemberResponse
	if err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/cluster/members/" + url.PathEscape(id)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
