package raftstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coordinatord/coordinatord/engine"
)

// raftALPN is the application protocol the Raft transport negotiates. Both
// sides insist on it, so an HTTPS client that reaches the Raft port by
// mistake (or the transport reaching an API port) fails the handshake at
// once instead of exchanging garbage.
const raftALPN = "coordinatord-raft/1"

// Transport defaults.
const (
	// DefaultTransportTimeout bounds each Raft RPC's I/O (snapshots get
	// longer in proportion to their size) and each TLS handshake.
	DefaultTransportTimeout = 10 * time.Second
	// defaultTransportPool is how many idle connections are kept per peer.
	defaultTransportPool = 3
)

// TransportConfig configures NewTLSTransport.
type TransportConfig struct {
	// BindAddr is the host:port the transport listens on. When its host is a
	// specific IP address (not 0.0.0.0 or ::), outgoing connections use it
	// as their source address too, so that on a multi-homed host peers see
	// the address this node was told to use.
	BindAddr string

	// AdvertiseAddr is the host:port the other nodes reach this one at; it
	// is this node's address in the Raft configuration. Empty means the
	// address actually bound, which needs a specific BindAddr host.
	AdvertiseAddr string

	// Certificate is the node's own certificate (role coordinator): served
	// to peers that connect and presented to peers it dials.
	Certificate tls.Certificate

	// Verifier verifies a peer's chain against the cluster CA and reads its
	// claims. It is the only check: peers are recognised by identity, never
	// by host name or address.
	Verifier *engine.Verifier

	// Self is this node's identity. A peer must have role coordinator and
	// the same cluster and env, or the connection is refused (and logged
	// with the peer's claims or the certificate's defect).
	Self engine.Claims

	// Logger receives the transport's records. Nil means slog.Default().
	Logger *slog.Logger

	// Timeout bounds Raft's RPC I/O and each TLS handshake; 0 means
	// DefaultTransportTimeout.
	Timeout time.Duration
}

// PeerRejectedError is returned (and logged) when a Raft peer's certificate
// does not prove a coordinator of this cluster and env.
type PeerRejectedError struct {
	// Remote is the peer's address as this node sees it.
	Remote string
	// Claims are the peer's claims when its certificate was valid but
	// belongs to someone else; zero when the certificate itself failed.
	Claims engine.Claims
	// Reason says what is wrong.
	Reason string
	// Err is the certificate's defect (an *engine.IdentityError), if any.
	Err error
}

func (e *PeerRejectedError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("raft peer %s rejected: %s: %v", e.Remote, e.Reason, e.Err)
	}
	return fmt.Sprintf("raft peer %s (%s) rejected: %s", e.Remote, e.Claims.SPIFFEID, e.Reason)
}

func (e *PeerRejectedError) Unwrap() error { return e.Err }

// TLSTransport is Raft's network transport over mutual TLS 1.3. It is a
// raft.NetworkTransport whose stream layer verifies every peer's identity,
// plus Probe, which AddMember uses to check a joining node before adding it.
type TLSTransport struct {
	*raft.NetworkTransport
	layer *tlsStreamLayer
}

var (
	_ raft.Transport = (*TLSTransport)(nil)
	_ PeerProber     = (*TLSTransport)(nil)
)

// NewTLSTransport returns a Raft network transport over mutual TLS 1.3,
// listening on cfg.BindAddr. Pass it as Config.Transport; the caller owns it
// and closes it after the Store.
func NewTLSTransport(cfg TransportConfig) (*TLSTransport, error) {
	layer, err := newTLSStreamLayer(cfg)
	if err != nil {
		return nil, err
	}
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: defaultTransportPool,
		Timeout: layer.timeout,
		Logger:  newHCLogger(layer.logger, "raft.transport"),
	})
	return &TLSTransport{NetworkTransport: nt, layer: layer}, nil
}

// Probe dials addr like a Raft connection and checks that the peer is a
// coordinator of this cluster and env whose node claim is id. It sends no
// RPC.
func (t *TLSTransport) Probe(ctx context.Context, addr, id string) error {
	c, err := t.layer.dial(ctx, addr, func(cs tls.ConnectionState) error {
		claims, err := verifyPeer(t.layer.verifier, t.layer.self, addr, cs)
		if err == nil && claims.Node != id {
			return &PeerRejectedError{Remote: addr, Claims: claims, Reason: fmt.Sprintf("node %q answers there, not %q", claims.Node, id)}
		}
		return err
	})
	if err != nil {
		return err
	}
	return c.Close()
}

