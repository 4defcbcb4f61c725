package tests

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/loadtest"
)

// BenchmarkLeases measures lease acquire and renew on a 3-node loopback
// cluster of coordinatord (fsync on: bbolt and the Raft log sync every
// commit) and, side by side in the same run, on a 3-member etcd cluster
// with TLS between clients and members and between members, and etcd's
// default fsync. Each case runs the operation from 1 or 64 concurrent
// clients for LEASE_BENCH_DURATION (default 5s, after a 1s warm-up) with
// internal/loadtest, and reports ops/s and the p50 and p99 latencies.
// "leader" sends every request to the leader; "spread" sends client w to
// node w%3, so that two thirds of the requests are forwarded by a follower
// (by etcd too: a follower's gateway and server pass them to the leader).
//
// The operations are those of `coordinatord loadtest`: renew renews the
// client's own lease in a loop; acquire takes the lease of a new job each
// time. On etcd, renew is LeaseKeepAlive through the JSON gateway
// (/v3/lease/keepalive), which etcd's leader answers without a Raft write,
// and acquire is a transaction that creates the job's key with a lease
// only if it does not exist. coordinatord commits both through Raft.
//
//	scripts/bench-leases.sh   (installs etcd if missing, then runs this)
//
// It is skipped when etcd is not installed.
func BenchmarkLeases(b *testing.B) {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		b.Skip("etcd is not installed; scripts/bench-leases.sh installs it")
	}
	duration := 5 * time.Second
	if v := os.Getenv("LEASE_BENCH_DURATION"); v != "" {
		if duration, err = time.ParseDuration(v); err != nil {
			b.Fatalf("LEASE_BENCH_DURATION: %v", err)
		}
	}
	p := newPKI(b)
	targets := []leaseBenchTarget{startCoordinatordBench(b, p), startEtcdBench(b, p, etcdBin)}
	for _, tg := range targets {
		for _, op := range []string{"acquire", "renew"} {
			for _, clients := range []int{1, 64} {
				for _, spread := range []bool{false, true} {
					where := "leader"
					if spread {
						where = "spread"
					}
					b.Run(fmt.Sprintf("%s/%s/clients=%d/%s", tg.name(), op, clients, where), func(b *testing.B) {
						run, cleanup := tg.op(b, op, clients, spread)
						defer cleanup()
						rep, err := loadtest.Run(context.Background(), loadtest.Config{Workers: clients, Duration: duration, Warmup: time.Second}, run)
						if err != nil {
							b.Fatal(err)
						}
						if rep.Ops == 0 || rep.Errors > rep.Ops/100 {
							b.Fatalf("%s", rep)
						}
						b.Logf("%s %s %s: %s", tg.name(), op, where, rep)
						b.ReportMetric(rep.OpsPerSecond(), "ops/s")
						b.ReportMetric(float64(rep.P50.Microseconds())/1000, "p50-ms")
						b.ReportMetric(float64(rep.P99.Microseconds())/1000, "p99-ms")
						b.ReportMetric(1e9/rep.OpsPerSecond(), "ns/op")
					})
				}
			}
		}
	}
}

// leaseBenchTarget is a cluster to measure.
type leaseBenchTarget interface {
	name() string
	// op prepares op ("acquire" or "renew") for clients workers, all on
	// the leader or spread over the members, and returns it with what
	// undoes the preparation.
	op(b *testing.B, op string, clients int, spread bool) (loadtest.Op, func())
}

// --- coordinatord ---------------------------------------------------------------

type coordinatordBench struct {
	nodes []*node
	p     *pkiDir
	cert  tls.Certificate
	runs  atomic.Int64
}

func (*coordinatordBench) name() string { return "coordinatord" }

