package server

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
)

func putReporter(t *testing.T, admin *client.Client, name string, wasm []byte, sinks ...string) {
	t.Helper()
	if _, err := admin.PutModule(ctx(t), name, wasm, client.ModuleOptions{Kind: api.ModuleKindReporter, Sinks: sinks}); err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
}

// sinkLines reads a file sink of node n, [] if it does not exist yet.
func sinkLines(t *testing.T, n *testNode, rel string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(n.dir, "sinks", rel))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

func settledResults(t *testing.T, c *client.Client, jobID string, n int) *api.JobReporters {
	t.Helper()
	var res *api.JobReporters
	waitFor(t, "the reporters of "+jobID+" to finish", func() bool {
		var err error
		res, err = c.JobReporters(ctx(t), jobID, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Results) != n {
			return false
		}
		for _, r := range res.Results {
			if r.Status == "pending" {
				return false
			}
		}
		return true
	})
	return res
}

// What must be shown: two reporters on one job, one of them failing. The
// other's output reaches its sink, the job result is accepted, and both
// outcomes are recorded per datacenter.
func TestTwoReportersOnOneJobOneFailingOverTheAPI(t *testing.T) {
	n := startNode(t)
	admin := n.client(engine.RoleAdmin)
	putReporter(t, admin, "good", moduleFile(t, "wat/reporter.wasm"), "results=file:results.jsonl")
	putReporter(t, admin, "broken", moduleFile(t, "wat/unreachable.wasm"), "results=file:broken.jsonl")

	manager := n.client(engine.RoleManager)
	for _, dc := range []string{"dc1", "dc2"} {
		res, err := manager.ReportJobResult(ctx(t), "job-7", api.JobResultRequest{
			Workflow: "nightly-etl", Datacenter: dc, Source: "manager-4", Stats: json.RawMessage(`{"rows": 1200, "seconds": 3.5}`),
		})
		if err != nil {
			t.Fatalf("report from %s: %v", dc, err)
		}
		if !res.Accepted || res.JobID != "job-7" || strings.Join(res.Reporters, ",") != "broken,good" {
			t.Fatalf("answer %+v", res)
		}
	}

	res := settledResults(t, n.client(engine.RoleWorker), "job-7", 4)
	if res.Node != "node-1" || res.Since.IsZero() {
		t.Fatalf("answer names node %q since %s", res.Node, res.Since)
	}
	want := []struct{ reporter, dc, status, kind string }{
		{"broken", "dc1", "error", "trap"}, {"broken", "dc2", "error", "trap"},
		{"good", "dc1", "ok", ""}, {"good", "dc2", "ok", ""},
	}
	for i, w := range want {
		r := res.Results[i]
		if r.Reporter != w.reporter || r.Datacenter != w.dc || r.Status != w.status || r.ErrorKind != w.kind || r.Event != "job_result" || r.Calls != 1 {
			t.Errorf("result %d = %+v, want %+v", i, r, w)
		}
		if w.status == "ok" && (r.Records != 1 || r.Elapsed == "" || !strings.HasPrefix(r.Digest, "sha256:")) {
			t.Errorf("result %d = %+v", i, r)
		}
		if w.status == "error" && !strings.Contains(r.Error, "unreachable") {
			t.Errorf("result %d error %q", i, r.Error)
		}
	}
	waitFor(t, "both records in the good reporter's sink", func() bool { return len(sinkLines(t, n, "results.jsonl")) == 2 })
	for _, l := range sinkLines(t, n, "results.jsonl") {
		if !strings.Contains(l, `"job_id":"job-7"`) || !strings.Contains(l, `"stats":{"rows":1200,"seconds":3.5}`) {
			t.Errorf("sink line %s", l)
		}
	}
	if lines := sinkLines(t, n, "broken.jsonl"); lines != nil {
		t.Fatalf("the trapping reporter's sink got %q", lines)
	}
	// The trap report names the event's datacenter and job.
	logs := n.logs.String()
	if !strings.Contains(logs, `"job-7"`) || !strings.Contains(logs, "unreachable") {
		t.Fatalf("no trap report naming the job in the log:\n%s", logs)
	}
	// And the node works.
	if _, err := manager.Acquire(ctx(t), "job-8", 0, false); err != nil {
		t.Fatal(err)
	}
}

