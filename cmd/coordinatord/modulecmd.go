package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
)

// uploadTimeout is module upload's --timeout unless one is given: the node
// validates and compiles the module before it answers, which takes seconds
// for a large one.
const uploadTimeout = 2 * time.Minute

// exitModuleFailed is the exit status of module invoke when the call
// worked but the module failed (trap, timeout, error): the answer is "no".
const exitModuleFailed = 3

func newModuleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "module",
		Short: "Upload, inspect and try WebAssembly callback modules",
		Long: `Manage the cluster's WebAssembly callback modules (see wasm/ABI.md).

A module has a kind: "reporter" modules turn job results and lease events
into records for the sinks an operator gives them; "correlation" modules
decide what to do when datacenters fail together. An upload is validated and
compiled before it is stored; every node then compiles and installs it, and
"module list" shows each node's install state (use --stale to ask the node
itself rather than the leader). "module invoke" runs the module installed on
the node you call on a sample event, without writing to any sink.`,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newModuleUploadCmd(), newModuleListCmd(), newModuleGetCmd(), newModuleDeleteCmd(), newModuleInvokeCmd())
	return cmd
}

func newModuleUploadCmd() *cobra.Command {
	var (
		opts      client.ModuleOptions
		logLines  int
		ifVersion int64
	)
	cmd := &cobra.Command{
		Use:   "upload NAME FILE",
		Short: "Validate and store a module (FILE may be - for stdin)",
		Long: `Validate and store a module under NAME, replacing the module of that name on
every node. The node checks the bytes (WebAssembly, the ABI marker, the
handlers of its kind, only the imports the host offers, the size cap), the
limits and the sinks, and compiles it, before anything is written; each
defect is an error naming the field at fault. Unless --timeout is given,
the command waits up to 2 minutes: compiling a large module takes seconds.

Sinks (reporters only) are name=type[:target]: name=stdout,
name=file:PATH (relative to each node's --sink-dir) or
name=webhook:URL. A record the module emits names one of them.`,
		Example: `  coordinatord module upload results examples/modules/go-reporter/go-reporter.wasm \
    --kind reporter --sink results=file:results.jsonl
  coordinatord module upload hold-two examples/modules/go-correlation/go-correlation.wasm \
    --kind correlation --call-timeout 50ms`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			wasm, err := readFileArg(args[1])
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("log-lines-per-second") {
				opts.LogLinesPerSecond = &logLines
			}
			if ifVersion >= 0 {
				v := uint64(ifVersion)
				opts.IfVersion = &v
			}
			if !cmd.Flags().Changed("timeout") {
				if _, set := os.LookupEnv(envName("timeout")); !set {
					// The node compiles the module before it answers.
					clientFlags.timeout = uploadTimeout
				}
			}
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				m, err := c.PutModule(ctx, args[0], wasm, opts)
				if err != nil {
					return err
				}
				return output(cmd, m, func(w io.Writer) error {
					fmt.Fprintf(w, "module %q stored: %s, %s, %d bytes, version %d, module revision %d\n",
						m.Name, m.Manifest.Kind, m.Digest, m.Size, m.Version, m.Revision)
					return printNodeState(w, m.Node)
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Kind, "kind", "", "module kind: reporter or correlation (required)")
	f.Uint32Var(&opts.MemoryPages, "memory-pages", 0, "most 64 KiB memory pages (default: the server's, 512)")
	f.DurationVar(&opts.CallTimeout, "call-timeout", 0, "time limit of one call (default: the server's, 100ms)")
	f.IntVar(&opts.MaxOutputBytes, "max-output-bytes", 0, "largest output of one call (default: the server's, 64 KiB)")
	f.IntVar(&logLines, "log-lines-per-second", 0, "log lines kept per second, 0 drops them all (default: the server's, 100)")
	f.StringArrayVar(&opts.Sinks, "sink", nil, "a reporter's sink, name=type[:target]; repeat for several")
	f.Int64Var(&ifVersion, "if-version", -1, "store only if the module's current version is this one (0: only if NAME is free)")
	_ = cmd.MarkFlagRequired("kind")
	return cmd
}

func printNodeState(w io.Writer, st api.ModuleNodeState) error {
	var err error
	switch st.State {
	case api.ModuleFailed:
		_, err = fmt.Fprintf(w, "on node %s: FAILED to install: %s (%s)\n", st.Node, st.Error, st.ErrorCode)
	case api.ModuleInstalled:
		_, err = fmt.Fprintf(w, "on node %s: installed version %d, handlers %s\n", st.Node, st.Version, strings.Join(st.Handlers, ", "))
	default:
		_, err = fmt.Fprintf(w, "on node %s: %s\n", st.Node, st.State)
	}
	return err
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func newModuleListCmd() *cobra.Command {
	var stale bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the modules and their install state on the node that answers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				list, err := c.ListModules(ctx, stale)
				if err != nil {
					return err
				}
				return output(cmd, list, func(w io.Writer) error {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tKIND\tVERSION\tDIGEST\tSIZE\tSTATE\tUPDATED\tBY")
					for _, m := range list.Modules {
						state := m.Node.State
						if m.Node.State == api.ModuleFailed {
							state += ": " + m.Node.ErrorCode
						}
						fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\n", m.Name, m.Manifest.Kind, m.Version,
							shortDigest(m.Digest), m.Size, state, m.UpdatedAt.Format(time.RFC3339), m.UpdatedBy)
					}
					fmt.Fprintf(tw, "module revision %d, states on node %s\n", list.Revision, list.Node)
					return tw.Flush()
				})
			})
		},
	}
	cmd.Flags().BoolVar(&stale, "stale", false, "answer from the node called (its own install state), not the leader")
	return cmd
}

