package policies

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// ErrNoTests: the paths hold no test_ rule, or none matches the filter. A run
// that tested nothing is an error rather than a pass, so that a mistyped
// path fails in CI.
var ErrNoTests = errors.New("no policy tests found")

// DefaultTestTimeout bounds one test rule when TestOptions.Timeout is zero.
const DefaultTestTimeout = 5 * time.Second

// TestOptions tunes RunTests. The zero value runs every test with
// DefaultTestTimeout and prints one line per test.
type TestOptions struct {
	// Verbose prints the output of print() for every test, not only for
	// failed ones, and the values of the variables of the expression a
	// failed test failed at.
	Verbose bool
	// Filter, when not empty, is a regular expression; only tests whose full
	// name (data.<package>.<rule>) it matches are run.
	Filter string
	// Timeout bounds each test rule; zero means DefaultTestTimeout.
	Timeout time.Duration
}

// TestSummary counts the outcomes of a test run.
type TestSummary struct {
	Passed, Failed, Errored, Skipped int
}

// Total is the number of tests run or skipped.
func (s TestSummary) Total() int { return s.Passed + s.Failed + s.Errored + s.Skipped }

// OK reports whether no test failed or raised an error. Skipped (todo_test_)
// tests do not make a run fail.
func (s TestSummary) OK() bool { return s.Failed == 0 && s.Errored == 0 }

// RunTests runs the Rego unit tests found under paths, like `opa test`, and
// writes a report to w: one line per test (PASS, FAIL, ERROR or SKIP, the
// rule's full name and its duration) and then the totals.
//
// Paths are .rego files or directories searched recursively for .rego files
// (symlinked files are followed, symlinked directories are not; names
// starting with "." are skipped). Each directory is one compilation unit:
// every policy declares the same package and policies are evaluated
// independently, so two policies may not share a directory, and the tests of
// a policy live beside it. Modules are parsed as Rego v1 and compiled in
// strict mode; a module that declares package Package and is not a
// *_test.rego file must also pass Compile on its own, so that a policy whose
// tests pass is one the API accepts. Tests run with built-in errors raised,
// as the engine evaluates.
//
// Load and compile problems of every unit are found before any test runs
// and returned as a *CompileError naming file:row:col. A run that finds no
// test returns ErrNoTests. Failing tests are not an error: check
// TestSummary.OK.
func RunTests(ctx context.Context, paths []string, w io.Writer, opts TestOptions) (TestSummary, error) {
	var sum TestSummary
	if opts.Filter != "" {
		if _, err := regexp.Compile(opts.Filter); err != nil {
			return sum, fmt.Errorf("filter %q: %w", opts.Filter, err)
		}
	}
	if opts.Timeout < 0 {
		return sum, fmt.Errorf("timeout %v: must not be negative", opts.Timeout)
	}
	units, err := findUnits(paths)
	if err != nil {
		return sum, err
	}
	if err := loadUnits(units); err != nil {
		return sum, err
	}
	for _, u := range units {
		if err := runUnit(ctx, u, w, opts, &sum); err != nil {
			return sum, err
		}
	}
	if sum.Total() == 0 {
		return sum, fmt.Errorf("%s: %w", strings.Join(paths, ", "), ErrNoTests)
	}
	writeSummary(w, sum)
	return sum, nil
}

// testUnit is the .rego files of one directory, compiled together.
type testUnit struct {
	dir     string
	files   []string
	modules map[string]*ast.Module
}

// findUnits lists the .rego files under paths, grouped by directory, in a
// stable order.
func findUnits(paths []string) ([]*testUnit, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("no paths given: %w", ErrNoTests)
	}
	byDir := map[string]*testUnit{}
	seen := map[string]bool{}
	add := func(file string) {
		file = filepath.Clean(file)
		if seen[file] {
			return
		}
		seen[file] = true
		dir := filepath.Dir(file)
		u := byDir[dir]
		if u == nil {
			u = &testUnit{dir: dir}
			byDir[dir] = u
		}
		u.files = append(u.files, file)
	}
	for _, root := range paths {
		info, err := os.Stat(root)
		if err != nil {
			return nil, fmt.Errorf("policy test path: %w", err)
		}
		if !info.IsDir() {
			if filepath.Ext(root) != ".rego" {
				return nil, fmt.Errorf("policy test path %s: not a .rego file or a directory", root)
			}
			add(root)
			continue
		}
		// WalkDir does not follow a root that is itself a symlink.
		walkRoot := root
		if l, err := os.Lstat(root); err == nil && l.Mode()&fs.ModeSymlink != 0 {
			if walkRoot, err = filepath.EvalSymlinks(root); err != nil {
				return nil, fmt.Errorf("policy test path: %w", err)
			}
		}
		err = filepath.WalkDir(walkRoot, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path != walkRoot && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() || filepath.Ext(path) != ".rego" {
				return nil
			}
			if d.Type()&fs.ModeSymlink != 0 {
				// Follow a symlinked file (the default example links to the
				// built-in policy), but not one that points at a directory.
				target, err := os.Stat(path)
				if err != nil {
					return fmt.Errorf("policy test path: %w", err)
				}
				if !target.Mode().IsRegular() {
					return nil
				}
			}
			add(path)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("walking %s: %w", root, err)
		}
	}
	units := make([]*testUnit, 0, len(byDir))
	for _, u := range byDir {
		slices.Sort(u.files)
		units = append(units, u)
	}
	slices.SortFunc(units, func(a, b *testUnit) int { return cmp.Compare(a.dir, b.dir) })
	if len(units) == 0 {
		return nil, fmt.Errorf("no .rego files in %s: %w", strings.Join(paths, ", "), ErrNoTests)
	}
	return units, nil
}

