package swim

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// fakeTransport records the packets written to it.
type fakeTransport struct {
	mu      sync.Mutex
	written []time.Time
	down    bool
}

func nodeWithMeta(meta string) *memberlist.Node {
	return &memberlist.Node{Name: "n", Meta: []byte(meta)}
}

func (f *fakeTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return net.IPv4(127, 0, 0, 1), 1, nil
}
func (f *fakeTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return f.WriteToAddress(b, memberlist.Address{Addr: addr})
}
func (f *fakeTransport) WriteToAddress([]byte, memberlist.Address) (time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.written = append(f.written, time.Now())
	return time.Now(), nil
}
func (f *fakeTransport) PacketCh() <-chan *memberlist.Packet { return nil }
func (f *fakeTransport) DialTimeout(string, time.Duration) (net.Conn, error) {
	return nil, net.ErrClosed
}
func (f *fakeTransport) DialAddressTimeout(memberlist.Address, time.Duration) (net.Conn, error) {
	return nil, net.ErrClosed
}
func (f *fakeTransport) StreamCh() <-chan net.Conn { return nil }
func (f *fakeTransport) Shutdown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = true
	return nil
}

func (f *fakeTransport) writes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.written...)
}

func TestLossyTransportDropsAboutTheConfiguredFraction(t *testing.T) {
	for _, loss := range []float64{0, 0.1, 0.5, 1} {
		f := &fakeTransport{}
		lt, err := NewLossyTransport(f, LossyConfig{Loss: loss, Seed: 42})
		if err != nil {
			t.Fatal(err)
		}
		const n = 20000
		for range n {
			if _, err := lt.WriteTo([]byte("x"), "127.0.0.1:1"); err != nil {
				t.Fatal(err)
			}
		}
		sent, dropped := lt.Stats()
		if sent+dropped != n || int(sent) != len(f.writes()) {
			t.Fatalf("loss %v: sent %d + dropped %d != %d, or inner got %d", loss, sent, dropped, n, len(f.writes()))
		}
		// 5 standard deviations of a binomial at n=20000 is under 1.8%.
		if got := float64(dropped) / n; got < loss-0.02 || got > loss+0.02 {
			t.Errorf("loss %v: dropped %.3f of packets", loss, got)
		}
	}
}

func TestLossyTransportLossCanChangeWhileRunning(t *testing.T) {
	f := &fakeTransport{}
	lt, err := NewLossyTransport(f, LossyConfig{Loss: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = lt.WriteTo(nil, "a")
	if err := lt.SetLoss(0); err != nil {
		t.Fatal(err)
	}
	_, _ = lt.WriteTo(nil, "a")
	if sent, dropped := lt.Stats(); sent != 1 || dropped != 1 {
		t.Errorf("sent %d dropped %d, want 1 and 1", sent, dropped)
	}
	for _, bad := range []float64{-0.1, 1.1} {
		if err := lt.SetLoss(bad); err == nil {
			t.Errorf("SetLoss(%v) accepted", bad)
		}
	}
	if _, err := NewLossyTransport(f, LossyConfig{Delay: -time.Second}); err == nil {
		t.Error("a negative delay was accepted")
	}
	if err := lt.Shutdown(); err != nil || !f.down {
		t.Errorf("Shutdown: %v, inner down %v", err, f.down)
	}
}

func TestLossyTransportDelaysPackets(t *testing.T) {
	f := &fakeTransport{}
	const delay = 30 * time.Millisecond
	lt, err := NewLossyTransport(f, LossyConfig{Delay: delay, Jitter: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 5 {
		if _, err := lt.WriteTo([]byte("x"), "a"); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.writes()); n != 0 {
		t.Fatalf("%d packets went out at once", n)
	}
	waitFor(t, 5*time.Second, "the delayed packets go out", func() bool { return len(f.writes()) == 5 })
	for _, w := range f.writes() {
		if w.Sub(start) < delay {
			t.Errorf("a packet went out after %s, before the %s delay", w.Sub(start), delay)
		}
	}
}
