package tests

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// faultNet is the network between a test cluster's nodes, made of one TCP
// proxy per node address (Raft and API). Each node binds its own loopback
// IP, 127.0.0.(10+i), and its outgoing connections come from it, so a proxy
// knows which node a connection comes from by its source IP alone, and the
// test can cut a node off from the others. Connections from any other
// source (the test's own clients) always pass. See README.md.
type faultNet struct {
	t testing.TB

	mu sync.Mutex
	// nodeOfIP maps a node's IP to its index (1-based).
	nodeOfIP map[string]int
	// side assigns nodes to sides of a partition: two nodes on different
	// sides cannot reach each other. Nodes not in it are on side 0.
	side map[int]int
	// links are the live proxied connections.
	links map[*link]struct{}
}

// link is one proxied connection: src's connection to the proxy and the
// proxy's connection to dst.
type link struct {
	src, dst int
	in, out  net.Conn
}

func (l *link) close() {
	_ = l.in.Close()
	_ = l.out.Close()
}

func newFaultNet(t testing.TB) *faultNet {
	return &faultNet{t: t, nodeOfIP: map[string]int{}, side: map[int]int{}, links: map[*link]struct{}{}}
}

// addNode registers node i's source IP.
func (f *faultNet) addNode(i int, ip string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodeOfIP[ip] = i
}

// blockedLocked reports whether src may not reach dst. Source 0 is not a
// node (a test client) and is never blocked.
func (f *faultNet) blockedLocked(src, dst int) bool {
	return src != 0 && f.side[src] != f.side[dst]
}

// isolate puts nodes on a side of their own, cuts the connections that now
// cross sides, and refuses new ones until heal.
func (f *faultNet) isolate(nodes ...int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range nodes {
		f.side[n] = 1
	}
	for l := range f.links {
		if f.blockedLocked(l.src, l.dst) {
			l.close()
			delete(f.links, l)
		}
	}
}

// heal removes every partition.
func (f *faultNet) heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.side)
}

// faultProxy listens on 127.0.0.1 for one node's address and forwards each
// connection to the node's bind address, unless the partition forbids it.
type faultProxy struct {
	net    *faultNet
	dst    int
	target string
	ln     net.Listener
	wg     sync.WaitGroup
}

// newProxy starts a proxy in front of node dst at target and stops it at
// the end of the test.
func (f *faultNet) newProxy(dst int, target string) *faultProxy {
	f.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	p := &faultProxy{net: f, dst: dst, target: target, ln: ln}
	p.wg.Add(1)
	go p.serve()
	f.t.Cleanup(p.close)
	return p
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

func (p *faultProxy) close() {
	_ = p.ln.Close()
	p.net.mu.Lock()
	for l := range p.net.links {
		if l.dst == p.dst {
			l.close()
			delete(p.net.links, l)
		}
	}
	p.net.mu.Unlock()
	p.wg.Wait()
}

func (p *faultProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.net.t.Logf("proxy for node %d: accept: %v", p.dst, err)
			}
			return
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *faultProxy) handle(in net.Conn) {
	defer p.wg.Done()
	ip := in.RemoteAddr().(*net.TCPAddr).IP.String()
	p.net.mu.Lock()
	src := p.net.nodeOfIP[ip]
	blocked := p.net.blockedLocked(src, p.dst)
	p.net.mu.Unlock()
	if blocked {
		// Refused: the peer sees its connection closed at once, as when
		// a firewall resets it.
		_ = in.Close()
		return
	}
	out, err := net.Dial("tcp", p.target)
	if err != nil {
		// The node is down: the same as a refused connection.
		_ = in.Close()
		return
	}
	l := &link{src: src, dst: p.dst, in: in, out: out}
	p.net.mu.Lock()
	if p.net.blockedLocked(src, p.dst) { // a partition began meanwhile
		p.net.mu.Unlock()
		l.close()
		return
	}
	p.net.links[l] = struct{}{}
	p.net.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done // either direction ending ends the link
	l.close()
	<-done
	p.net.mu.Lock()
	delete(p.net.links, l)
	p.net.mu.Unlock()
}
