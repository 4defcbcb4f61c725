package swim

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats are a member's counters since New.
type Stats struct {
	// Events emitted on the Events channel, and those dropped because it
	// was full.
	Events, EventsDropped uint64
	// RTTSamples emitted on the RTTs channel, and those dropped.
	RTTSamples, RTTSamplesDropped uint64
	// UDP packets and their bytes, as written to and read from the socket
	// (encrypted and compressed; without IP and UDP headers).
	PacketsSent, PacketsReceived         uint64
	PacketBytesSent, PacketBytesReceived uint64
	// TCP streams opened and accepted, and their bytes.
	StreamsOpened, StreamsAccepted       uint64
	StreamBytesSent, StreamBytesReceived uint64
}

type counters struct {
	events, eventsDropped         atomic.Uint64
	rttSamples, rttSamplesDropped atomic.Uint64
}

// Stats returns the member's counters.
func (m *Memberlist) Stats() Stats {
	t := &m.transport
	return Stats{
		Events:              m.counters.events.Load(),
		EventsDropped:       m.counters.eventsDropped.Load(),
		RTTSamples:          m.counters.rttSamples.Load(),
		RTTSamplesDropped:   m.counters.rttSamplesDropped.Load(),
		PacketsSent:         t.packetsSent.Load(),
		PacketsReceived:     t.packetsReceived.Load(),
		PacketBytesSent:     t.packetBytesSent.Load(),
		PacketBytesReceived: t.packetBytesReceived.Load(),
		StreamsOpened:       t.streamsOpened.Load(),
		StreamsAccepted:     t.streamsAccepted.Load(),
		StreamBytesSent:     t.streamBytesSent.Load(),
		StreamBytesReceived: t.streamBytesReceived.Load(),
	}
}

// Collectors returns the member's Prometheus collectors, to register with
// the node's registry (once per member). Gossip bandwidth per member is
// rate(coordinatord_swim_packet_bytes_total) plus
// rate(coordinatord_swim_stream_bytes_total), per direction.
func (m *Memberlist) Collectors() []prometheus.Collector {
	counter := func(name, help string, labels prometheus.Labels, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(v.Load()) })
	}
	sent, recv := prometheus.Labels{"direction": "sent"}, prometheus.Labels{"direction": "received"}
	t := &m.transport
	const (
		packets     = "coordinatord_swim_packets_total"
		packetsHelp = "Gossip UDP packets sent and received by this member."
		pbytes      = "coordinatord_swim_packet_bytes_total"
		pbytesHelp  = "Bytes of gossip UDP packets sent and received by this member (encrypted payload, no IP/UDP headers)."
		streams     = "coordinatord_swim_streams_total"
		streamsHelp = "Gossip TCP streams (joins, push/pull, TCP probes) this member opened (sent) and accepted (received)."
		sbytes      = "coordinatord_swim_stream_bytes_total"
		sbytesHelp  = "Bytes of gossip TCP streams sent and received by this member."
	)
	cs := []prometheus.Collector{
		m.metrics.events,
		counter("coordinatord_swim_member_events_dropped_total",
			"Member events lost because the consumer of the events channel fell behind.", nil, &m.counters.eventsDropped),
		counter("coordinatord_swim_rtt_samples_total",
			"RTT samples of direct probes emitted.", nil, &m.counters.rttSamples),
		counter("coordinatord_swim_rtt_samples_dropped_total",
			"RTT samples lost because the consumer of the RTT channel fell behind.", nil, &m.counters.rttSamplesDropped),
		m.metrics.members,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coordinatord_swim_health_score",
			Help: "Lifeguard local health score: 0 is healthy; higher means this member misses probes itself.",
		}, func() float64 { return float64(m.LocalHealth()) }),
		counter(packets, packetsHelp, sent, &t.packetsSent),
		counter(packets, packetsHelp, recv, &t.packetsReceived),
		counter(pbytes, pbytesHelp, sent, &t.packetBytesSent),
		counter(pbytes, pbytesHelp, recv, &t.packetBytesReceived),
		counter(streams, streamsHelp, sent, &t.streamsOpened),
		counter(streams, streamsHelp, recv, &t.streamsAccepted),
		counter(sbytes, sbytesHelp, sent, &t.streamBytesSent),
		counter(sbytes, sbytesHelp, recv, &t.streamBytesReceived),
	}
	if ls := m.lossy; ls != nil {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coordinatord_swim_injected_packet_drops_total",
			Help: "Outgoing gossip UDP packets dropped on purpose by the injected-loss test transport (--gossip-loss); absent without it.",
		}, func() float64 { _, dropped := ls.Stats(); return float64(dropped) }))
	}
	return cs
}

// lossStats is what a chaos transport (LossyTransport) tells about the
// packets it dropped on purpose.
type lossStats interface {
	Stats() (sent, dropped uint64)
}

type metrics struct {
	events  *prometheus.CounterVec
	members *prometheus.GaugeVec
}

func newMetrics() *metrics {
	return &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_swim_member_events_total",
			Help: "Member state changes seen by this member, by new state (dropped ones included).",
		}, []string{"state"}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coordinatord_swim_members",
			Help: "Members in this member's view, itself included, by state.",
		}, []string{"state"}),
	}
}