// startCoordinatordBench starts three nodes with the production Raft
// timings, advertising their own addresses (no fault proxies in the way).
func startCoordinatordBench(b *testing.B, p *pkiDir) *coordinatordBench {
	b.Helper()
	cb := &coordinatordBench{p: p, cert: p.tlsCert("bench-gate", request(engine.MappingSPIFFE, engine.RoleGate, "bench-gate"))}
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("node-%d", i)
		req := request(engine.MappingSPIFFE, engine.RoleCoordinator, id)
		req.Server = true
		req.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		cert, key := p.issue("bench-"+id, req)
		addr := freeAddr(b)
		args := []string{"server", "--data-dir", filepath.Join(b.TempDir(), id), "--node-id", id,
			"--http-addr", addr, "--raft-addr", freeAddr(b),
			"--cluster", e2eCluster, "--env", e2eEnv, "--datacenter", e2eDC,
			"--identity-mapping", string(engine.MappingSPIFFE), "--trust-domain", e2eTD,
			"--tls-cert", cert, "--tls-key", key, "--ca", p.caFile(), "--log-format", "json", "--log-level", "warn"}
		if i == 1 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", cb.nodes[0].addr)
		}
		n := &node{proc: startProc(b, "", nil, binary, args...), addr: addr, pki: p, mapping: engine.MappingSPIFFE}
		n.waitReady()
		cb.nodes = append(cb.nodes, n)
	}
	admin := cb.nodes[0].client(engine.RoleAdmin)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := admin.ClusterStatus(ctx, false)
		cancel()
		if err == nil && countRegisteredVoters(st) == 3 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("no 3-voter coordinatord cluster after 30s: %+v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cb
}

// leader returns the index of the node that leads now.
func (cb *coordinatordBench) leader(b *testing.B) int {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := cb.nodes[0].client(engine.RoleAdmin).ClusterStatus(ctx, false)
	if err != nil {
		b.Fatal(err)
	}
	for i := range cb.nodes {
		if fmt.Sprintf("node-%d", i+1) == st.LeaderID {
			return i
		}
	}
	b.Fatalf("leader %q is not a node of the benchmark", st.LeaderID)
	return 0
}

func (cb *coordinatordBench) op(b *testing.B, op string, clients int, spread bool) (loadtest.Op, func()) {
	b.Helper()
	leader := cb.leader(b)
	cls := make([]*client.Client, len(cb.nodes))
	for i, n := range cb.nodes {
		cl, err := client.New(client.Config{Addr: n.addr, TLS: n.tlsConfig(cb.cert)})
		if err != nil {
			b.Fatal(err)
		}
		cls[i] = cl
	}
	clientOf := func(w int) *client.Client {
		if spread {
			return cls[w%len(cls)]
		}
		return cls[leader]
	}
	closeAll := func() {
		for _, cl := range cls {
			cl.Close()
		}
	}
	prefix := fmt.Sprintf("bench-%d", cb.runs.Add(1))
	ctx := context.Background()
	switch op {
	case "renew":
		tokens := make([]uint64, clients)
		for w := range tokens {
			l, err := cls[leader].Acquire(ctx, fmt.Sprintf("%s-%d", prefix, w), time.Minute, false)
			if err != nil {
				b.Fatal(err)
			}
			tokens[w] = l.Token
		}
		return func(ctx context.Context, w int) error {
				_, err := clientOf(w).Renew(ctx, fmt.Sprintf("%s-%d", prefix, w), tokens[w], 0)
				return err
			}, func() {
				for w, tok := range tokens {
					_, _ = cls[leader].Release(ctx, fmt.Sprintf("%s-%d", prefix, w), tok)
				}
				closeAll()
			}
	case "acquire":
		var n atomic.Int64
		// An hour, so that no expiry of this run's leases lands in a
		// later run.
		return func(ctx context.Context, w int) error {
			_, err := clientOf(w).Acquire(ctx, fmt.Sprintf("%s-%d", prefix, n.Add(1)), time.Hour, false)
			return err
		}, closeAll
	}
	b.Fatalf("unknown op %q", op)
	return nil, nil
}

// --- etcd -----------------------------------------------------------------------

type etcdBench struct {
	endpoints []string
	tls       *tls.Config
	runs      atomic.Int64
}

func (*etcdBench) name() string { return "etcd" }

