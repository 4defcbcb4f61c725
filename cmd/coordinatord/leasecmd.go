package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
	"github.com/coordinatord/coordinatord/server"
)

func newLeaseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lease",
		Short: "Acquire, renew, release and inspect job leases",
		Long: `Job leases with fencing tokens. The owner of a lease is the node named in
your certificate (--cert); a lease's token grows with every new owner and is
never reused, so storage that checks tokens (lease check) can refuse a
fenced owner's writes.`,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newLeaseAcquireCmd(), newLeaseRenewCmd(), newLeaseReleaseCmd(), newLeaseGetCmd(),
		newLeaseListCmd(), newLeaseCheckCmd(), newLeaseWatchCmd(), newLeaseKeepAliveCmd())
	return cmd
}

func printLease(w io.Writer, l *api.Lease) error {
	_, err := fmt.Fprintf(w, "job %s: %s, owner %s (%s), token %d, ttl %s, expires %s\n",
		l.JobID, l.State, l.Owner, l.OwnerDC, l.Token, l.TTL, l.ExpiresAt.Format(time.RFC3339Nano))
	return err
}

// leaseCmd is a command that calls the API once and prints a lease.
func leaseCmd(use, short string, args cobra.PositionalArgs, call func(ctx context.Context, c *client.Client, args []string) (*api.Lease, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				l, err := call(ctx, c, args)
				if err != nil {
					return err
				}
				return output(cmd, l, func(w io.Writer) error { return printLease(w, l) })
			})
		},
	}
}

func newLeaseAcquireCmd() *cobra.Command {
	var ttl time.Duration
	var force bool
	cmd := leaseCmd("acquire JOB", "Acquire the lease of JOB (prints its token)", cobra.ExactArgs(1),
		func(ctx context.Context, c *client.Client, args []string) (*api.Lease, error) {
			return c.Acquire(ctx, args[0], ttl, force)
		})
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "lease time to live (default: the cluster's)")
	cmd.Flags().BoolVar(&force, "force", false, "take the lease over from its current owner (fences it; policy decides who may)")
	return cmd
}

func newLeaseRenewCmd() *cobra.Command {
	var ttl time.Duration
	var token uint64
	cmd := leaseCmd("renew JOB --token N", "Renew your lease of JOB", cobra.ExactArgs(1),
		func(ctx context.Context, c *client.Client, args []string) (*api.Lease, error) {
			return c.Renew(ctx, args[0], token, ttl)
		})
	cmd.Flags().Uint64Var(&token, "token", 0, "the lease's fencing token (required)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "new time to live (default: keep the lease's)")
	must(cmd.MarkFlagRequired("token"))
	return cmd
}

func newLeaseReleaseCmd() *cobra.Command {
	var token uint64
	cmd := leaseCmd("release JOB --token N", "Release your lease of JOB", cobra.ExactArgs(1),
		func(ctx context.Context, c *client.Client, args []string) (*api.Lease, error) {
			return c.Release(ctx, args[0], token)
		})
	cmd.Flags().Uint64Var(&token, "token", 0, "the lease's fencing token (required)")
	must(cmd.MarkFlagRequired("token"))
	return cmd
}

func newLeaseGetCmd() *cobra.Command {
	var stale bool
	cmd := leaseCmd("get JOB", "Show the lease of JOB", cobra.ExactArgs(1),
		func(ctx context.Context, c *client.Client, args []string) (*api.Lease, error) {
			return c.GetLease(ctx, args[0], stale)
		})
	cmd.Flags().BoolVar(&stale, "stale", false, "read this node's state without asking the leader")
	return cmd
}

func newLeaseListCmd() *cobra.Command {
	var q client.LeaseQuery
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List leases",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				list, err := c.ListLeases(ctx, q)
				if err != nil {
					return err
				}
				return output(cmd, list, func(w io.Writer) error {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "JOB\tSTATE\tOWNER\tDC\tTOKEN\tTTL\tEXPIRES")
					for _, l := range list.Leases {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", l.JobID, l.State, l.Owner, l.OwnerDC, l.Token, l.TTL, l.ExpiresAt.Format(time.RFC3339))
					}
					return tw.Flush()
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Owner, "owner", "", "only leases of this owner (node)")
	f.StringVar(&q.Datacenter, "dc", "", "only leases owned in this datacenter")
	f.StringVar(&q.State, "state", "", "only leases in this state: active, released or expired")
	f.BoolVar(&q.Stale, "stale", false, "read this node's state without asking the leader")
	return cmd
}

func newLeaseCheckCmd() *cobra.Command {
	var token uint64
	cmd := &cobra.Command{
		Use:   "check JOB --token N",
		Short: "Is token N the current token of JOB? (exit 0 yes, 3 no)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.Check(ctx, args[0], token)
				if err != nil {
					return err
				}
				err = output(cmd, res, func(w io.Writer) error {
					verdict := "CURRENT"
					if !res.Current {
						verdict = "NOT CURRENT"
					}
					_, err := fmt.Fprintf(w, "%s: job %s token %d (current token %d, %s)", verdict, res.JobID, token, res.Token, res.State)
					if err == nil && res.Reason != "" {
						_, err = fmt.Fprintf(w, ": %s", res.Reason)
					}
					if err == nil {
						_, err = fmt.Fprintln(w)
					}
					return err
				})
				if err == nil && !res.Current {
					return &exitError{code: exitDenied, err: errSilent}
				}
				return err
			})
		},
	}
	cmd.Flags().Uint64Var(&token, "token", 0, "the token to check (required)")
	must(cmd.MarkFlagRequired("token"))
	return cmd
}

