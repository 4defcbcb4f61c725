package engine

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/coordinatord/coordinatord/policies"
)

// Results of a decision. AuditDeny means an audit-mode policy denied the
// request: it is allowed, but the would-be denial is logged and recorded.
const (
	ResultAllow     = "allow"
	ResultDeny      = "deny"
	ResultAuditDeny = "audit_deny"
)

// Reason codes are the bounded labels under which decisions are counted. The
// free-form reasons a policy gives are kept in the decision record.
const (
	ReasonAllowed       = "allowed"
	ReasonPolicyDenied  = "policy_denied"
	ReasonUndefined     = "allow_undefined"
	ReasonNonBoolean    = "allow_not_boolean"
	ReasonEvalError     = "evaluation_error"
	ReasonNoPolicy      = "no_policy_loaded"
	ReasonBadInput      = "bad_input"
	ReasonEngineStopped = "engine_stopped"
)

// Input is one admission question: may Source do Action on Target?
type Input struct {
	Source   Claims         `json:"source"`
	Target   Claims         `json:"target"`
	Action   string         `json:"action"`
	Resource map[string]any `json:"resource,omitempty"`
}

// PolicyResult is one policy's answer within a decision.
type PolicyResult struct {
	Policy  string        `json:"policy"`
	Mode    policies.Mode `json:"mode"`
	Allowed bool          `json:"allowed"`
	Reason  string        `json:"reason_code"`
	Reasons []string      `json:"reasons,omitempty"`
}

// Decision is the engine's answer and its decision-log record.
type Decision struct {
	ID       string         `json:"decision_id"`
	Seq      uint64         `json:"seq"`
	Time     time.Time      `json:"time"`
	Source   Claims         `json:"source"`
	Target   Claims         `json:"target"`
	Action   string         `json:"action"`
	Resource map[string]any `json:"resource,omitempty"`
	// Allowed is what the caller must do; Result says why (allow, deny, or
	// allowed only because the denying policies audit).
	Allowed bool   `json:"allowed"`
	Result  string `json:"result"`
	// ReasonCode is the bounded label of the first denying policy (or
	// "allowed"); Reasons collects the denying policies' reasons, each
	// prefixed with the policy id.
	ReasonCode     string         `json:"reason_code"`
	Reasons        []string       `json:"reasons,omitempty"`
	PolicyRevision uint64         `json:"policy_revision"`
	Policies       []PolicyResult `json:"policies,omitempty"`
	Latency        time.Duration  `json:"latency_ns"`
	Cached         bool           `json:"cached"`
}

// EngineConfig configures an admission Engine.
type EngineConfig struct {
	// Clock is the only source of time: decision timestamps, latencies and the
	// time Rego's time.now_ns sees. Required.
	Clock func() time.Time
	// Logger receives one record per decision (asynchronously, see Log) and
	// policy load events. Required.
	Logger *slog.Logger
	// Log keeps recent decisions. Nil means a log of DefaultDecisionLogSize.
	Log *DecisionLog
	// CacheSize bounds the decision cache; 0 disables it. The cache is keyed
	// by (source, target, action, resource, policy revision) and emptied on
	// every policy load; it is bypassed when a policy calls a
	// non-deterministic built-in such as time.now_ns or http.send.
	CacheSize int
	// Metrics, when set, counts decisions; nil records nothing.
	Metrics *Metrics
}

// Engine decides admission with the currently loaded policy set. Decide is
// safe for concurrent use; Load swaps the policy set atomically, so a decision
// sees either the old set or the new one, never a mix.
type Engine struct {
	cfg   EngineConfig
	set   atomic.Pointer[policySet]
	log   *DecisionLog
	cache *decisionCache
	// claimsTerms remembers the Rego form of recently seen identities.
	claimsTerms *claimsMemo
	// boot makes decision ids unique across restarts of the same node.
	boot string
}

// policySet is an immutable, prepared set of policies at one revision.
type policySet struct {
	revision  uint64
	policies  []preparedPolicy
	cacheable bool
}

