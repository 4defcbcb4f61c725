package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/raftstore"
	"github.com/coordinatord/coordinatord/server"
)

// clusterFlags are the server's cluster flags: addresses, joining and Raft
// timing.
type clusterFlags struct {
	raftAddr, raftAdvertise string
	httpAdvertise           string
	join                    []string
	heartbeat, election     time.Duration
	leaderLease             time.Duration
	snapshotThreshold       uint64
	snapshotInterval        time.Duration
	trailingLogs            uint64
}

func (f *clusterFlags) addFlags(fl *pflag.FlagSet) {
	d := raftstore.DefaultConfig()
	fl.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:8444", "address the Raft transport (mutual TLS) listens on; a specific IP is also the source of the node's outgoing connections")
	fl.StringVar(&f.raftAdvertise, "raft-advertise", "", "Raft address other nodes reach this node at (default: --raft-addr)")
	fl.StringVar(&f.httpAdvertise, "http-advertise", "", "API address other nodes reach this node at, to forward requests to it while it leads (default: --http-addr)")
	fl.StringSliceVar(&f.join, "join", nil, "API address(es) of members of the cluster to join, comma-separated; ignored when the node has Raft state")
	fl.DurationVar(&f.heartbeat, "raft-heartbeat-timeout", d.HeartbeatTimeout, "time without a leader's contact before a follower starts an election")
	fl.DurationVar(&f.election, "raft-election-timeout", d.ElectionTimeout, "time a candidate waits for an election to finish")
	fl.DurationVar(&f.leaderLease, "raft-leader-lease-timeout", d.LeaderLeaseTimeout, "time a leader keeps leading without hearing from a quorum (at most the heartbeat timeout)")
	fl.Uint64Var(&f.snapshotThreshold, "raft-snapshot-threshold", d.SnapshotThreshold, "log entries since the last snapshot that make Raft take a new one")
	fl.DurationVar(&f.snapshotInterval, "raft-snapshot-interval", d.SnapshotInterval, "how often Raft checks --raft-snapshot-threshold")
	fl.Uint64Var(&f.trailingLogs, "raft-trailing-logs", d.TrailingLogs, "log entries kept after a snapshot, so that a slightly lagging follower catches up without one")
}

// apply checks the cluster flags and sets them in cfg. The addresses must
// be host:port, and the advertised ones must be reachable by others, so
// that a typo fails at start naming its flag rather than stalling a join.
func (f *clusterFlags) apply(cfg *server.Config) error {
	if err := raftstore.ValidateHostPort(f.raftAddr, false); err != nil {
		return fmt.Errorf("--raft-addr: %w", err)
	}
	check := []struct{ flag, addr, fallback string }{
		{"--raft-advertise", f.raftAdvertise, "--raft-addr"},
		{"--http-advertise", f.httpAdvertise, "--http-addr"},
	}
	defaults := map[string]string{"--raft-addr": f.raftAddr, "--http-addr": cfg.HTTPAddr}
	for _, c := range check {
		if c.addr != "" {
			if err := raftstore.ValidateHostPort(c.addr, true); err != nil {
				return fmt.Errorf("%s: %w", c.flag, err)
			}
			continue
		}
		// The bound address is advertised; port 0 is fine (the node
		// advertises the port it got), an unspecified host is not.
		addr := defaults[c.fallback]
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("%s: %q is not host:port: %w", c.fallback, addr, err)
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			return fmt.Errorf("%s: %s %q listens on every interface, which other nodes cannot be told to use; set %s", c.flag, c.fallback, addr, c.flag)
		}
	}
	for _, a := range f.join {
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(a, "https://")); err != nil {
			return fmt.Errorf("--join: %q is not an API address host:port: %w", a, err)
		}
	}
	if len(f.join) > 0 && cfg.Bootstrap {
		return fmt.Errorf("--bootstrap and --join exclude each other: the first node bootstraps, the others join it")
	}
	cfg.RaftAddr = f.raftAddr
	cfg.RaftAdvertise = f.raftAdvertise
	cfg.HTTPAdvertise = f.httpAdvertise
	r := &cfg.Raft
	r.HeartbeatTimeout = f.heartbeat
	r.ElectionTimeout = f.election
	r.LeaderLeaseTimeout = f.leaderLease
	r.SnapshotThreshold = f.snapshotThreshold
	r.SnapshotInterval = f.snapshotInterval
	r.TrailingLogs = f.trailingLogs
	probe := *r
	probe.NodeID, probe.DataDir = "probe", "probe"
	if err := probe.Validate(); err != nil {
		return fmt.Errorf("--raft-* timing flags: %w", err)
	}
	return nil
}

