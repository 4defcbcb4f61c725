package policies

import (
	"context"
	"errors"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
)

// FuzzCompile checks that no source makes Compile panic, that every
// rejection explains itself, and that every policy it accepts has an allow
// rule and can be prepared the way the engine prepares it.
func FuzzCompile(f *testing.F) {
	for _, seed := range []string{
		DefaultRego,
		readFile(f, perDatacenterExample),
		"",
		"# only a comment\n",
		"package coordinatord.admission\n\ndefault allow := false\n",
		"package coordinatord.admission\n\nallow if {\n\tx := 1\n}\n",
		"package coordinatord.admission\n\nimport data.x\n\nallow := true\n",
		"package coordinatord.admission\n\nallow := \"yes\"\n\nreasons contains 1\n",
		"package coordinatord.admission\n\nallow(_) := true\n",
		"package other\n\nallow := true\n",
		"package coordinatord.admission\n\nallow if {\n\tinput.x ==\n}\n",
		"package coordinatord.admission\n\n# METADATA\n# title: t\nallow if input.a == 1 / 0\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		c, err := Compile("fuzz", src)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			var ce *CompileError
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error %T %v is not a *CompileError with problems", err, err)
			}
			for _, p := range ce.Problems {
				if p.File == "" || p.Code == "" || p.Message == "" {
					t.Fatalf("problem %+v lacks a file, code or message", p)
				}
			}
			return
		}
		if firstRule(c.Module, "allow") == nil {
			t.Fatalf("accepted a policy without allow:\n%s", src)
		}
		if c.Module.Package.Path.String() != Query {
			t.Fatalf("accepted package %v", c.Module.Package.Path)
		}
		if _, err := rego.New(rego.Query(Query), rego.Compiler(c.Compiler), rego.StrictBuiltinErrors(true)).
			PrepareForEval(context.Background()); err != nil {
			t.Fatalf("accepted a policy the engine cannot prepare: %v\n%s", err, src)
		}
	})
}
