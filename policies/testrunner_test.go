package policies

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeTree writes files (path relative to a new temporary directory ->
// content) and returns the directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	tinyPolicy = "package coordinatord.admission\n\ndefault allow := false\n\nallow if input.action == \"ok\"\n"
	tinyTests  = "package coordinatord.admission_test\n\nimport data.coordinatord.admission\n\n" +
		"test_ok_is_allowed if admission.allow with input as {\"action\": \"ok\"}\n\n" +
		"test_other_is_denied if not admission.allow with input as {\"action\": \"other\"}\n"
)

func TestRunTestsPassesOnTheExamples(t *testing.T) {
	for _, tc := range []struct {
		name  string
		paths []string
	}{
		{"the default example passes, loaded through its symlink", []string{"../examples/policies/default"}},
		{"the per-datacenter example passes", []string{"../examples/policies/per-datacenter"}},
		{"both examples pass in one run, each directory compiled on its own", []string{"../examples/policies"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			// The examples' grid tests take a fraction of a second, but far
			// longer under -race on a busy machine: the default 5s per test
			// is not what this test is about.
			sum, err := RunTests(context.Background(), tc.paths, &out, TestOptions{Timeout: 2 * time.Minute})
			if err != nil {
				t.Fatalf("RunTests: %v\n%s", err, &out)
			}
			if !sum.OK() || sum.Passed < 10 || sum.Total() != sum.Passed {
				t.Fatalf("summary %+v, want only passes\n%s", sum, &out)
			}
			want := regexp.MustCompile(`(?m)^PASS: ` + strconv.Itoa(sum.Passed) + `/` + strconv.Itoa(sum.Passed) + `$`)
			if !want.Match(out.Bytes()) {
				t.Errorf("output lacks the summary line %s:\n%s", want, &out)
			}
			if n := strings.Count(out.String(), "\nPASS  data."); n != sum.Passed {
				t.Errorf("%d PASS lines for %d passed tests:\n%s", n, sum.Passed, &out)
			}
		})
	}
}

func TestRunTestsReportsEachOutcome(t *testing.T) {
	var out bytes.Buffer
	sum, err := RunTests(context.Background(), []string{"testdata/failing"}, &out, TestOptions{})
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	if want := (TestSummary{Passed: 1, Failed: 1, Errored: 1, Skipped: 1}); sum != want || sum.OK() {
		t.Fatalf("summary %+v (OK=%v), want %+v and not OK\n%s", sum, sum.OK(), want, &out)
	}
	for _, line := range []string{
		"PASS  data.coordinatord.admission_test.test_passes (",
		"FAIL  data.coordinatord.admission_test.test_fails (",
		// The failing expression comes from a traced rerun of the test.
		"failed at testdata/failing/policy_test.rego:11:",
		"ERROR data.coordinatord.admission_test.test_raises_a_builtin_error (",
		"testdata/failing/policy.rego:8:10: eval_builtin_error: div: divide by zero",
		"SKIP  data.coordinatord.admission_test.todo_test_is_skipped",
		"PASS: 1/4\nFAIL: 1/4\nERROR: 1/4\nSKIPPED: 1/4\n",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, &out)
		}
	}
}

func TestRunTestsRejectsWhatCannotBeLoaded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		files    map[string]string
		paths    func(dir string) []string
		want     []string // substrings of the error; "DIR" is replaced
		sentinel error
	}{
		{
			name:     "a syntax error is reported at its file, row and column",
			files:    map[string]string{"p/policy.rego": tinyPolicy + "\nallow if {\n\tinput.x ==\n}\n", "p/policy_test.rego": tinyTests},
			want:     []string{"DIR/p/policy.rego:9:1: rego_parse_error: unexpected } token"},
			sentinel: ErrInvalidRego,
		},
		{
			name:     "an unused variable in a test is rejected by strict mode",
			files:    map[string]string{"p/policy.rego": tinyPolicy, "p/policy_test.rego": tinyTests + "\ntest_x if {\n\tx := 1\n\tadmission.allow\n}\n"},
			want:     []string{"DIR/p/policy_test.rego:10:2: rego_compile_error: assigned var x unused"},
			sentinel: ErrInvalidRego,
		},
		{
			name:     "a policy the API would refuse is refused even when its tests pass",
			files:    map[string]string{"p/policy.rego": "package coordinatord.admission\n\ndeny := false\n", "p/policy_test.rego": "package coordinatord.admission_test\n\nimport data.coordinatord.admission\n\ntest_deny if admission.deny == false\n"},
			want:     []string{"DIR/p/policy.rego:1:1: policy_no_allow: "},
			sentinel: ErrNoAllow,
		},
		{
			name: "problems in every directory are reported together",
			files: map[string]string{
				"a/policy.rego": "package coordinatord.admission\n\nallow := \"yes\"\n",
				"b/policy.rego": "package coordinatord.admission\n\nallow if {\n",
			},
			want:     []string{"DIR/a/policy.rego:3:1: policy_bad_decision: ", "DIR/b/policy.rego:"},
			sentinel: ErrBadDecision,
		},
		{
			name:     "a directory without tests is an error, not a pass",
			files:    map[string]string{"p/policy.rego": tinyPolicy},
			want:     []string{"no policy tests found"},
			sentinel: ErrNoTests,
		},
		{
			name:     "a directory without rego files is an error",
			files:    map[string]string{"p/README.md": "nothing\n"},
			want:     []string{"no .rego files"},
			sentinel: ErrNoTests,
		},
		{
			name:     "a path that is not rego is an error",
			files:    map[string]string{"data.json": "{}"},
			paths:    func(dir string) []string { return []string{filepath.Join(dir, "data.json")} },
			want:     []string{"not a .rego file"},
			sentinel: nil,
		},
		{
			name:     "a missing path is an error",
			paths:    func(dir string) []string { return []string{filepath.Join(dir, "nope")} },
			want:     []string{"no such file or directory"},
			sentinel: os.ErrNotExist,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeTree(t, tc.files)
			paths := []string{dir}
			if tc.paths != nil {
				paths = tc.paths(dir)
			}
			var out bytes.Buffer
			_, err := RunTests(context.Background(), paths, &out, TestOptions{})
			if err == nil {
				t.Fatalf("RunTests succeeded, want an error\n%s", &out)
			}
			for _, w := range tc.want {
				if w = strings.ReplaceAll(w, "DIR", dir); !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\nlacks %q", err, w)
				}
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Errorf("errors.Is(err, %v) = false; err = %v", tc.sentinel, err)
			}
			if strings.Contains(out.String(), "PASS") {
				t.Errorf("tests ran although loading failed:\n%s", &out)
			}
		})
	}
}

