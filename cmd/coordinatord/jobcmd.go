package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/reporters"
	"github.com/coordinatord/coordinatord/server"
)

func newJobCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Report job results to reporter modules and read their outcomes",
		Long: `Report a job's result to the cluster's reporter modules, and see what each
reporter did with it.

The leader queues the result for every installed reporter module that handles
job results and answers at once; the modules turn it into records for the
sinks their operator configured. "job reporters" shows, per reporter and
datacenter, whether the last call succeeded, how long it took and how many
records it wrote. Those outcomes live in the leader's memory: after a leader
change they start again empty.`,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newJobReportCmd(), newJobReportersCmd())
	return cmd
}

func newJobReportCmd() *cobra.Command {
	var (
		req   api.JobResultRequest
		stats string
	)
	cmd := &cobra.Command{
		Use:   "report JOB --workflow W --datacenter DC --source S [--stats JSON]",
		Short: "Report the result of JOB to the reporter modules",
		Long: `Report the result of JOB. --stats is a JSON object handed to the reporters as
is ("@FILE" reads it from a file, "-" from stdin). While the leader's reporter
queue is full the command retries until --timeout.`,
		Example: `  coordinatord job report job-7 --workflow nightly-etl --datacenter dc2 \
    --source manager-4 --stats '{"rows": 1200, "seconds": 3.5}'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := statsArg(stats)
			if err != nil {
				return err
			}
			req.Stats = raw
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.ReportJobResult(ctx, args[0], req)
				if err != nil {
					return err
				}
				return output(cmd, res, func(w io.Writer) error {
					if len(res.Reporters) == 0 {
						_, err := fmt.Fprintf(w, "accepted: job %s; no installed reporter handles job results\n", res.JobID)
						return err
					}
					_, err := fmt.Fprintf(w, "accepted: job %s, queued for %s\n", res.JobID, strings.Join(res.Reporters, ", "))
					return err
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Workflow, "workflow", "", "the job's workflow (required)")
	f.StringVar(&req.Datacenter, "datacenter", "", "the datacenter the job ran in (required)")
	f.StringVar(&req.Source, "source", "", "who reports: the gate or manager node (required)")
	f.StringVar(&stats, "stats", "{}", `the job's statistics, a JSON object; @FILE reads a file, - stdin`)
	for _, name := range []string{"workflow", "datacenter", "source"} {
		must(cmd.MarkFlagRequired(name))
	}
	return cmd
}

// statsArg reads --stats and checks that it is a JSON object, so that a
// typo is caught before the request.
func statsArg(v string) (json.RawMessage, error) {
	raw := []byte(v)
	if v == "-" || strings.HasPrefix(v, "@") {
		var err error
		if raw, err = readFileArg(strings.TrimPrefix(v, "@")); err != nil {
			return nil, fmt.Errorf("--stats: %w", err)
		}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("--stats must be a JSON object such as '{\"rows\": 12}': %s", strings.TrimSpace(string(raw)))
	}
	return raw, nil
}

func newJobReportersCmd() *cobra.Command {
	var stale bool
	cmd := &cobra.Command{
		Use:   "reporters JOB",
		Short: "Show each reporter's outcome for JOB, per datacenter",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.JobReporters(ctx, args[0], stale)
				if err != nil {
					return err
				}
				return output(cmd, res, func(w io.Writer) error { return printJobReporters(w, res) })
			})
		},
	}
	cmd.Flags().BoolVar(&stale, "stale", false, "read the called node's own results without asking the leader (a follower has none)")
	return cmd
}

func printJobReporters(w io.Writer, res *api.JobReporters) error {
	since := "not the leader: it dispatches nothing"
	if !res.Since.IsZero() {
		since = "leader since " + res.Since.Format(time.RFC3339)
	}
	if len(res.Results) == 0 {
		_, err := fmt.Fprintf(w, "job %s: no reporter results on node %s (%s)\n", res.JobID, res.Node, since)
		return err
	}
	if _, err := fmt.Fprintf(w, "job %s: reporter results on node %s (%s)\n", res.JobID, res.Node, since); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPORTER\tDATACENTER\tEVENT\tSTATUS\tELAPSED\tRECORDS\tCALLS\tFAILURES\tERROR")
	for _, r := range res.Results {
		event := r.Event
		if r.EventType != "" {
			event += ":" + r.EventType
		}
		errText := ""
		if r.ErrorKind != "" {
			errText = r.ErrorKind + ": " + r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.Reporter, r.Datacenter, event, r.Status,
			r.Elapsed, r.Records, r.Calls, r.Failures, errText)
	}
	return tw.Flush()
}

// reporterFlags are the server's reporter pipeline flags.
type reporterFlags struct {
	queueSize, workers int
}

func (r *reporterFlags) addFlags(fl *pflag.FlagSet) {
	d := reporters.DefaultConfig()
	fl.IntVar(&r.queueSize, "reporter-queue-size", d.QueueSize, "events (job results, lease events) that may wait for a reporter worker; a job result that finds the queue full is answered 429")
	fl.IntVar(&r.workers, "reporter-workers", d.Workers, "reporter events dispatched at once (module calls are CPU-bound: one per core; more when slow webhooks hold workers)")
}

func (r *reporterFlags) apply(cfg *server.Config) error {
	cfg.Reporters.QueueSize = r.queueSize
	cfg.Reporters.Workers = r.workers
	if err := cfg.Reporters.Validate(); err != nil {
		return fmt.Errorf("--reporter-queue-size/--reporter-workers: %w", err)
	}
	return nil
}
