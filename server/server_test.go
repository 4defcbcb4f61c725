package server

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
	"github.com/coordinatord/coordinatord/policies"
)

func TestAdmissionAnswersAllowAndDenyWithTheRolePair(t *testing.T) {
	n := startNode(t)
	c := n.client(engine.RoleManager)
	tests := []struct {
		name    string
		source  engine.Role
		target  engine.Role
		allowed bool
		reason  string
	}{
		{"a worker may connect to a manager", engine.RoleWorker, engine.RoleManager, true, ""},
		{"a worker may not connect to a gate, and the reason names the pair", engine.RoleWorker, engine.RoleGate, false, "worker->gate"},
		{"a client may connect to a gate", engine.RoleClient, engine.RoleGate, true, ""},
		{"a client may not connect to a worker", engine.RoleClient, engine.RoleWorker, false, "client->worker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.Admission(ctx(t), api.AdmissionRequest{
				Source: &api.Peer{SPIFFEID: spiffe(tt.source)}, Target: &api.Peer{SPIFFEID: spiffe(tt.target)}, Action: "connect",
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Allowed != tt.allowed || resp.DecisionID == "" || resp.PolicyRevision == 0 {
				t.Fatalf("answer %+v, want allowed=%v with a decision id and revision", resp, tt.allowed)
			}
			if tt.reason != "" && !strings.Contains(strings.Join(resp.Reasons, " "), tt.reason) {
				t.Fatalf("reasons %q do not name %q", resp.Reasons, tt.reason)
			}
		})
	}
}

func TestAdmissionReadsPeersFromCertificatesAsStrictlyAsConnections(t *testing.T) {
	n := startNode(t)
	c := n.client(engine.RoleManager)
	worker := issue(t, n.ca, engine.RoleWorker, "w-9", false)
	manager := issue(t, n.ca, engine.RoleManager, "m-9", false)
	pemOf := func(c tls.Certificate) string { return string(pki.EncodeCert(c.Certificate[0])) }
	resp, err := c.Admission(ctx(t), api.AdmissionRequest{SourceCertificate: pemOf(worker), TargetCertificate: pemOf(manager), Action: "connect"})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Allowed || resp.Source.Node != "w-9" || resp.Source.Serial == "" {
		t.Fatalf("answer %+v", resp)
	}
	stranger := issue(t, newCA(t), engine.RoleWorker, "w-x", false)
	_, err = c.Admission(ctx(t), api.AdmissionRequest{SourceCertificate: pemOf(stranger), TargetCertificate: pemOf(manager), Action: "connect"})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != "identity_untrusted" || ae.Field != "source_certificate" {
		t.Fatalf("a certificate from another CA: %v, want 400 identity_untrusted on source_certificate", err)
	}
}

const validPolicy = `package coordinatord.admission

default allow := false

allow if input.source.role == "admin"
`

