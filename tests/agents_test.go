package tests

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
)

// Gossip members for the end-to-end tests: `coordinatord agent` processes
// (gossip-only members, one per host of gates, managers and workers) and
// the gossip flags of cluster nodes. Every member gossips on its own
// loopback IP: agent k on 127.0.1.k, cluster node i on 127.0.0.(10+i) (its
// API and Raft address), on a port free for both UDP and TCP. Gossip goes
// straight between members (UDP and TCP), not through the cluster's fault
// proxies, which carry Raft and API traffic only.

// gossipTiming is the SWIM timing of every member of the e2e pools, as
// agent flags: memberlist's LAN profile made five times faster, so that a
// dead member is suspected within a few hundred milliseconds and declared
// dead within a few seconds. The other settings are the LAN profile's
// (indirect checks 3, suspicion multiplier 4, suspicion max timeout
// multiplier 6, retransmit multiplier 4, gossip to 3 nodes, dead members
// listed 30 s). serverGossipFlags turns them into a server's flags.
var gossipTiming = []string{
	"--probe-interval", "200ms", // LAN: 1s
	"--probe-timeout", "100ms", // LAN: 500ms
	"--gossip-interval", "100ms", // LAN: 200ms
	"--push-pull-interval", "5s", // LAN: 30s
	"--retry-join-interval", "200ms", // a restarted member is back at once
}

// gossipTimingSummary describes gossipTiming for logs.
const gossipTimingSummary = "probe interval 200ms, probe timeout 100ms, gossip interval 100ms, push/pull 5s; " +
	"LAN profile otherwise (indirect checks 3, suspicion mult 4, max timeout mult 6, retransmit mult 4, gossip nodes 3)"

// serverGossipFlags turns agent gossip flags (--bind, --probe-interval,
// ...) into a server's (--gossip-bind, --gossip-probe-interval, ...):
// flags already named gossip-* keep their names, as cmd/coordinatord's
// gossipFlags registers them.
func serverGossipFlags(agentFlags []string) []string {
	out := make([]string, len(agentFlags))
	for k, f := range agentFlags {
		if name, ok := strings.CutPrefix(f, "--"); ok && !strings.HasPrefix(name, "gossip-") {
			f = "--gossip-" + name
		}
		out[k] = f
	}
	return out
}

// gossipKeyFile makes a gossip key with `coordinatord keygen` and writes
// it to a file, as an operator does (coordinatord keygen > gossip.key).
func gossipKeyFile(t testing.TB) string {
	t.Helper()
	out, err := exec.Command(binary, "keygen").Output()
	if err != nil {
		t.Fatalf("coordinatord keygen: %v", err)
	}
	file := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// freeGossipAddr returns ip:port with a port free for both UDP and TCP a
// moment ago (memberlist listens on both).
func freeGossipAddr(t testing.TB, ip string) string {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatalf("listen on %s (Linux routes all of 127/8 to lo): %v", ip, err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		_ = ln.Close()
		if err != nil {
			continue
		}
		_ = pc.Close()
		return addr
	}
	t.Fatalf("no port free for both UDP and TCP on %s", ip)
	return ""
}

// agent is one `coordinatord agent` process (and its restarts).
type agent struct {
	*proc
	t           testing.TB
	name, dc    string
	bind        string // gossip ip:port
	metricsAddr string // plain HTTP /metrics
	args        []string
	running     bool
}

// gossipPool is the gossip side of a test: the key every member uses and
// the agents started so far.
type gossipPool struct {
	t       testing.TB
	keyFile string
	// timing are the agents' timing flags (gossipTiming unless changed
	// before the first agent starts); extra are more agent flags (e.g. the
	// hidden --gossip-loss).
	timing []string
	extra  []string
	agents []*agent
}

func newGossipPool(t testing.TB) *gossipPool {
	t.Helper()
	return &gossipPool{t: t, keyFile: gossipKeyFile(t), timing: gossipTiming}
}

// serverFlags are the gossip flags of cluster node i of this pool: its
// gossip bind address, the key, the timing, what to join, plus extra
// flags in agent form (turned into server flags).
func (g *gossipPool) serverFlags(bind string, join []string, extra ...string) []string {
	flags := []string{"--gossip-bind", bind, "--gossip-key-file", g.keyFile}
	if len(join) > 0 {
		flags = append(flags, "--gossip-join", strings.Join(join, ","))
	}
	flags = append(flags, serverGossipFlags(g.timing)...)
	return append(flags, serverGossipFlags(extra)...)
}

// startAgent starts agent name in dc, joining join, and waits until it
// serves its metrics (it is then a member; joining happens in the
// background).
func (g *gossipPool) startAgent(name, dc string, join []string) *agent {
	g.t.Helper()
	k := len(g.agents) + 1
	ip := fmt.Sprintf("127.0.1.%d", k)
	a := &agent{t: g.t, name: name, dc: dc, bind: freeGossipAddr(g.t, ip), metricsAddr: freeAddrOn(g.t, ip)}
	a.args = append([]string{"agent", "--node", name, "--datacenter", dc,
		"--bind", a.bind, "--gossip-key-file", g.keyFile, "--metrics-addr", a.metricsAddr,
		"--log-format", "json", "--leave-timeout", "1s"}, g.timing...)
	if len(join) > 0 {
		a.args = append(a.args, "--join", strings.Join(join, ","))
	}
	a.args = append(a.args, g.extra...)
	g.agents = append(g.agents, a)
	a.start()
	return a
}

func (a *agent) start() {
	a.t.Helper()
	a.proc = startProc(a.t, "", nil, binary, a.args...)
	a.running = true
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := scrapeAgent(a.metricsAddr); err == nil {
			return
		}
		select {
		case <-a.exited:
			a.t.Fatalf("agent %s exited: %v\n%s", a.name, a.waitErr, tail(a.stderr.String(), 2000))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("agent %s serves no metrics at %s after 20s", a.name, a.metricsAddr)
		}
	}
}

