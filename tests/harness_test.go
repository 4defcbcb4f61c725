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
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
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
		"--tls-cert", cert, "--tls-key", key, "--ca", p.caFile(), "--log-format", "json",
		"--raft-addr", freeAddr(t)}, extra...)
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

// --- clusters -----------------------------------------------------------------

// clusterTiming are the Raft flags of every cluster node: elections in a
// few hundred milliseconds (the defaults take seconds), and a snapshot
// every 64 entries keeping 16, so that a node joining after a few dozen
// writes must catch up by snapshot.
var clusterTiming = []string{
	"--raft-heartbeat-timeout", "300ms",
	"--raft-election-timeout", "300ms",
	"--raft-leader-lease-timeout", "150ms",
	"--raft-snapshot-threshold", "64",
	"--raft-snapshot-interval", "200ms",
	"--raft-trailing-logs", "16",
}

// cluster is a set of `coordinatord server` processes on loopback. Node i
// (1-based) binds its API and Raft transport on 127.0.0.(10+i) and
// advertises the addresses of two faultNet proxies on 127.0.0.1, so all
// traffic between nodes passes a proxy that knows its source and can drop
// it. The test's clients reach the nodes' bind addresses directly, so a
// partitioned node stays reachable to its clients. See README.md.
type cluster struct {
	t     *testing.T
	pki   *pkiDir
	net   *faultNet
	nodes []*clusterNode
}

// clusterNode is one node of a cluster; node is the current process.
type clusterNode struct {
	*node
	i                    int
	id, ip               string
	httpBind, raftBind   string
	httpProxy, raftProxy *faultProxy
	args                 []string
	running              bool
	adminClient          *client.Client
}

// newCluster prepares an empty cluster; Start or Join add nodes.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	return &cluster{t: t, pki: newPKI(t), net: newFaultNet(t)}
}

// startCluster bootstraps node 1 and joins n-1 more, and waits until all n
// are voters and ready.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := newCluster(t)
	c.Start(n)
	return c
}

// Start bootstraps the first node, joins the others one by one, and waits
// until the leader lists n voters and every node is ready.
func (c *cluster) Start(n int) {
	c.t.Helper()
	for i := 1; i <= n; i++ {
		if i == 1 {
			c.startNode(c.addNode("node-1"), "--bootstrap")
		} else {
			c.Join()
		}
	}
}

// Join starts one more node with --join (every running node's advertised
// API address) and waits until it is a voter and ready. It returns the
// node's index.
func (c *cluster) Join() int {
	c.t.Helper()
	return c.JoinAs(fmt.Sprintf("node-%d", len(c.nodes)+1))
}

// JoinAs is Join with the node id given.
func (c *cluster) JoinAs(id string) int {
	c.t.Helper()
	n := c.addNode(id)
	c.startNode(n, "--join", strings.Join(c.joinAddrs(n.i), ","))
	c.waitVoters()
	return n.i
}

func (c *cluster) joinAddrs(except int) []string {
	var addrs []string
	for _, o := range c.nodes {
		if o.i != except && o.running {
			addrs = append(addrs, o.httpProxy.addr())
		}
	}
	return addrs
}

// addNode allocates node len+1: its IP, bind ports, proxies and
// certificate. It does not start it.
func (c *cluster) addNode(id string) *clusterNode {
	c.t.Helper()
	i := len(c.nodes) + 1
	ip := fmt.Sprintf("127.0.0.%d", 10+i)
	n := &clusterNode{i: i, id: id, ip: ip, httpBind: freeAddrOn(c.t, ip), raftBind: freeAddrOn(c.t, ip)}
	c.net.addNode(i, ip)
	n.httpProxy = c.net.newProxy(i, n.httpBind)
	n.raftProxy = c.net.newProxy(i, n.raftBind)
	req := request(engine.MappingSPIFFE, engine.RoleCoordinator, id)
	req.Server = true
	req.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP(ip)}
	cert, key := c.pki.issue(fmt.Sprintf("node%d-%s", i, id), req)
	dataDir := filepath.Join(c.t.TempDir(), id)
	n.args = append([]string{"server",
		"--data-dir", dataDir, "--node-id", id,
		"--http-addr", n.httpBind, "--http-advertise", n.httpProxy.addr(),
		"--raft-addr", n.raftBind, "--raft-advertise", n.raftProxy.addr(),
		"--cluster", e2eCluster, "--env", e2eEnv, "--datacenter", e2eDC,
		"--identity-mapping", string(engine.MappingSPIFFE), "--trust-domain", e2eTD,
		"--tls-cert", cert, "--tls-key", key, "--ca", c.pki.caFile(), "--log-format", "json",
	}, clusterTiming...)
	n.node = &node{addr: n.httpBind, dataDir: dataDir, pki: c.pki, mapping: engine.MappingSPIFFE}
	c.nodes = append(c.nodes, n)
	return n
}

