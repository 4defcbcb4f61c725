package wasm

import "github.com/prometheus/client_golang/prometheus"

// metrics are the sandbox's Prometheus collectors.
type metrics struct {
	calls        *prometheus.CounterVec
	failures     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	instances    *prometheus.GaugeVec
	dropped      *prometheus.CounterVec
	hookFailures prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_wasm_calls_total",
			Help: "Wasm module calls by module and result: ok, or the failure kind (trap, timeout, guest_error, ...).",
		}, []string{"module", "result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_wasm_failures_total",
			Help: "Failed Wasm module calls by module and kind, each also reported through the error hook.",
		}, []string{"module", "kind"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coordinatord_wasm_call_duration_seconds",
			Help:    "Wall time of Wasm module calls, instantiation of a fresh instance included.",
			Buckets: []float64{2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1, 1, 10},
		}, []string{"module"}),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coordinatord_wasm_instances",
			Help: "Live Wasm module instances (idle and busy) by module.",
		}, []string{"module"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_wasm_log_lines_dropped_total",
			Help: "Guest log lines (log, stdout, stderr) dropped by a module's log rate limit.",
		}, []string{"module"}),
		hookFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinatord_wasm_report_hook_failures_total",
			Help: "Failure reports the error hook could not deliver (written to stderr instead).",
		}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.calls, m.failures, m.duration, m.instances, m.dropped, m.hookFailures}
}

// moduleMetrics are one module's children, resolved once at install so a
// call does no label lookup on success.
type moduleMetrics struct {
	name      string
	calls     *prometheus.CounterVec
	ok        prometheus.Counter
	duration  prometheus.Observer
	instances prometheus.Gauge
	dropped   prometheus.Counter
}

func (m *metrics) forModule(name string) moduleMetrics {
	return moduleMetrics{
		name:      name,
		calls:     m.calls,
		ok:        m.calls.WithLabelValues(name, "ok"),
		duration:  m.duration.WithLabelValues(name),
		instances: m.instances.WithLabelValues(name),
		dropped:   m.dropped.WithLabelValues(name),
	}
}

// fail counts a failed call in calls_total (failures_total is counted by
// Sandbox.failed).
func (mm moduleMetrics) fail(kind string) { mm.calls.WithLabelValues(mm.name, kind).Inc() }