// kill9 kills the agent with SIGKILL: it does not leave, the others must
// find out that it is dead.
func (a *agent) kill9() {
	a.signal(syscall.SIGKILL)
	<-a.exited
	a.running = false
}

// restart starts a killed agent again under the same name and address.
func (a *agent) restart() {
	a.t.Helper()
	if a.running {
		a.t.Fatalf("restart agent %s: it is still running", a.name)
	}
	a.start()
}

// agentsIn returns the pool's agents in dc.
func (g *gossipPool) agentsIn(dc string) []*agent {
	var out []*agent
	for _, a := range g.agents {
		if a.dc == dc {
			out = append(out, a)
		}
	}
	return out
}

// kill9DCs kills the agents of the datacenters at once (in parallel, so
// that they die within a millisecond or two of each other) and returns
// the time of the kills.
func (g *gossipPool) kill9DCs(dcs ...string) time.Time {
	var victims []*agent
	for _, dc := range dcs {
		victims = append(victims, g.agentsIn(dc)...)
	}
	at := time.Now()
	for _, a := range victims {
		a.signal(syscall.SIGKILL)
	}
	for _, a := range victims {
		<-a.exited
		a.running = false
	}
	return at
}

// restartDCs starts the killed agents of the datacenters again.
func (g *gossipPool) restartDCs(dcs ...string) {
	g.t.Helper()
	for _, dc := range dcs {
		for _, a := range g.agentsIn(dc) {
			a.restart()
		}
	}
}

// --- metrics --------------------------------------------------------------------

// promSample is a scrape of Prometheus text: every sample by name with its
// labels as written ("name{a=\"b\"}").
type promSample map[string]float64

// get returns the value of name with exactly the labels given (in the
// order the exposition writes them, which is sorted by label name), or 0.
func (s promSample) get(name string, labels ...string) float64 {
	key := name
	if len(labels) > 0 {
		var parts []string
		for k := 0; k+1 < len(labels); k += 2 {
			parts = append(parts, labels[k]+`="`+labels[k+1]+`"`)
		}
		key += "{" + strings.Join(parts, ",") + "}"
	}
	return s[key]
}

// sum adds every sample of name, whatever its labels.
func (s promSample) sum(name string) float64 {
	total := 0.0
	for k, v := range s {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
		}
	}
	return total
}

// gossipBytes is every gossip byte the member sent and received, UDP and
// TCP.
func (s promSample) gossipBytes() float64 {
	return s.sum("coordinatord_swim_packet_bytes_total") + s.sum("coordinatord_swim_stream_bytes_total")
}

func parseProm(r io.Reader) (promSample, error) {
	out := promSample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cut := strings.LastIndexByte(line, ' ')
		if cut < 0 {
			return nil, fmt.Errorf("metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[cut+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[line[:cut]] = v
	}
	return out, sc.Err()
}

// scrapeAgent reads an agent's plain-HTTP /metrics.
func scrapeAgent(addr string) (promSample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", addr, resp.Status)
	}
	return parseProm(resp.Body)
}