type preparedPolicy struct {
	id      string
	mode    policies.Mode
	allow   rego.PreparedEvalQuery
	reasons rego.PreparedEvalQuery
}

// NewEngine returns an engine with no policy loaded: until Load succeeds,
// every decision is a deny with reason no_policy_loaded.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if cfg.Clock == nil {
		return nil, fmt.Errorf("engine config: Clock is required")
	}
	if cfg.Logger == nil {
		return nil, fmt.Errorf("engine config: Logger is required")
	}
	if cfg.CacheSize < 0 {
		return nil, fmt.Errorf("engine config: CacheSize %d must not be negative", cfg.CacheSize)
	}
	log := cfg.Log
	if log == nil {
		log = NewDecisionLog(DefaultDecisionLogSize)
	}
	e := &Engine{cfg: cfg, log: log, boot: newBootID(), claimsTerms: newClaimsMemo(claimsMemoSize)}
	if cfg.CacheSize > 0 {
		e.cache = newDecisionCache(cfg.CacheSize)
	}
	return e, nil
}

// Log returns the engine's decision log.
func (e *Engine) Log() *DecisionLog { return e.log }

// Revision returns the revision of the loaded policy set (0: none loaded).
func (e *Engine) Revision() uint64 {
	if s := e.set.Load(); s != nil {
		return s.revision
	}
	return 0
}

// Load compiles and prepares every policy and then replaces the active set.
// On any error the active set is left unchanged and the error names the
// policy. Loading an older revision than the active one is ignored, because
// a snapshot restore and a concurrent write may race to call Load.
func (e *Engine) Load(ctx context.Context, revision uint64, ps []policies.Policy) error {
	if cur := e.set.Load(); cur != nil && revision < cur.revision {
		return nil
	}
	set := &policySet{revision: revision, cacheable: true}
	for _, p := range ps {
		pp, deterministic, err := prepare(ctx, p)
		if err != nil {
			return err
		}
		set.policies = append(set.policies, pp)
		set.cacheable = set.cacheable && deterministic
	}
	sort.Slice(set.policies, func(i, j int) bool { return set.policies[i].id < set.policies[j].id })
	e.set.Store(set)
	if e.cache != nil {
		e.cache.reset()
	}
	ids := make([]string, len(set.policies))
	for i, p := range set.policies {
		ids[i] = p.id + ":" + string(p.mode)
	}
	e.cfg.Logger.Info("admission policies loaded", "policy_revision", revision, "policies", ids, "cacheable", set.cacheable)
	if e.cfg.Metrics != nil {
		e.cfg.Metrics.policyRevision.Set(float64(revision))
	}
	return nil
}

func prepare(ctx context.Context, p policies.Policy) (preparedPolicy, bool, error) {
	c, err := policies.Compile(p.ID, p.Rego)
	if err != nil {
		return preparedPolicy{}, false, fmt.Errorf("policy %q: %w", p.ID, err)
	}
	mode := p.Mode
	if mode != policies.ModeEnforce && mode != policies.ModeAudit {
		return preparedPolicy{}, false, fmt.Errorf("policy %q: unknown mode %q", p.ID, mode)
	}
	q := func(rule string) (rego.PreparedEvalQuery, error) {
		return rego.New(
			rego.Query(policies.Query+"."+rule),
			rego.Compiler(c.Compiler),
			rego.StrictBuiltinErrors(true),
		).PrepareForEval(ctx)
	}
	allow, err := q("allow")
	if err != nil {
		return preparedPolicy{}, false, fmt.Errorf("policy %q: prepare allow: %w", p.ID, err)
	}
	reasons, err := q("reasons")
	if err != nil {
		return preparedPolicy{}, false, fmt.Errorf("policy %q: prepare reasons: %w", p.ID, err)
	}
	return preparedPolicy{id: p.ID, mode: mode, allow: allow, reasons: reasons}, deterministic(c.Module), nil
}

