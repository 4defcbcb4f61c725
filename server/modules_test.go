package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
)

// moduleFile reads a module from examples/modules.
func moduleFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", "modules", filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// patched returns wasm with old replaced by new (same length, so that the
// binary's section sizes stay right), failing if old is not in it once.
func patched(t testing.TB, wasm []byte, old, new string) []byte {
	t.Helper()
	if len(old) != len(new) || bytes.Count(wasm, []byte(old)) != 1 {
		t.Fatalf("cannot patch %q into %q: lengths %d/%d, %d occurrences", old, new, len(old), len(new), bytes.Count(wasm, []byte(old)))
	}
	return bytes.Replace(wasm, []byte(old), []byte(new), 1)
}

const (
	// healthyModule is the module every test keeps calling to show that
	// the node still works after a bad upload or a misbehaving module.
	healthyModule = "healthy"
	// sampleJobResult is a job result event as an author would write it.
	sampleJobResult = `{"kind":"job_result","job_id":"job-7","workflow":"nightly-etl","datacenter":"dc2","source":"manager-4","stats":{"rows":1200}}`
)

// putModuleRaw uploads wasm as name with the manifest query q, as the
// admin, and returns the status and body.
func (n *testNode) putModuleRaw(name string, q string, wasm []byte) (int, []byte) {
	n.t.Helper()
	path := "/v1/modules/" + name
	if q != "" {
		path += "?" + q
	}
	return n.raw(engine.RoleAdmin, http.MethodPut, path, "application/wasm", wasm)
}

