package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
)

// raftStates are the values of the raft state gauge, one series each.
var raftStates = []string{"Follower", "Candidate", "Leader", "Shutdown"}

type serverMetrics struct {
	identityRejections *prometheus.CounterVec
	policyLoadErrors   prometheus.Counter
	raftState          *prometheus.GaugeVec
	appliedIndex       prometheus.GaugeFunc
	leaseOps           *prometheus.CounterVec
	leasesActive       prometheus.GaugeFunc
	store              *raftstore.Store
}

func newServerMetrics(store *raftstore.Store) *serverMetrics {
	return &serverMetrics{
		store: store,
		identityRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_identity_rejections_total",
			Help: "Requests rejected because the client certificate failed verification, by defect.",
		}, []string{"defect"}),
		policyLoadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinatord_policy_load_errors_total",
			Help: "Committed policy sets this node failed to load (it keeps its previous set).",
		}),
		raftState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coordinatord_raft_state",
			Help: "1 for the node's current Raft state, 0 for the others.",
		}, []string{"state"}),
		appliedIndex: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coordinatord_raft_applied_index",
			Help: "Last Raft log index applied to this node's state machine.",
		}, func() float64 { return float64(store.AppliedIndex()) }),
		leaseOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_lease_operations_total",
			Help: "Lease operations this node answered, by operation and result (ok or the error code).",
		}, []string{"op", "result"}),
		leasesActive: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coordinatord_leases_active",
			Help: "Active leases in this node's state.",
		}, func() float64 {
			active, _ := store.LeaseStats()
			return float64(active)
		}),
	}
}

func (m *serverMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.identityRejections, m.policyLoadErrors, m.raftState, m.appliedIndex, m.leaseOps, m.leasesActive}
}

// refreshRaftState sets the state gauge at scrape time, which is when it is
// read; tracking every transition would need a hook into raft's observer.
func (m *serverMetrics) refreshRaftState() {
	cur := m.store.State()
	for _, st := range raftStates {
		v := 0.0
		if st == cur {
			v = 1
		}
		m.raftState.WithLabelValues(st).Set(v)
	}
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	if err := s.authorize(r, caller, "metrics.read", nil); err != nil {
		return err
	}
	s.metrics.refreshRaftState()
	promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{ErrorLog: nil}).ServeHTTP(w, r)
	return nil
}
