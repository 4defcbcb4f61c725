package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
)

func newDCCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dc",
		Short: "Show the datacenters as the correlation engine sees them",
		Long: `Show the datacenters: their states, the partition episode in progress, the
datacenters whose leases are held and those leases, and the recent
correlation events (GET /v1/datacenters, action datacenter.read).

The node called answers by itself: datacenter states, severity, episode,
holds and events are the correlation engine's committed decisions (the same
on every node); member counts, RTTs and the health score are that node's own
gossip view.`,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newDCStatusCmd())
	return cmd
}

func newDCStatusCmd() *cobra.Command {
	var events int
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the datacenters, the episode, the held leases and recent events",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				d, err := c.Datacenters(ctx)
				if err != nil {
					return err
				}
				return output(cmd, d, func(w io.Writer) error { return dcStatusText(w, d, events, time.Now()) })
			})
		},
	}
	cmd.Flags().IntVar(&events, "events", 10, "recent correlation events to show (text output)")
	return cmd
}

// ago renders how long before now t was.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + (-d).Round(time.Second).String()
	}
	return d.Round(time.Second).String() + " ago"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func dcStatusText(w io.Writer, d *api.Datacenters, events int, now time.Time) error {
	c := d.Committed
	if c.Revision == 0 {
		fmt.Fprintf(w, "no correlation record committed yet (the leader commits one once it observes the gossip pool)\n")
	} else {
		fmt.Fprintf(w, "severity:     %s\n", c.Severity)
		if ep := c.Episode; ep != nil {
			capNote := "holds until " + ep.HoldUntil.Local().Format(time.DateTime) + " (" + ago(ep.HoldUntil, now) + ")"
			if ep.CapReached {
				capNote = "hold cap reached " + ago(ep.HoldUntil, now) + ": held leases expire as usual"
			}
			fmt.Fprintf(w, "episode:      %s, detected %s, datacenters %s; %s\n", ep.ID, ago(ep.DetectedAt, now), strings.Join(ep.Datacenters, ", "), capNote)
		} else {
			fmt.Fprintf(w, "episode:      none\n")
		}
		held := "none"
		if len(c.HeldDatacenters) > 0 {
			held = strings.Join(c.HeldDatacenters, ", ")
		}
		if dec := c.Decision; dec != nil {
			who := "built-in"
			if dec.Source == "modules" {
				who = "modules " + strings.Join(dec.Modules, ", ")
			}
			held += fmt.Sprintf(" (decided by %s)", who)
		}
		fmt.Fprintf(w, "held:         %s\n", held)
		fmt.Fprintf(w, "committed:    revision %d at index %d by %s, %s\n", c.Revision, c.Index, dash(c.Leader), ago(c.At, now))
		if c.Decision != nil {
			for _, n := range c.Decision.Notes {
				fmt.Fprintf(w, "note:         %s\n", n)
			}
		}
	}
	if d.Local.Gossip {
		role := "follower"
		if d.Local.Leader {
			role = "leader, runs the engine"
		}
		fmt.Fprintf(w, "answered by:  %s (%s), %d gossip members, local health score %d (0 is healthy)\n", d.Node, role, d.Local.Members, d.Local.HealthScore)
	} else {
		fmt.Fprintf(w, "answered by:  %s (not a gossip member: no local view)\n", d.Node)
	}

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATACENTER\tSTATE\tSINCE\tHELD\tALIVE\tSUSPECT\tDEAD\tLEFT\tRTT\tLATENCY")
	for _, dc := range d.Datacenters {
		held := "-"
		if dc.Held {
			held = "held"
		}
		latency := "-"
		switch {
		case dc.Local.LatencyElevated:
			latency = "elevated"
		case dc.Local.RTTSamples > 0:
			latency = "ok"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", dc.Name, dash(dc.State), ago(dc.Since, now), held,
			dc.Local.Alive, dc.Local.Suspect, dc.Local.Dead, dc.Local.Left, dash(dc.Local.RTT), latency)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "(STATE, SINCE, HELD: committed through Raft; ALIVE to LATENCY: %s's own gossip view)\n", d.Node)

	if len(c.HeldLeases) > 0 {
		fmt.Fprintf(w, "\nHELD LEASES (%d)\n", len(c.HeldLeases))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "JOB\tOWNER\tDATACENTER\tTOKEN\tEXPIRES")
		for _, l := range c.HeldLeases {
			exp := ago(l.ExpiresAt, now)
			if l.Overdue {
				exp = "overdue " + strings.TrimSuffix(exp, " ago") + " (held)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", l.JobID, l.Owner, l.OwnerDC, l.Token, exp)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	if events > 0 && len(c.Events) > 0 {
		evs := c.Events
		if len(evs) > events {
			evs = evs[len(evs)-events:]
		}
		fmt.Fprintf(w, "\nRECENT EVENTS (%d of %d)\n", len(evs), len(c.Events))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tEVENT\tDETAIL")
		for _, ev := range evs {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", ev.At.Local().Format("15:04:05.000"), ev.Type, eventDetail(ev))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func eventDetail(ev api.CorrelationEvent) string {
	switch ev.Type {
	case "dc_state_changed":
		return fmt.Sprintf("%s: %s -> %s", ev.Datacenter, ev.From, ev.To)
	case "severity_changed":
		return fmt.Sprintf("%s: %s -> %s, affected %s", ev.Episode, ev.Previous, ev.Severity, strings.Join(ev.Affected, ", "))
	default:
		return fmt.Sprintf("%s: severity %s, affected %s", ev.Episode, ev.Severity, dash(strings.Join(ev.Affected, ", ")))
	}
}

func newMembersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the gossip pool's members as the node called sees them",
		Long: `List the members of the gossip pool (servers and agents) with their
address, datacenter, role, node id, version and state, as the node called
sees them (GET /v1/members, action datacenter.read). The Raft cluster's
members are "coordinatord cluster members".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				m, err := c.GossipMembers(ctx)
				if err != nil {
					return err
				}
				return output(cmd, m, func(w io.Writer) error { return gossipMembersText(w, m) })
			})
		},
	}
	addClientFlags(cmd)
	return cmd
}

func gossipMembersText(w io.Writer, m *api.GossipMembers) error {
	if !m.Gossip {
		_, err := fmt.Fprintf(w, "%s is not a gossip member (no gossip key configured)\n", m.Node)
		return err
	}
	counts := map[string]int{}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tDATACENTER\tROLE\tNODE ID\tSTATE\tVERSION")
	for _, mem := range m.Members {
		counts[mem.State]++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mem.Name, mem.Address, mem.Datacenter, mem.Role, mem.NodeID, mem.State, mem.Version)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "(%d members as %s sees them: %d alive, %d suspect, %d dead, %d left)\n",
		len(m.Members), m.Node, counts["alive"], counts["suspect"], counts["dead"], counts["left"])
	return err
}