func newModuleGetCmd() *cobra.Command {
	var (
		download string
		stale    bool
	)
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Print a module's metadata, or save its bytes with --download",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				if download != "" {
					wasm, err := c.DownloadModule(ctx, args[0])
					if err != nil {
						return err
					}
					if download == "-" {
						_, err = cmd.OutOrStdout().Write(wasm)
						return err
					}
					if err := os.WriteFile(download, wasm, 0o644); err != nil {
						return err
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "module %q: %d bytes written to %s\n", args[0], len(wasm), download)
					return nil
				}
				m, err := c.GetModule(ctx, args[0], stale)
				if err != nil {
					return err
				}
				return output(cmd, m, func(w io.Writer) error {
					l := m.Manifest.Limits
					fmt.Fprintf(w, "module %s: %s, version %d, revision %d\n  digest %s, %d bytes\n  updated %s by %s\n",
						m.Name, m.Manifest.Kind, m.Version, m.Revision, m.Digest, m.Size, m.UpdatedAt.Format(time.RFC3339), m.UpdatedBy)
					fmt.Fprintf(w, "  limits: %d memory pages, %s per call, %d output bytes, %d log lines/s\n",
						l.MemoryPages, l.CallTimeout, l.MaxOutputBytes, l.LogLinesPerSecond)
					for _, s := range m.Manifest.Sinks {
						fmt.Fprintf(w, "  sink %s\n", s)
					}
					return printNodeState(w, m.Node)
				})
			})
		},
	}
	cmd.Flags().StringVar(&download, "download", "", "write the module's bytes to this file (- for stdout) instead")
	cmd.Flags().BoolVar(&stale, "stale", false, "answer from the node called, not the leader")
	return cmd
}

func newModuleDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a module from every node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.DeleteModule(ctx, args[0])
				if err != nil {
					return err
				}
				return output(cmd, resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "module %q deleted; module revision %d\n", resp.Name, resp.Revision)
					return err
				})
			})
		},
	}
}

func newModuleInvokeCmd() *cobra.Command {
	var event, handler string
	cmd := &cobra.Command{
		Use:   "invoke NAME --event FILE|-",
		Short: "Run a module on a sample event on the node called",
		Long: `Run module NAME, as installed on the node you call (--addr), on the event
in FILE (JSON, as wasm/ABI.md describes it; - reads stdin). Prints the
output (a reporter's records too), the lines the module logged and the
call's duration, or the trap with the guest's stack. Nothing is written to
any sink. Exits 3 when the module failed (trap, timeout, error, bad output).`,
		Example: `  echo '{"job_id":"job-7","workflow":"etl","datacenter":"dc1","source":"manager-1","stats":{"rows":1}}' |
    coordinatord module invoke results --event -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := readFileArg(event)
			if err != nil {
				return err
			}
			if !json.Valid(raw) {
				return fmt.Errorf("--event %s: not valid JSON", event)
			}
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.InvokeModule(ctx, args[0], api.InvokeRequest{Handler: handler, Event: raw})
				if err != nil {
					return err
				}
				if err := output(cmd, resp, func(w io.Writer) error { return printInvoke(w, resp) }); err != nil {
					return err
				}
				if resp.Error != nil {
					return &exitError{code: exitModuleFailed, err: errSilent}
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&event, "event", "", "file holding the event's JSON, or - for stdin (required)")
	cmd.Flags().StringVar(&handler, "handler", "", "handler to call (default: the module's only handler)")
	_ = cmd.MarkFlagRequired("event")
	return cmd
}

func printInvoke(w io.Writer, r *api.InvokeResponse) error {
	fmt.Fprintf(w, "module %s version %d (%s) on node %s, handler %s: %s\n", r.Module, r.Version, shortDigest(r.Digest), r.Node, r.Handler, r.Duration)
	for _, l := range r.Logs {
		fmt.Fprintf(w, "  log %s (%s): %s\n", l.Level, l.Stream, l.Text)
	}
	switch {
	case len(r.Output) > 0:
		fmt.Fprintf(w, "output: %s\n", r.Output)
	case r.OutputText != "":
		fmt.Fprintf(w, "output (not JSON): %q\n", r.OutputText)
	default:
		fmt.Fprintln(w, "output: none")
	}
	for _, rec := range r.Records {
		fmt.Fprintf(w, "record for sink %s: %s\n", rec.Sink, rec.Data)
	}
	if e := r.Error; e != nil {
		fmt.Fprintf(w, "FAILED: %s: %s\n", e.Kind, e.Message)
		for _, f := range e.Stack {
			fmt.Fprintf(w, "    at %s\n", f)
		}
	}
	return nil
}
