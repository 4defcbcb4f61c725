package policies

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/types"
)

// MaxPolicyBytes bounds the source of one policy. Policies travel through
// Raft and are recompiled on every node, so a bound keeps one bad write from
// stalling the log; real policies are a few kilobytes.
const MaxPolicyBytes = 1 << 20

// Errors callers tell apart with errors.Is. Every one but ErrInvalidID and
// ErrInvalidMode arrives inside a *CompileError, which also carries the
// location of each problem.
var (
	// ErrInvalidID: a policy id does not match ^[a-z0-9][a-z0-9._-]{0,63}$.
	ErrInvalidID = errors.New("invalid policy id")
	// ErrInvalidMode: a mode other than "enforce" or "audit".
	ErrInvalidMode = errors.New("invalid policy mode")
	// ErrEmptyPolicy: the source is empty or holds only whitespace and
	// comments.
	ErrEmptyPolicy = errors.New("policy is empty")
	// ErrPolicyTooLarge: the source is longer than MaxPolicyBytes.
	ErrPolicyTooLarge = errors.New("policy is too large")
	// ErrWrongPackage: the module does not declare package Package.
	ErrWrongPackage = errors.New("policy declares the wrong package")
	// ErrNoAllow: the module defines no rule named allow.
	ErrNoAllow = errors.New("policy defines no allow rule")
	// ErrBadDecision: allow or reasons is defined with a shape the engine
	// can never accept (allow not boolean, a function, or a partial rule;
	// reasons not a set of strings).
	ErrBadDecision = errors.New("policy decision has the wrong shape")
	// ErrInvalidRego: parsing or compiling the Rego failed (syntax, strict
	// mode, type or safety errors).
	ErrInvalidRego = errors.New("invalid rego")
)

// Problem codes of our own checks. Problems found by OPA keep OPA's codes
// (rego_parse_error, rego_compile_error, rego_type_error, ...).
const (
	CodePolicyEmpty        = "policy_empty"
	CodePolicyTooLarge     = "policy_too_large"
	CodePolicyWrongPackage = "policy_wrong_package"
	CodePolicyNoAllow      = "policy_no_allow"
	CodePolicyBadDecision  = "policy_bad_decision"
)