// installHealthy uploads the healthy reporter and checks it runs.
func installHealthy(t *testing.T, n *testNode, c *client.Client) {
	t.Helper()
	m, err := c.PutModule(ctx(t), healthyModule, moduleFile(t, "wat/reporter.wasm"),
		client.ModuleOptions{Kind: api.ModuleKindReporter, Sinks: []string{"results=stdout"}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Node.State != api.ModuleInstalled || m.Node.Version != m.Version || m.Node.Node != "node-1" {
		t.Fatalf("the leader answered before installing the module: %+v", m.Node)
	}
	checkHealthy(t, n, c)
}

// checkHealthy shows that the node works: the healthy module's call
// succeeds and the API answers.
func checkHealthy(t *testing.T, n *testNode, c *client.Client) {
	t.Helper()
	res, err := c.InvokeModule(ctx(t), healthyModule, api.InvokeRequest{Event: json.RawMessage(sampleJobResult)})
	if err != nil {
		t.Fatalf("invoke the healthy module: %v", err)
	}
	if res.Error != nil || len(res.Records) != 1 || res.Records[0].Sink != "results" || !strings.Contains(string(res.Records[0].Data), `"job_id":"job-7"`) {
		t.Fatalf("the healthy module's call did not succeed: %+v", res)
	}
	if status, body := n.raw(engine.RoleWorker, http.MethodGet, "/v1/health", "", nil); status != http.StatusOK {
		t.Fatalf("GET /v1/health: %d %s", status, body)
	}
}

func TestModuleUploadRefusesEachDefectWithAnErrorNamingItAndTheNodeKeepsWorking(t *testing.T) {
	n := startNode(t)
	admin := n.client(engine.RoleAdmin)
	installHealthy(t, n, admin)
	before, err := admin.ListModules(ctx(t), false)
	if err != nil {
		t.Fatal(err)
	}

	good := moduleFile(t, "wat/reporter.wasm")
	reporter := "kind=reporter&sink=results=stdout"
	tests := []struct {
		name        string
		module      string
		query       string
		contentType string
		body        []byte
		status      int
		code, field string
	}{
		{"bytes that are not WebAssembly are refused as not_wasm", "m", reporter, "", []byte("hello, this is not a module"), 400, "not_wasm", "wasm"},
		{"a module cut in half is refused as truncated", "m", reporter, "", good[:len(good)/2], 400, "module_truncated", "wasm"},
		{"a module without the ABI marker is refused", "m", reporter, "", patched(t, good, "coordinatord_abi_v1", "coordinatord_xyz_v1"), 400, "no_abi_marker", "wasm"},
		{"a module of another ABI version is refused", "m", reporter, "", patched(t, good, "coordinatord_abi_v1", "coordinatord_abi_v7"), 400, "wrong_abi_version", "wasm"},
		{"a module without the handlers of its kind is refused", "m", reporter, "", patched(t, patched(t, good, "coordinatord_on_job_result", "coordinatord_on_job_resulx"), "coordinatord_on_lease_event", "coordinatord_on_lease_evenx"), 400, "no_handler", "wasm"},
		{"a reporter uploaded as a correlation module has no handler of that kind", "m", "kind=correlation", "", good, 400, "no_handler", "wasm"},
		{"a module without its allocator is refused", "m", reporter, "", patched(t, good, "coordinatord_alloc", "coordinatord_allox"), 400, "no_alloc", "wasm"},
		{"an import the host does not offer is refused", "m", reporter, "", patched(t, good, "coordinatord\x06output", "coordinatord\x06outpux"), 400, "unknown_import", "wasm"},
		{"wrong_abi_version.wat is refused", "m", reporter, "", moduleFile(t, "wat/wrong_abi_version.wasm"), 400, "wrong_abi_version", "wasm"},
		{"unknown_import.wat is refused", "m", reporter, "", moduleFile(t, "wat/unknown_import.wasm"), 400, "unknown_import", "wasm"},
		{"bad_export_type.wat is refused", "m", reporter, "", moduleFile(t, "wat/bad_export_type.wasm"), 400, "bad_export_type", "wasm"},
		{"start_export.wat is refused", "m", reporter, "", moduleFile(t, "wat/start_export.wasm"), 400, "start_function", "wasm"},
		{"a module whose memory starts above its page limit is refused", "m", reporter + "&memory_pages=1", "", patched(t, good, "\x05\x03\x01\x00\x01", "\x05\x03\x01\x00\x02"), 400, "memory_over_limit", "memory_pages"},
		{"a module over the size cap is refused with 413", "m", reporter, "", append(bytes.Clone(good), make([]byte, DefaultMaxModuleBytes)...), 413, "module_too_large", "wasm"},
		{"an empty body is refused", "m", reporter, "", nil, 400, "empty_body", "wasm"},
		{"a JSON body is refused by its content type", "m", reporter, "application/json", []byte(`{}`), 415, "unsupported_media_type", "Content-Type"},
		{"a missing kind is refused", "m", "sink=results=stdout", "", good, 400, "missing_kind", "kind"},
		{"an unknown kind is refused", "m", "kind=exporter", "", good, 400, "unknown_kind", "kind"},
		{"zero memory pages are refused", "m", reporter + "&memory_pages=0", "", good, 400, "invalid_limits", "memory_pages"},
		{"memory pages that are not a number are refused", "m", reporter + "&memory_pages=lots", "", good, 400, "invalid_limits", "memory_pages"},
		{"a call timeout that is not a duration is refused", "m", reporter + "&call_timeout=forever", "", good, 400, "invalid_limits", "call_timeout"},
		{"a call timeout over the cap is refused", "m", reporter + "&call_timeout=1h", "", good, 400, "invalid_limits", "call_timeout"},
		{"zero output bytes are refused", "m", reporter + "&max_output_bytes=0", "", good, 400, "invalid_limits", "max_output_bytes"},
		{"a negative log rate is refused", "m", reporter + "&log_lines_per_second=-1", "", good, 400, "invalid_limits", "log_lines_per_second"},
		{"a sink spec without a type is refused", "m", "kind=reporter&sink=results", "", good, 400, "invalid_sink", "sink"},
		{"a file sink outside the sink directory is refused", "m", "kind=reporter&sink=results=file:../../etc/passwd", "", good, 400, "invalid_sink", "sink"},
		{"a sink of an unknown type is refused", "m", "kind=reporter&sink=results=kafka:topic", "", good, 400, "invalid_sink", "sink"},
		{"two sinks of one name are refused", "m", "kind=reporter&sink=results=stdout&sink=results=file:r.jsonl", "", good, 400, "invalid_sink", "sink"},
		{"a correlation module with a sink is refused", "m", "kind=correlation&sink=results=stdout", "", moduleFile(t, "wat/correlation.wasm"), 400, "sinks_not_allowed", "sink"},
		{"an unknown query parameter is refused", "m", reporter + "&memory=256", "", good, 400, "unknown_query_parameter", "memory"},
		{"an upper-case name is refused", "Bad", reporter, "", good, 400, "invalid_name", "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := tt.contentType
			if ct == "" {
				ct = "application/wasm"
			}
			path := "/v1/modules/" + tt.module + "?" + tt.query
			status, body := n.raw(engine.RoleAdmin, http.MethodPut, path, ct, tt.body)
			e := apiErr(t, body)
			if status != tt.status || e.Code != tt.code || e.Field != tt.field {
				t.Fatalf("%d %s (field %q): %s; want %d %s naming %q", status, e.Code, e.Field, e.Message, tt.status, tt.code, tt.field)
			}
			after, err := admin.ListModules(ctx(t), false)
			if err != nil {
				t.Fatal(err)
			}
			if after.Revision != before.Revision || len(after.Modules) != 1 {
				t.Fatalf("a refused upload changed the module set: %+v", after)
			}
			checkHealthy(t, n, admin)
		})
	}
}

func TestAModuleOverTheNodesConfiguredCapIsRefusedBeforeItIsRead(t *testing.T) {
	n := startNodeWith(t, func(c *Config) { c.MaxModuleBytes = 600 })
	admin := n.client(engine.RoleAdmin)
	installHealthy(t, n, admin) // 521 bytes
	status, body := n.putModuleRaw("big", "kind=reporter", make([]byte, 601))
	if e := apiErr(t, body); status != http.StatusRequestEntityTooLarge || e.Code != "module_too_large" || e.Field != "wasm" || !strings.Contains(e.Message, "600") {
		t.Fatalf("%d %+v, want 413 module_too_large naming the limit", status, e)
	}
	checkHealthy(t, n, admin)
}

// misbehaving are the WAT modules that load but misbehave on purpose
// (examples/modules/wat), with the failure each call must report.
var misbehaving = []struct {
	name, query string
	kind        string
	// within bounds the call's duration, when a limit is what stops it.
	within time.Duration
	// log is a line the module logs before it fails.
	log string
}{
	{"unreachable", "", "trap", 0, ""},
	{"endless_loop", "&call_timeout=50ms", "timeout", 50 * time.Millisecond, ""},
	{"memory_bomb", "&memory_pages=16", "trap", 0, "memory.grow refused at 16 pages"},
	{"oversized_output", "", "output_too_large", 0, ""},
	{"invalid_json", "", "bad_output", 0, ""},
	{"guest_error", "", "guest_error", 0, ""},
	{"alloc_zero", "", "alloc_failed", 0, ""},
}

func TestMisbehavingModulesReportTheirFailureAndTheNextCallSucceeds(t *testing.T) {
	n := startNode(t)
	admin := n.client(engine.RoleAdmin)
	installHealthy(t, n, admin)
	for _, mb := range misbehaving {
		t.Run(mb.name, func(t *testing.T) {
			name := strings.ReplaceAll(mb.name, "_", "-")
			status, body := n.putModuleRaw(name, "kind=reporter&sink=results=stdout"+mb.query, moduleFile(t, "wat/"+mb.name+".wasm"))
			if status != http.StatusOK {
				t.Fatalf("upload: %d %s", status, body)
			}
			event := `{"kind":"job_result","job_id":"job-` + mb.name + `","workflow":"w","datacenter":"dc-` + mb.name + `","source":"m","stats":{}}`
			// Twice: a failed instance is thrown away, and the next call
			// gets a fresh one that fails the same way.
			for range 2 {
				start := time.Now()
				res, err := admin.InvokeModule(ctx(t), name, api.InvokeRequest{Event: json.RawMessage(event)})
				if err != nil {
					t.Fatalf("invoke: %v (a misbehaving module is a 200 with its error)", err)
				}
				if res.Error == nil || res.Error.Kind != mb.kind || res.Error.Message == "" {
					t.Fatalf("invoke answered %+v, want error kind %s", res, mb.kind)
				}
				if mb.kind == "trap" && len(res.Error.Stack) == 0 {
					t.Errorf("a trap came back without the guest's stack: %+v", res.Error)
				}
				if mb.log != "" && !slices.ContainsFunc(res.Logs, func(l api.ModuleLogLine) bool { return strings.Contains(l.Text, mb.log) }) {
					t.Errorf("the module's log lines %+v do not say %q", res.Logs, mb.log)
				}
				if mb.within > 0 {
					if d := time.Duration(res.DurationNanos); d < mb.within || d > mb.within+time.Second {
						t.Errorf("stopped after %s, want just past its limit %s", d, mb.within)
					}
					if e := time.Since(start); e > mb.within+2*time.Second {
						t.Errorf("the request took %s", e)
					}
				}
				checkHealthy(t, n, admin)
			}
			// The failure was reported with the event's datacenter and job.
			logs := n.logs.String()
			if !strings.Contains(logs, `"module":"`+name+`"`) || !strings.Contains(logs, "dc-"+mb.name) || !strings.Contains(logs, "job-"+mb.name) {
				t.Errorf("no failure record naming the module, its datacenter and job in the log")
			}
		})
	}
}

func TestModuleLifecycleOnOneNode(t *testing.T) {
	n := startNode(t)
	admin := n.client(engine.RoleAdmin)
	wasm := moduleFile(t, "wat/reporter.wasm")
	logLines := 5
	m, err := admin.PutModule(ctx(t), "results", wasm, client.ModuleOptions{
		Kind: api.ModuleKindReporter, CallTimeout: 200 * time.Millisecond, MemoryPages: 8, LogLinesPerSecond: &logLines,
		Sinks: []string{"results=file:out/results.jsonl", "hook=webhook:https://example.com/x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := api.ModuleManifest{Kind: "reporter", Limits: api.ModuleLimits{MemoryPages: 8, CallTimeout: "200ms", MaxOutputBytes: 64 << 10, LogLinesPerSecond: 5},
		Sinks: []string{"results=file:out/results.jsonl", "hook=webhook:https://example.com/x"}}
	if m.Version != 1 || m.Size != int64(len(wasm)) || !strings.HasPrefix(m.Digest, "sha256:") || !sameManifest(m.Manifest, want) ||
		m.UpdatedBy != spiffe(engine.RoleAdmin) || m.Node.State != api.ModuleInstalled || len(m.Node.Handlers) != 2 {
		t.Fatalf("stored %+v", m)
	}

	got, err := admin.GetModule(ctx(t), "results", false)
	if err != nil || got.Digest != m.Digest || got.Node.State != api.ModuleInstalled {
		t.Fatalf("get: %+v, %v", got, err)
	}
	dl, err := admin.DownloadModule(ctx(t), "results")
	if err != nil || !bytes.Equal(dl, wasm) {
		t.Fatalf("download: %d bytes, %v; want the %d uploaded", len(dl), err, len(wasm))
	}

	// Two handlers: the invoke must name one, by export or event kind, or
	// give the event its kind.
	_, err = admin.InvokeModule(ctx(t), "results", api.InvokeRequest{Event: json.RawMessage(`{"job_id":"job-7"}`)})
	wantAPIError(t, err, http.StatusBadRequest, "handler_required", "handler")
	_, err = admin.InvokeModule(ctx(t), "results", api.InvokeRequest{Handler: "correlation", Event: json.RawMessage(sampleJobResult)})
	wantAPIError(t, err, http.StatusBadRequest, "unknown_handler", "handler")
	_, err = admin.InvokeModule(ctx(t), "results", api.InvokeRequest{Handler: "job_result", Event: json.RawMessage(`{"kind":"lease_event"}`)})
	wantAPIError(t, err, http.StatusBadRequest, "wrong_event_kind", "event.kind")
	_, err = admin.InvokeModule(ctx(t), "results", api.InvokeRequest{Handler: "job_result", Event: json.RawMessage(`[1]`)})
	wantAPIError(t, err, http.StatusBadRequest, "invalid_event", "event")
	lease := `{"type":"expired","job_id":"job-7","owner":"gate-3","owner_dc":"dc3","token":12,"at":"2026-11-27T10:00:00Z","index":4711}`
	res, err := admin.InvokeModule(ctx(t), "results", api.InvokeRequest{Handler: "coordinatord_on_lease_event", Event: json.RawMessage(lease)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Error != nil || res.Node != "node-1" || res.Version != 1 || res.Digest != m.Digest || len(res.Records) != 1 ||
		!strings.HasPrefix(string(res.Records[0].Data), `{"kind":"lease_event",`) || len(res.Logs) != 1 || res.Logs[0].Text != "lease event handled" ||
		res.Logs[0].Level != "info" || res.DurationNanos <= 0 {
		t.Fatalf("invoke: %+v", res)
	}

	// A conditional write on a stale version is refused; on the current
	// one it replaces the module.
	v := uint64(7)
	_, err = admin.PutModule(ctx(t), "results", wasm, client.ModuleOptions{Kind: api.ModuleKindReporter, IfVersion: &v})
	wantAPIError(t, err, http.StatusPreconditionFailed, "version_mismatch", "If-Match")
	v = 1
	m2, err := admin.PutModule(ctx(t), "results", wasm, client.ModuleOptions{Kind: api.ModuleKindReporter, Sinks: []string{"results=stdout"}, IfVersion: &v})
	if err != nil || m2.Version != 2 || m2.Node.Version != 2 {
		t.Fatalf("replace: %+v, %v", m2, err)
	}

	// A worker may read and invoke, not write.
	worker := n.client(engine.RoleWorker)
	if _, err := worker.ListModules(ctx(t), false); err != nil {
		t.Fatalf("a worker lists modules: %v", err)
	}
	_, err = worker.PutModule(ctx(t), "mine", wasm, client.ModuleOptions{Kind: api.ModuleKindReporter})
	wantAPIError(t, err, http.StatusForbidden, "forbidden", "")
	_, err = worker.DeleteModule(ctx(t), "results")
	wantAPIError(t, err, http.StatusForbidden, "forbidden", "")

	// Deleted: gone from the store and from the sandbox.
	del, err := admin.DeleteModule(ctx(t), "results")
	if err != nil || !del.Deleted {
		t.Fatalf("delete: %+v, %v", del, err)
	}
	_, err = admin.GetModule(ctx(t), "results", false)
	wantAPIError(t, err, http.StatusNotFound, "not_found", "id")
	_, err = admin.InvokeModule(ctx(t), "results", api.InvokeRequest{Handler: "job_result", Event: json.RawMessage(sampleJobResult)})
	wantAPIError(t, err, http.StatusNotFound, "not_found", "id")
	if _, ok := n.srv.sandbox.Lookup("results"); ok {
		t.Fatal("the sandbox still runs a deleted module")
	}
	_, err = admin.DeleteModule(ctx(t), "results")
	wantAPIError(t, err, http.StatusNotFound, "not_found", "id")
}

func TestModulesAreInstalledAgainAfterARestart(t *testing.T) {
	n := startNode(t)
	installHealthy(t, n, n.client(engine.RoleAdmin))
	n.restart()
	admin := n.client(engine.RoleAdmin)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := admin.GetModule(ctx(t), healthyModule, true)
		if err == nil && m.Node.State == api.ModuleInstalled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not installed again within 10s: %+v, %v", m, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	checkHealthy(t, n, admin)
}

func TestReporterModulesListsTheInstalledReportersWithTheirSinks(t *testing.T) {
	n := startNode(t)
	admin := n.client(engine.RoleAdmin)
	installHealthy(t, n, admin)
	if _, err := admin.PutModule(ctx(t), "corr", moduleFile(t, "wat/correlation.wasm"), client.ModuleOptions{Kind: api.ModuleKindCorrelation}); err != nil {
		t.Fatal(err)
	}
	rs := n.srv.reporterModules()
	if len(rs) != 1 || rs[0].Name != healthyModule || !strings.HasPrefix(rs[0].Digest, "sha256:") || len(rs[0].Handlers) != 2 ||
		len(rs[0].Sinks) != 1 || rs[0].Sinks[0].Name != "results" || rs[0].Sinks[0].Type != "stdout" {
		t.Fatalf("reporterModules() = %+v", rs)
	}
	if _, err := admin.DeleteModule(ctx(t), healthyModule); err != nil {
		t.Fatal(err)
	}
	if rs := n.srv.reporterModules(); len(rs) != 0 {
		t.Fatalf("reporterModules() after the delete = %+v", rs)
	}
}

func sameManifest(a, b api.ModuleManifest) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func wantAPIError(t *testing.T, err error, status int, code, field string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code || ae.Field != field {
		t.Fatalf("got %v, want %d %s naming %q", err, status, code, field)
	}
}

func TestAVersionThatFailsToInstallIsReportedAndTheNodeKeepsThePreviousOne(t *testing.T) {
	n := startNode(t)
	admin := n.client(engine.RoleAdmin)
	installHealthy(t, n, admin)
	// A record the API would never write (its limits do not validate),
	// committed directly: every node refuses to install it.
	bad := raftstore.Module{Name: healthyModule, UpdatedAt: time.Now(), UpdatedBy: "test",
		Manifest: json.RawMessage(`{"kind":"reporter","limits":{"memory_pages":0,"call_timeout":"100ms","max_output_bytes":1,"log_lines_per_second":1}}`)}
	stored, err := n.srv.Store().PutModule(ctx(t), bad, moduleFile(t, "wat/reporter.wasm"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.srv.modules.waitFor(ctx(t), stored.Revision); err != nil {
		t.Fatal(err)
	}
	m, err := admin.GetModule(ctx(t), healthyModule, true)
	if err != nil {
		t.Fatal(err)
	}
	if st := m.Node; m.Version != 2 || st.State != api.ModuleFailed || st.Version != 1 || !strings.Contains(st.Error, "memory_pages") || st.ErrorCode == "" {
		t.Fatalf("node state of a version that failed to install: %+v (module version %d)", st, m.Version)
	}
	if logs := n.logs.String(); !strings.Contains(logs, `"level":"ERROR","msg":"module not installed on this node`) {
		t.Fatal("the failed install was not logged at error level")
	}
	// The node still runs version 1.
	checkHealthy(t, n, admin)
	res, err := admin.InvokeModule(ctx(t), healthyModule, api.InvokeRequest{Event: json.RawMessage(sampleJobResult)})
	if err != nil || res.Version != 1 {
		t.Fatalf("invoke after the failed install: %+v, %v; want version 1 answering", res, err)
	}
}