// scrapeNode reads a cluster node's /metrics (mTLS, as the admin).
func scrapeNode(n *clusterNode) (promSample, error) {
	raw, code, err := n.adminGet("/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s: GET /metrics: %d %s", n.id, code, raw)
	}
	return parseProm(strings.NewReader(string(raw)))
}

// adminHTTPClients are the nodes' raw admin HTTP clients, made once per
// node (a certificate per request would cost more than the request).
var adminHTTPClients sync.Map // *clusterNode → *http.Client

func (n *clusterNode) adminHTTP() *http.Client {
	if hc, ok := adminHTTPClients.Load(n); ok {
		return hc.(*http.Client)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: n.tlsConfig(n.pki.tlsCert("admin", request(n.mapping, engine.RoleAdmin, "admin-1")))}}
	if prev, loaded := adminHTTPClients.LoadOrStore(n, hc); loaded {
		return prev.(*http.Client)
	}
	n.t.Cleanup(func() {
		hc.CloseIdleConnections()
		adminHTTPClients.Delete(n)
	})
	return hc
}

// adminGet GETs path (with its query) from node n itself, as the admin,
// and returns the body and status.
func (n *clusterNode) adminGet(path string) ([]byte, int, error) {
	resp, err := n.adminHTTP().Get("https://" + n.httpBind + path)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return raw, resp.StatusCode, err
}

// --- clusters whose nodes gossip ------------------------------------------------

// gossipCluster is a cluster of `coordinatord server` nodes, each in its
// own datacenter (its certificate's dc claim) and a member of the gossip
// pool, plus the pool's agents.
type gossipCluster struct {
	*cluster
	g *gossipPool
	// gossipAddrs are the nodes' gossip addresses, node i at i-1.
	gossipAddrs []string
	// dcs are the datacenters of the nodes and agents, sorted.
	dcs []string
}

// gossipClusterSpec describes a gossipCluster.
type gossipClusterSpec struct {
	// serverDCs are the nodes' datacenters, node i's at i-1.
	serverDCs []string
	// agentDCs get agentsPerDC agents each, named agent-DC-k.
	agentDCs    []string
	agentsPerDC int
	// serverFlags are more flags for every node; agentFlags more for
	// every agent; gossipFlags more gossip flags (agent form) for both.
	serverFlags, agentFlags, gossipFlags []string
	// timing replaces gossipTiming when set.
	timing []string
}

// startGossipCluster starts the nodes (node 1 bootstraps, the others join
// one by one), then the agents, and waits until the leader's gossip view
// has every member alive and the committed correlation record knows every
// datacenter as healthy.
func startGossipCluster(t *testing.T, spec gossipClusterSpec) *gossipCluster {
	t.Helper()
	g := newGossipPool(t)
	if spec.timing != nil {
		g.timing = spec.timing
	}
	g.extra = append(slices.Clone(spec.agentFlags), spec.gossipFlags...)
	gc := &gossipCluster{cluster: newCluster(t), g: g}
	var nodes []*clusterNode
	for k, dc := range spec.serverDCs {
		n := gc.addNodeIn(fmt.Sprintf("node-%d", k+1), dc)
		nodes = append(nodes, n)
		gc.gossipAddrs = append(gc.gossipAddrs, freeGossipAddr(t, n.ip))
	}
	for k, n := range nodes {
		var join []string // the other nodes' gossip addresses, retried until one answers
		for j, a := range gc.gossipAddrs {
			if j != k {
				join = append(join, a)
			}
		}
		flags := append(g.serverFlags(gc.gossipAddrs[k], join, spec.gossipFlags...), spec.serverFlags...)
		if k == 0 {
			gc.startNode(n, append(flags, "--bootstrap")...)
			continue
		}
		gc.startNode(n, append(flags, "--join", strings.Join(gc.joinAddrs(n.i), ","))...)
		gc.waitVoters()
	}
	for _, dc := range spec.agentDCs {
		for k := range spec.agentsPerDC {
			g.startAgent(fmt.Sprintf("agent-%s-%d", dc, k+1), dc, gc.gossipAddrs)
		}
	}
	seen := map[string]bool{}
	for _, dc := range append(slices.Clone(spec.serverDCs), spec.agentDCs...) {
		if !seen[dc] {
			seen[dc] = true
			gc.dcs = append(gc.dcs, dc)
		}
	}
	slices.Sort(gc.dcs)
	gc.waitAllHealthy(t, 60*time.Second)
	return gc
}

