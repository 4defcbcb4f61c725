package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
)

// exitDenied is the exit status of `admission check` when the answer is no,
// so that scripts can tell a denial (3) from a failure (1).
const exitDenied = 3

func newAdmissionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admission",
		Short: "Ask a node for admission decisions",
	}
	addClientFlags(cmd)
	cmd.AddCommand(newAdmissionCheckCmd())
	return cmd
}

func newAdmissionCheckCmd() *cobra.Command {
	var source, target, sourceCert, targetCert, action, resource string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "May SOURCE do ACTION on TARGET, as the server decides?",
		Long: `Ask the node whether SOURCE may do ACTION on TARGET. Each side is a SPIFFE ID
(--source, --target) or a certificate file (--source-cert, --target-cert),
which the node verifies and reads exactly as it reads a connecting peer's.

Exit status: 0 allowed, 3 denied, 1 the question could not be answered.`,
		Example: `  coordinatord admission check --source-cert worker.crt --target-cert manager.crt --action connect
  coordinatord admission check --action connect \
    --source spiffe://coordinatord.local/cluster/dev/env/dev/role/worker/dc/dc1/node/worker-1 \
    --target spiffe://coordinatord.local/cluster/dev/env/dev/role/gate/dc/dc1/node/gate-1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := api.AdmissionRequest{Action: action}
			var err error
			if req.Source, req.SourceCertificate, err = peerArg("source", source, sourceCert); err != nil {
				return err
			}
			if req.Target, req.TargetCertificate, err = peerArg("target", target, targetCert); err != nil {
				return err
			}
			if action == "" {
				return errors.New("--action is required, e.g. --action connect")
			}
			if resource != "" {
				if err := json.Unmarshal([]byte(resource), &req.Resource); err != nil {
					return fmt.Errorf("--resource: must be a JSON object: %w", err)
				}
			}
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Admission(ctx, req)
				if err != nil {
					return err
				}
				if err := output(cmd, resp, func(w io.Writer) error { return printAdmission(w, resp) }); err != nil {
					return err
				}
				if !resp.Allowed {
					return &exitError{code: exitDenied, err: errSilent}
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&source, "source", "", "SPIFFE ID of the peer that acts")
	f.StringVar(&target, "target", "", "SPIFFE ID of the peer acted upon")
	f.StringVar(&sourceCert, "source-cert", "", "certificate file (PEM) of the peer that acts")
	f.StringVar(&targetCert, "target-cert", "", "certificate file (PEM) of the peer acted upon")
	f.StringVar(&action, "action", "", `what the source wants to do, e.g. "connect" (required)`)
	f.StringVar(&resource, "resource", "", "optional JSON object passed to the policy as input.resource")
	return cmd
}

// peerArg turns the SPIFFE ID or certificate flags of one side into the
// request's form; exactly one of them must be set.
func peerArg(side, id, certFile string) (*api.Peer, string, error) {
	switch {
	case id != "" && certFile != "":
		return nil, "", fmt.Errorf("give --%s or --%s-cert, not both", side, side)
	case id != "":
		return &api.Peer{SPIFFEID: id}, "", nil
	case certFile != "":
		pemBytes, err := readFileArg(certFile)
		if err != nil {
			return nil, "", fmt.Errorf("--%s-cert: %w", side, err)
		}
		return nil, string(pemBytes), nil
	}
	return nil, "", fmt.Errorf("--%s (a SPIFFE ID) or --%s-cert (a certificate file) is required", side, side)
}

func printAdmission(w io.Writer, r *api.AdmissionResponse) error {
	verdict := "ALLOWED"
	switch r.Result {
	case "deny":
		verdict = "DENIED"
	case "audit_deny":
		verdict = "ALLOWED (audit: a policy in audit mode would deny)"
	}
	_, err := fmt.Fprintf(w, "%s: %s -> %s\n  source: %s\n  target: %s\n  decision %s, policy revision %d\n",
		verdict, r.Source.Role, r.Target.Role, r.Source.SPIFFEID, r.Target.SPIFFEID, r.DecisionID, r.PolicyRevision)
	if err != nil {
		return err
	}
	for _, reason := range r.Reasons {
		if _, err := fmt.Fprintf(w, "  reason: %s\n", reason); err != nil {
			return err
		}
	}
	return nil
}

func newDecisionsCmd() *cobra.Command {
	var limit int
	var result, action string
	var after uint64
	cmd := &cobra.Command{
		Use:   "decisions",
		Short: "Show a node's recent admission decisions",
		Example: `  coordinatord decisions --limit 5
  coordinatord decisions --result deny -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				list, err := c.Decisions(ctx, client.DecisionQuery{Limit: limit, Result: result, Action: action, After: after})
				if err != nil {
					return err
				}
				return output(cmd, list, func(w io.Writer) error {
					for _, d := range list.Decisions {
						line := fmt.Sprintf("%s  %-10s %-16s %s -> %s", d.Time.Format("15:04:05.000"), d.Result, d.Action, d.Source.SPIFFEID, d.Target.SPIFFEID)
						if len(d.Reasons) > 0 {
							line += "  (" + strings.Join(d.Reasons, "; ") + ")"
						}
						if _, err := fmt.Fprintln(w, line); err != nil {
							return err
						}
					}
					_, err := fmt.Fprintf(w, "%d decisions shown; %d evicted from the buffer, %d not logged (queue full)\n", len(list.Decisions), list.Evicted, list.Dropped)
					return err
				})
			})
		},
	}
	addClientFlags(cmd)
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 20, "show at most this many (the most recent)")
	f.StringVar(&result, "result", "", "only this result: allow, deny or audit_deny")
	f.StringVar(&action, "action", "", "only this action")
	f.Uint64Var(&after, "after", 0, "only decisions after this sequence number")
	return cmd
}