func TestALeaseEventReachesAReporterThatExportsTheLeaseHandler(t *testing.T) {
	n := startNode(t)
	admin := n.client(engine.RoleAdmin)
	putReporter(t, admin, "leases", moduleFile(t, "wat/reporter.wasm"), "results=file:leases.jsonl")
	gate := n.client(engine.RoleGate)
	l, err := gate.Acquire(ctx(t), "job-9", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the acquired event in the sink", func() bool {
		for _, line := range sinkLines(t, n, "leases.jsonl") {
			if strings.Contains(line, `"kind":"lease_event","type":"acquired","job_id":"job-9","owner":"gate-1","owner_dc":"dc1","token":1`) {
				return true
			}
		}
		return false
	})
	if _, err := gate.Release(ctx(t), "job-9", l.Token); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the released event in the sink", func() bool {
		lines := sinkLines(t, n, "leases.jsonl")
		return len(lines) == 2 && strings.Contains(lines[1], `"type":"released"`)
	})
	res := settledResults(t, gate, "job-9", 1)
	r := res.Results[0]
	if r.Reporter != "leases" || r.Event != "lease_event" || r.EventType != "released" || r.Datacenter != "dc1" || r.Status != "ok" || r.Calls != 2 {
		t.Fatalf("result %+v", r)
	}
}