// Problem is one thing wrong with a policy, at one place in its source. Row
// and Col count from 1; they are 0 when the problem concerns the whole file.
type Problem struct {
	File    string `json:"file"`
	Row     int    `json:"row,omitempty"`
	Col     int    `json:"col,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// err is the sentinel this problem stands for, if any, so that
	// errors.Is sees through a *CompileError.
	err error
}

// String renders the problem as file:row:col: code: message, dropping the
// row and column when the problem has none.
func (p Problem) String() string {
	if p.Row == 0 {
		return fmt.Sprintf("%s: %s: %s", p.File, p.Code, p.Message)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", p.File, p.Row, p.Col, p.Code, p.Message)
}

// CompileError reports every problem found in a policy. It is what the API
// returns as a 400, one entry per location.
type CompileError struct {
	Problems []Problem `json:"problems"`
}

// Error renders one problem per line.
func (e *CompileError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes the sentinel errors of the problems to errors.Is.
func (e *CompileError) Unwrap() []error {
	var errs []error
	for _, p := range e.Problems {
		if p.err != nil && !containsErr(errs, p.err) {
			errs = append(errs, p.err)
		}
	}
	return errs
}

func containsErr(errs []error, err error) bool {
	for _, e := range errs {
		if e == err {
			return true
		}
	}
	return false
}

// Compiled is a policy that passed every check, ready for the engine:
//
//	rego.New(rego.Query(Query), rego.Compiler(c.Compiler),
//		rego.StrictBuiltinErrors(true)).PrepareForEval(ctx)
//
// It is immutable: the compiler holds only this policy's module, so one
// Compiled may be prepared many times, concurrently, and shared between
// goroutines.
type Compiled struct {
	ID string
	// Module is the parsed (not rewritten) module, for tools that inspect or
	// format the source.
	Module *ast.Module
	// Compiler has compiled Module alone, in strict mode.
	Compiler *ast.Compiler
	// Digest is the lowercase hex SHA-256 of the source, so that nodes and
	// logs can tell which exact text decided.
	Digest string
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidateID reports whether id may name a policy: 1 to 64 characters of
// lowercase letters, digits, '.', '_' and '-', starting with a letter or
// digit. The id becomes a file name and a URL path segment, hence the narrow
// alphabet.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("id %q: must match %s: %w", id, idPattern, ErrInvalidID)
	}
	return nil
}

// ParseMode parses a policy mode. The empty string is rejected here: the API
// may read an omitted mode as enforce, but a stored policy always names its
// mode.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeEnforce, ModeAudit:
		return m, nil
	}
	return "", fmt.Errorf("mode %q: must be %q or %q: %w", s, ModeEnforce, ModeAudit, ErrInvalidMode)
}

// Compile checks one policy and compiles it for evaluation. The source must
// be one Rego v1 module declaring package Package and a rule allow; it is
// compiled in strict mode, so unused variables and imports, duplicate
// imports and deprecated built-ins are errors too. Errors are ErrInvalidID
// or a *CompileError, whose problems name the file "<id>.rego".
func Compile(id, src string) (*Compiled, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	file := id + ".rego"
	mod, compiler, err := compilePolicy(file, src)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(src))
	return &Compiled{ID: id, Module: mod, Compiler: compiler, Digest: hex.EncodeToString(sum[:])}, nil
}

// compilePolicy runs every check of Compile on the source of file. The test
// runner uses it too, so that `policy test` rejects what the API would.
func compilePolicy(file, src string) (*ast.Module, *ast.Compiler, error) {
	if len(src) > MaxPolicyBytes {
		return nil, nil, problem(file, nil, CodePolicyTooLarge, ErrPolicyTooLarge,
			"policy is %d bytes, more than the limit of %d", len(src), MaxPolicyBytes)
	}
	if strings.TrimSpace(src) == "" {
		return nil, nil, problem(file, nil, CodePolicyEmpty, ErrEmptyPolicy, "policy source is empty")
	}
	mod, err := parseModule(file, src)
	if err != nil {
		return nil, nil, err
	}
	if err := checkPackage(file, mod); err != nil {
		return nil, nil, err
	}
	if err := checkAllowDeclared(file, mod); err != nil {
		return nil, nil, err
	}
	compiler := newCompiler()
	// Compile rewrites the modules it is given; keep mod as parsed.
	compiler.Compile(map[string]*ast.Module{file: mod.Copy()})
	if compiler.Failed() {
		return nil, nil, fromASTErrors(file, compiler.Errors)
	}
	if err := checkDecisionTypes(file, mod, compiler); err != nil {
		return nil, nil, err
	}
	return mod, compiler, nil
}

// parserOptions are shared by Compile and the test runner: Rego v1 only, and
// METADATA annotations processed so that malformed ones are reported.
func parserOptions() ast.ParserOptions {
	return ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}
}

// newCompiler returns the strict compiler every policy goes through.
func newCompiler() *ast.Compiler {
	return ast.NewCompiler().
		WithStrict(true).
		WithDefaultRegoVersion(ast.RegoV1).
		WithUseTypeCheckAnnotations(true)
}

// parseModule parses one Rego v1 module. A source of only comments is
// ErrEmptyPolicy, told apart before parsing the module because the parser
// reports it as a plain parse error.
func parseModule(file, src string) (*ast.Module, error) {
	stmts, _, err := ast.ParseStatementsWithOpts(file, src, parserOptions())
	if err != nil {
		return nil, fromASTErrors(file, err)
	}
	if len(stmts) == 0 {
		return nil, problem(file, nil, CodePolicyEmpty, ErrEmptyPolicy, "policy holds only comments")
	}
	mod, err := ast.ParseModuleWithOpts(file, src, parserOptions())
	if err != nil {
		return nil, fromASTErrors(file, err)
	}
	if mod == nil {
		return nil, problem(file, nil, CodePolicyEmpty, ErrEmptyPolicy, "policy holds no module")
	}
	return mod, nil
}

func checkPackage(file string, mod *ast.Module) error {
	// Path is data.<package>; drop "data" to compare with the declaration.
	got := strings.TrimPrefix(mod.Package.Path.String(), "data.")
	if got != Package {
		return problem(file, mod.Package.Location, CodePolicyWrongPackage, ErrWrongPackage,
			"package %q found, policies must declare package %q", got, Package)
	}
	return nil
}

// checkAllowDeclared looks for allow before compiling, so that a policy
// missing it gets that one clear message rather than unrelated strict-mode
// noise first.
func checkAllowDeclared(file string, mod *ast.Module) error {
	for _, r := range mod.Rules {
		if ruleName(r) == "allow" {
			return nil
		}
	}
	return problem(file, mod.Package.Location, CodePolicyNoAllow, ErrNoAllow,
		"package %s defines no rule named allow; the engine denies every request without one", Package)
}

// checkDecisionTypes rejects allow and reasons when their shape can never be
// what the engine reads. Types the checker cannot pin down (any) pass: the
// engine denies at evaluation if they turn out wrong.
func checkDecisionTypes(file string, mod *ast.Module, compiler *ast.Compiler) error {
	var probs []Problem
	want := []struct {
		name string
		typ  types.Type
	}{
		{"allow", types.B},
		{"reasons", types.NewSet(types.S)},
	}
	pkg := ast.MustParseRef(Query)
	for _, w := range want {
		r := firstRule(mod, w.name)
		if r == nil {
			continue
		}
		if fn := functionRule(mod, w.name); fn != nil {
			probs = append(probs, newProblem(file, fn.Location, CodePolicyBadDecision, ErrBadDecision,
				"%s must be a rule, not a function", w.name))
			continue
		}
		got := compiler.TypeEnv.Get(pkg.Append(ast.StringTerm(w.name)))
		if got != nil && !mayBe(got, w.typ) {
			probs = append(probs, newProblem(file, r.Location, CodePolicyBadDecision, ErrBadDecision,
				"%s has type %s, the engine needs %s", w.name, types.Sprint(got), types.Sprint(w.typ)))
		}
	}
	if len(probs) > 0 {
		return &CompileError{Problems: probs}
	}
	return nil
}

// mayBe reports whether a value of type got can be of type want: got is want,
// or a union (any) with a member that may be.
func mayBe(got, want types.Type) bool {
	if n, ok := got.(*types.NamedType); ok {
		got = n.Type
	}
	switch g := got.(type) {
	case types.Any:
		if len(g) == 0 {
			return true
		}
		for _, t := range g {
			if mayBe(t, want) {
				return true
			}
		}
		return false
	case *types.Set:
		ws, ok := want.(*types.Set)
		// An empty set literal has no element type: it fits any set.
		return ok && (g.Of() == nil || mayBe(g.Of(), ws.Of()))
	}
	return types.Compare(got, want) == 0
}

func functionRule(mod *ast.Module, name string) *ast.Rule {
	for _, r := range mod.Rules {
		if ruleName(r) == name && len(r.Head.Args) > 0 {
			return r
		}
	}
	return nil
}

func firstRule(mod *ast.Module, name string) *ast.Rule {
	for _, r := range mod.Rules {
		if ruleName(r) == name {
			return r
		}
	}
	return nil
}

// ruleName is the first segment of a rule's head: "allow" for `allow if`,
// "reasons" for `reasons contains x if`.
func ruleName(r *ast.Rule) string {
	ref := r.Head.Ref()
	if len(ref) == 0 {
		return ""
	}
	if v, ok := ref[0].Value.(ast.Var); ok {
		return string(v)
	}
	return ""
}

func problem(file string, loc *ast.Location, code string, sentinel error, format string, args ...any) *CompileError {
	return &CompileError{Problems: []Problem{newProblem(file, loc, code, sentinel, format, args...)}}
}

func newProblem(file string, loc *ast.Location, code string, sentinel error, format string, args ...any) Problem {
	p := Problem{File: file, Code: code, Message: fmt.Sprintf(format, args...), err: sentinel}
	if loc != nil {
		p.Row, p.Col = loc.Row, loc.Col
	}
	return p
}

// fromASTErrors turns OPA's parse and compile errors into a *CompileError,
// keeping each location. Errors of another type, and errors without a file,
// are attributed to file rather than lost.
func fromASTErrors(file string, err error) *CompileError {
	var astErrs ast.Errors
	if !errors.As(err, &astErrs) {
		var one *ast.Error
		if errors.As(err, &one) {
			astErrs = ast.Errors{one}
		}
	}
	if len(astErrs) == 0 {
		return &CompileError{Problems: []Problem{{File: file, Code: "rego_error", Message: err.Error(), err: ErrInvalidRego}}}
	}
	probs := make([]Problem, 0, len(astErrs))
	for _, e := range astErrs {
		p := Problem{File: file, Code: e.Code, Message: e.Message, err: ErrInvalidRego}
		if e.Location != nil {
			p.Row, p.Col = e.Location.Row, e.Location.Col
			if e.Location.File != "" {
				p.File = e.Location.File
			}
		}
		probs = append(probs, p)
	}
	return &CompileError{Problems: probs}
}