// joinOnStart is runServer's start hook: with --join, ask the cluster to
// add this node and wait until it has. An interrupt while waiting is a
// normal shutdown, not an error.
func (f *clusterFlags) joinOnStart(ctx context.Context, s *server.Server) error {
	if len(f.join) == 0 {
		return nil
	}
	err := s.JoinCluster(ctx, f.join)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Show and change the cluster's members",
		Long: `Show the Raft cluster (leader, term, indexes, members) and remove members.
Nodes join with "coordinatord server --join"; removing one needs the
cluster.write permission (admin in the default policy).

--addr accepts a comma-separated list of nodes: the command tries them in
turn until one answers.`,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newClusterStatusCmd(), newClusterMembersCmd(), newClusterRemoveCmd())
	return cmd
}

func newClusterStatusCmd() *cobra.Command {
	var stale bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the leader, term, indexes and members",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				st, err := c.ClusterStatus(ctx, stale)
				if err != nil {
					return err
				}
				return output(cmd, st, func(w io.Writer) error {
					leader := st.LeaderID
					if leader == "" {
						leader = "(none known)"
					}
					fmt.Fprintf(w, "leader:        %s\n", leader)
					fmt.Fprintf(w, "answered by:   %s (%s)\n", st.Node, st.RaftState)
					fmt.Fprintf(w, "term:          %d\n", st.Term)
					fmt.Fprintf(w, "commit index:  %d\n", st.CommitIndex)
					fmt.Fprintf(w, "applied index: %d\n", st.AppliedIndex)
					fmt.Fprintf(w, "last index:    %d\n\n", st.LastIndex)
					return membersTable(w, st.Members, time.Now())
				})
			})
		},
	}
	cmd.Flags().BoolVar(&stale, "stale", false, "answer from the node reached, without asking the leader")
	return cmd
}

func newClusterMembersCmd() *cobra.Command {
	var stale bool
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the members with their addresses and Raft suffrage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				st, err := c.ClusterStatus(ctx, stale)
				if err != nil {
					return err
				}
				return output(cmd, st.Members, func(w io.Writer) error { return membersTable(w, st.Members, time.Now()) })
			})
		},
	}
	cmd.Flags().BoolVar(&stale, "stale", false, "answer from the node reached, without asking the leader")
	return cmd
}

func newClusterRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NODE",
		Short: "Remove a node from the cluster (Raft configuration and members registry)",
		Long: `Remove a node from the cluster: its registry record and its Raft vote.
Stop the node's process afterwards. The last voter cannot be removed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.RemoveMember(ctx, args[0])
				if err != nil {
					return err
				}
				return output(cmd, resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "node %q removed from the cluster\n", resp.ID)
					return err
				})
			})
		},
	}
}

// membersTable prints members, one line each.
func membersTable(w io.Writer, ms []api.Member, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tSUFFRAGE\tRAFT ADDRESS\tAPI ADDRESS\tDATACENTER\tJOINED\tCONTACT")
	for _, m := range ms {
		role := "follower"
		if m.Leader {
			role = "leader"
		}
		if m.Suffrage == "none" {
			role = "-"
		}
		dash := func(s string) string {
			if s == "" {
				return "-"
			}
			return s
		}
		joined := "-"
		if !m.JoinedAt.IsZero() {
			joined = m.JoinedAt.Local().Format(time.DateTime)
		}
		contact := "-"
		switch {
		case m.HeartbeatFailing:
			contact = "failing since " + now.Sub(m.LastContact).Round(time.Millisecond).String()
		case !m.LastContact.IsZero():
			contact = now.Sub(m.LastContact).Round(time.Millisecond).String() + " ago"
		}
		httpAddr := m.HTTPAddr
		if !m.Registered {
			httpAddr = "(unregistered)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, role, dash(m.Suffrage), m.RaftAddr, dash(httpAddr), dash(m.Datacenter), joined, contact)
	}
	return tw.Flush()
}