func TestPolicyManagement(t *testing.T) {
	n := startNode(t)
	admin := n.client(engine.RoleAdmin)
	list, err := admin.ListPolicies(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Policies) != 1 || list.Policies[0].ID != policies.DefaultID || list.Revision != 1 {
		t.Fatalf("a fresh node has %+v, want the default policy at revision 1", list)
	}
	rejected := []struct {
		name, id, rego, code, want string
	}{
		{"a syntax error is reported with file:line:col", "broken", "package coordinatord.admission\n\nallow if {\n", "invalid_policy", "broken.rego:4:"},
		{"an unused variable breaks strict mode", "unused-var", "package coordinatord.admission\n\nallow if {\n\tx := 1\n\ttrue\n}\n", "invalid_policy", "unused-var.rego:4:"},
		{"an unused import breaks strict mode", "unused-import", "package coordinatord.admission\n\nimport data.foo\n\nallow := true\n", "invalid_policy", "unused-import.rego:3:"},
		{"a policy without allow is rejected", "no-allow", "package coordinatord.admission\n\nreasons contains \"x\"\n", "invalid_policy", "allow"},
		{"a policy in another package is rejected", "elsewhere", "package other\n\nallow := true\n", "invalid_policy", "coordinatord.admission"},
		{"a bad id is rejected", "Bad_ID!", validPolicy, "invalid_id", "id"},
		{"a bad mode is rejected", "mode", validPolicy + "#", "invalid_mode", "mode"},
	}
	for _, tt := range rejected {
		t.Run(tt.name, func(t *testing.T) {
			mode := "enforce"
			if tt.code == "invalid_mode" {
				mode = "sometimes"
			}
			_, err := admin.PutPolicy(ctx(t), tt.id, tt.rego, mode, nil)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != tt.code || !strings.Contains(ae.Message, tt.want) {
				t.Fatalf("got %v, want 400 %s mentioning %q", err, tt.code, tt.want)
			}
			after, err := admin.ListPolicies(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if after.Revision != list.Revision || len(after.Policies) != 1 || n.srv.Engine().Revision() != list.Revision {
				t.Fatalf("a rejected policy changed the policy set: %+v", after)
			}
		})
	}

	t.Run("compile errors carry structured locations", func(t *testing.T) {
		status, body := n.raw(engine.RoleAdmin, http.MethodPut, "/v1/policies/broken", "text/plain", []byte("package coordinatord.admission\n\nallow if {\n"))
		e := apiErr(t, body)
		details, _ := e.Details.([]any)
		if status != http.StatusBadRequest || len(details) == 0 || e.Field != "rego" {
			t.Fatalf("status %d error %+v, want 400 with details", status, e)
		}
	})

	t.Run("revisions and versions increase with each write", func(t *testing.T) {
		p1, err := admin.PutPolicy(ctx(t), "extra", validPolicy, "audit", nil)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := admin.PutPolicy(ctx(t), "extra", validPolicy, "audit", nil)
		if err != nil {
			t.Fatal(err)
		}
		if p1.Revision <= list.Revision || p2.Revision <= p1.Revision || p1.Version != 1 || p2.Version != 2 {
			t.Fatalf("revisions %d, %d after %d; versions %d, %d", p1.Revision, p2.Revision, list.Revision, p1.Version, p2.Version)
		}
		if n.srv.Engine().Revision() != p2.Revision {
			t.Fatalf("engine at revision %d after the write returned %d", n.srv.Engine().Revision(), p2.Revision)
		}
		got, err := admin.GetPolicy(ctx(t), "extra")
		if err != nil || got.Rego != validPolicy || got.Mode != "audit" || got.UpdatedBy != spiffe(engine.RoleAdmin) {
			t.Fatalf("get: %+v, %v", got, err)
		}
		stale := p1.Revision
		if _, err := admin.PutPolicy(ctx(t), "extra", validPolicy, "audit", &stale); !isStatus(err, http.StatusPreconditionFailed) {
			t.Fatalf("write with a stale If-Match: %v, want 412", err)
		}
	})

	t.Run("a worker cannot write policies and is told why", func(t *testing.T) {
		before := n.srv.Store().PolicyRevision()
		_, err := n.client(engine.RoleWorker).PutPolicy(ctx(t), "takeover", validPolicy, "", nil)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.DecisionID == "" ||
			!strings.Contains(ae.Message, `"policy.write" is not allowed for role "worker"`) {
			t.Fatalf("got %v, want 403 naming the action and role", err)
		}
		if n.srv.Store().PolicyRevision() != before {
			t.Fatal("a forbidden write changed the policy set")
		}
	})

	t.Run("the last enforcing policy cannot be deleted", func(t *testing.T) {
		if _, err := admin.DeletePolicy(ctx(t), policies.DefaultID); !isStatus(err, http.StatusConflict) {
			t.Fatalf("delete of the only enforcing policy: %v, want 409", err)
		}
		if _, err := admin.DeletePolicy(ctx(t), "extra"); err != nil {
			t.Fatalf("delete of an audit policy: %v", err)
		}
		if _, err := admin.GetPolicy(ctx(t), "extra"); !isStatus(err, http.StatusNotFound) {
			t.Fatalf("get after delete: %v, want 404", err)
		}
		if _, err := admin.DeletePolicy(ctx(t), "extra"); !isStatus(err, http.StatusNotFound) {
			t.Fatalf("second delete: %v, want 404", err)
		}
	})
}

func isStatus(err error, status int) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Status == status
}

