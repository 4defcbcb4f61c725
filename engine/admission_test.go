package engine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/policies"
)

// fakeClock is a settable clock for rule tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestEngine(t testing.TB, cacheSize int, ps ...policies.Policy) *Engine {
	t.Helper()
	clock := &fakeClock{now: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	e, err := NewEngine(EngineConfig{Clock: clock.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), CacheSize: cacheSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if len(ps) == 0 {
		ps = []policies.Policy{policies.Default()}
	}
	if err := e.Load(context.Background(), 1, ps); err != nil {
		t.Fatalf("load: %v", err)
	}
	return e
}

func peer(role Role, cluster, env string) Claims {
	c := Claims{Cluster: cluster, Env: env, Role: role, Datacenter: "dc1", Node: string(role) + "-1"}
	c.SPIFFEID = SPIFFEID("coordinatord.local", c)
	return c
}

// defaultConnectPairs is the role table of DESIGN.md, plus coordinatord's
// own nodes talking to each other.
var defaultConnectPairs = map[[2]Role]bool{
	{RoleClient, RoleGate}:             true,
	{RoleGate, RoleManager}:            true,
	{RoleGate, RoleGate}:               true,
	{RoleManager, RoleWorker}:          true,
	{RoleManager, RoleManager}:         true,
	{RoleWorker, RoleManager}:          true,
	{RoleManager, RoleGate}:            true,
	{RoleCoordinator, RoleCoordinator}: true,
}

func TestDefaultPolicyAdmitsExactlyTheRoleTableWithinOneClusterAndEnv(t *testing.T) {
	e := newTestEngine(t, 0)
	for _, src := range Roles {
		for _, dst := range Roles {
			for _, sameCluster := range []bool{true, false} {
				for _, sameEnv := range []bool{true, false} {
					name := fmt.Sprintf("%s to %s, same cluster %v, same env %v", src, dst, sameCluster, sameEnv)
					t.Run(name, func(t *testing.T) {
						dstCluster, dstEnv := "prod", "live"
						if !sameCluster {
							dstCluster = "other"
						}
						if !sameEnv {
							dstEnv = "staging"
						}
						in := Input{Source: peer(src, "prod", "live"), Target: peer(dst, dstCluster, dstEnv), Action: "connect"}
						d := e.Decide(context.Background(), in)
						want := defaultConnectPairs[[2]Role{src, dst}] && sameCluster && sameEnv
						if d.Allowed != want {
							t.Fatalf("allowed = %v, want %v; reasons %q", d.Allowed, want, d.Reasons)
						}
						if want {
							if d.Result != ResultAllow || len(d.Reasons) != 0 {
								t.Fatalf("allowed decision has result %q reasons %q", d.Result, d.Reasons)
							}
							return
						}
						if d.Result != ResultDeny || d.ReasonCode != ReasonPolicyDenied {
							t.Fatalf("denied decision has result %q code %q", d.Result, d.ReasonCode)
						}
						all := strings.Join(d.Reasons, "\n")
						if !sameCluster && !strings.Contains(all, "cluster") {
							t.Errorf("reasons %q do not name the cluster mismatch", d.Reasons)
						}
						if !sameEnv && !strings.Contains(all, "env") {
							t.Errorf("reasons %q do not name the env mismatch", d.Reasons)
						}
						if !defaultConnectPairs[[2]Role{src, dst}] && !strings.Contains(all, string(src)+"->"+string(dst)) {
							t.Errorf("reasons %q do not name the role pair %s->%s", d.Reasons, src, dst)
						}
					})
				}
			}
		}
	}
}

func policy(id string, mode policies.Mode, body string) policies.Policy {
	return policies.Policy{ID: id, Mode: mode, Rego: "package coordinatord.admission\n\n" + body}
}

func TestEveryFailureOfAPolicyDenies(t *testing.T) {
	tests := []struct {
		name   string
		policy policies.Policy
		code   string
		reason string
	}{
		{
			name:   "a rule that divides by zero raises a built-in error, which denies",
			policy: policy("div", policies.ModeEnforce, "allow if {\n\tx := 1\n\ty := 0\n\tx / y == 1\n}\n"),
			code:   ReasonEvalError,
			reason: "divide by zero",
		},
		{
			name:   "an allow that is undefined for the input denies",
			policy: policy("undef", policies.ModeEnforce, "allow if input.action == \"never\"\n"),
			code:   ReasonUndefined,
			reason: "undefined",
		},
		{
			name:   "an allow that turns out to be a string, not a boolean, denies",
			policy: policy("str", policies.ModeEnforce, "allow := input.action\n"),
			code:   ReasonNonBoolean,
			reason: "not a boolean",
		},
		{
			name:   "a deny without reasons says that the policy gave none",
			policy: policy("bare", policies.ModeEnforce, "allow := false\n"),
			code:   ReasonPolicyDenied,
			reason: "gives no reasons",
		},
		{
			name:   "a conflict between two values of allow is an evaluation error, which denies",
			policy: policy("conflict", policies.ModeEnforce, "allow := true if input.action == \"connect\"\nallow := false if startswith(input.action, \"conn\")\n"),
			code:   ReasonEvalError,
			reason: "conflict",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, 100, tt.policy)
			in := Input{Source: peer(RoleWorker, "c", "e"), Target: peer(RoleManager, "c", "e"), Action: "connect"}
			for i := 0; i < 2; i++ { // the second call must not be a cached allow
				d := e.Decide(context.Background(), in)
				if d.Allowed || d.Result != ResultDeny || d.ReasonCode != tt.code {
					t.Fatalf("call %d: allowed %v result %q code %q, want deny %q", i, d.Allowed, d.Result, d.ReasonCode, tt.code)
				}
				if !strings.Contains(strings.Join(d.Reasons, " "), tt.reason) {
					t.Fatalf("reasons %q do not mention %q", d.Reasons, tt.reason)
				}
				if !strings.HasPrefix(d.Reasons[0], tt.policy.ID+": ") {
					t.Fatalf("reason %q does not name the policy", d.Reasons[0])
				}
			}
		})
	}
}

