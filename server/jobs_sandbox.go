package server

import (
	"context"
	"fmt"

	"github.com/coordinatord/coordinatord/reporters"
)

// reporterBackends returns what the reporter pipeline calls modules with
// (the node's sandbox) and learns the installed reporters from (the module
// installer's list, with each module's sinks). Both are read at call time,
// so the pipeline may be opened before the sandbox.
func (s *Server) reporterBackends() (reporters.Invoker, reporters.Registry) {
	return sandboxReporters{s}, reporters.RegistryFunc(func() []reporters.Reporter {
		if s.modules == nil {
			return nil
		}
		return s.reporterModules()
	})
}

// sandboxReporters invokes reporters in the node's sandbox.
type sandboxReporters struct{ s *Server }

func (sr sandboxReporters) Invoke(ctx context.Context, r reporters.Reporter, inv reporters.Invocation) reporters.Outcome {
	if sr.s.sandbox == nil {
		return reporters.Outcome{Err: fmt.Errorf("module %q is not installed: node %s has no Wasm sandbox", r.Name, sr.s.cfg.NodeID), ErrKind: "not_installed"}
	}
	return reporters.SandboxInvoker(sr.s.sandbox).Invoke(ctx, r, inv)
}