func TestRunTestsOptions(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"p/policy.rego":      tinyPolicy,
		"p/policy_test.rego": tinyTests + "\ntest_prints if {\n\tprint(\"hello from\", input)\n\tadmission.allow with input as {\"action\": \"ok\"}\n}\n",
		".hidden/x.rego":     "this is not rego",
	})
	t.Run("a path that is a symlink to a directory is followed", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(filepath.Join(dir, "p"), link); err != nil {
			t.Fatal(err)
		}
		sum, err := RunTests(context.Background(), []string{link}, &bytes.Buffer{}, TestOptions{})
		if err != nil || sum.Passed != 3 {
			t.Fatalf("sum %+v err %v, want 3 passes", sum, err)
		}
	})
	t.Run("a filter runs only the tests whose full name it matches", func(t *testing.T) {
		var out bytes.Buffer
		sum, err := RunTests(context.Background(), []string{dir}, &out, TestOptions{Filter: `admission_test\.test_ok`})
		if err != nil || sum != (TestSummary{Passed: 1}) {
			t.Fatalf("sum %+v err %v\n%s", sum, err, &out)
		}
	})
	t.Run("a filter matching nothing is ErrNoTests", func(t *testing.T) {
		_, err := RunTests(context.Background(), []string{dir}, &bytes.Buffer{}, TestOptions{Filter: "nothing_matches"})
		if !errors.Is(err, ErrNoTests) {
			t.Fatalf("err = %v, want ErrNoTests", err)
		}
	})
	t.Run("an invalid filter is an error naming the filter", func(t *testing.T) {
		_, err := RunTests(context.Background(), []string{dir}, &bytes.Buffer{}, TestOptions{Filter: "("})
		if err == nil || !strings.HasPrefix(err.Error(), `filter "("`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("print output is shown only in verbose mode for passing tests", func(t *testing.T) {
		var quiet, verbose bytes.Buffer
		if _, err := RunTests(context.Background(), []string{dir}, &quiet, TestOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := RunTests(context.Background(), []string{dir}, &verbose, TestOptions{Verbose: true}); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(quiet.String(), "hello from") || !strings.Contains(verbose.String(), "hello from") {
			t.Fatalf("quiet:\n%s\nverbose:\n%s", &quiet, &verbose)
		}
	})
	t.Run("a test that outruns the timeout is an error", func(t *testing.T) {
		slow := writeTree(t, map[string]string{
			"p/policy.rego": tinyPolicy,
			"p/policy_test.rego": "package coordinatord.admission_test\n\n" +
				"test_slow if {\n\tn := {x | some x in numbers.range(1, 5000000); x % 7 == 0}\n\tcount(n) > 0\n}\n",
		})
		var out bytes.Buffer
		sum, err := RunTests(context.Background(), []string{slow}, &out, TestOptions{Timeout: 50 * time.Millisecond})
		if err != nil || sum.Errored != 1 || sum.OK() || !strings.Contains(out.String(), "eval_cancel_error") {
			t.Fatalf("sum %+v err %v, want one cancelled test\n%s", sum, err, &out)
		}
	})
	t.Run("a cancelled context stops the run with its error", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := RunTests(ctx, []string{dir}, &bytes.Buffer{}, TestOptions{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}
