package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
)

// queueFullNode answers POST /v1/jobs/j/results with 429 the first full
// times, then 202.
func queueFullNode(t *testing.T, full int32) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/jobs/j/results" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("got %s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		var req api.JobResultRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Datacenter != "dc2" {
			t.Errorf("body %+v: %v", req, err)
		}
		w.Header().Set("Content-Type", "application/json")
		if hits.Add(1) <= full {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"code":"reporter_queue_full","message":"full"}}`))
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"job_id":"j","accepted":true,"reporters":["a"]}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func jobClient(t *testing.T, srv *httptest.Server) *Client {
	c, err := New(Config{Addr: srv.Listener.Addr().String(), TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

var sampleResult = api.JobResultRequest{Workflow: "w", Datacenter: "dc2", Source: "m", Stats: json.RawMessage(`{}`)}

func TestReportJobResultRetriesWhileTheQueueIsFull(t *testing.T) {
	srv, hits := queueFullNode(t, 2)
	res, err := jobClient(t, srv).ReportJobResult(context.Background(), "j", sampleResult)
	if err != nil || !res.Accepted || res.Reporters[0] != "a" {
		t.Fatalf("%+v %v", res, err)
	}
	if hits.Load() != 3 {
		t.Fatalf("%d requests, want 3", hits.Load())
	}
}

func TestReportJobResultGivesUpWithTheQueueFullErrorWhenTheContextEnds(t *testing.T) {
	srv, _ := queueFullNode(t, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	_, err := jobClient(t, srv).ReportJobResult(ctx, "j", sampleResult)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != "reporter_queue_full" {
		t.Fatalf("got %v, want the 429", err)
	}
}
