package engine

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts admission decisions. Create it with NewMetrics and register
// its collectors with the node's registry.
type Metrics struct {
	decisions      *prometheus.CounterVec
	latency        prometheus.Histogram
	cacheHits      prometheus.Counter
	policyRevision prometheus.Gauge
	logDropped     prometheus.CounterFunc
	logEvicted     prometheus.CounterFunc
}

// NewMetrics returns the admission metrics for an engine using log.
func NewMetrics(log *DecisionLog) *Metrics {
	return &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_admission_decisions_total",
			Help: "Admission decisions by result (allow, deny, audit_deny) and reason code.",
		}, []string{"result", "reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "coordinatord_admission_decision_duration_seconds",
			Help:    "Time to reach an admission decision, cache hits included.",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1},
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinatord_admission_cache_hits_total",
			Help: "Admission decisions answered from the decision cache.",
		}),
		policyRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinatord_policy_revision",
			Help: "Revision of the policy set this node's admission engine has loaded.",
		}),
		logDropped: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coordinatord_decision_log_dropped_total",
			Help: "Decisions not written to the structured log because its queue was full.",
		}, func() float64 { return float64(log.Dropped()) }),
		logEvicted: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coordinatord_decision_log_evicted_total",
			Help: "Decisions pushed out of the in-memory decision buffer by newer ones.",
		}, func() float64 { return float64(log.Evicted()) }),
	}
}

// Collectors returns every collector to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.decisions, m.latency, m.cacheHits, m.policyRevision, m.logDropped, m.logEvicted}
}

func (m *Metrics) observe(d *Decision) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(d.Result, d.ReasonCode).Inc()
	m.latency.Observe(d.Latency.Seconds())
	if d.Cached {
		m.cacheHits.Inc()
	}
}
