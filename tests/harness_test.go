// Package tests holds end-to-end tests: they build the coordinatord binary
// once and drive real processes over real TLS on loopback.
package tests

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
)

// binary is the coordinatord executable built for this run.
var binary string

// repoRoot is the module's top folder, where the README's commands run.
var repoRoot string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	dir, err := os.MkdirTemp("", "coordinatord-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "coordinatord")
	build := exec.Command("go", "build", "-o", binary, "./cmd/coordinatord")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build coordinatord:", err)
		return 1
	}
	return m.Run()
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a process started by a test, in its own process group so that
// stopping it also stops what it started (go run's child).
type proc struct {
	t              testing.TB
	name           string
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	exited         chan struct{}
	waitErr        error
}

func startProc(t testing.TB, dir string, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: filepath.Base(name), stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.exited
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", p.name, p.stdout, p.name, tail(p.stderr.String(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.exited:
	default:
		// The negative pid addresses the whole process group.
		if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			p.t.Logf("signal %s: %v", p.name, err)
		}
	}
}

// stop interrupts the process as Ctrl-C would and waits for it to exit.
func (p *proc) stop(timeout time.Duration) error {
	p.t.Helper()
	p.signal(syscall.SIGINT)
	select {
	case <-p.exited:
		return p.waitErr
	case <-time.After(timeout):
		p.signal(syscall.SIGKILL)
		<-p.exited
		return fmt.Errorf("%s did not stop within %s after SIGINT", p.name, timeout)
	}
}

// waitOutput polls stdout until it contains want or the deadline passes.
func (p *proc) waitOutput(want string, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := p.stdout.String()
		if strings.Contains(out, want) {
			return out
		}
		select {
		case <-p.exited:
			p.t.Fatalf("%s exited (%v) before printing %q", p.name, p.waitErr, want)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not print %q within %s", p.name, want, timeout)
		}
	}
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// pkiDir is a CA with certificates written as files, as an operator has.
type pkiDir struct {
	t   testing.TB
	dir string
	ca  *pki.CA
}

func newPKI(t testing.TB) *pkiDir {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("e2e CA", time.Now().Add(-time.Hour), 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteFiles(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), false); err != nil {
		t.Fatal(err)
	}
	return &pkiDir{t: t, dir: dir, ca: ca}
}

func (p *pkiDir) caFile() string { return filepath.Join(p.dir, "ca.crt") }

// issue writes NAME.crt and NAME.key for the claims and returns their paths.
func (p *pkiDir) issue(name string, req pki.Request) (string, string) {
	p.t.Helper()
	is, err := p.ca.Issue(req)
	if err != nil {
		p.t.Fatal(err)
	}
	cert, key := filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	if err := is.WriteFiles(cert, key, true); err != nil {
		p.t.Fatal(err)
	}
	return cert, key
}

func (p *pkiDir) tlsCert(name string, req pki.Request) tls.Certificate {
	p.t.Helper()
	is, err := p.ca.Issue(req)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := is.TLSCertificate()
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

const (
	e2eCluster = "e2e"
	e2eEnv     = "e2e"
	e2eDC      = "dc1"
	e2eTD      = "coordinatord.local"
)

func request(mapping engine.Mapping, role engine.Role, node string) pki.Request {
	return pki.Request{
		Claims:      engine.Claims{Cluster: e2eCluster, Env: e2eEnv, Role: role, Datacenter: e2eDC, Node: node},
		Mapping:     mapping,
		TrustDomain: e2eTD,
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(24 * time.Hour),
	}
}

// node is a coordinatord server process.
type node struct {
	*proc
	addr    string
	dataDir string
	pki     *pkiDir
	mapping engine.Mapping
}

// startServer runs `coordinatord server --bootstrap` and waits until it is
// ready.
func startServer(t testing.TB, p *pkiDir, mapping engine.Mapping, dataDir string) *node {
	t.Helper()
	return startServerArgs(t, p, mapping, dataDir)
}

// startServerArgs is startServer with extra flags.
func startServerArgs(t testing.TB, p *pkiDir, mapping engine.Mapping, dataDir string, extra ...string) *node {
	t.Helper()
	req := request(mapping, engine.RoleCoordinator, "node-1")
	req.Server = true
	req.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	cert, key := p.issue("node-1", req)
	addr := freeAddr(t)
	args := append([]string{"server", "--bootstrap",
		"--data-dir", dataDir, "--http-addr", addr, "--node-id", "node-1",
		"--cluster", e2eCluster, "--env", e2eEnv, "--datacenter", e2eDC,
		"--identity-mapping", string(mapping), "--trust-domain", e2eTD,
		"--tls-cert", cert, "--tls-key", key, "--ca", p.caFile(), "--log-format", "json"}, extra...)
	pr := startProc(t, "", nil, binary, args...)
	n := &node{proc: pr, addr: addr, dataDir: dataDir, pki: p, mapping: mapping}
	n.waitReady()
	return n
}

// client returns an API client identified as role (in the node's mapping).
func (n *node) client(role engine.Role) *client.Client {
	n.t.Helper()
	c, err := client.New(client.Config{Addr: n.addr, TLS: n.tlsConfig(n.pki.tlsCert(string(role), request(n.mapping, role, string(role)+"-1")))})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(c.Close)
	return c
}

func (n *node) tlsConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: n.pki.ca.Pool(), Certificates: []tls.Certificate{cert}}
}

func (n *node) waitReady() {
	n.t.Helper()
	c := n.client(engine.RoleAdmin)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := c.Ready(ctx)
		cancel()
		if err == nil && r.Ready {
			return
		}
		select {
		case <-n.exited:
			n.t.Fatalf("server exited: %v", n.waitErr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("server not ready within 20s: %v", err)
		}
	}
}
