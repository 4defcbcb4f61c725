package client

import (
	"bufio"
	"context"
	"encoding/json"
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

func leasePath(jobID, op string) string {
	p := "/v1/leases/" + url.PathEscape(jobID)
	if op != "" {
		p += "/" + op
	}
	return p
}

func (c *Client) leaseCall(ctx context.Context, jobID, op string, body any, out any) error {
	raw, err := jsonBody(body)
	if err != nil {
		return err
	}
	return c.do(ctx, request{method: http.MethodPost, path: leasePath(jobID, op), contentType: "application/json", body: raw}, out)
}

func ttlString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// Acquire takes the lease of jobID for ttl (0: the cluster's default). With
// force it takes the lease over from another owner, if policy allows. A
// lease held by someone else is an *api.Error with code "lease_held" whose
// message names the holder and the remaining time.
func (c *Client) Acquire(ctx context.Context, jobID string, ttl time.Duration, force bool) (*api.Lease, error) {
	var out api.Lease
	if err := c.leaseCall(ctx, jobID, "acquire", api.AcquireRequest{TTL: ttlString(ttl), Force: force}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Renew extends the lease of jobID held with token; ttl 0 keeps its TTL.
func (c *Client) Renew(ctx context.Context, jobID string, token uint64, ttl time.Duration) (*api.Lease, error) {
	var out api.Lease
	if err := c.leaseCall(ctx, jobID, "renew", api.RenewRequest{Token: &token, TTL: ttlString(ttl)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Release gives the lease of jobID back.
func (c *Client) Release(ctx context.Context, jobID string, token uint64) (*api.Lease, error) {
	var out api.Lease
	if err := c.leaseCall(ctx, jobID, "release", api.TokenRequest{Token: &token}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Check asks whether token is the current token of jobID.
func (c *Client) Check(ctx context.Context, jobID string, token uint64) (*api.CheckResponse, error) {
	var out api.CheckResponse
	if err := c.leaseCall(ctx, jobID, "check", api.TokenRequest{Token: &token}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetLease reads the lease of jobID (linearizable unless stale).
func (c *Client) GetLease(ctx context.Context, jobID string, stale bool) (*api.Lease, error) {
	var out api.Lease
	if err := c.do(ctx, request{method: http.MethodGet, path: leasePath(jobID, ""), query: staleQuery(stale)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// LeaseQuery filters ListLeases; zero values match all.
type LeaseQuery struct {
	Owner, Datacenter, State string
	Stale                    bool
}

// ListLeases lists leases, sorted by job id.
func (c *Client) ListLeases(ctx context.Context, q LeaseQuery) (*api.LeaseList, error) {
	v := staleQuery(q.Stale)
	for k, val := range map[string]string{"owner": q.Owner, "dc": q.Datacenter, "state": q.State} {
		if val != "" {
			v.Set(k, val)
		}
	}
	var out api.LeaseList
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/leases", query: v}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func staleQuery(stale bool) url.Values {
	v := url.Values{}
	if stale {
		v.Set("stale", "true")
	}
	return v
}

// ErrLeaseLost is reported by KeepAlive when the lease can no longer be
// kept: it was taken over, released, or could not be renewed before it
// expired. The owner must stop acting on the job.
var ErrLeaseLost = errors.New("lease lost")

// KeepAlive renews lease every TTL/3 until ctx ends. The returned channel
// receives one error wrapping ErrLeaseLost if the lease is lost, and is
// closed when KeepAlive stops for any reason. A renewal that fails for a
// transient reason (no leader, a node restarting) is retried until the
// lease would have expired; a definite answer (fenced, expired, taken
// over) ends it at once.
func (c *Client) KeepAlive(ctx context.Context, lease api.Lease) <-chan error {
	lost := make(chan error, 1)
	go func() {
		defer close(lost)
		if err := c.keepAlive(ctx, lease); err != nil {
			lost <- err
		}
	}()
	return lost
}

func (c *Client) keepAlive(ctx context.Context, lease api.Lease) error {
	ttl, err := time.ParseDuration(lease.TTL)
	if err != nil || ttl <= 0 {
		return fmt.Errorf("%w: job %s: lease has no usable TTL %q", ErrLeaseLost, lease.JobID, lease.TTL)
	}
	expires := lease.ExpiresAt
	wait := ttl / 3
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		renewed, err := c.Renew(ctx, lease.JobID, lease.Token, 0)
		switch {
		case err == nil:
			expires, wait = renewed.ExpiresAt, ttl/3
			continue
		case ctx.Err() != nil:
			return nil
		case definite(err):
			return fmt.Errorf("%w: job %s token %d: %v", ErrLeaseLost, lease.JobID, lease.Token, err)
		}
		left := time.Until(expires)
		if left <= 0 {
			return fmt.Errorf("%w: job %s token %d: not renewed before it expired at %s: %v", ErrLeaseLost, lease.JobID, lease.Token, expires.Format(time.RFC3339Nano), err)
		}
		// Retry soon, but well before the expiry, with a little jitter so
		// that many owners do not hit a recovering cluster together.
		wait = min(left/4, time.Second) + time.Duration(rand.Int64N(int64(50*time.Millisecond)))
	}
}

// definite reports whether a renewal error is an answer about the lease
// rather than a failure to get one.
func definite(err error) bool {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return false
	}
	return ae.Status/100 == 4 && ae.Status != http.StatusRequestTimeout && ae.Status != http.StatusTooManyRequests
}

// WatchLeases streams lease events with index ≥ fromIndex to fn, in commit
// order, until ctx ends or fn returns an error. A dropped stream is resumed
// after the last event delivered, so fn sees every event once. It returns
// ctx's error, fn's error, or an *api.Error the server answered (e.g.
// "compacted" when fromIndex is older than the retained history).
func (c *Client) WatchLeases(ctx context.Context, fromIndex uint64, fn func(api.LeaseEvent) error) error {
	lastID := ""
	backoff := 100 * time.Millisecond
	for {
		// Every node serves the stream; after a failure, try the next one.
		base := c.bases[int(c.cur.Load()%int64(len(c.bases)))]
		delivered, err := c.watchOnce(ctx, base, fromIndex, lastID, func(id string, ev api.LeaseEvent) error {
			lastID = id
			return fn(ev)
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ae *api.Error
		var fnErr *callbackError
		switch {
		case errors.As(err, &fnErr):
			return fnErr.err
		case errors.As(err, &ae) && ae.Status/100 == 4:
			return err
		}
		if delivered {
			backoff = 100 * time.Millisecond
		} else {
			c.cur.Add(1)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// watchOnce reads one SSE stream. Event ids are "index.n": the n-th event of
// Raft entry index, so that a resume never skips or repeats an event of an
// entry that produced several.
func (c *Client) watchOnce(ctx context.Context, base *url.URL, fromIndex uint64, lastID string, fn func(string, api.LeaseEvent) error) (bool, error) {
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/leases/watch"
	u.RawQuery = url.Values{"from_index": {strconv.FormatUint(fromIndex, 10)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	// The stream outlives the client's per-request timeout.
	hc := *c.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw := make([]byte, 64<<10)
		n, _ := resp.Body.Read(raw)
		return false, decodeError(resp, raw[:n])
	}
	delivered := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var id, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != "" {
				var ev api.LeaseEvent
				if err := json.Unmarshal([]byte(data), &ev); err != nil {
					return delivered, fmt.Errorf("watch: malformed event %s: %w", id, err)
				}
				if err := fn(id, ev); err != nil {
					return delivered, &callbackError{err}
				}
				delivered = true
			}
			id, data = "", ""
		case strings.HasPrefix(line, "id: "):
			id = line[len("id: "):]
		case strings.HasPrefix(line, "data: "):
			data += line[len("data: "):]
		case strings.HasPrefix(line, "event: error"):
			// The server ends a stream it cannot continue with an error
			// event whose data is an api.Error.
			if sc.Scan() {
				var eb api.ErrorBody
				if json.Unmarshal([]byte(strings.TrimPrefix(sc.Text(), "data: ")), &eb) == nil && eb.Error != nil {
					if eb.Error.Code == "watch_lagged" {
						// Resumable: the caller reconnects after the last id.
						return delivered, fmt.Errorf("watch: %s", eb.Error.Message)
					}
					eb.Error.Status = http.StatusGone
					return delivered, eb.Error
				}
			}
		}
	}
	return delivered, sc.Err()
}