// startEtcdBench starts a 3-member etcd cluster with mutual TLS for
// clients and peers, certificates from the benchmark's CA.
func startEtcdBench(b *testing.B, p *pkiDir, etcdBin string) *etcdBench {
	b.Helper()
	req := request(engine.MappingSPIFFE, engine.RoleCoordinator, "etcd")
	req.Server = true
	req.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	req.DNSNames = []string{"localhost"}
	cert, key := p.issue("etcd", req)
	type member struct{ name, client, peer string }
	var members []member
	var initial []string
	for i := 1; i <= 3; i++ {
		m := member{name: fmt.Sprintf("etcd-%d", i), client: "https://" + freeAddr(b), peer: "https://" + freeAddr(b)}
		members = append(members, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	for _, m := range members {
		startProc(b, "", nil, etcdBin, "--name", m.name, "--data-dir", filepath.Join(b.TempDir(), m.name),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new", "--initial-cluster-token", "bench",
			"--cert-file", cert, "--key-file", key, "--client-cert-auth", "--trusted-ca-file", p.caFile(),
			"--peer-cert-file", cert, "--peer-key-file", key, "--peer-client-cert-auth", "--peer-trusted-ca-file", p.caFile(),
			"--logger", "zap", "--log-outputs", "stderr", "--log-level", "error")
	}
	e := &etcdBench{tls: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.ca.Pool(),
		Certificates: []tls.Certificate{p.tlsCert("bench-gate", request(engine.MappingSPIFFE, engine.RoleGate, "bench-gate"))}}}
	for _, m := range members {
		e.endpoints = append(e.endpoints, m.client)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := e.leader(); err == nil {
			return e
		} else if time.Now().After(deadline) {
			b.Fatalf("etcd has no leader after 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// gateway calls etcd's JSON gateway at base, over HTTP/1.1 with kept-alive
// connections, like coordinatord's client.
type gateway struct {
	base string
	http *http.Client
}

func (e *etcdBench) gateway(endpoint string) *gateway {
	return &gateway{base: endpoint, http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: e.tls, MaxIdleConnsPerHost: 256}}}
}

func (g *gateway) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %d %s", path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func (g *gateway) close() { g.http.CloseIdleConnections() }

// leader returns the index of the member that leads.
func (e *etcdBench) leader() (int, error) {
	for i, ep := range e.endpoints {
		g := e.gateway(ep)
		var st struct {
			Header struct {
				MemberID string `json:"member_id"`
			} `json:"header"`
			Leader string `json:"leader"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := g.call(ctx, "/v3/maintenance/status", map[string]any{}, &st)
		cancel()
		g.close()
		if err != nil {
			return 0, err
		}
		if st.Leader != "" && st.Leader != "0" && st.Leader == st.Header.MemberID {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no member says it leads")
}

func (e *etcdBench) op(b *testing.B, op string, clients int, spread bool) (loadtest.Op, func()) {
	b.Helper()
	leader, err := e.leader()
	if err != nil {
		b.Fatal(err)
	}
	gws := make([]*gateway, len(e.endpoints))
	for i, ep := range e.endpoints {
		gws[i] = e.gateway(ep)
	}
	gwOf := func(w int) *gateway {
		if spread {
			return gws[w%len(gws)]
		}
		return gws[leader]
	}
	ctx := context.Background()
	// One lease per client, as `coordinatord loadtest --target etcd`.
	leases := make([]string, clients)
	for w := range leases {
		var out struct {
			ID string `json:"ID"`
		}
		if err := gws[leader].call(ctx, "/v3/lease/grant", map[string]any{"TTL": 3600}, &out); err != nil {
			b.Fatal(err)
		}
		leases[w] = out.ID
	}
	cleanup := func() {
		for _, id := range leases {
			_ = gws[leader].call(ctx, "/v3/lease/revoke", map[string]any{"ID": id}, nil)
		}
		for _, g := range gws {
			g.close()
		}
	}
	switch op {
	case "renew":
		return func(ctx context.Context, w int) error {
			var out struct {
				Result struct {
					TTL string `json:"TTL"`
				} `json:"result"`
			}
			if err := gwOf(w).call(ctx, "/v3/lease/keepalive", map[string]any{"ID": leases[w]}, &out); err != nil {
				return err
			}
			if out.Result.TTL == "" || out.Result.TTL == "0" {
				return fmt.Errorf("etcd lease %s not renewed", leases[w])
			}
			return nil
		}, cleanup
	case "acquire":
		prefix := fmt.Sprintf("bench-%d", e.runs.Add(1))
		var n atomic.Int64
		value := base64.StdEncoding.EncodeToString([]byte("owner"))
		return func(ctx context.Context, w int) error {
			key := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "/jobs/%s-%d", prefix, n.Add(1)))
			var out struct {
				Succeeded bool `json:"succeeded"`
			}
			err := gwOf(w).call(ctx, "/v3/kv/txn", map[string]any{
				"compare": []any{map[string]any{"key": key, "target": "CREATE", "create_revision": "0"}},
				"success": []any{map[string]any{"request_put": map[string]any{"key": key, "value": value, "lease": leases[w]}}},
			}, &out)
			if err == nil && !out.Succeeded {
				err = fmt.Errorf("etcd txn did not create its key")
			}
			return err
		}, cleanup
	}
	b.Fatalf("unknown op %q", op)
	return nil, nil
}
