package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
)

// Requests on any node. A request that needs the Raft leader (every write,
// and every read without ?stale=true) that reaches a follower is proxied to
// the leader's advertised API address, over mutual TLS with the follower's
// own coordinator certificate. The leader must answer it exactly as if the
// client had called it directly, so the follower passes the client's
// verified certificate chain in headerClientChain and the leader, only when
// its direct peer is a verified coordinator of its own cluster and env,
// authenticates the request with that chain, re-verifying it against its
// CA. A client cannot set the header: from anyone but such a coordinator it
// is refused.
//
// Forwarding is one hop: a forwarded request that reaches a node that is
// not the leader (leadership moved meanwhile) is answered 503, and the
// client retries.
//
// Routes opt in by wrapping their handlers with leaderOnly or leaderRead.
// Health, ready, metrics, decisions and admission checks are served by the
// node that receives them.

const (
	// headerClientChain carries the client's certificate chain from a
	// follower to the leader: base64 (standard, padded) DER certificates,
	// leaf first, separated by commas.
	headerClientChain = "X-Coordinatord-Client-Chain"
	// headerForwardedBy names the follower that forwarded, for the leader's
	// logs.
	headerForwardedBy = "X-Coordinatord-Forwarded-By"
	// headerLeader, on a forwarded answer, names the leader that served it.
	headerLeader = "X-Coordinatord-Leader"

	// maxForwardedChain bounds the chain a follower may pass: a leaf and a
	// few intermediates.
	maxForwardedChain = 8
	// forwardedCacheSize bounds the cache of verified forwarded chains.
	forwardedCacheSize = 4096
	// retryAfterNoLeader is the Retry-After of 503 answers while no leader
	// can be reached: about an election.
	retryAfterNoLeader = time.Second
)

// forwardedKey marks, in a request's context, a request that a follower
// forwarded; its value is the forwarding coordinator's claims.
type forwardedKey struct{}

func forwardedBy(r *http.Request) (engine.Claims, bool) {
	c, ok := r.Context().Value(forwardedKey{}).(engine.Claims)
	return c, ok
}

// forwardedCaller returns the identity a request is answered as. Without
// headerClientChain it is peer, the verified direct caller. With it, peer
// must be a coordinator of this cluster and env, and the chain must verify;
// the request is then answered as the chain's owner and marked forwarded.
func (s *Server) forwardedCaller(r *http.Request, peer engine.Claims) (engine.Claims, *http.Request, error) {
	h := r.Header.Values(headerClientChain)
	if len(h) == 0 {
		return peer, r, nil
	}
	if !s.isPeerCoordinator(peer) {
		ae := errorf(http.StatusForbidden, "forwarding_refused", headerClientChain,
			"%s is set by coordinatord nodes forwarding to the leader, and %s is not a coordinator of cluster %q env %q",
			headerClientChain, peer.SPIFFEID, s.self.Cluster, s.self.Env)
		return engine.Claims{}, r, ae
	}
	if len(h) > 1 {
		return engine.Claims{}, r, errorf(http.StatusBadRequest, "invalid_forwarded_chain", headerClientChain, "%s is given %d times", headerClientChain, len(h))
	}
	claims, err := s.cluster.forwarded.verify(h[0], s.verifier, s.clock)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return engine.Claims{}, r, err
		}
		return engine.Claims{}, r, s.identityError(err)
	}
	s.log.Debug("request forwarded by a follower", "method", r.Method, "path", r.URL.Path,
		"forwarded_by", peer.Node, "caller", claims.SPIFFEID)
	return claims, r.WithContext(context.WithValue(r.Context(), forwardedKey{}, peer)), nil
}

// isPeerCoordinator reports whether c is a coordinatord node of this
// node's cluster and env.
func (s *Server) isPeerCoordinator(c engine.Claims) bool {
	return c.Role == engine.RoleCoordinator && c.Cluster == s.self.Cluster && c.Env == s.self.Env
}

// encodeChain is the value of headerClientChain for chain.
func encodeChain(chain []*x509.Certificate) string {
	parts := make([]string, len(chain))
	for i, c := range chain {
		parts[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	return strings.Join(parts, ",")
}

// forwardedChains caches the claims of forwarded chains that verified:
// verifying a chain costs far more than a decision, and a follower forwards
// the same few clients' chains over and over.
type forwardedChains struct {
	mu      sync.Mutex
	entries map[string]engine.Claims
}

func (f *forwardedChains) verify(header string, v *engine.Verifier, now func() time.Time) (engine.Claims, error) {
	f.mu.Lock()
	c, ok := f.entries[header]
	f.mu.Unlock()
	if ok && !now().After(c.NotAfter) {
		return c, nil
	}
	chain, err := decodeChain(header)
	if err != nil {
		return engine.Claims{}, err
	}
	c, err = v.Verify(chain)
	if err != nil {
		return engine.Claims{}, err
	}
	f.mu.Lock()
	if f.entries == nil || len(f.entries) >= forwardedCacheSize {
		f.entries = make(map[string]engine.Claims)
	}
	f.entries[header] = c
	f.mu.Unlock()
	return c, nil
}

func decodeChain(header string) ([]*x509.Certificate, error) {
	bad := func(format string, args ...any) error {
		return errorf(http.StatusBadRequest, "invalid_forwarded_chain", headerClientChain, format, args...)
	}
	parts := strings.Split(header, ",")
	if len(parts) > maxForwardedChain {
		return nil, bad("%s holds %d certificates, at most %d are accepted", headerClientChain, len(parts), maxForwardedChain)
	}
	chain := make([]*x509.Certificate, 0, len(parts))
	for i, p := range parts {
		der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(p))
		if err != nil {
			return nil, bad("%s, certificate %d: %v", headerClientChain, i+1, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, bad("%s, certificate %d: %v", headerClientChain, i+1, err)
		}
		chain = append(chain, c)
	}
	return chain, nil
}

// leaderOnly wraps a handler that needs the leader (a write): on a
// follower the request is forwarded to the leader instead.
func (s *Server) leaderOnly(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
		if s.store.IsLeader() {
			return h(w, r, caller)
		}
		return s.forward(w, r)
	}
}

// leaderRead wraps a read handler: it is served locally on the leader, and
// anywhere with ?stale=true; otherwise forwarded to the leader. The handler
// still makes its read linearizable (readConsistency).
func (s *Server) leaderRead(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
		if s.store.IsLeader() || staleRequested(r) {
			return h(w, r, caller)
		}
		return s.forward(w, r)
	}
}