// addNodeIn is addNode for a node in datacenter dc: its certificate
// claims dc and it is started with --datacenter dc.
func (c *cluster) addNodeIn(id, dc string) *clusterNode {
	c.t.Helper()
	n := c.addNode(id)
	req := request(engine.MappingSPIFFE, engine.RoleCoordinator, id)
	req.Claims.Datacenter = dc
	req.Server = true
	req.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP(n.ip)}
	// The same files addNode wrote, so the flags stay as they are.
	c.pki.issue(fmt.Sprintf("node%d-%s", n.i, id), req)
	for k := 0; k+1 < len(n.args); k++ {
		if n.args[k] == "--datacenter" {
			n.args[k+1] = dc
		}
	}
	return n
}

// members is the number of gossip members of the cluster: its nodes and
// agents, running or not.
func (gc *gossipCluster) members() int { return len(gc.nodes) + len(gc.g.agents) }

// waitAllHealthy waits until the leader sees every running member alive
// and no other, and the committed record has every datacenter healthy.
func (gc *gossipCluster) waitAllHealthy(t *testing.T, within time.Duration) *api.Datacenters {
	t.Helper()
	alive := 0
	for _, n := range gc.nodes {
		if n.running {
			alive++
		}
	}
	for _, a := range gc.g.agents {
		if a.running {
			alive++
		}
	}
	return gc.waitDatacenters(t, "every member alive and every datacenter healthy", within, func(d *api.Datacenters) error {
		if d.Local.Members < alive {
			return fmt.Errorf("%s knows %d members, want %d", d.Node, d.Local.Members, alive)
		}
		seen := 0
		for _, dc := range d.Datacenters {
			seen += dc.Local.Alive
			if dc.State != string(engine.DCHealthy) {
				return fmt.Errorf("%s is %q", dc.Name, dc.State)
			}
		}
		if seen != alive {
			return fmt.Errorf("%s sees %d members alive, want %d", d.Node, seen, alive)
		}
		if got := dcNames(d); !slices.Equal(got, gc.dcs) {
			return fmt.Errorf("datacenters %v, want %v", got, gc.dcs)
		}
		return nil
	})
}

func dcNames(d *api.Datacenters) []string {
	var out []string
	for _, dc := range d.Datacenters {
		if dc.State != "" {
			out = append(out, dc.Name)
		}
	}
	return out
}

// datacenters reads GET /v1/datacenters from node n itself.
func (n *clusterNode) datacenters() (*api.Datacenters, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	d, err := n.admin().Datacenters(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: GET /v1/datacenters: %w", n.id, err)
	}
	return d, nil
}

// waitDatacenters polls the current leader's GET /v1/datacenters every
// 25ms until cond accepts it, and returns that answer.
func (gc *gossipCluster) waitDatacenters(t *testing.T, what string, within time.Duration, cond func(*api.Datacenters) error) *api.Datacenters {
	t.Helper()
	deadline := time.Now().Add(within)
	var last error
	for {
		leader, ok := gc.agreedLeader(nil)
		if ok {
			d, err := gc.node(leader).datacenters()
			if err == nil {
				if err = cond(d); err == nil {
					return d
				}
			}
			last = err
		} else {
			last = errors.New("no agreed leader")
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, last)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// dcState returns the committed state of dc in d.
func dcState(d *api.Datacenters, dc string) string {
	for _, s := range d.Datacenters {
		if s.Name == dc {
			return s.State
		}
	}
	return ""
}

// leaseCallerIn is a recording lease caller (of every running node) whose
// certificate claims node owner with role in datacenter dc: the leases it
// acquires are owned in dc.
func (c *cluster) leaseCallerIn(t *testing.T, log *leaseLog, role engine.Role, owner, dc string) *leaseCaller {
	t.Helper()
	req := request(engine.MappingSPIFFE, role, owner)
	req.Claims.Datacenter = dc
	cl, err := client.New(client.Config{Addrs: c.addrs(), TLS: c.nodes[0].tlsConfig(c.pki.tlsCert(owner, req)), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &leaseCaller{cl: cl, owner: owner, log: log}
}