// deterministic reports whether a module calls no non-deterministic built-in
// (time.now_ns, http.send, rand.intn, ...); only then may its decisions be
// cached. Calls nested in terms count too, so every Call is visited.
func deterministic(m *ast.Module) bool {
	ok := true
	check := func(op string) {
		if b, found := ast.BuiltinMap[op]; found && b.Nondeterministic {
			ok = false
		}
		if strings.HasPrefix(op, "time.now") {
			ok = false
		}
	}
	ast.NewGenericVisitor(func(x any) bool {
		switch v := x.(type) {
		case *ast.Expr:
			if v.IsCall() {
				check(v.Operator().String())
			}
		case ast.Call:
			if len(v) > 0 {
				check(v[0].String())
			}
		}
		return !ok
	}).Walk(m)
	return ok
}

// Decide evaluates in against every loaded policy. It never returns an
// error: every failure is a deny whose reason says what went wrong. The
// decision is recorded in the decision log before it is returned.
func (e *Engine) Decide(ctx context.Context, in Input) Decision {
	start := e.cfg.Clock()
	d := Decision{
		Time:     start,
		Source:   in.Source,
		Target:   in.Target,
		Action:   in.Action,
		Resource: in.Resource,
	}
	set := e.set.Load()
	switch {
	case set == nil || len(set.policies) == 0:
		d.deny(ReasonNoPolicy, "no admission policy is loaded")
	case in.Action == "":
		d.PolicyRevision = set.revision
		d.deny(ReasonBadInput, "action is empty")
	case !wellFormed(&in.Source) || !wellFormed(&in.Target):
		d.PolicyRevision = set.revision
		d.deny(ReasonBadInput, "source or target lacks a claim or has an unknown role")
	default:
		d.PolicyRevision = set.revision
		e.evaluate(ctx, set, in, &d, start)
	}
	d.Latency = e.cfg.Clock().Sub(start)
	e.log.append(&d, e.boot)
	e.cfg.Metrics.observe(&d)
	e.log.write(e.cfg.Logger, &d)
	return d
}

// wellFormed checks the claims every policy may rely on without checking:
// cluster, env, datacenter and node are set and the role is known. Claims
// from the identity parser always are; this guards callers that build them.
func wellFormed(c *Claims) bool {
	return c.Cluster != "" && c.Env != "" && c.Datacenter != "" && c.Node != "" && c.Role.Valid()
}

func (e *Engine) evaluate(ctx context.Context, set *policySet, in Input, d *Decision, now time.Time) {
	var key string
	useCache := e.cache != nil && set.cacheable
	if useCache {
		key = cacheKey(set.revision, in)
		if c, ok := e.cache.get(key); ok {
			d.apply(c)
			d.Cached = true
			return
		}
	}
	input, err := e.inputValue(in)
	if err != nil {
		d.deny(ReasonBadInput, err.Error())
		return
	}
	results := make([]PolicyResult, 0, len(set.policies))
	for i := range set.policies {
		results = append(results, set.policies[i].eval(ctx, input, now))
	}
	c := combine(results)
	if useCache && c.cacheable {
		e.cache.put(key, c)
	}
	d.apply(c)
}

// outcome is the policy-derived part of a decision, which the cache keeps.
type outcome struct {
	allowed   bool
	result    string
	code      string
	reasons   []string
	policies  []PolicyResult
	cacheable bool
}

func combine(results []PolicyResult) outcome {
	o := outcome{allowed: true, result: ResultAllow, code: ReasonAllowed, policies: results, cacheable: true}
	for _, r := range results {
		if r.Reason == ReasonEvalError {
			// An evaluation error may come from a cancelled context rather
			// than the policy: never remember it.
			o.cacheable = false
		}
		if r.Allowed {
			continue
		}
		for _, s := range r.Reasons {
			o.reasons = append(o.reasons, r.Policy+": "+s)
		}
		switch {
		case r.Mode == policies.ModeEnforce && o.result != ResultDeny:
			o.allowed, o.result, o.code = false, ResultDeny, r.Reason
		case r.Mode == policies.ModeAudit && o.result == ResultAllow:
			o.result, o.code = ResultAuditDeny, r.Reason
		}
	}
	return o
}

