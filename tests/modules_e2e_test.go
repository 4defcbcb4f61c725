package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
)

const moduleJobResult = `{"kind":"job_result","job_id":"job-42","workflow":"nightly","datacenter":"dc2","source":"manager-1","stats":{"rows":7}}`

func readModule(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "examples", "modules", filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// moduleOn returns module name as node n reports it from its own state,
// or an error saying why not.
func (n *clusterNode) moduleOn(t *testing.T, name string) (api.Module, error) {
	list, err := n.admin().ListModules(timeout(t, 5*time.Second), true)
	if err != nil {
		return api.Module{}, fmt.Errorf("%s: GET /v1/modules?stale=true: %w", n.id, err)
	}
	if list.Node != n.id {
		return api.Module{}, fmt.Errorf("%s: answered by %s", n.id, list.Node)
	}
	for _, m := range list.Modules {
		if m.Name == name {
			return m, nil
		}
	}
	return api.Module{}, fmt.Errorf("%s: no module %q (revision %d)", n.id, name, list.Revision)
}

// waitInstalledEverywhere waits until every node runs digest as name.
func (c *cluster) waitInstalledEverywhere(t *testing.T, name, digest string) {
	t.Helper()
	eventually(t, "every node runs "+name+" "+digest, func() error {
		for _, n := range c.runningNodes() {
			m, err := n.moduleOn(t, name)
			if err != nil {
				return err
			}
			if m.Digest != digest || m.Node.State != api.ModuleInstalled || m.Node.Digest != digest {
				return fmt.Errorf("%s: %s is %s, installed %s (%s) %s", n.id, name, m.Digest, m.Node.Digest, m.Node.State, m.Node.Error)
			}
		}
		return nil
	})
}

func TestAModuleUploadedOnAFollowerRunsOnEveryNodeAndAFixReplacesItEverywhere(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.node(c.Leader())
	follower := c.node(leader.i%3 + 1)
	upload := func(file string) *api.Module {
		t.Helper()
		m, err := follower.admin().PutModule(timeout(t, 20*time.Second), "results", readModule(t, file),
			client.ModuleOptions{Kind: api.ModuleKindReporter, Sinks: []string{"results=file:results.jsonl"}})
		if err != nil {
			t.Fatalf("upload %s through follower %s: %v", file, follower.id, err)
		}
		// The leader served the forwarded write and installed the module
		// before answering.
		if m.Node.Node != leader.id || m.Node.State != api.ModuleInstalled || m.Node.Digest != m.Digest {
			t.Fatalf("upload through %s answered %+v, want the leader %s's installed state", follower.id, m.Node, leader.id)
		}
		c.waitInstalledEverywhere(t, "results", m.Digest)
		return m
	}
	invokeEach := func(m *api.Module, check func(n *clusterNode, res *api.InvokeResponse) error) {
		t.Helper()
		for _, n := range c.runningNodes() {
			res, err := n.admin().InvokeModule(timeout(t, 10*time.Second), "results", api.InvokeRequest{Event: json.RawMessage(moduleJobResult)})
			if err != nil {
				t.Fatalf("invoke on %s: %v", n.id, err)
			}
			if res.Node != n.id || res.Digest != m.Digest || res.Version != m.Version {
				t.Fatalf("invoke on %s was answered by %s with %s version %d, want %s version %d", n.id, res.Node, res.Digest, res.Version, m.Digest, m.Version)
			}
			if err := check(n, res); err != nil {
				t.Fatalf("invoke on %s: %v: %+v", n.id, err, res)
			}
		}
	}
	emitsTheEvent := func(_ *clusterNode, res *api.InvokeResponse) error {
		if res.Error != nil || len(res.Records) != 1 || res.Records[0].Sink != "results" || !strings.Contains(string(res.Records[0].Data), `"job_id":"job-42"`) {
			return fmt.Errorf("want one record of the event for sink results")
		}
		return nil
	}

	// A healthy C reporter: every node runs it.
	v1 := upload("c-reporter/c-reporter.wasm")
	invokeEach(v1, emitsTheEvent)

	// A broken version under the same name replaces it everywhere: every
	// node's call traps, with the guest's stack, and the node answers.
	v2 := upload("wat/unreachable.wasm")
	if v2.Version != 2 || v2.Digest == v1.Digest {
		t.Fatalf("second upload: %+v", v2)
	}
	invokeEach(v2, func(_ *clusterNode, res *api.InvokeResponse) error {
		if res.Error == nil || res.Error.Kind != "trap" || len(res.Error.Stack) == 0 || len(res.Records) != 0 {
			return fmt.Errorf("want a trap with its stack")
		}
		return nil
	})

	// The fix, uploaded again under the same name: every node reports the
	// new digest and returns the new version's output.
	v3 := upload("wat/reporter.wasm")
	invokeEach(v3, emitsTheEvent)

	// The CLI on a follower: list from its own state, invoke its instance.
	certFile, keyFile := c.pki.issue("module-admin", request(engine.MappingSPIFFE, engine.RoleAdmin, "module-admin"))
	env := []string{"COORDINATORD_ADDR=" + follower.httpBind, "COORDINATORD_CA=" + c.pki.caFile(),
		"COORDINATORD_CERT=" + certFile, "COORDINATORD_KEY=" + keyFile}
	out, _ := mustCLI(t, env, 0, "module", "list", "--stale")
	if !strings.Contains(out, "results") || !strings.Contains(out, "installed") || !strings.Contains(out, "states on node "+follower.id) {
		t.Fatalf("module list --stale on %s:\n%s", follower.id, out)
	}
	eventFile := filepath.Join(t.TempDir(), "event.json")
	if err := os.WriteFile(eventFile, []byte(moduleJobResult), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ = mustCLI(t, env, 0, "module", "invoke", "results", "--event", eventFile)
	if !strings.Contains(out, "on node "+follower.id) || !strings.Contains(out, "record for sink results: ") || !strings.Contains(out, `"job_id":"job-42"`) {
		t.Fatalf("module invoke on %s:\n%s", follower.id, out)
	}

	// Deleted through the follower: gone from every node.
	if _, err := follower.admin().DeleteModule(timeout(t, 10*time.Second), "results"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every node dropped the module", func() error {
		for _, n := range c.runningNodes() {
			if m, err := n.moduleOn(t, "results"); err == nil {
				return fmt.Errorf("%s still lists %+v", n.id, m)
			}
			_, err := n.admin().InvokeModule(timeout(t, 5*time.Second), "results", api.InvokeRequest{Event: json.RawMessage(moduleJobResult)})
			if !isAPIError(err, 404) {
				return fmt.Errorf("%s: invoke after delete: %v, want 404", n.id, err)
			}
		}
		return nil
	})
}

func isAPIError(err error, status int) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Status == status
}