func TestAuditModeAllowsButRecordsTheWouldBeDenial(t *testing.T) {
	var logs bytes.Buffer
	clock := &fakeClock{now: time.Unix(0, 0)}
	e, err := NewEngine(EngineConfig{Clock: clock.Now, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	strict := policy("only-gates", policies.ModeAudit, "default allow := false\nallow if input.source.role == \"gate\"\nreasons contains \"only gates may connect\" if not allow\n")
	if err := e.Load(context.Background(), 7, []policies.Policy{policies.Default(), strict}); err != nil {
		t.Fatal(err)
	}
	d := e.Decide(context.Background(), Input{Source: peer(RoleWorker, "c", "e"), Target: peer(RoleManager, "c", "e"), Action: "connect"})
	e.Close() // flushes the log
	if !d.Allowed || d.Result != ResultAuditDeny {
		t.Fatalf("allowed %v result %q, want allowed audit_deny", d.Allowed, d.Result)
	}
	if len(d.Reasons) != 1 || d.Reasons[0] != "only-gates: only gates may connect" {
		t.Fatalf("reasons %q", d.Reasons)
	}
	if d.PolicyRevision != 7 {
		t.Fatalf("policy revision %d, want 7", d.PolicyRevision)
	}
	got := e.Log().List(DecisionFilter{Result: ResultAuditDeny})
	if len(got) != 1 || got[0].ID != d.ID {
		t.Fatalf("decision log has %d audit denials, want this one", len(got))
	}
	if !strings.Contains(logs.String(), `"result":"audit_deny"`) || !strings.Contains(logs.String(), "only gates may connect") {
		t.Fatalf("the structured log lacks the audit denial: %s", logs.String())
	}
}

func TestAnEnforcedDenialWinsOverOtherPoliciesAllowing(t *testing.T) {
	deny := policy("deny-workers", policies.ModeEnforce, "default allow := false\nallow if input.source.role != \"worker\"\nreasons contains \"workers are frozen\" if not allow\n")
	e := newTestEngine(t, 0, policies.Default(), deny)
	d := e.Decide(context.Background(), Input{Source: peer(RoleWorker, "c", "e"), Target: peer(RoleManager, "c", "e"), Action: "connect"})
	if d.Allowed || len(d.Policies) != 2 {
		t.Fatalf("allowed %v with %d policy results, want deny from 2", d.Allowed, len(d.Policies))
	}
	if d.Reasons[0] != "deny-workers: workers are frozen" {
		t.Fatalf("reasons %q", d.Reasons)
	}
}

func TestNoPolicyAndBadInputDeny(t *testing.T) {
	e, err := NewEngine(EngineConfig{Clock: time.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	in := Input{Source: peer(RoleWorker, "c", "e"), Target: peer(RoleManager, "c", "e"), Action: "connect"}
	if d := e.Decide(context.Background(), in); d.Allowed || d.ReasonCode != ReasonNoPolicy {
		t.Fatalf("with no policy: allowed %v code %q", d.Allowed, d.ReasonCode)
	}
	if err := e.Load(context.Background(), 1, []policies.Policy{policies.Default()}); err != nil {
		t.Fatal(err)
	}
	in.Action = ""
	if d := e.Decide(context.Background(), in); d.Allowed || d.ReasonCode != ReasonBadInput {
		t.Fatalf("with an empty action: allowed %v code %q", d.Allowed, d.ReasonCode)
	}
	in.Action, in.Target.Env = "connect", ""
	if d := e.Decide(context.Background(), in); d.Allowed || d.ReasonCode != ReasonBadInput {
		t.Fatalf("with an empty target env: allowed %v code %q", d.Allowed, d.ReasonCode)
	}
	in.Target.Env, in.Source.Role = "e", "janitor"
	if d := e.Decide(context.Background(), in); d.Allowed || d.ReasonCode != ReasonBadInput {
		t.Fatalf("with an unknown role: allowed %v code %q", d.Allowed, d.ReasonCode)
	}
	in.Source.Role, in.Resource = RoleWorker, map[string]any{"bad": make(chan int)}
	if d := e.Decide(context.Background(), in); d.Allowed || d.ReasonCode != ReasonBadInput {
		t.Fatalf("with an unencodable resource: allowed %v code %q", d.Allowed, d.ReasonCode)
	}
}

func TestLoadKeepsTheActiveSetWhenAPolicyDoesNotCompile(t *testing.T) {
	e := newTestEngine(t, 0)
	bad := policy("bad", policies.ModeEnforce, "allow if {\n")
	if err := e.Load(context.Background(), 2, []policies.Policy{bad}); err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Fatalf("load of a broken policy: err %v, want one naming the policy", err)
	}
	if e.Revision() != 1 {
		t.Fatalf("revision %d after failed load, want 1", e.Revision())
	}
	if err := e.Load(context.Background(), 0, nil); err != nil || e.Revision() != 1 {
		t.Fatalf("an older revision replaced the active set: err %v revision %d", err, e.Revision())
	}
}

func TestTheCacheAnswersRepeatsAndEveryLoadInvalidatesIt(t *testing.T) {
	e := newTestEngine(t, 100)
	in := Input{Source: peer(RoleWorker, "c", "e"), Target: peer(RoleManager, "c", "e"), Action: "connect"}
	if d := e.Decide(context.Background(), in); !d.Allowed || d.Cached {
		t.Fatalf("first decision: allowed %v cached %v", d.Allowed, d.Cached)
	}
	if d := e.Decide(context.Background(), in); !d.Allowed || !d.Cached {
		t.Fatalf("second decision: allowed %v cached %v, want a cached allow", d.Allowed, d.Cached)
	}
	lockdown := policy("lockdown", policies.ModeEnforce, "allow := false\nreasons contains \"lockdown\"\n")
	if err := e.Load(context.Background(), 2, []policies.Policy{lockdown}); err != nil {
		t.Fatal(err)
	}
	d := e.Decide(context.Background(), in)
	if d.Allowed || d.Cached || d.PolicyRevision != 2 {
		t.Fatalf("after a policy change: allowed %v cached %v revision %d, want a fresh deny at 2", d.Allowed, d.Cached, d.PolicyRevision)
	}
	other := in
	other.Resource = map[string]any{"job": "j1"}
	if d := e.Decide(context.Background(), other); d.Cached {
		t.Fatal("a different resource was answered from the cache")
	}
}

func TestAPolicyReadingTheClockIsNeverCached(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)}
	e, err := NewEngine(EngineConfig{Clock: clock.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), CacheSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	hours := policy("office-hours", policies.ModeEnforce, "allow if time.clock([time.now_ns(), \"UTC\"])[0] < 12\n")
	if err := e.Load(context.Background(), 1, []policies.Policy{hours}); err != nil {
		t.Fatal(err)
	}
	in := Input{Source: peer(RoleWorker, "c", "e"), Target: peer(RoleManager, "c", "e"), Action: "connect"}
	if d := e.Decide(context.Background(), in); !d.Allowed {
		t.Fatalf("at 08:00 (the injected clock): denied %q", d.Reasons)
	}
	clock.Advance(6 * time.Hour)
	if d := e.Decide(context.Background(), in); d.Allowed || d.Cached {
		t.Fatalf("at 14:00: allowed %v cached %v, want an uncached deny", d.Allowed, d.Cached)
	}
}

// blockingHandler holds every log write until released, to fill the queue.
type blockingHandler struct {
	slog.Handler
	release chan struct{}
}

func (h blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	<-h.release
	return nil
}

func TestTheDecisionLogIsBoundedAndCountsWhatItDrops(t *testing.T) {
	release := make(chan struct{})
	logger := slog.New(blockingHandler{Handler: slog.NewTextHandler(io.Discard, nil), release: release})
	log := NewDecisionLog(10)
	e, err := NewEngine(EngineConfig{Clock: time.Now, Logger: logger, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	// Load logs one record, which blocks: release it from a goroutine.
	go func() { release <- struct{}{} }()
	if err := e.Load(context.Background(), 1, []policies.Policy{policies.Default()}); err != nil {
		t.Fatal(err)
	}
	in := Input{Source: peer(RoleWorker, "c", "e"), Target: peer(RoleManager, "c", "e"), Action: "connect"}
	n := logQueueSize + 50
	for i := 0; i < n; i++ {
		e.Decide(context.Background(), in)
	}
	if got := len(log.List(DecisionFilter{})); got != 10 {
		t.Fatalf("buffer holds %d decisions, want its size 10", got)
	}
	if log.Evicted() != uint64(n-10) {
		t.Fatalf("evicted %d, want %d", log.Evicted(), n-10)
	}
	// The writer holds one decision and the queue the next logQueueSize.
	if d := log.Dropped(); d < uint64(n-logQueueSize-1) || d > uint64(n-logQueueSize) {
		t.Fatalf("dropped %d, want about %d", d, n-logQueueSize)
	}
	close(release)
	e.Close()
	last := log.List(DecisionFilter{Limit: 3})
	if len(last) != 3 || last[2].Seq != uint64(n) || last[0].Seq != uint64(n-2) {
		t.Fatalf("the 3 most recent decisions are not the last ones made: %+v", last)
	}
	if after := log.List(DecisionFilter{After: uint64(n - 1)}); len(after) != 1 {
		t.Fatalf("after %d: %d decisions, want 1", n-1, len(after))
	}
}
