// Command coordinatord is the control plane of a multi-datacenter job
// system: one binary for the server, a development node, certificate
// tooling, and the client commands of its API.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a specific exit status out of a command, for commands
// whose status is an answer (admission check denied, policy tests failed).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	root := newRootCmd()
	err := root.Execute()
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if !errors.Is(err, errSilent) {
		fmt.Fprintln(os.Stderr, "error:", formatError(err))
	}
	os.Exit(code)
}

// errSilent marks an error whose explanation the command already printed.
var errSilent = errors.New("already reported")

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "coordinatord",
		Short: "Control plane of a multi-datacenter job system",
		Long: `coordinatord admits peers by the role, cluster and env in their mTLS
certificates (Rego policies, embedded OPA, strict mode), and keeps its state
in a Raft-replicated store.

Start a development node with every default embedded:

  coordinatord dev

Flags of server commands can also be given as environment variables
(COORDINATORD_<FLAG>, e.g. COORDINATORD_DATA_DIR) or in a YAML config file
(--config); flags win over the environment, which wins over the file.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addLogFlags(root)
	root.AddCommand(
		newServerCmd(),
		newDevCmd(),
		newCACmd(),
		newAdmissionCmd(),
		newPolicyCmd(),
		newDecisionsCmd(),
		newLeaseCmd(),
		newJobCmd(),
		newClusterCmd(),
		newModuleCmd(),
		newLoadTestCmd(),
		newAgentCmd(),
		newKeygenCmd(),
		newDCCmd(),
		newMembersCmd(),
	)
	return root
}