func TestAFullReporterQueueAnswers429AndCountsDroppedLeaseEvents(t *testing.T) {
	release := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer hook.Close()
	defer close(release)
	n := startNodeWith(t, func(c *Config) {
		c.Reporters.QueueSize = 1
		c.Reporters.Workers = 1
		c.Reporters.DrainTimeout = 100 * time.Millisecond
	})
	admin := n.client(engine.RoleAdmin)
	putReporter(t, admin, "slow", moduleFile(t, "wat/reporter.wasm"), "results=webhook:"+hook.URL)

	body := []byte(`{"workflow":"w","datacenter":"dc1","source":"manager-1","stats":{}}`)
	post := func() (int, []byte) {
		return n.raw(engine.RoleManager, http.MethodPost, "/v1/jobs/job-1/results", "application/json", body)
	}
	if status, b := post(); status != http.StatusAccepted {
		t.Fatalf("first report: %d %s", status, b)
	}
	// The worker is now stuck on the webhook; one more fits in the queue.
	waitFor(t, "the worker to take the first event", func() bool { return n.srv.reporters.pipeline.QueueLen() == 0 })
	if status, b := post(); status != http.StatusAccepted {
		t.Fatalf("second report: %d %s", status, b)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: n.tlsConfig(issue(t, n.ca, engine.RoleManager, "manager-1", false))}}
	req, _ := http.NewRequest(http.MethodPost, "https://"+n.srv.Addr()+"/v1/jobs/job-1/results", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("third report: %d, Retry-After %q; want 429 with Retry-After 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	status, b := post()
	if e := apiErr(t, b); status != http.StatusTooManyRequests || e.Code != "reporter_queue_full" {
		t.Fatalf("%d %s", status, b)
	}

	// A lease event cannot be refused: it is dropped and counted.
	if _, err := n.client(engine.RoleGate).Acquire(ctx(t), "job-2", 0, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the dropped lease event to be counted", func() bool {
		status, m := n.raw(engine.RoleAdmin, http.MethodGet, "/metrics", "", nil)
		return status == http.StatusOK && strings.Contains(string(m), `coordinatord_reporter_dropped_total{source="lease_event"} 1`)
	})
	status, m := n.raw(engine.RoleAdmin, http.MethodGet, "/metrics", "", nil)
	for _, want := range []string{"coordinatord_reporter_queue_depth 1", "coordinatord_reporter_refused_total 2", "coordinatord_reporter_queue_capacity 1"} {
		if status != http.StatusOK || !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestBadJobResultsGetAClearError(t *testing.T) {
	n := startNode(t)
	cases := []struct {
		name        string
		role        engine.Role
		path        string
		contentType string
		body        string
		status      int
		code, field string
	}{
		{"a worker may not report", engine.RoleWorker, "/v1/jobs/j/results", "application/json", `{"workflow":"w","datacenter":"dc1","source":"s","stats":{}}`, 403, "forbidden", ""},
		{"a bad job id is named", engine.RoleManager, "/v1/jobs/a%20b/results", "application/json", `{"workflow":"w","datacenter":"dc1","source":"s","stats":{}}`, 400, "invalid_job_id", "job_id"},
		{"a missing datacenter is named", engine.RoleManager, "/v1/jobs/j/results", "application/json", `{"workflow":"w","source":"s","stats":{}}`, 400, "missing_field", "datacenter"},
		{"a missing workflow is named", engine.RoleManager, "/v1/jobs/j/results", "application/json", `{"datacenter":"dc1","source":"s","stats":{}}`, 400, "missing_field", "workflow"},
		{"a source with a space is named", engine.RoleManager, "/v1/jobs/j/results", "application/json", `{"workflow":"w","datacenter":"dc1","source":"a b","stats":{}}`, 400, "invalid_field", "source"},
		{"a datacenter with a slash is named", engine.RoleManager, "/v1/jobs/j/results", "application/json", `{"workflow":"w","datacenter":"dc/1","source":"s","stats":{}}`, 400, "invalid_field", "datacenter"},
		{"stats that are an array are refused", engine.RoleManager, "/v1/jobs/j/results", "application/json", `{"workflow":"w","datacenter":"dc1","source":"s","stats":[1]}`, 400, "invalid_field", "stats"},
		{"missing stats are refused", engine.RoleManager, "/v1/jobs/j/results", "application/json", `{"workflow":"w","datacenter":"dc1","source":"s"}`, 400, "missing_field", "stats"},
		{"null stats are refused", engine.RoleManager, "/v1/jobs/j/results", "application/json", `{"workflow":"w","datacenter":"dc1","source":"s","stats":null}`, 400, "missing_field", "stats"},
		{"an unknown field is named", engine.RoleManager, "/v1/jobs/j/results", "application/json", `{"workflow":"w","datacenter":"dc1","source":"s","stats":{},"status":"ok"}`, 400, "unknown_field", "status"},
		{"malformed JSON is refused", engine.RoleManager, "/v1/jobs/j/results", "application/json", `{"workflow":`, 400, "invalid_json", "body"},
		{"another content type is refused", engine.RoleManager, "/v1/jobs/j/results", "text/plain", `{}`, 415, "unsupported_media_type", "Content-Type"},
		{"a body over the limit is refused", engine.RoleManager, "/v1/jobs/j/results", "application/json", `{"workflow":"w","datacenter":"dc1","source":"s","stats":{"x":"` + strings.Repeat("x", maxJobResultBytes) + `"}}`, 413, "body_too_large", "body"},
		{"an unknown query parameter is named", engine.RoleManager, "/v1/jobs/j/results?force=1", "application/json", `{}`, 400, "unknown_query_parameter", "force"},
		{"GET is not allowed on results", engine.RoleManager, "/v1/jobs/j/results", "", ``, 405, "method_not_allowed", "method"},
		{"a coordinator may not read reporter results", engine.RoleCoordinator, "/v1/jobs/j/reporters", "", ``, 403, "forbidden", ""},
		{"a stale value that is not a boolean is named", engine.RoleWorker, "/v1/jobs/j/reporters?stale=maybe", "", ``, 400, "invalid_query", "stale"},
		{"an unknown query parameter on reporters is named", engine.RoleWorker, "/v1/jobs/j/reporters?dc=dc1", "", ``, 400, "unknown_query_parameter", "dc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := http.MethodPost
			if strings.Contains(c.path, "/reporters") || c.code == "method_not_allowed" {
				method = http.MethodGet
			}
			status, body := n.raw(c.role, method, c.path, c.contentType, []byte(c.body))
			e := apiErr(t, body)
			if status != c.status || e.Code != c.code || e.Field != c.field {
				t.Fatalf("%d %s, want %d %s naming %q", status, body, c.status, c.code, c.field)
			}
		})
	}
	// Nothing was queued or recorded.
	res, err := n.client(engine.RoleWorker).JobReporters(ctx(t), "j", false)
	if err != nil || len(res.Results) != 0 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestAResultWithNoReporterInstalledIsAcceptedForNone(t *testing.T) {
	n := startNode(t)
	res, err := n.client(engine.RoleGate).ReportJobResult(ctx(t), "job-1", api.JobResultRequest{Workflow: "w", Datacenter: "dc1", Source: "gate-1", Stats: json.RawMessage(`{}`)})
	if err != nil || !res.Accepted || res.Reporters == nil || len(res.Reporters) != 0 {
		t.Fatalf("%+v %v", res, err)
	}
}

// Only the leader dispatches: a result posted to a follower is forwarded,
// and lease events reach sinks on the leader only.
func TestOnlyTheLeaderDispatchesToReporters(t *testing.T) {
	leader, follower := twoNodes(t)
	admin := leader.client(engine.RoleAdmin)
	putReporter(t, admin, "r", moduleFile(t, "wat/reporter.wasm"), "results=file:r.jsonl")
	waitFor(t, "the follower to install the reporter", func() bool { return len(follower.srv.reporterModules()) == 1 })

	viaFollower := follower.client(engine.RoleManager)
	if _, err := viaFollower.ReportJobResult(ctx(t), "job-1", api.JobResultRequest{Workflow: "w", Datacenter: "dc2", Source: "manager-1", Stats: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := viaFollower.Acquire(ctx(t), "job-2", 0, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both events in the leader's sink", func() bool { return len(sinkLines(t, leader.testNode, "r.jsonl")) == 2 })
	res := settledResults(t, viaFollower, "job-1", 1) // read through the follower: the leader answers
	if res.Node != "node-1" || res.Results[0].Status != "ok" || res.Results[0].Datacenter != "dc2" {
		t.Fatalf("%+v", res)
	}
	// Give the follower time to have written anything it (wrongly) would.
	time.Sleep(300 * time.Millisecond)
	if lines := sinkLines(t, follower.testNode, "r.jsonl"); lines != nil {
		t.Fatalf("the follower wrote to its sink: %q", lines)
	}
	stale, err := follower.client(engine.RoleWorker).JobReporters(ctx(t), "job-1", true)
	if err != nil || stale.Node != "node-2" || len(stale.Results) != 0 {
		t.Fatalf("the follower's own results: %+v %v", stale, err)
	}
}

// The lease watch follows leadership: when the leader goes, the new one
// dispatches lease events, and the remaining follower still writes nothing.
func TestANewLeaderTakesOverDispatchingLeaseEvents(t *testing.T) {
	leader, second := twoNodes(t)
	third := startPeer(t, leader.ca, "node-3", false)
	if err := third.srv.JoinCluster(ctx(t), []string{leader.srv.Addr()}); err != nil {
		t.Fatal(err)
	}
	if err := third.srv.WaitReady(ctx(t)); err != nil {
		t.Fatal(err)
	}
	putReporter(t, leader.client(engine.RoleAdmin), "r", moduleFile(t, "wat/reporter.wasm"), "results=file:r.jsonl")
	nodes := []*peerNode{leader, second, third}
	for _, n := range nodes {
		waitFor(t, n.id+" to install the reporter", func() bool { return len(n.srv.reporterModules()) == 1 })
		waitFor(t, n.id+" to know every API address", func() bool {
			ms, err := n.srv.Store().Members()
			return err == nil && len(ms) == 3
		})
	}
	if _, err := leader.client(engine.RoleGate).Acquire(ctx(t), "job-a", 0, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "job-a's event in the first leader's sink", func() bool { return len(sinkLines(t, leader.testNode, "r.jsonl")) == 1 })

	if err := leader.srv.Close(); err != nil {
		t.Fatal(err)
	}
	var next, other *peerNode
	waitFor(t, "a new leader", func() bool {
		switch {
		case second.srv.Store().IsLeader():
			next, other = second, third
		case third.srv.Store().IsLeader():
			next, other = third, second
		}
		return next != nil
	})
	if _, err := next.client(engine.RoleGate).Acquire(ctx(t), "job-b", 0, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "job-b's event in the new leader's sink", func() bool {
		for _, l := range sinkLines(t, next.testNode, "r.jsonl") {
			if strings.Contains(l, `"job_id":"job-b"`) && strings.Contains(l, `"type":"acquired"`) {
				return true
			}
		}
		return false
	})
	time.Sleep(300 * time.Millisecond)
	if lines := sinkLines(t, other.testNode, "r.jsonl"); lines != nil {
		t.Fatalf("follower %s wrote to its sink: %q", other.id, lines)
	}
	for _, l := range sinkLines(t, next.testNode, "r.jsonl") {
		if strings.Contains(l, `"job_id":"job-a"`) && strings.Contains(l, `"type":"acquired"`) {
			t.Fatalf("the new leader dispatched an event of the old term again: %s", l)
		}
	}
}