// ValidateHostPort checks that addr is host:port with a host and a port
// number, as the transport's addresses must be. advertise additionally
// refuses an unspecified host (0.0.0.0, ::) and port 0, which nobody can
// connect to.
func ValidateHostPort(addr string, advertise bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if host == "" && advertise {
		return fmt.Errorf("%q has no host", addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	if advertise {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return fmt.Errorf("%q: %s is not an address other nodes can reach; advertise a specific one", addr, host)
		}
		if n == 0 {
			return fmt.Errorf("%q: port 0 cannot be advertised", addr)
		}
	}
	return nil
}

// tlsStreamLayer implements raft.StreamLayer over TLS. Accepted connections
// are handshaken (and their peer verified) on their own goroutine before
// Accept returns them, so a slow or hostile client never blocks the accept
// loop and Raft only ever reads from verified peers.
type tlsStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	local     *net.TCPAddr // source address for dialing, or nil
	server    *tls.Config
	client    *tls.Config
	timeout   time.Duration
	logger    *slog.Logger
	verifier  *engine.Verifier
	self      engine.Claims

	accepted  chan net.Conn
	acceptErr chan error
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

// tcpAddr is an advertised address; net.Addr without resolving it.
type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

func newTLSStreamLayer(cfg TransportConfig) (*tlsStreamLayer, error) {
	switch {
	case len(cfg.Certificate.Certificate) == 0:
		return nil, errors.New("raft transport: the node's certificate is required")
	case cfg.Verifier == nil:
		return nil, errors.New("raft transport: a verifier is required")
	case cfg.Self.Cluster == "" || cfg.Self.Env == "":
		return nil, errors.New("raft transport: the node's own cluster and env claims are required")
	}
	if err := ValidateHostPort(cfg.BindAddr, false); err != nil {
		return nil, fmt.Errorf("raft transport: bind address: %w", err)
	}
	if cfg.AdvertiseAddr != "" {
		if err := ValidateHostPort(cfg.AdvertiseAddr, true); err != nil {
			return nil, fmt.Errorf("raft transport: advertise address: %w", err)
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTransportTimeout
	}
	l := &tlsStreamLayer{
		timeout:   timeout,
		verifier:  cfg.Verifier,
		self:      cfg.Self,
		logger:    logger.With("component", "raft.transport", "node", cfg.Self.Node),
		accepted:  make(chan net.Conn),
		acceptErr: make(chan error, 1),
		closed:    make(chan struct{}),
	}
	host, _, _ := net.SplitHostPort(cfg.BindAddr)
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		l.local = &net.TCPAddr{IP: ip}
	}
	l.server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cfg.Certificate},
		ClientAuth:   tls.RequireAnyClientCert,
		NextProtos:   []string{raftALPN},
	}
	// Verification is done in VerifyConnection with the identity rules, not
	// by crypto/tls with host names: a peer is whoever its verified claims
	// say, at whatever address it is reached.
	l.client = &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cfg.Certificate},
		InsecureSkipVerify: true,
		NextProtos:         []string{raftALPN},
	}
	l.server.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := l.server.Clone()
		c.GetConfigForClient = nil
		c.VerifyConnection = l.verifyFunc(hello.Conn.RemoteAddr().String())
		return c, nil
	}
	ln, err := net.Listen("tcp", cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("raft transport: listen on %s: %w", cfg.BindAddr, err)
	}
	l.ln = ln
	switch {
	case cfg.AdvertiseAddr != "":
		l.advertise = tcpAddr(cfg.AdvertiseAddr)
	default:
		bound := ln.Addr().String()
		if err := ValidateHostPort(bound, true); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("raft transport: bound to %s, which cannot be advertised; set an advertise address: %w", bound, err)
		}
		l.advertise = tcpAddr(bound)
	}
	l.wg.Add(1)
	go l.acceptLoop()
	l.logger.Info("raft transport listening", "bind", ln.Addr().String(), "advertise", l.advertise.String())
	return l, nil
}

