package swim

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// testTiming is fast enough for tests on loopback, and slow enough for a
// loaded machine running the race detector: probes every 200ms (with a
// 100ms timeout), suspicions of 0.6-1.2s.
func testTiming() Timing {
	t := DefaultLANConfig().Timing
	t.ProbeInterval = 200 * time.Millisecond
	t.ProbeTimeout = 100 * time.Millisecond
	t.IndirectChecks = 2
	t.SuspicionMult = 3
	t.SuspicionMaxTimeoutMult = 2
	t.RetransmitMult = 3
	t.GossipInterval = 20 * time.Millisecond
	t.GossipToTheDeadTime = 10 * time.Second
	t.PushPullInterval = 2 * time.Second
	t.TCPTimeout = time.Second
	return t
}

// waitFor polls cond every 10ms until it holds, failing the test after
// within.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a log sink shared by a test's members, printed if the
// test fails.
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

// testCluster builds members that share a key and a log.
type testCluster struct {
	t      *testing.T
	key    []byte
	logger *slog.Logger
}

func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	t.Cleanup(func() { // registered first, so it runs after the members stop
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	return &testCluster{t: t, key: key, logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
}

// config returns a loopback member configuration on a free port.
func (c *testCluster) config(name, dc string, role Role) Config {
	cfg := DefaultLANConfig()
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.Meta = Meta{NodeID: name, Datacenter: dc, Role: role, Version: "test"}
	cfg.SecretKey = c.key
	cfg.Logger = c.logger
	cfg.Timing = testTiming()
	cfg.PollInterval = 10 * time.Millisecond
	return cfg
}

func (c *testCluster) start(name, dc string, role Role) *recorder {
	return c.startConfig(c.config(name, dc, role))
}

func (c *testCluster) startConfig(cfg Config) *recorder {
	c.t.Helper()
	m, err := New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	r := record(m)
	c.t.Cleanup(func() { _ = m.Shutdown(); <-r.done })
	return r
}

// recorder consumes a member's events and RTT samples.
type recorder struct {
	*Memberlist
	mu     sync.Mutex
	events []Event
	rtts   []RTTSample
	done   chan struct{}
}

func record(m *Memberlist) *recorder {
	r := &recorder{Memberlist: m, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ev := range m.Events() {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		for s := range m.RTTs() {
			r.mu.Lock()
			r.rtts = append(r.rtts, s)
			r.mu.Unlock()
		}
	}()
	go func() { wg.Wait(); close(r.done) }()
	return r
}

// eventsAbout returns the events about node, from the from'th on.
func (r *recorder) eventsAbout(node string, from int) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, ev := range r.events {
		if ev.Member.Name == node {
			out = append(out, ev)
		}
	}
	if from > len(out) {
		return nil
	}
	return out[from:]
}

func (r *recorder) samples() []RTTSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]RTTSample(nil), r.rtts...)
}

func (r *recorder) addr() string { return r.LocalMember().Addr }

// state returns node's state in r's member list, "" if it is not listed.
func (r *recorder) state(node string) State {
	for _, m := range r.Members() {
		if m.Name == node {
			return m.State
		}
	}
	return ""
}

func states(evs []Event) []State {
	out := make([]State, len(evs))
	for i, ev := range evs {
		out[i] = ev.State
	}
	return out
}