// staleRequested reports ?stale=true. A value that does not parse is not a
// stale request: the leader's handler answers it with a 400.
func staleRequested(r *http.Request) bool {
	v, err := strconv.ParseBool(r.URL.Query().Get("stale"))
	return err == nil && v
}

// forward proxies r to the leader's API, or answers 503 when that cannot
// be done.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) error {
	if by, ok := forwardedBy(r); ok {
		leader, _ := s.store.Leader()
		ae := errorf(http.StatusServiceUnavailable, "not_leader", "",
			"node %s is not the leader (it follows %q); %s forwarded this request here and requests are forwarded once only; retry",
			s.cfg.NodeID, leader, by.Node)
		ae.retryAfter = retryAfterNoLeader
		return ae
	}
	leaderID, leaderRaft := s.store.Leader()
	if leaderID == "" {
		return s.noLeader("no Raft leader is known to node %s (%s, term %d, last contact with a leader %s); the cluster may be electing one or this node may be cut off",
			s.cfg.NodeID, s.store.State(), s.store.Term(), sinceText(s.store.LastContact(), s.clock()))
	}
	if leaderID == s.cfg.NodeID {
		// Leadership arrived between the check and here.
		return s.noLeader("node %s became the leader while forwarding; retry", s.cfg.NodeID)
	}
	m, err := s.store.Member(leaderID)
	if errors.Is(err, raftstore.ErrNotFound) {
		return s.noLeader("the leader %s (raft %s) has not registered its API address yet; retry", leaderID, leaderRaft)
	}
	if err != nil {
		return s.noLeader("the leader %s (raft %s) is known but its API address cannot be read on node %s: %v", leaderID, leaderRaft, s.cfg.NodeID, err)
	}
	target := &url.URL{Scheme: "https", Host: m.HTTPAddr}
	chain := encodeChain(r.TLS.PeerCertificates)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
			pr.Out.Header.Set(headerClientChain, chain)
			pr.Out.Header.Set(headerForwardedBy, s.cfg.NodeID)
		},
		Transport: s.cluster.peers.transport,
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Set(headerLeader, leaderID)
			return nil
		},
		ErrorLog: nil,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				// The client went away; nobody reads an answer.
				return
			}
			s.writeError(w, r, s.noLeader("the leader %s at %s cannot be reached from node %s: %v", leaderID, m.HTTPAddr, s.cfg.NodeID, err))
		},
	}
	s.log.Debug("forwarding to the leader", "method", r.Method, "path", r.URL.Path, "leader", leaderID, "leader_addr", m.HTTPAddr)
	proxy.ServeHTTP(w, r)
	return nil
}

// noLeader is the 503 of a request that needs a leader nobody can reach.
func (s *Server) noLeader(format string, args ...any) *apiError {
	ae := errorf(http.StatusServiceUnavailable, "no_leader", "", format, args...)
	ae.retryAfter = retryAfterNoLeader
	return ae
}

func sinceText(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Millisecond).String() + " ago"
}

// peerClient is how a node calls other nodes' APIs: with its own
// certificate, accepting only a coordinator of its cluster and env (by
// identity, not host name, like the Raft transport), and from its API's
// bind address when that is a specific IP.
type peerClient struct {
	tls       *tls.Config
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	transport *http.Transport
}

func (s *Server) newPeerClient() *peerClient {
	p := &peerClient{}
	p.tls = &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{s.cfg.Certificate},
		InsecureSkipVerify: true, // VerifyConnection checks the identity
		VerifyConnection: func(cs tls.ConnectionState) error {
			c, err := s.verifier.Verify(cs.PeerCertificates)
			if err != nil {
				return fmt.Errorf("node %s: peer certificate: %w", s.cfg.NodeID, err)
			}
			if !s.isPeerCoordinator(c) {
				return fmt.Errorf("node %s: peer %s is not a coordinator of cluster %q env %q", s.cfg.NodeID, c.SPIFFEID, s.self.Cluster, s.self.Env)
			}
			return nil
		},
	}
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if host, _, err := net.SplitHostPort(s.cfg.HTTPAddr); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	p.dial = d.DialContext
	p.transport = &http.Transport{
		DialContext:         p.dial,
		TLSClientConfig:     p.tls,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		// The leader bounds its own work (ApplyTimeout for a write; compiling
		// and installing a module can take longer), and the client's request
		// context cancels a forwarded call, so this only catches a leader
		// that accepted the request and then went silent.
		ResponseHeaderTimeout: s.cfg.Raft.ApplyTimeout + moduleInstallWait + time.Minute,
	}
	return p
}
