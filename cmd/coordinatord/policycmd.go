package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/policies"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Manage and test Rego admission policies",
		Long: `Manage the cluster's admission policies and run Rego policy tests.

A policy is one Rego module in package coordinatord.admission that defines
the boolean rule "allow" (and, optionally, a set of strings "reasons"). Every
policy is evaluated on every decision; a request is denied when any policy
in enforce mode denies it. Policies in audit mode only record their denials.`,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newPolicyPushCmd(), newPolicyListCmd(), newPolicyGetCmd(), newPolicyDeleteCmd(), newPolicyTestCmd())
	return cmd
}

func newPolicyPushCmd() *cobra.Command {
	var id, mode string
	var ifRevision int64
	cmd := &cobra.Command{
		Use:   "push FILE",
		Short: "Validate and store a policy (FILE may be - for stdin)",
		Long: `Validate and store a policy. The node compiles it in strict mode first; a
policy that does not compile is rejected with file:line:col messages and the
active policies stay as they are. The id defaults to the file name without
.rego.`,
		Example: `  coordinatord policy push examples/policies/per-datacenter/policy.rego --id per-datacenter
  coordinatord policy push strict.rego --mode audit`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := readFileArg(args[0])
			if err != nil {
				return err
			}
			if id == "" {
				if args[0] == "-" {
					return fmt.Errorf("--id is required when the policy comes from stdin")
				}
				id = strings.TrimSuffix(filepath.Base(args[0]), ".rego")
			}
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				var expect *uint64
				if ifRevision >= 0 {
					v := uint64(ifRevision)
					expect = &v
				}
				p, err := c.PutPolicy(ctx, id, string(src), mode, expect)
				if err != nil {
					return err
				}
				return output(cmd, p, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "policy %q stored: mode %s, version %d, policy revision %d\n", p.ID, p.Mode, p.Version, p.Revision)
					return err
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "policy id (default: the file name without .rego)")
	f.StringVar(&mode, "mode", "enforce", "enforce (denials deny) or audit (denials are only recorded)")
	f.Int64Var(&ifRevision, "if-revision", -1, "store only if the policy-set revision is still this one")
	return cmd
}

func newPolicyListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the stored policies",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				list, err := c.ListPolicies(ctx)
				if err != nil {
					return err
				}
				return output(cmd, list, func(w io.Writer) error {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tMODE\tVERSION\tREVISION\tUPDATED\tBY")
					for _, p := range list.Policies {
						fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", p.ID, p.Mode, p.Version, p.Revision, p.UpdatedAt.Format(time.RFC3339), p.UpdatedBy)
					}
					fmt.Fprintf(tw, "policy revision %d\n", list.Revision)
					return tw.Flush()
				})
			})
		},
	}
}

func newPolicyGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Print a policy's Rego source (with -o json, its metadata too)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				p, err := c.GetPolicy(ctx, args[0])
				if err != nil {
					return err
				}
				return output(cmd, p, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "# policy %s: mode %s, version %d, revision %d, by %s at %s\n%s",
						p.ID, p.Mode, p.Version, p.Revision, p.UpdatedBy, p.UpdatedAt.Format(time.RFC3339), p.Rego)
					return err
				})
			})
		},
	}
}

func newPolicyDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a policy (the last policy in enforce mode cannot be deleted)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.DeletePolicy(ctx, args[0])
				if err != nil {
					return err
				}
				return output(cmd, resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "policy %q deleted; policy revision %d\n", resp.ID, resp.Revision)
					return err
				})
			})
		},
	}
}

func newPolicyTestCmd() *cobra.Command {
	var opts policies.TestOptions
	cmd := &cobra.Command{
		Use:   "test DIR...",
		Short: "Run Rego unit tests (test_ rules), like opa test",
		Long: `Load the .rego files under each DIR (or file), compile them in strict mode
and run every rule whose name starts with test_. Prints PASS, FAIL or ERROR
per test and a summary; exits non-zero when any test does not pass. Runs
locally: no node is needed.`,
		Example: `  coordinatord policy test examples/policies/default
  coordinatord policy test -v --run per_datacenter examples/policies`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sum, err := policies.RunTests(cmd.Context(), args, cmd.OutOrStdout(), opts)
			if err != nil {
				return err
			}
			if !sum.OK() {
				return &exitError{code: 2, err: errSilent}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&opts.Verbose, "verbose", "v", false, "print every test, and the output of failing ones")
	f.StringVar(&opts.Filter, "run", "", "only run tests whose name matches this regular expression")
	f.DurationVar(&opts.Timeout, "timeout", 30*time.Second, "time limit for the whole run")
	return cmd
}