func TestARestartedNodeKeepsItsPolicies(t *testing.T) {
	n := startNode(t)
	admin := n.client(engine.RoleAdmin)
	p, err := admin.PutPolicy(ctx(t), "kept", validPolicy, "audit", nil)
	if err != nil {
		t.Fatal(err)
	}
	n.restart()
	admin = n.client(engine.RoleAdmin)
	got, err := admin.GetPolicy(ctx(t), "kept")
	if err != nil {
		t.Fatal(err)
	}
	if got.Rego != validPolicy || got.Revision != p.Revision || got.Version != 1 {
		t.Fatalf("after restart: %+v, want revision %d version 1", got, p.Revision)
	}
	if n.srv.Engine().Revision() != p.Revision {
		t.Fatalf("engine loaded revision %d after restart, want %d", n.srv.Engine().Revision(), p.Revision)
	}
	list, err := admin.ListPolicies(ctx(t))
	if err != nil || len(list.Policies) != 2 {
		t.Fatalf("after restart: %+v %v, want the default policy and the one written (and no second default)", list, err)
	}
}

func TestAuditModeAllowsAndRecordsTheWouldBeDenialOverTheAPI(t *testing.T) {
	n := startNode(t)
	admin := n.client(engine.RoleAdmin)
	strict := "package coordinatord.admission\n\ndefault allow := false\n\nallow if input.source.datacenter == \"dc9\"\n\nreasons contains \"only dc9 may connect\" if not allow\n"
	if _, err := admin.PutPolicy(ctx(t), "dc9-only", strict, "audit", nil); err != nil {
		t.Fatal(err)
	}
	resp, err := admin.Admission(ctx(t), api.AdmissionRequest{
		Source: &api.Peer{SPIFFEID: spiffe(engine.RoleWorker)}, Target: &api.Peer{SPIFFEID: spiffe(engine.RoleManager)}, Action: "connect",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Allowed || resp.Result != "audit_deny" || len(resp.Reasons) != 1 || resp.Reasons[0] != "dc9-only: only dc9 may connect" {
		t.Fatalf("answer %+v, want allowed with the audit denial", resp)
	}
	list, err := admin.Decisions(ctx(t), client.DecisionQuery{Result: "audit_deny"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range list.Decisions {
		found = found || d.ID == resp.DecisionID
	}
	if !found {
		t.Fatalf("decision %s is not in the decision log: %+v", resp.DecisionID, list)
	}
}

func TestBadHTTPInputGetsAJSONErrorThatSaysWhatIsWrong(t *testing.T) {
	n := startNode(t)
	body := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	check := map[string]any{
		"source": map[string]string{"spiffe_id": spiffe(engine.RoleWorker)},
		"target": map[string]string{"spiffe_id": spiffe(engine.RoleManager)},
		"action": "connect",
	}
	withField := func(k string, v any) []byte {
		m := map[string]any{}
		for a, b := range check {
			m[a] = b
		}
		m[k] = v
		return body(m)
	}
	huge := bytes.Repeat([]byte("#"), int(DefaultMaxBodyBytes)+10)
	tests := []struct {
		name, method, path, contentType string
		body                            []byte
		status                          int
		code, field                     string
	}{
		{"an unknown JSON field is named", "POST", "/v1/admission", "application/json", withField("sauce", 1), 400, "unknown_field", "sauce"},
		{"a field of the wrong type is named", "POST", "/v1/admission", "application/json", withField("action", 5), 400, "invalid_json", "action"},
		{"malformed JSON says where", "POST", "/v1/admission", "application/json", []byte(`{"action": `), 400, "invalid_json", "body"},
		{"data after the object is rejected", "POST", "/v1/admission", "application/json", append(body(check), []byte(" {}")...), 400, "invalid_json", "body"},
		{"an empty body is rejected", "POST", "/v1/admission", "application/json", nil, 400, "empty_body", "body"},
		{"a missing action is named", "POST", "/v1/admission", "application/json", body(map[string]any{"source": check["source"], "target": check["target"]}), 400, "missing_field", "action"},
		{"a peer with an unknown role names the claim", "POST", "/v1/admission", "application/json", withField("source", map[string]string{"spiffe_id": strings.Replace(spiffe(engine.RoleWorker), "worker", "janitor", 1)}), 400, "identity_unknown_role", "source.spiffe_id.role"},
		{"a peer with a missing claim names it", "POST", "/v1/admission", "application/json", withField("target", map[string]string{"cluster": "test", "env": "test", "role": "gate", "datacenter": "dc1"}), 400, "identity_empty_claim", "target.node"},
		{"a wrong content type is refused", "POST", "/v1/admission", "text/plain", body(check), 415, "unsupported_media_type", "Content-Type"},
		{"a body over the limit is refused", "PUT", "/v1/policies/big", "text/plain", huge, 413, "body_too_large", "body"},
		{"an unknown path is a JSON 404", "GET", "/v1/nothing-here", "", nil, 404, "not_found", "path"},
		{"a path outside the API is a JSON 404", "GET", "/index.html", "", nil, 404, "not_found", "path"},
		{"a wrong method is a JSON 405", "DELETE", "/v1/admission", "", nil, 405, "method_not_allowed", "method"},
		{"an unknown query parameter is named", "GET", "/v1/policies?stael=true", "", nil, 400, "unknown_query_parameter", "stael"},
		{"a bad limit is named", "GET", "/v1/decisions?limit=lots", "", nil, 400, "invalid_query", "limit"},
		{"a bad result filter is named", "GET", "/v1/decisions?result=maybe", "", nil, 400, "invalid_query", "result"},
		{"a bad policy id in the path is named", "GET", "/v1/policies/UPPER", "", nil, 400, "invalid_id", "id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := n.srv.Store().PolicyRevision()
			status, out := n.raw(engine.RoleAdmin, tt.method, tt.path, tt.contentType, tt.body)
			e := apiErr(t, out)
			if status != tt.status || e.Code != tt.code || e.Field != tt.field {
				t.Fatalf("got %d %s field %q (%s), want %d %s field %q", status, e.Code, e.Field, e.Message, tt.status, tt.code, tt.field)
			}
			if n.srv.Store().PolicyRevision() != before {
				t.Fatal("bad input changed the policy set")
			}
		})
	}
}

func TestMetricsExposeDecisionsLatencyRevisionAndRaftState(t *testing.T) {
	n := startNode(t)
	if _, err := n.client(engine.RoleAdmin).Admission(ctx(t), api.AdmissionRequest{
		Source: &api.Peer{SPIFFEID: spiffe(engine.RoleWorker)}, Target: &api.Peer{SPIFFEID: spiffe(engine.RoleGate)}, Action: "connect",
	}); err != nil {
		t.Fatal(err)
	}
	status, out := n.raw(engine.RoleAdmin, "GET", "/metrics", "", nil)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, out)
	}
	for _, want := range []string{
		`coordinatord_admission_decisions_total{reason="policy_denied",result="deny"} 1`,
		`coordinatord_admission_decision_duration_seconds_bucket`,
		`coordinatord_policy_revision 1`,
		`coordinatord_raft_state{state="Leader"} 1`,
		`coordinatord_decision_log_dropped_total 0`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestHealthAndReadyNeedACertificateButNoPolicy(t *testing.T) {
	n := startNode(t)
	// A peer role the default policy grants nothing on the API.
	for _, path := range []string{"/v1/health", "/v1/ready"} {
		status, out := n.raw(engine.RoleCoordinator, "GET", path, "", nil)
		if status != http.StatusOK {
			t.Fatalf("%s: %d %s", path, status, out)
		}
	}
}
