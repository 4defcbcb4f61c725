package policies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/format"
	"github.com/open-policy-agent/opa/v1/rego"
)

const (
	defaultExample       = "../examples/policies/default/policy.rego"
	perDatacenterExample = "../examples/policies/per-datacenter/policy.rego"
)

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestValidateID(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   string
		ok   bool
	}{
		{"the default id is valid", DefaultID, true},
		{"lowercase letters digits dots dashes and underscores are valid", "dc-1.ops_2", true},
		{"a single digit is valid", "7", true},
		{"sixty-four characters are valid", strings.Repeat("a", 64), true},
		{"the empty id is invalid", "", false},
		{"sixty-five characters are invalid", strings.Repeat("a", 65), false},
		{"uppercase letters are invalid", "Default", false},
		{"a leading dot is invalid", ".hidden", false},
		{"a leading dash is invalid", "-x", false},
		{"a slash is invalid", "a/b", false},
		{"a path traversal is invalid", "..", false},
		{"a space is invalid", "a b", false},
		{"a trailing newline is invalid", "a\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateID(tc.id)
			if tc.ok {
				if err != nil {
					t.Fatalf("ValidateID(%q) = %v, want nil", tc.id, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("ValidateID(%q) = %v, want ErrInvalidID", tc.id, err)
			}
			if !strings.HasPrefix(err.Error(), "id ") {
				t.Errorf("error %q does not name the field id first", err)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Mode
		ok   bool
	}{
		{"enforce parses", "enforce", ModeEnforce, true},
		{"audit parses", "audit", ModeAudit, true},
		{"the empty mode is rejected here and defaulted by the API", "", "", false},
		{"modes are case sensitive", "Enforce", "", false},
		{"an unknown mode is rejected", "warn", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMode(tc.in)
			if tc.ok != (err == nil) || got != tc.want {
				t.Fatalf("ParseMode(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
			if err != nil && (!errors.Is(err, ErrInvalidMode) || !strings.HasPrefix(err.Error(), "mode ")) {
				t.Errorf("error %q: want ErrInvalidMode naming the field mode", err)
			}
		})
	}
}

func TestCompileAccepts(t *testing.T) {
	for _, tc := range []struct {
		name, id, src string
	}{
		{"the built-in default policy compiles", DefaultID, DefaultRego},
		{"the default example compiles", "default", readFile(t, defaultExample)},
		{"the per-datacenter example compiles", "per-datacenter", readFile(t, perDatacenterExample)},
		{"a minimal policy with only a default allow compiles", "minimal", "package coordinatord.admission\n\ndefault allow := false\n"},
		{"allow of unknown type compiles and is left to the engine", "any", "package coordinatord.admission\n\nallow := input.allow\n"},
		{"an empty reasons set compiles", "empty-reasons", "package coordinatord.admission\n\nallow := true\n\nreasons := set()\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Compile(tc.id, tc.src)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if c.ID != tc.id || c.Module == nil || c.Compiler == nil || len(c.Digest) != 64 {
				t.Fatalf("Compiled = %+v: want id %q, module, compiler, hex sha256", c, tc.id)
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	const pkg = "package coordinatord.admission\n\n"
	for _, tc := range []struct {
		name string
		src  string
		// want is a substring of the rendered error, which includes the
		// file:row:col prefix when there is a location.
		want     string
		sentinel error
	}{
		{"an empty source is rejected before parsing", "", "x.rego: policy_empty: ", ErrEmptyPolicy},
		{"a blank source is rejected before parsing", " \n\t\n", "x.rego: policy_empty: ", ErrEmptyPolicy},
		{"a source of only comments is empty", "# nothing here\n", "x.rego: policy_empty: ", ErrEmptyPolicy},
		{"a source over MaxPolicyBytes is rejected before parsing", pkg + "allow := true\n" + strings.Repeat("#", MaxPolicyBytes), "x.rego: policy_too_large: ", ErrPolicyTooLarge},
		{"invalid syntax is reported at its file, row and column", pkg + "allow if {\n\tinput.x ==\n}\n", "x.rego:5:1: rego_parse_error: unexpected } token", ErrInvalidRego},
		{"rego v0 syntax is rejected", pkg + "allow { true }\n", "x.rego:3:1: rego_parse_error: `if` keyword is required before rule body", ErrInvalidRego},
		{"an unused variable is rejected by strict mode", pkg + "allow if {\n\tx := 1\n}\n", "x.rego:4:2: rego_compile_error: assigned var x unused", ErrInvalidRego},
		{"an unused import is rejected by strict mode", pkg + "import data.other\n\nallow := true\n", "x.rego:3:1: rego_compile_error: import data.other unused", ErrInvalidRego},
		{"a duplicate import is rejected by strict mode", pkg + "import input.a\nimport input.a\n\nallow := a\n", "x.rego:4:1: rego_compile_error: import must not shadow import input.a", ErrInvalidRego},
		{"a deprecated built-in is rejected", pkg + "allow if any([true])\n", "x.rego:3:10: rego_type_error: deprecated built-in function calls in expression: any", ErrInvalidRego},
		{"an unsafe variable is rejected", pkg + "allow if x > 1\n", "x.rego:3:10: rego_unsafe_var_error: var x is unsafe", ErrInvalidRego},
		{"shadowing input is rejected", pkg + "allow := true\n\ninput := 1\n", "x.rego:5:1: rego_compile_error: rules must not shadow input", ErrInvalidRego},
		{"a missing allow rule is rejected", pkg + "deny := true\n", "x.rego:1:1: policy_no_allow: ", ErrNoAllow},
		{"a wrong package is rejected naming the package found", "package authz\n\nallow := true\n", `x.rego:1:1: policy_wrong_package: package "authz" found`, ErrWrongPackage},
		{"a sub-package of the policy package is rejected", "package coordinatord.admission.extra\n\nallow := true\n", `package "coordinatord.admission.extra" found`, ErrWrongPackage},
		{"a string allow is rejected", pkg + "allow := \"yes\"\n", "x.rego:3:1: policy_bad_decision: allow has type string", ErrBadDecision},
		{"a partial object allow is rejected", pkg + "allow.read := true\n", "x.rego:3:1: policy_bad_decision: allow has type object", ErrBadDecision},
		{"allow as a function is rejected", pkg + "allow(_) := true\n", "x.rego:3:1: policy_bad_decision: allow must be a rule, not a function", ErrBadDecision},
		{"reasons of numbers is rejected", pkg + "allow := true\n\nreasons contains 1\n", "x.rego:5:1: policy_bad_decision: reasons has type set[number]", ErrBadDecision},
		{"reasons as an object is rejected", pkg + "allow := true\n\nreasons := {\"a\": \"b\"}\n", "x.rego:5:1: policy_bad_decision: reasons has type object", ErrBadDecision},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Compile("x", tc.src)
			if err == nil {
				t.Fatalf("Compile succeeded (%v), want an error containing %q", c, tc.want)
			}
			if !errors.Is(err, tc.sentinel) {
				t.Errorf("errors.Is(err, %v) = false; err = %v", tc.sentinel, err)
			}
			var ce *CompileError
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("err = %T %v, want a *CompileError with problems", err, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error\n%s\ndoes not contain %q", err, tc.want)
			}
			for _, p := range ce.Problems {
				if p.File != "x.rego" || p.Code == "" || p.Message == "" {
					t.Errorf("problem %+v: want file x.rego, a code and a message", p)
				}
			}
		})
	}
}

func TestCompileRejectsAnInvalidIDBeforeReadingTheSource(t *testing.T) {
	_, err := Compile("../etc/passwd", "")
	if !errors.Is(err, ErrInvalidID) || errors.Is(err, ErrEmptyPolicy) {
		t.Fatalf("err = %v, want ErrInvalidID only", err)
	}
}

func TestCompileErrorRendersOneProblemPerLine(t *testing.T) {
	err := &CompileError{Problems: []Problem{
		{File: "a.rego", Row: 3, Col: 7, Code: "rego_parse_error", Message: "unexpected } token"},
		{File: "a.rego", Code: "policy_empty", Message: "policy source is empty", err: ErrEmptyPolicy},
	}}
	want := "a.rego:3:7: rego_parse_error: unexpected } token\na.rego: policy_empty: policy source is empty"
	if err.Error() != want {
		t.Fatalf("Error() =\n%s\nwant\n%s", err, want)
	}
	if !errors.Is(err, ErrEmptyPolicy) || errors.Is(err, ErrNoAllow) {
		t.Fatal("errors.Is must see exactly the sentinels of the problems")
	}
}

func TestCompileLeavesTheModuleAsParsedAndDigestsTheSource(t *testing.T) {
	src := "package coordinatord.admission\n\nallow if input.action == \"x\"\n"
	a, err := Compile("a", src)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ast.ParseModuleWithOpts("a.rego", src, parserOptions())
	if err != nil {
		t.Fatal(err)
	}
	if !a.Module.Equal(want) {
		t.Errorf("Module was rewritten by compilation:\n%v\nwant\n%v", a.Module, want)
	}
	b, _ := Compile("b", src+"\n")
	if a.Digest == b.Digest {
		t.Error("different sources share a digest")
	}
	if sum := sha256.Sum256([]byte(src)); a.Digest != hex.EncodeToString(sum[:]) {
		t.Errorf("Digest %q is not the hex sha256 of the source", a.Digest)
	}
}

// prepare does what the engine does with a Compiled.
func prepare(t testing.TB, c *Compiled) rego.PreparedEvalQuery {
	t.Helper()
	pq, err := rego.New(
		rego.Query(Query),
		rego.Compiler(c.Compiler),
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(context.Background())
	if err != nil {
		t.Fatalf("PrepareForEval: %v", err)
	}
	return pq
}

// decide evaluates pq on input and returns allow and reasons.
func decide(t testing.TB, pq rego.PreparedEvalQuery, input map[string]any) (bool, []string, error) {
	t.Helper()
	rs, err := pq.Eval(context.Background(), rego.EvalInput(input))
	if err != nil {
		return false, nil, err
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		t.Fatalf("result set %v: want one result", rs)
	}
	doc, _ := rs[0].Expressions[0].Value.(map[string]any)
	allow, _ := doc["allow"].(bool)
	var reasons []string
	raw, _ := doc["reasons"].([]any)
	for _, r := range raw {
		reasons = append(reasons, r.(string))
	}
	return allow, reasons, nil
}

func peerClaims(role, dc string) map[string]any {
	return map[string]any{
		"cluster": "blue", "env": "prod", "role": role, "datacenter": dc,
		"node": role + "-1", "spiffe_id": "spiffe://coordinatord.local/cluster/blue/env/prod/role/" + role + "/dc/" + dc + "/node/" + role + "-1",
		"serial": "01", "not_after": "2030-01-01T00:00:00Z",
	}
}

func request(source, target, action string) map[string]any {
	return map[string]any{
		"source": peerClaims(source, "dc1"), "target": peerClaims(target, "dc1"),
		"action": action, "resource": map[string]any{"kind": "policy", "id": "default"},
	}
}

func TestPreparedDefaultPolicyDecides(t *testing.T) {
	c, err := Compile(DefaultID, Default().Rego)
	if err != nil {
		t.Fatal(err)
	}
	pq := prepare(t, c)
	for _, tc := range []struct {
		name    string
		input   map[string]any
		allow   bool
		reasons []string
	}{
		{"a client may connect to a gate", request("client", "gate", "connect"), true, nil},
		{"an admin may write a policy", request("admin", "coordinator", "policy.write"), true, nil},
		{"a worker may not connect to a gate", request("worker", "gate", "connect"), false,
			[]string{`role pair worker->gate is not allowed for action "connect"`}},
		{"a worker may not write a policy", request("worker", "coordinator", "policy.write"), false,
			[]string{`action "policy.write" is not allowed for role "worker"`}},
		{"an unknown action is denied", request("admin", "coordinator", "x"), false, []string{`unknown action "x"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allow, reasons, err := decide(t, pq, tc.input)
			if err != nil {
				t.Fatal(err)
			}
			if allow != tc.allow || strings.Join(reasons, "\n") != strings.Join(tc.reasons, "\n") {
				t.Fatalf("allow=%v reasons=%q; want allow=%v reasons=%q", allow, reasons, tc.allow, tc.reasons)
			}
		})
	}
}

func TestABuiltinErrorMakesEvalFailUnderStrictBuiltinErrors(t *testing.T) {
	c, err := Compile("div", "package coordinatord.admission\n\nallow if {\n\tx := 1 / input.n\n\tx > 0\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = decide(t, prepare(t, c), map[string]any{"n": 0})
	if err == nil || !strings.Contains(err.Error(), "divide by zero") {
		t.Fatalf("Eval error = %v, want a divide by zero error", err)
	}
	allow, _, err := decide(t, prepare(t, c), map[string]any{"n": 2})
	if err != nil || !allow {
		t.Fatalf("with n=2: allow=%v err=%v, want true, nil", allow, err)
	}
}

func TestOneCompiledPolicyIsPreparedAndEvaluatedConcurrently(t *testing.T) {
	c, err := Compile(DefaultID, DefaultRego)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			pq := prepare(t, c)
			action := []string{"connect", "policy.write"}[i%2]
			for range 20 {
				allow, _, err := decide(t, pq, request("client", "gate", action))
				if err != nil || allow != (action == "connect") {
					t.Errorf("%s: allow=%v err=%v", action, allow, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// The per-datacenter example repeats the default's tables; this guards
// against the copies drifting into a policy that allows more.
func TestThePerDatacenterExampleNeverAllowsWhatTheDefaultDenies(t *testing.T) {
	def, err := Compile(DefaultID, DefaultRego)
	if err != nil {
		t.Fatal(err)
	}
	perDC, err := Compile("per-datacenter", readFile(t, perDatacenterExample))
	if err != nil {
		t.Fatal(err)
	}
	defQ, perDCQ := prepare(t, def), prepare(t, perDC)
	roles := []string{"client", "gate", "manager", "worker", "admin", "coordinator"}
	actions := []string{"connect", "raft", "gossip", "admission.check", "metrics.read", "policy.read",
		"policy.write", "policy.delete", "decisions.read", "cluster.join", "cluster.read", "cluster.write",
		"lease.acquire", "lease.renew", "lease.release", "lease.read", "lease.check", "lease.force",
		"module.read", "module.invoke", "module.write", "job.report", "job.read", "datacenter.read", "bogus"}
	sameDCAgree := 0
	for _, s := range roles {
		for _, tg := range roles {
			for _, a := range actions {
				for _, dcs := range [][2]string{{"ops-1", "ops-1"}, {"dc1", "dc2"}} {
					in := request(s, tg, a)
					in["source"] = peerClaims(s, dcs[0])
					in["target"] = peerClaims(tg, dcs[1])
					d, _, err1 := decide(t, defQ, in)
					p, _, err2 := decide(t, perDCQ, in)
					if err1 != nil || err2 != nil {
						t.Fatalf("%s->%s %s: %v %v", s, tg, a, err1, err2)
					}
					if p && !d {
						t.Errorf("%s(%s)->%s(%s) %s: per-datacenter allows what the default denies", s, dcs[0], tg, dcs[1], a)
					}
					if dcs[0] == dcs[1] && p != d {
						t.Errorf("%s->%s %s within ops-1: per-datacenter=%v default=%v, want equal", s, tg, a, p, d)
					}
					if dcs[0] == dcs[1] && p == d {
						sameDCAgree++
					}
				}
			}
		}
	}
	if sameDCAgree == 0 {
		t.Fatal("compared nothing")
	}
}

func TestTheDefaultExampleIsTheBuiltInPolicy(t *testing.T) {
	// examples/policies/default/policy.rego is a symlink to default.rego;
	// should a checkout turn it into a copy (core.symlinks=false), this
	// still holds it to the same bytes.
	if got := readFile(t, defaultExample); got != DefaultRego {
		t.Fatal("examples/policies/default/policy.rego differs from the embedded default.rego")
	}
	p := Default()
	if p.ID != DefaultID || p.Mode != ModeEnforce || p.Rego != DefaultRego {
		t.Fatalf("Default() = %+v", p)
	}
}

func TestEveryRegoFileIsFormattedLikeOpaFmt(t *testing.T) {
	var files []string
	for _, root := range []string{".", "../examples/policies"} {
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if strings.HasSuffix(path, ".rego") {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		src := readFile(t, f)
		out, err := format.SourceWithOpts(f, []byte(src), format.Opts{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if string(out) != src {
			t.Errorf("%s is not formatted; run opa fmt -w on it", f)
		}
	}
}