func TestANodeJoiningLateInstallsTheModulesFromTheSnapshot(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.node(c.Leader())
	m, err := leader.admin().PutModule(timeout(t, 20*time.Second), "late", readModule(t, "wat/reporter.wasm"),
		client.ModuleOptions{Kind: api.ModuleKindReporter, Sinks: []string{"results=stdout"}})
	if err != nil {
		t.Fatal(err)
	}
	// Past the snapshot threshold (64) and the trailing logs (16): the
	// module's entry is compacted away, and a joiner gets it (bytes
	// included) only through the snapshot.
	for k := range 100 {
		if _, err := putAudit(timeout(t, 10*time.Second), leader.admin(), fmt.Sprintf("bulk-%d", k%10)); err != nil {
			t.Fatalf("write %d: %v", k, err)
		}
	}
	eventually(t, "the leader has compacted its log", func() error {
		if !strings.Contains(leader.stderr.String(), "compacting logs") {
			return errors.New("no compaction logged yet")
		}
		return nil
	})
	j := c.node(c.Join())
	if !strings.Contains(j.stderr.String(), "state restored from snapshot") {
		t.Fatalf("the joiner did not install a snapshot; its log:\n%s", tail(j.stderr.String(), 4000))
	}
	c.waitInstalledEverywhere(t, "late", m.Digest)
	res, err := j.admin().InvokeModule(timeout(t, 10*time.Second), "late", api.InvokeRequest{Event: json.RawMessage(moduleJobResult)})
	if err != nil || res.Node != j.id || res.Error != nil || len(res.Records) != 1 {
		t.Fatalf("invoke on the joiner %s: %+v, %v", j.id, res, err)
	}
}