func (d *Decision) apply(o outcome) {
	d.Allowed, d.Result, d.ReasonCode = o.allowed, o.result, o.code
	d.Reasons, d.Policies = o.reasons, o.policies
}

func (d *Decision) deny(code, reason string) {
	d.Allowed, d.Result, d.ReasonCode = false, ResultDeny, code
	d.Reasons = []string{reason}
}

func (p *preparedPolicy) eval(ctx context.Context, input ast.Value, now time.Time) PolicyResult {
	r := PolicyResult{Policy: p.id, Mode: p.mode}
	rs, err := p.allow.Eval(ctx, rego.EvalParsedInput(input), rego.EvalTime(now), rego.EvalMetrics(noMetrics))
	switch {
	case err != nil:
		r.Reason = ReasonEvalError
		r.Reasons = []string{"evaluation error: " + err.Error()}
		return r
	case len(rs) == 0 || len(rs[0].Expressions) == 0:
		r.Reason = ReasonUndefined
		r.Reasons = []string{"allow is undefined"}
		return r
	}
	allowed, isBool := rs[0].Expressions[0].Value.(bool)
	if !isBool {
		r.Reason = ReasonNonBoolean
		r.Reasons = []string{fmt.Sprintf("allow is %T, not a boolean", rs[0].Expressions[0].Value)}
		return r
	}
	if allowed {
		r.Allowed, r.Reason = true, ReasonAllowed
		return r
	}
	r.Reason = ReasonPolicyDenied
	r.Reasons = p.denyReasons(ctx, input, now)
	return r
}

// denyReasons reads the policy's optional reasons set. A policy without one
// (or whose reasons fail) still denies; the reason then says so.
func (p *preparedPolicy) denyReasons(ctx context.Context, input ast.Value, now time.Time) []string {
	rs, err := p.reasons.Eval(ctx, rego.EvalParsedInput(input), rego.EvalTime(now), rego.EvalMetrics(noMetrics))
	if err != nil {
		return []string{"denied; reasons failed to evaluate: " + err.Error()}
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return []string{"denied (the policy gives no reasons)"}
	}
	var out []string
	switch v := rs[0].Expressions[0].Value.(type) {
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			} else {
				out = append(out, fmt.Sprint(x))
			}
		}
	case string:
		out = append(out, v)
	default:
		out = append(out, fmt.Sprint(v))
	}
	if len(out) == 0 {
		return []string{"denied (the policy gives no reasons)"}
	}
	sort.Strings(out)
	return out
}

// Terms shared by every input. AST values are immutable once built, so one
// copy serves all decisions; building them per call was a tenth of the
// allocations of a decision.
var (
	termSource   = ast.StringTerm("source")
	termTarget   = ast.StringTerm("target")
	termAction   = ast.StringTerm("action")
	termResource = ast.StringTerm("resource")
	termEmpty    = ast.ObjectTerm()
	// noMetrics spares each evaluation OPA's own timers, which nobody reads.
	noMetrics = metrics.NoOp()
)

// inputValue builds the Rego input directly as an AST value: converting a Go
// struct through JSON would cost more than the evaluation itself.
func (e *Engine) inputValue(in Input) (ast.Value, error) {
	resource := termEmpty
	if in.Resource != nil {
		v, err := ast.InterfaceToValue(in.Resource)
		if err != nil {
			return nil, fmt.Errorf("resource: %w", err)
		}
		resource = ast.NewTerm(v)
	}
	return ast.NewObject(
		ast.Item(termSource, e.claimsTerms.get(in.Source)),
		ast.Item(termTarget, e.claimsTerms.get(in.Target)),
		ast.Item(termAction, ast.StringTerm(in.Action)),
		ast.Item(termResource, resource),
	), nil
}

// Close flushes the decision log's queue to the structured log.
func (e *Engine) Close() { e.log.Close() }