// startNode runs node n's process with extra flags and waits until ready.
func (c *cluster) startNode(n *clusterNode, extra ...string) {
	c.t.Helper()
	n.args = append(n.args, extra...)
	c.run(n)
	n.waitReady()
}

func (c *cluster) run(n *clusterNode) {
	c.t.Helper()
	n.node.proc = startProc(c.t, "", nil, binary, n.args...)
	n.node.t = c.t
	n.running = true
}

// freeAddrOn returns a free port on ip.
func freeAddrOn(t testing.TB, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s (Linux routes all of 127/8 to lo): %v", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// node returns node i (1-based).
func (c *cluster) node(i int) *clusterNode { return c.nodes[i-1] }

// Kill9 kills node i's process with SIGKILL and waits for it to exit.
func (c *cluster) Kill9(i int) {
	n := c.node(i)
	n.signal(syscall.SIGKILL)
	<-n.exited
	n.running = false
}

// Stop interrupts node i as Ctrl-C would and waits for it to exit.
func (c *cluster) Stop(i int) {
	c.t.Helper()
	n := c.node(i)
	if err := n.stop(30 * time.Second); err != nil {
		c.t.Errorf("stop %s: %v", n.id, err)
	}
	n.running = false
}

// Restart starts node i again on its data dir with its original flags (a
// node with state ignores --join and --bootstrap) and waits until ready.
func (c *cluster) Restart(i int) {
	c.t.Helper()
	n := c.node(i)
	if n.running {
		c.t.Fatalf("restart %s: it is still running", n.id)
	}
	c.run(n)
	n.waitReady()
}

// Partition cuts node i off from every other node: connections between
// them are dropped and new ones refused, in both directions, until Heal.
func (c *cluster) Partition(i int) { c.net.isolate(i) }

// Heal ends every partition.
func (c *cluster) Heal() { c.net.heal() }

// Leader waits until the running nodes agree on a leader and returns its
// index.
func (c *cluster) Leader() int {
	c.t.Helper()
	return c.WaitLeader()
}

// WaitLeader polls GET /v1/cluster?stale=true on every running node but
// those in except until they all name the same leader, which is not one of
// except and says it leads, and returns its index.
func (c *cluster) WaitLeader(except ...int) int {
	c.t.Helper()
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		leader, ok := c.agreedLeader(except)
		if ok {
			return leader
		}
		last = fmt.Sprintf("no agreement on a leader yet (excluding %v)", except)
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("%s after 30s", last)
	return 0
}

func (c *cluster) agreedLeader(except []int) (int, bool) {
	leaderID := ""
	for _, n := range c.nodes {
		if !n.running || slices.Contains(except, n.i) {
			continue
		}
		st, err := n.status(true)
		if err != nil || st.LeaderID == "" || (leaderID != "" && st.LeaderID != leaderID) {
			return 0, false
		}
		leaderID = st.LeaderID
	}
	for _, n := range c.nodes {
		if n.id == leaderID && n.running && !slices.Contains(except, n.i) {
			if st, err := n.status(true); err == nil && st.RaftState == "Leader" {
				return n.i, true
			}
		}
	}
	return 0, false
}

// waitVoters waits until the leader lists every running node as a
// registered voter and every running node is ready.
func (c *cluster) waitVoters() {
	c.t.Helper()
	want := 0
	for _, n := range c.nodes {
		if n.running {
			want++
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := c.node(c.Leader())
		st, err := l.status(false)
		if err == nil && countRegisteredVoters(st) == want {
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the leader does not list %d registered voters after 30s: %+v, %v", want, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range c.nodes {
		if n.running {
			n.waitReady()
		}
	}
}

func countRegisteredVoters(st *api.ClusterStatus) int {
	n := 0
	for _, m := range st.Members {
		if m.Suffrage == "voter" && m.Registered {
			n++
		}
	}
	return n
}

// status reads GET /v1/cluster from this node, as an admin.
func (n *clusterNode) status(stale bool) (*api.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return n.admin().ClusterStatus(ctx, stale)
}

// admin returns a client of this node alone, as the admin; it is made once
// per node.
func (n *clusterNode) admin() *client.Client {
	if n.adminClient == nil {
		n.adminClient = n.client(engine.RoleAdmin)
	}
	return n.adminClient
}
