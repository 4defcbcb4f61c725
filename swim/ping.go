package swim

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// pingDelegate is our memberlist.PingDelegate: each direct UDP probe this
// member completes becomes an RTTSample. memberlist calls it from its
// probe goroutine, without its locks held, with a copy of the probed node
// (which is not kept). It must not block: the sample is dropped and
// counted when the RTTs channel is full.
type pingDelegate struct{ m *Memberlist }

var _ memberlist.PingDelegate = pingDelegate{}

// AckPayload adds nothing to acks.
func (pingDelegate) AckPayload() []byte { return nil }

func (d pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, _ []byte) {
	d.m.recordRTT(other, rtt)
}
