package server

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
)

func apiCode(err error) (int, string) {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Status, ae.Code
	}
	return 0, ""
}

func TestLeaseLifecycleOverTheAPI(t *testing.T) {
	n := startNode(t)
	gate := n.client(engine.RoleGate)
	l, err := gate.Acquire(ctx(t), "job-1", 5*time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	if l.Token != 1 || l.Owner != "gate-1" || l.OwnerDC != testDC || l.State != "active" || l.TTL != "5s" {
		t.Fatalf("acquired %+v", l)
	}
	renewed, err := gate.Renew(ctx(t), "job-1", l.Token, 0)
	if err != nil || renewed.Token != 1 || !renewed.ExpiresAt.After(l.ExpiresAt) {
		t.Fatalf("renew: %+v %v", renewed, err)
	}
	manager := n.client(engine.RoleManager)
	_, err = manager.Acquire(ctx(t), "job-1", 0, false)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Code != "lease_held" || !strings.Contains(ae.Message, "gate-1") {
		t.Fatalf("acquire of a held lease: %v, want 409 lease_held naming the holder", err)
	}
	if res, err := manager.Check(ctx(t), "job-1", 1); err != nil || !res.Current || res.Owner != "gate-1" {
		t.Fatalf("check: %+v %v", res, err)
	}
	if _, err := manager.Renew(ctx(t), "job-1", 1, 0); !isStatus(err, http.StatusForbidden) {
		t.Fatalf("renew by another owner: %v, want 403 not_owner", err)
	}
	got, err := manager.GetLease(ctx(t), "job-1", false)
	if err != nil || got.Token != 1 {
		t.Fatalf("get: %+v %v", got, err)
	}
	rel, err := gate.Release(ctx(t), "job-1", 1)
	if err != nil || rel.State != "released" {
		t.Fatalf("release: %+v %v", rel, err)
	}
	again, err := manager.Acquire(ctx(t), "job-1", 0, false)
	if err != nil || again.Token != 2 || again.Owner != "manager-1" {
		t.Fatalf("acquire after release: %+v %v, want token 2", again, err)
	}
	if res, err := manager.Check(ctx(t), "job-1", 1); err != nil || res.Current || res.Token != 2 {
		t.Fatalf("check of the fenced token: %+v %v", res, err)
	}
	list, err := manager.ListLeases(ctx(t), client.LeaseQuery{Owner: "manager-1", State: "active"})
	if err != nil || len(list.Leases) != 1 || list.Leases[0].JobID != "job-1" {
		t.Fatalf("list: %+v %v", list, err)
	}
}

func TestForcedTakeoverIsAPolicyDecisionAndFencesTheHolder(t *testing.T) {
	n := startNode(t)
	gate := n.client(engine.RoleGate)
	l, err := gate.Acquire(ctx(t), "job-f", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	manager := n.client(engine.RoleManager)
	if _, err := manager.Acquire(ctx(t), "job-f", 0, true); !isStatus(err, http.StatusForbidden) {
		t.Fatalf("force by a manager (the default policy keeps lease.force for admins): %v", err)
	}
	admin := n.client(engine.RoleAdmin)
	taken, err := admin.Acquire(ctx(t), "job-f", 0, true)
	if err != nil || taken.Token != l.Token+1 {
		t.Fatalf("forced acquire: %+v %v", taken, err)
	}
	if _, err := gate.Renew(ctx(t), "job-f", l.Token, 0); !isStatus(err, http.StatusConflict) {
		t.Fatalf("the fenced holder's renew: %v, want 409 stale_token", err)
	}
}

func TestBadLeaseInputGetsAClearErrorAndChangesNothing(t *testing.T) {
	n := startNode(t)
	gate := n.client(engine.RoleGate)
	// Job a at token 3, job b at token 1: b's token is stale for a.
	for i := 0; i < 3; i++ {
		l, err := gate.Acquire(ctx(t), "a", 0, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gate.Release(ctx(t), "a", l.Token); err != nil {
			t.Fatal(err)
		}
	}
	la, err := gate.Acquire(ctx(t), "a", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := gate.Acquire(ctx(t), "b", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if la.Token != 4 || lb.Token != 1 {
		t.Fatalf("tokens %d %d", la.Token, lb.Token)
	}
	before, err := gate.ListLeases(ctx(t), client.LeaseQuery{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		code, field              string
	}{
		{"an unknown job has no lease", "GET", "/v1/leases/nope", "", 404, "no_lease", "job_id"},
		{"a job id with a slash-free bad character", "POST", "/v1/leases/bad%20id/acquire", `{}`, 400, "invalid_job_id", "job_id"},
		{"a negative TTL", "POST", "/v1/leases/c/acquire", `{"ttl":"-5s"}`, 400, "invalid_ttl", "ttl"},
		{"a TTL that is not a duration", "POST", "/v1/leases/c/acquire", `{"ttl":"soon"}`, 400, "invalid_ttl", "ttl"},
		{"a TTL as a number", "POST", "/v1/leases/c/acquire", `{"ttl":10}`, 400, "invalid_json", "ttl"},
		{"a huge TTL", "POST", "/v1/leases/c/acquire", `{"ttl":"1000h"}`, 400, "invalid_ttl", "ttl"},
		{"a TTL below the minimum", "POST", "/v1/leases/c/acquire", `{"ttl":"1ms"}`, 400, "invalid_ttl", "ttl"},
		{"a renew without a token", "POST", "/v1/leases/a/renew", `{}`, 400, "missing_field", "token"},
		{"a release with token 0", "POST", "/v1/leases/a/release", `{"token":0}`, 400, "invalid_token", "token"},
		{"the token of another job is stale for this one", "POST", "/v1/leases/a/renew", `{"token":1}`, 409, "stale_token", "token"},
		{"an unknown field", "POST", "/v1/leases/a/renew", `{"token":4,"tokn":4}`, 400, "unknown_field", "tokn"},
		{"a bad state filter", "GET", "/v1/leases?state=alive", "", 400, "invalid_query", "state"},
		{"a bad from_index", "GET", "/v1/leases/watch?from_index=x", "", 400, "invalid_query", "from_index"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := ""
			if tt.body != "" {
				ct = "application/json"
			}
			status, out := n.raw(engine.RoleGate, tt.method, tt.path, ct, []byte(tt.body))
			e := apiErr(t, out)
			if status != tt.status || e.Code != tt.code || e.Field != tt.field {
				t.Fatalf("got %d %s field %q (%s), want %d %s field %q", status, e.Code, e.Field, e.Message, tt.status, tt.code, tt.field)
			}
		})
	}
	after, err := gate.ListLeases(ctx(t), client.LeaseQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("bad input changed the leases:\n%+v\n%+v", before, after)
	}
	if l, err := gate.GetLease(ctx(t), "a", false); err != nil || l.Token != 4 || l.State != "active" {
		t.Fatalf("job a after bad input: %+v %v", l, err)
	}
	// Workers own no jobs under the default policy.
	if _, err := n.client(engine.RoleWorker).Acquire(ctx(t), "w", 0, false); !isStatus(err, http.StatusForbidden) {
		t.Fatalf("a worker's acquire: %v, want 403", err)
	}
}

func TestWatchStreamsEventsAndResumesWithoutGapOrRepeat(t *testing.T) {
	n := startNode(t)
	gate := n.client(engine.RoleGate)
	l, err := gate.Acquire(ctx(t), "w-1", time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	from := l.Index
	if _, err := gate.Renew(ctx(t), "w-1", l.Token, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := gate.Release(ctx(t), "w-1", l.Token); err != nil {
		t.Fatal(err)
	}
	l2, err := gate.Acquire(ctx(t), "w-2", time.Second, false) // left to expire
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"acquired w-1 1", "renewed w-1 1", "released w-1 1", "acquired w-2 1", "expired w-2 1"}
	var got []string
	wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stop := errors.New("enough")
	err = gate.WatchLeases(wctx, from, func(ev api.LeaseEvent) error {
		got = append(got, ev.Type+" "+ev.Lease.JobID+" "+itoa(ev.Lease.Token))
		if len(got) == len(want) {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("watch ended with %v after %q", err, got)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events %q, want %q", got, want)
	}
	if l2.Index <= from {
		t.Fatalf("index did not grow: %d <= %d", l2.Index, from)
	}
	// Resuming in the middle gives the rest, once.
	var rest []string
	err = gate.WatchLeases(wctx, l2.Index, func(ev api.LeaseEvent) error {
		rest = append(rest, ev.Type+" "+ev.Lease.JobID)
		if len(rest) == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || strings.Join(rest, ",") != "acquired w-2,expired w-2" {
		t.Fatalf("resume from %d: %q %v", l2.Index, rest, err)
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

func TestKeepAliveHoldsALeasePastItsTTLAndReportsItsLoss(t *testing.T) {
	n := startNode(t)
	gate := n.client(engine.RoleGate)
	l, err := gate.Acquire(ctx(t), "kept", time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	kctx, stop := context.WithCancel(context.Background())
	defer stop()
	lost := gate.KeepAlive(kctx, *l)
	// Three TTLs later the lease is still the same one.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-lost:
			t.Fatalf("keepalive lost the lease: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	res, err := gate.Check(ctx(t), "kept", l.Token)
	if err != nil || !res.Current {
		t.Fatalf("after 3 TTLs of keepalive: %+v %v", res, err)
	}
	if _, err := n.client(engine.RoleAdmin).Acquire(ctx(t), "kept", 0, true); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lost:
		if !errors.Is(err, client.ErrLeaseLost) {
			t.Fatalf("keepalive reported %v, want ErrLeaseLost", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("keepalive did not report the takeover within 5s")
	}
}
