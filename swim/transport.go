package swim

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// transportCounters counts what crosses the network transport: UDP
// packets (probes, acks, gossip) and TCP streams (joins, push/pull, TCP
// probes). Encryption and compression happen above the transport, so
// these are wire bytes (without IP/UDP/TCP headers).
type transportCounters struct {
	packetsSent, packetsReceived         atomic.Uint64
	packetBytesSent, packetBytesReceived atomic.Uint64
	streamsOpened, streamsAccepted       atomic.Uint64
	streamBytesSent, streamBytesReceived atomic.Uint64
}

// countingTransport wraps memberlist's NetTransport to count bytes. It
// forwards the inner transport's packet and stream channels through its
// own, counting on the way.
type countingTransport struct {
	inner    memberlist.NodeAwareTransport
	c        *transportCounters
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	// stopping makes the forwarders discard instead of deliver; innerDone
	// ends them once the inner transport has stopped sending.
	stopping, innerDone chan struct{}
	once                sync.Once
	wg                  sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*countingTransport)(nil)

func newCountingTransport(inner memberlist.NodeAwareTransport, c *transportCounters) *countingTransport {
	t := &countingTransport{
		inner:     inner,
		c:         c,
		packetCh:  make(chan *memberlist.Packet),
		streamCh:  make(chan net.Conn),
		stopping:  make(chan struct{}),
		innerDone: make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *countingTransport) forwardPackets() {
	defer t.wg.Done()
	in := t.inner.PacketCh()
	for {
		select {
		case p := <-in:
			t.c.packetsReceived.Add(1)
			t.c.packetBytesReceived.Add(uint64(len(p.Buf)))
			select {
			case t.packetCh <- p:
			case <-t.stopping:
			}
		case <-t.innerDone:
			return
		}
	}
}

func (t *countingTransport) forwardStreams() {
	defer t.wg.Done()
	in := t.inner.StreamCh()
	for {
		select {
		case conn := <-in:
			t.c.streamsAccepted.Add(1)
			select {
			case t.streamCh <- &countingConn{Conn: conn, c: t.c}:
			case <-t.stopping:
				_ = conn.Close()
			}
		case <-t.innerDone:
			return
		}
	}
}

func (t *countingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	ts, err := t.inner.WriteToAddress(b, a)
	if err == nil {
		t.c.packetsSent.Add(1)
		t.c.packetBytesSent.Add(uint64(len(b)))
	}
	return ts, err
}

func (t *countingTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *countingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	conn, err := t.inner.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	t.c.streamsOpened.Add(1)
	return &countingConn{Conn: conn, c: t.c}, nil
}

func (t *countingTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown stops the inner transport (its listeners may be blocked handing
// over a packet, so the forwarders keep draining until it is done), then
// the forwarders. Safe to call more than once.
func (t *countingTransport) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.stopping)
		err = t.inner.Shutdown()
		close(t.innerDone)
		t.wg.Wait()
	})
	return err
}

// countingConn counts a stream's bytes.
type countingConn struct {
	net.Conn
	c *transportCounters
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.streamBytesReceived.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.streamBytesSent.Add(uint64(n))
	return n, err
}
