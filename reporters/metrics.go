package reporters

import "github.com/prometheus/client_golang/prometheus"

// Drop sources, the label of coordinatord_reporter_dropped_total.
const (
	// DropLeaseEvent: a lease event found the queue full.
	DropLeaseEvent = "lease_event"
	// DropCorrelation: a correlation event found the queue full.
	DropCorrelation = "correlation"
	// DropShutdown: an event was still queued when Close gave up waiting.
	DropShutdown = "shutdown"
	// DropResultsEvicted: a job's results were evicted from Results.
	DropResultsEvicted = "results_evicted"
	// DropResultsOverflow: a job had ResultsPerJob results already.
	DropResultsOverflow = "results_overflow"
)

type metrics struct {
	queueDepth prometheus.GaugeFunc
	queueCap   prometheus.Gauge
	submitted  *prometheus.CounterVec
	refused    prometheus.Counter
	dropped    *prometheus.CounterVec
	calls      *prometheus.CounterVec
	callTime   *prometheus.HistogramVec
	sinkWrites *prometheus.CounterVec
	sinkErrors *prometheus.CounterVec
}

func newMetrics(depth func() float64, capacity int) *metrics {
	m := &metrics{
		queueDepth: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coordinatord_reporter_queue_depth",
			Help: "Events waiting in the reporter queue.",
		}, depth),
		queueCap: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinatord_reporter_queue_capacity",
			Help: "Capacity of the reporter queue.",
		}),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_reporter_events_total",
			Help: "Events queued for reporters, by kind (job_result, lease_event).",
		}, []string{"kind"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinatord_reporter_refused_total",
			Help: "Job results refused because the reporter queue was full (answered 429; the reporting peer retries).",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_reporter_dropped_total",
			Help: "Reporter events or results dropped, by source: lease_event (queue full), shutdown, results_evicted, results_overflow.",
		}, []string{"source"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_reporter_calls_total",
			Help: "Reporter module calls, by reporter and result (ok or the error kind).",
		}, []string{"reporter", "result"}),
		callTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coordinatord_reporter_call_seconds",
			Help:    "Duration of reporter module calls, by reporter.",
			Buckets: []float64{.00001, .00005, .0001, .0005, .001, .005, .01, .05, .1, .5},
		}, []string{"reporter"}),
		sinkWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_reporter_sink_writes_total",
			Help: "Records written to sinks, by sink type.",
		}, []string{"type"}),
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_reporter_sink_errors_total",
			Help: "Records that could not be written to their sink, by sink type.",
		}, []string{"type"}),
	}
	m.queueCap.Set(float64(capacity))
	for _, s := range []string{DropLeaseEvent, DropCorrelation, DropShutdown, DropResultsEvicted, DropResultsOverflow} {
		m.dropped.WithLabelValues(s)
	}
	for _, k := range []string{KindJobResult, KindLeaseEvent} {
		m.submitted.WithLabelValues(k)
	}
	for _, t := range []string{SinkStdout, SinkFile, SinkWebhook} {
		m.sinkWrites.WithLabelValues(t)
		m.sinkErrors.WithLabelValues(t)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.queueDepth, m.queueCap, m.submitted, m.refused, m.dropped, m.calls, m.callTime, m.sinkWrites, m.sinkErrors}
}
