package tests

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
)

// cli runs the binary and returns stdout, stderr and the exit status.
func cli(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// mustCLI runs the binary and fails the test unless it exits with want.
func mustCLI(t *testing.T, env []string, want int, args ...string) (string, string) {
	t.Helper()
	out, errOut, code := cli(t, env, args...)
	if code != want {
		t.Fatalf("coordinatord %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out, errOut)
	}
	return out, errOut
}

func readClaims(t *testing.T, certFile string, cfg engine.IdentityConfig) engine.Claims {
	t.Helper()
	raw, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatalf("%s holds no PEM", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	c, err := engine.ParseClaims(cert, cfg)
	if err != nil {
		t.Fatalf("%s: %v", certFile, err)
	}
	return c
}

// TestTheCLIRunsANodeFromAConfigFileManagesPoliciesAndSurvivesKill9 walks
// an operator's path with the binary alone: make a CA and certificates,
// start a node from a config file, manage policies, kill -9 the node,
// restart it on the same data dir and find every acknowledged write.
func TestTheCLIRunsANodeFromAConfigFileManagesPoliciesAndSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	mustCLI(t, nil, 0, "ca", "init", "--dir", pkiDir)
	if _, errOut, code := cli(t, nil, "ca", "init", "--dir", pkiDir); code == 0 || !strings.Contains(errOut, "exist") {
		t.Fatalf("a second ca init overwrote the CA or did not say why not: %d %s", code, errOut)
	}
	issue := func(args ...string) {
		mustCLI(t, nil, 0, append([]string{"ca", "issue", "--ca-dir", pkiDir, "--out-dir", pkiDir, "--cluster", "prod", "--env", "prod", "--datacenter", "dc1"}, args...)...)
	}
	issue("--role", "coordinator", "--node", "node-1", "--server", "--ip", "127.0.0.1", "--dns", "localhost")
	issue("--role", "admin", "--node", "alice")
	issue("--role", "worker", "--node", "w-1")
	issue("--role", "gate", "--node", "g-7", "--mapping", "subject", "--region", "eu", "--name", "gate-subject")

	spiffe := engine.IdentityConfig{Mapping: engine.MappingSPIFFE, TrustDomain: "coordinatord.local"}
	if c := readClaims(t, filepath.Join(pkiDir, "alice.crt"), spiffe); c.Role != engine.RoleAdmin || c.Node != "alice" || c.Cluster != "prod" {
		t.Fatalf("ca issue wrote claims %+v", c)
	}
	subject := engine.IdentityConfig{Mapping: engine.MappingSubject, TrustDomain: "coordinatord.local"}
	if c := readClaims(t, filepath.Join(pkiDir, "gate-subject.crt"), subject); c.Role != engine.RoleGate || c.Region != "eu" || c.Env != "prod" {
		t.Fatalf("ca issue --mapping subject wrote claims %+v", c)
	}

	addr := freeAddr(t)
	config := filepath.Join(dir, "coordinatord.yaml")
	yaml := fmt.Sprintf("data-dir: %s\nhttp-addr: %s\nnode-id: node-1\ncluster: prod\nenv: prod\ndatacenter: dc1\nbootstrap: true\ntls-cert: %s\ntls-key: %s\nca: %s\nlog-format: json\n",
		filepath.Join(dir, "data"), addr, filepath.Join(pkiDir, "node-1.crt"), filepath.Join(pkiDir, "node-1.key"), filepath.Join(pkiDir, "ca.crt"))
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := []string{"COORDINATORD_ADDR=" + addr, "COORDINATORD_CA=" + filepath.Join(pkiDir, "ca.crt"),
		"COORDINATORD_CERT=" + filepath.Join(pkiDir, "alice.crt"), "COORDINATORD_KEY=" + filepath.Join(pkiDir, "alice.key")}

	srv := startProc(t, "", nil, binary, "server", "--config", config)
	waitCLIReady(t, admin, srv)

	out, _ := mustCLI(t, admin, 0, "policy", "push", "examples/policies/per-datacenter/policy.rego", "--id", "per-dc", "--mode", "audit")
	if !strings.Contains(out, `policy "per-dc" stored: mode audit, version 1`) {
		t.Fatalf("push said %q", out)
	}
	broken := filepath.Join(dir, "broken.rego")
	if err := os.WriteFile(broken, []byte("package coordinatord.admission\n\nallow if {\n\tinput.x ==\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut := mustCLI(t, admin, 1, "policy", "push", broken); !strings.Contains(errOut, "broken.rego:") || !strings.Contains(errOut, "invalid_policy") {
		t.Fatalf("a broken policy's push did not show file:line:col: %s", errOut)
	}
	out, _ = mustCLI(t, admin, 0, "policy", "list", "-o", "json")
	var list api.PolicyList
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Policies) != 2 || list.Revision != 2 {
		t.Fatalf("policy list -o json: %v %s", err, out)
	}
	if out, _ := mustCLI(t, admin, 0, "policy", "get", "per-dc"); !strings.Contains(out, "ops_datacenters") {
		t.Fatalf("policy get printed %q", out)
	}
	if _, errOut := mustCLI(t, admin, 1, "policy", "delete", "default"); !strings.Contains(errOut, "last_enforcing_policy") {
		t.Fatalf("deleting the last enforcing policy: %s", errOut)
	}
	worker := append(admin[:2:2], "COORDINATORD_CERT="+filepath.Join(pkiDir, "w-1.crt"), "COORDINATORD_KEY="+filepath.Join(pkiDir, "w-1.key"))
	if _, errOut := mustCLI(t, worker, 1, "policy", "delete", "per-dc"); !strings.Contains(errOut, "HTTP 403") {
		t.Fatalf("a worker's delete: %s", errOut)
	}
	spiffeOf := func(role, node string) string {
		return engine.SPIFFEID("coordinatord.local", engine.Claims{Cluster: "prod", Env: "prod", Role: engine.Role(role), Datacenter: "dc1", Node: node})
	}
	out, _ = mustCLI(t, admin, exitDenied, "admission", "check", "--source", spiffeOf("worker", "w-1"), "--target", spiffeOf("client", "c-1"), "--action", "connect")
	if !strings.Contains(out, "DENIED") || !strings.Contains(out, "worker->client") {
		t.Fatalf("admission check printed %q", out)
	}

	// kill -9: every acknowledged write must survive.
	srv.signal(syscall.SIGKILL)
	<-srv.exited
	srv = startProc(t, "", nil, binary, "server", "--config", config)
	waitCLIReady(t, admin, srv)
	out, _ = mustCLI(t, admin, 0, "policy", "list", "-o", "json")
	var after api.PolicyList
	if err := json.Unmarshal([]byte(out), &after); err != nil || after.Revision != list.Revision || len(after.Policies) != 2 {
		t.Fatalf("after kill -9 and restart: %v %s, want revision %d with 2 policies", err, out, list.Revision)
	}
	if err := srv.stop(30 * time.Second); err != nil {
		t.Fatalf("server did not stop on SIGINT: %v", err)
	}
}

func waitCLIReady(t *testing.T, env []string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _, code := cli(t, env, "policy", "list", "--timeout", "1s")
		if code == 0 {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("server exited: %v\n%s", p.waitErr, tail(p.stderr.String(), 3000))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not answering within 30s\n%s", tail(p.stderr.String(), 3000))
		}
	}
}

func TestPolicyTestExitsNonZeroWhenATestFailsAndZeroWhenAllPass(t *testing.T) {
	out, _ := mustCLI(t, nil, 2, "policy", "test", "policies/testdata/failing")
	for _, want := range []string{"FAIL", "ERROR", "divide by zero", "PASS: 1/4"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy test output lacks %q:\n%s", want, out)
		}
	}
	out, _ = mustCLI(t, nil, 0, "policy", "test", "examples/policies")
	if !strings.Contains(out, "PASS:") || strings.Contains(out, "FAIL") {
		t.Fatalf("examples' tests:\n%s", out)
	}
	if _, errOut := mustCLI(t, nil, 1, "policy", "test", "no/such/dir"); !strings.Contains(errOut, "no/such/dir") {
		t.Fatalf("a missing dir: %s", errOut)
	}
}