// loadUnits parses every file, checks each policy module as Compile would,
// and compiles each unit, collecting the problems of all of them so that one
// run reports everything there is to fix.
func loadUnits(units []*testUnit) error {
	var probs []Problem
	for _, u := range units {
		before := len(probs)
		u.modules = make(map[string]*ast.Module, len(u.files))
		for _, file := range u.files {
			src, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("reading policy test file: %w", err)
			}
			mod, err := ast.ParseModuleWithOpts(file, string(src), parserOptions())
			if err != nil {
				probs = append(probs, fromASTErrors(file, err).Problems...)
				continue
			}
			if mod == nil {
				probs = append(probs, newProblem(file, nil, CodePolicyEmpty, ErrEmptyPolicy, "file holds no Rego module"))
				continue
			}
			u.modules[file] = mod
			if isPolicyFile(file, mod) {
				var ce *CompileError
				if _, _, err := compilePolicy(file, string(src)); errors.As(err, &ce) {
					probs = append(probs, ce.Problems...)
					continue
				}
			}
		}
		if len(probs) > before {
			continue // compiling would only repeat the problems found
		}
		c := newTestCompiler()
		if c.Compile(u.modules); c.Failed() {
			probs = append(probs, fromASTErrors(u.dir, c.Errors).Problems...)
		}
	}
	if len(probs) > 0 {
		return &CompileError{Problems: probs}
	}
	return nil
}

// isPolicyFile reports whether file is a policy rather than its tests or a
// helper module: it declares package Package and is not named *_test.rego.
func isPolicyFile(file string, mod *ast.Module) bool {
	return !strings.HasSuffix(file, "_test.rego") && mod.Package.Path.String() == Query
}

// newTestCompiler is newCompiler with print() kept, for debugging tests.
func newTestCompiler() *ast.Compiler {
	return newCompiler().WithEnablePrintStatements(true)
}

func newRunner(u *testUnit, opts TestOptions, filter string, trace bool) *tester.Runner {
	return tester.NewRunner().
		SetCompiler(newTestCompiler()).
		SetModules(u.modules).
		SetDefaultRegoVersion(ast.RegoV1).
		RaiseBuiltinErrors(true).
		CapturePrintOutput(true).
		EnableTracing(trace).
		SetTimeout(cmp.Or(opts.Timeout, DefaultTestTimeout)).
		Filter(filter)
}

// runTests runs the tests of u that match filter and returns their results
// in source order (the runner sends them in completion order).
func runTests(ctx context.Context, u *testUnit, opts TestOptions, filter string, trace bool) ([]*tester.Result, error) {
	ch, err := newRunner(u, opts, filter, trace).RunTests(ctx, nil)
	if err != nil {
		// loadUnits compiled the same modules; this is a safety net.
		return nil, fmt.Errorf("compiling %s: %w", u.dir, fromASTErrors(u.dir, err))
	}
	var results []*tester.Result
	for r := range ch {
		results = append(results, r)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("policy tests in %s: %w", u.dir, err)
	}
	slices.SortFunc(results, func(a, b *tester.Result) int {
		return cmp.Or(cmp.Compare(a.Location.File, b.Location.File),
			cmp.Compare(a.Location.Row, b.Location.Row),
			cmp.Compare(a.Name, b.Name))
	})
	return results, nil
}

func runUnit(ctx context.Context, u *testUnit, w io.Writer, opts TestOptions, sum *TestSummary) error {
	// Tracing slows evaluation several times over, so tests run without it
	// and only the failed ones run again with it, to show where they failed.
	results, err := runTests(ctx, u, opts, opts.Filter, false)
	if err != nil || len(results) == 0 {
		return err
	}
	traces := failureTraces(ctx, u, opts, results)
	fmt.Fprintf(w, "%s:\n", u.dir)
	for _, r := range results {
		writeResult(w, r, traces[fullName(r)], opts.Verbose)
		switch {
		case r.Skip:
			sum.Skipped++
		case r.Error != nil:
			sum.Errored++
		case r.Fail:
			sum.Failed++
		default:
			sum.Passed++
		}
	}
	return nil
}