// verifyPeer accepts only a coordinator of this node's cluster and env, read
// from a chain that verifies against the cluster CA.
func verifyPeer(v *engine.Verifier, self engine.Claims, remote string, cs tls.ConnectionState) (engine.Claims, error) {
	claims, err := v.Verify(cs.PeerCertificates)
	if err != nil {
		return engine.Claims{}, &PeerRejectedError{Remote: remote, Reason: "certificate not accepted", Err: err}
	}
	var reason string
	switch {
	case claims.Role != engine.RoleCoordinator:
		reason = fmt.Sprintf("role %q, a Raft peer must be %q", claims.Role, engine.RoleCoordinator)
	case claims.Cluster != self.Cluster:
		reason = fmt.Sprintf("cluster %q, this node serves %q", claims.Cluster, self.Cluster)
	case claims.Env != self.Env:
		reason = fmt.Sprintf("env %q, this node serves %q", claims.Env, self.Env)
	default:
		return claims, nil
	}
	return claims, &PeerRejectedError{Remote: remote, Claims: claims, Reason: reason}
}

// acceptLoop accepts TCP connections and hands each to a handshake
// goroutine until the layer is closed.
func (l *tlsStreamLayer) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			// Anything else (too many open files, say) ends the listener;
			// Raft sees it from Accept and logs it.
			select {
			case l.acceptErr <- fmt.Errorf("raft transport: accept on %s: %w", l.ln.Addr(), err):
			default:
			}
			return
		}
		backoff = 0
		l.wg.Add(1)
		go l.handshake(c)
	}
}

func (l *tlsStreamLayer) handshake(c net.Conn) {
	defer l.wg.Done()
	tc := tls.Server(c, l.server)
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	// Give up on the handshake when the layer closes.
	go func() {
		select {
		case <-l.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = tc.Close()
		l.logRejected(c.RemoteAddr().String(), err)
		return
	}
	select {
	case l.accepted <- tc:
	case <-l.closed:
		_ = tc.Close()
	}
}

// logRejected logs a failed handshake, with the peer's claims when the
// certificate was valid but not a peer's.
func (l *tlsStreamLayer) logRejected(remote string, err error) {
	var pr *PeerRejectedError
	if errors.As(err, &pr) {
		attrs := []any{"remote", remote, "reason", pr.Reason}
		if pr.Err != nil {
			attrs = append(attrs, "defect", pr.Err.Error())
		} else {
			attrs = append(attrs, "peer", pr.Claims.SPIFFEID, "peer_role", string(pr.Claims.Role),
				"peer_cluster", pr.Claims.Cluster, "peer_env", pr.Claims.Env, "peer_node", pr.Claims.Node)
		}
		l.logger.Warn("raft connection refused: peer is not a coordinator of this cluster", attrs...)
		return
	}
	// A peer that connects and goes away (a port probe, a partition, a
	// restart) is not worth more than a debug line.
	l.logger.Debug("raft handshake failed", "remote", remote, "error", err)
}

// Accept implements net.Listener: it returns the next verified connection.
func (l *tlsStreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.accepted:
		return c, nil
	case err := <-l.acceptErr:
		return nil, err
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener. It stops accepting and waits for the
// handshakes in flight; connections already returned stay Raft's.
func (l *tlsStreamLayer) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		err = l.ln.Close()
		l.wg.Wait()
	})
	return err
}

// Addr implements net.Listener: the advertised address, which Raft uses as
// this node's address.
func (l *tlsStreamLayer) Addr() net.Addr { return l.advertise }

// Dial implements raft.StreamLayer: a TCP connection from the bind address
// (when it is a specific IP), then a TLS handshake that verifies the peer.
func (l *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.dial(ctx, string(address), l.verifyFunc(string(address)))
}

func (l *tlsStreamLayer) dial(ctx context.Context, address string, verify func(tls.ConnectionState) error) (net.Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.timeout)
		defer cancel()
	}
	d := net.Dialer{}
	if l.local != nil {
		d.LocalAddr = l.local
	}
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, fmt.Errorf("raft transport: dial %s: %w", address, err)
	}
	cfg := l.client.Clone()
	cfg.VerifyConnection = verify
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		var pr *PeerRejectedError
		if errors.As(err, &pr) {
			l.logRejected(address, err)
		}
		return nil, fmt.Errorf("raft transport: handshake with %s: %w", address, err)
	}
	return tc, nil
}

// verifyFunc returns the VerifyConnection check for a peer at remote.
func (l *tlsStreamLayer) verifyFunc(remote string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		_, err := verifyPeer(l.verifier, l.self, remote, cs)
		return err
	}
}