func newLeaseWatchCmd() *cobra.Command {
	var from uint64
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Stream lease events (acquired, renewed, released, expired) until Ctrl-C",
		Long: `Stream lease events as they are committed, each with its Raft index. With
--from-index, start from that index (the events still retained); the stream
resumes by itself after a dropped connection. -o json prints one JSON object
per line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			enc := json.NewEncoder(cmd.OutOrStdout())
			err = c.WatchLeases(ctx, from, func(ev api.LeaseEvent) error {
				if clientFlags.output == "json" {
					return enc.Encode(ev)
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "%d %-8s job %s owner %s (%s) token %d expires %s\n", ev.Index, ev.Type,
					ev.Lease.JobID, ev.Lease.Owner, ev.Lease.OwnerDC, ev.Lease.Token, ev.Lease.ExpiresAt.Format(time.RFC3339Nano))
				return err
			})
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().Uint64Var(&from, "from-index", 0, "start with the events of this Raft index (default: from now on)")
	return cmd
}

func newLeaseKeepAliveCmd() *cobra.Command {
	var ttl time.Duration
	var force bool
	cmd := &cobra.Command{
		Use:   "keepalive JOB",
		Short: "Acquire the lease of JOB and keep it until Ctrl-C, then release it",
		Long: `Acquire the lease of JOB, renew it every TTL/3, and release it on Ctrl-C.
If the lease is lost (taken over, or not renewed in time) the command says so
and exits with status 3: whatever acts on the job must stop.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			l, err := c.Acquire(ctx, args[0], ttl, force)
			if err != nil {
				return err
			}
			if err := output(cmd, l, func(w io.Writer) error { return printLease(w, l) }); err != nil {
				return err
			}
			if lostErr := <-c.KeepAlive(ctx, *l); lostErr != nil {
				return &exitError{code: exitDenied, err: lostErr}
			}
			// Interrupted: give the lease back so that another owner need
			// not wait for it to expire.
			relCtx, cancel := context.WithTimeout(context.Background(), clientFlags.timeout)
			defer cancel()
			if _, err := c.Release(relCtx, l.JobID, l.Token); err != nil {
				return fmt.Errorf("release job %s token %d: %w", l.JobID, l.Token, err)
			}
			_, err = fmt.Fprintf(cmd.ErrOrStderr(), "released job %s token %d\n", l.JobID, l.Token)
			return err
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "lease time to live (default: the cluster's)")
	cmd.Flags().BoolVar(&force, "force", false, "take the lease over from its current owner")
	return cmd
}

// must panics on a programming error in command construction.
func must(err error) {
	if err != nil {
		panic(err)
	}
}

// leaseLimitFlags are the server's lease TTL bounds.
type leaseLimitFlags struct {
	min, max, def time.Duration
	maxHold       time.Duration
}

func (l *leaseLimitFlags) addFlags(fl *pflag.FlagSet) {
	d := engine.DefaultLeaseLimits()
	fl.DurationVar(&l.min, "lease-min-ttl", d.MinTTL, "shortest lease TTL a client may ask for (at least the Raft election timeout)")
	fl.DurationVar(&l.max, "lease-max-ttl", d.MaxTTL, "longest lease TTL; a renewal never extends a lease beyond it")
	fl.DurationVar(&l.def, "lease-default-ttl", d.DefaultTTL, "TTL of a lease acquired without one")
	fl.DurationVar(&l.maxHold, "lease-max-hold", raftstore.DefaultMaxLeaseHold, "longest a lease is held past its expiry while the correlation engine suspects a partition: counted from the episode's detection, and for each lease from the expiry its owner last set, across episodes (0: no cap)")
}

func (l *leaseLimitFlags) apply(cfg *server.Config) error {
	lim := engine.LeaseLimits{MinTTL: l.min, MaxTTL: l.max, DefaultTTL: l.def}
	if err := lim.Validate(); err != nil {
		return fmt.Errorf("--lease-min-ttl/--lease-max-ttl/--lease-default-ttl: %w", err)
	}
	cfg.Raft.LeaseLimits = lim
	if l.maxHold < 0 {
		return fmt.Errorf("--lease-max-hold %s: must not be negative", l.maxHold)
	}
	cfg.Raft.MaxLeaseHold = l.maxHold
	return nil
}
