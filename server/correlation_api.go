package server

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/swim"
)

// GET /v1/datacenters and GET /v1/members. Both answer from the node
// called, without asking the leader: the committed correlation record is
// on every node (a follower's may trail the leader's by the entries it has
// not applied yet), and the member view is the node's own by definition.
// Both need the action datacenter.read.

func (s *Server) correlationRoutes(handle func(string, route)) {
	handle("/v1/datacenters", route{http.MethodGet: s.datacenters})
	handle("/v1/members", route{http.MethodGet: s.gossipMembers})
}

func (s *Server) datacenters(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	if err := s.authorize(r, caller, "datacenter.read", map[string]any{"kind": "datacenters"}); err != nil {
		return err
	}
	if err := checkQuery(r); err != nil {
		return err
	}
	now := s.clock()
	out := api.Datacenters{
		Node: s.cfg.NodeID,
		Committed: api.CorrelationView{
			Severity: string(engine.SeverityNone), HeldDatacenters: []string{}, HeldLeases: []api.HeldLease{}, Events: []api.CorrelationEvent{},
		},
		Datacenters: []api.DatacenterStatus{},
	}
	index := map[string]int{}
	dc := func(name string) *api.DatacenterStatus {
		i, ok := index[name]
		if !ok {
			i = len(out.Datacenters)
			index[name] = i
			out.Datacenters = append(out.Datacenters, api.DatacenterStatus{Name: name})
		}
		return &out.Datacenters[i]
	}
	rec := s.store.Correlation()
	if rec != nil {
		c := &out.Committed
		c.Revision, c.Index, c.At, c.Leader, c.Severity = rec.Revision, rec.Index, rec.At, rec.Leader, string(rec.Severity)
		held := heldNow(rec, now)
		c.DelayEviction = len(held) > 0
		c.HeldDatacenters = append(c.HeldDatacenters, held...)
		if ep := rec.Episode; ep != nil {
			c.Episode = &api.Episode{ID: ep.ID, DetectedAt: ep.DetectedAt, Severity: string(ep.Severity),
				Datacenters: nonNilStrings(ep.Datacenters), HoldUntil: rec.HoldUntil, CapReached: !now.Before(rec.HoldUntil)}
			d := rec.Decision
			c.Decision = &api.HoldDecision{Source: d.Source, Modules: d.Modules, Hold: d.Hold, Notes: d.Notes, Event: string(d.Event), At: d.At}
		}
		leases, err := s.leasesIn(held)
		if err != nil {
			return storeError(err, "datacenters", "")
		}
		for _, l := range leases {
			c.HeldLeases = append(c.HeldLeases, api.HeldLease{JobID: l.JobID, Owner: l.Owner, OwnerDC: l.OwnerDC, Token: l.Token,
				ExpiresAt: l.ExpiresAt, Overdue: !now.Before(l.ExpiresAt)})
		}
		for _, ev := range rec.Events {
			c.Events = append(c.Events, correlationEventToAPI(ev))
		}
		for _, d := range rec.Datacenters {
			st := dc(d.Name)
			st.State, st.Since, st.Held = string(d.State), d.Since, slices.Contains(held, d.Name)
		}
		for _, name := range held {
			dc(name).Held = true
		}
	}
	if cs := s.corr; cs != nil && cs.ms != nil {
		out.Local.Gossip = true
		out.Local.HealthScore = cs.ms.LocalHealth()
		out.Local.Leader = cs.leading.Load()
		members := cs.ms.Members()
		out.Local.Members = len(members)
		for _, m := range members {
			d := dc(m.Meta.Datacenter)
			switch m.State {
			case swim.StateAlive:
				d.Local.Alive++
			case swim.StateSuspect:
				d.Local.Suspect++
			case swim.StateDead:
				d.Local.Dead++
			case swim.StateLeft:
				d.Local.Left++
			}
		}
		for i := range out.Datacenters {
			d := &out.Datacenters[i]
			mean, n, elevated := cs.rtt.mean(d.Name, now)
			d.Local.RTTSamples, d.Local.LatencyElevated = n, elevated
			if n > 0 {
				d.Local.RTT, d.Local.RTTNanos = mean.Round(time.Microsecond).String(), mean.Nanoseconds()
			}
		}
	}
	slices.SortFunc(out.Datacenters, func(a, b api.DatacenterStatus) int { return strings.Compare(a.Name, b.Name) })
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

func correlationEventToAPI(ev engine.CorrelationEvent) api.CorrelationEvent {
	return api.CorrelationEvent{Type: string(ev.Type), At: ev.At, Datacenter: ev.Datacenter, From: string(ev.From), To: string(ev.To),
		Severity: string(ev.Severity), Previous: string(ev.Previous), Episode: ev.Episode, Affected: ev.Affected, Healthy: ev.Healthy}
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (s *Server) gossipMembers(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	if err := s.authorize(r, caller, "datacenter.read", map[string]any{"kind": "members"}); err != nil {
		return err
	}
	if err := checkQuery(r); err != nil {
		return err
	}
	out := api.GossipMembers{Node: s.cfg.NodeID, Members: []api.GossipMember{}}
	if cs := s.corr; cs != nil && cs.ms != nil {
		out.Gossip = true
		for _, m := range cs.ms.Members() {
			out.Members = append(out.Members, api.GossipMember{Name: m.Name, Address: m.Addr, Datacenter: m.Meta.Datacenter,
				Role: string(m.Meta.Role), NodeID: m.Meta.NodeID, Version: m.Meta.Version, State: string(m.State)})
		}
	}
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}