func TestServerRefusesToStartWithWrongOrMissingSettings(t *testing.T) {
	p := newPKI(t)
	req := request(engine.MappingSPIFFE, engine.RoleWorker, "w-1")
	workerCert, workerKey := p.issue("w-1", req)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no data dir", []string{"--node-id", "n"}, "--data-dir is required"},
		{"a worker certificate as the node's", []string{"--data-dir", t.TempDir(), "--node-id", "w-1", "--tls-cert", workerCert, "--tls-key", workerKey, "--ca", p.caFile()}, `role "worker"`},
		{"an unknown identity mapping", []string{"--data-dir", t.TempDir(), "--node-id", "w-1", "--tls-cert", workerCert, "--tls-key", workerKey, "--ca", p.caFile(), "--identity-mapping", "ldap"}, `"ldap"`},
		{"a missing CA file", []string{"--data-dir", t.TempDir(), "--node-id", "w-1", "--tls-cert", workerCert, "--tls-key", workerKey, "--ca", "/no/ca.crt"}, "/no/ca.crt"},
		{"a bad log level", []string{"--log-level", "loud"}, "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut := mustCLI(t, nil, 1, append([]string{"server"}, tt.args...)...)
			if !strings.Contains(errOut, tt.want) {
				t.Fatalf("stderr %q lacks %q", errOut, tt.want)
			}
		})
	}
}