// failureTraces runs the failed tests among results again with tracing and
// returns their traces by full name. It is best effort: a rerun that errors
// or times out only loses the detail.
func failureTraces(ctx context.Context, u *testUnit, opts TestOptions, results []*tester.Result) map[string][]*topdown.Event {
	var names []string
	for _, r := range results {
		if r.Fail && r.Error == nil && !r.Skip {
			names = append(names, regexp.QuoteMeta(fullName(r)))
		}
	}
	if len(names) == 0 {
		return nil
	}
	reruns, err := runTests(ctx, u, opts, "^("+strings.Join(names, "|")+")$", true)
	if err != nil {
		return nil
	}
	traces := make(map[string][]*topdown.Event, len(reruns))
	for _, r := range reruns {
		if r.Fail && r.Error == nil {
			traces[fullName(r)] = r.Trace
		}
	}
	return traces
}

func fullName(r *tester.Result) string { return r.Package + "." + r.Name }

func writeResult(w io.Writer, r *tester.Result, trace []*topdown.Event, verbose bool) {
	name := fullName(r)
	switch {
	case r.Skip:
		fmt.Fprintf(w, "SKIP  %s\n", name)
		return
	case r.Error != nil:
		fmt.Fprintf(w, "ERROR %s (%v)\n", name, r.Duration.Round(time.Microsecond))
		fmt.Fprintf(w, "      %s\n", indent(errorText(r.Error)))
	case r.Fail:
		fmt.Fprintf(w, "FAIL  %s (%v)\n", name, r.Duration.Round(time.Microsecond))
		if !writeFailureLine(w, trace, verbose) {
			fmt.Fprintf(w, "      %s:%d: test rule is false or undefined\n", r.Location.File, r.Location.Row)
		}
	default:
		fmt.Fprintf(w, "PASS  %s (%v)\n", name, r.Duration.Round(time.Microsecond))
	}
	// print() output says most about a failure; for passing tests it is noise
	// unless asked for.
	if out := bytes.TrimRight(r.Output, "\n"); len(out) > 0 && (verbose || !r.Pass()) {
		fmt.Fprintf(w, "      output:\n      %s\n", indent(string(out)))
	}
}

// errorText renders an evaluation error with its location when it has one.
// Built-in errors raised by RaiseBuiltinErrors are topdown.Error values;
// the timeout is one too (eval_cancel_error).
func errorText(err error) string {
	var te *topdown.Error
	if errors.As(err, &te) && te.Location != nil {
		return fmt.Sprintf("%s:%d:%d: %s: %s", te.Location.File, te.Location.Row, te.Location.Col, te.Code, te.Message)
	}
	return err.Error()
}

// writeFailureLine prints the last expression that failed in the test's
// own query, the way `opa test --var-values` does; verbose adds the values
// of its variables. It reports whether the trace had such an expression.
func writeFailureLine(w io.Writer, trace []*topdown.Event, verbose bool) bool {
	for _, e := range slices.Backward(trace) {
		if e.Op != topdown.FailOp || e.Location == nil || e.QueryID == 0 {
			continue
		}
		if expr, ok := e.Node.(*ast.Expr); ok {
			if _, isEvery := expr.Terms.(*ast.Every); isEvery {
				continue // the failing expression inside the body says more
			}
		}
		var buf bytes.Buffer
		if err := topdown.PrettyEvent(&buf, e, topdown.PrettyEventOpts{PrettyVars: verbose}); err != nil {
			return false
		}
		fmt.Fprintf(w, "      failed at %s:%d:\n      %s\n", e.Location.File, e.Location.Row,
			indent(strings.TrimSpace(buf.String())))
		return true
	}
	return false
}

func indent(s string) string {
	return strings.ReplaceAll(s, "\n", "\n      ")
}

// writeSummary prints the totals the way `opa test` does: PASS always, and
// FAIL, ERROR and SKIPPED when there are any.
func writeSummary(w io.Writer, s TestSummary) {
	total := s.Total()
	fmt.Fprintln(w, strings.Repeat("-", 80))
	fmt.Fprintf(w, "PASS: %d/%d\n", s.Passed, total)
	for _, c := range []struct {
		label string
		n     int
	}{{"FAIL", s.Failed}, {"ERROR", s.Errored}, {"SKIPPED", s.Skipped}} {
		if c.n > 0 {
			fmt.Fprintf(w, "%s: %d/%d\n", c.label, c.n, total)
		}
	}
}
