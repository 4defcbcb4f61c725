// Package client is the Go client of coordinatord's HTTP API. It speaks
// mutual TLS with a certificate whose claims identify the caller, and
// returns the server's JSON errors as *api.Error values.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coordinatord/coordinatord/api"
)

// Config says where the server is and who the caller is.
type Config struct {
	// Addr is the server's API address: "https://host:port" or "host:port".
	// It may be a comma-separated list, like Addrs.
	Addr string
	// Addrs are API addresses of several nodes of one cluster, tried in
	// turn: on a connection error or a 503 the client moves to the next one
	// and, once it has tried them all, waits (Retry-After when the server
	// gave one, otherwise a growing backoff) and goes round again, until the
	// request's context ends. Addr, when set too, comes first.
	Addrs []string
	// DialContext, when set, opens the client's TCP connections (to choose
	// a source address, say).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// CAFile verifies the server; CertFile and KeyFile identify the caller.
	// They are ignored when TLS is set.
	CAFile, CertFile, KeyFile string
	// TLS, when set, is used as is.
	TLS *tls.Config
	// Timeout bounds each request; 0 means 10 s.
	Timeout time.Duration
}

// Client calls the nodes of one coordinatord cluster. It is safe for
// concurrent use and keeps connections alive between calls.
type Client struct {
	// base is the first address; bases are all of them, and cur indexes the
	// one that answered last, where the next call starts.
	base  *url.URL
	bases []*url.URL
	cur   atomic.Int64
	http  *http.Client
	// slowHTTP shares http's connections without its overall timeout, for
	// calls whose context bounds them (module uploads, which compile).
	slowHTTP *http.Client
}

// New checks cfg, loads its files and returns a client.
func New(cfg Config) (*Client, error) {
	bases, err := parseAddrs(append(SplitAddrs(cfg.Addr), cfg.Addrs...))
	if err != nil {
		return nil, err
	}
	tlsCfg := cfg.TLS
	if tlsCfg == nil {
		if tlsCfg, err = LoadTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile); err != nil {
			return nil, err
		}
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	// HTTP/1.1 over a pool of kept-alive connections: measured here, a
	// request costs half as much as over HTTP/2, whose framing and
	// per-stream goroutines outweigh multiplexing for small JSON calls.
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg,
		ForceAttemptHTTP2:   false,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DialContext:         cfg.DialContext,
	}
	return &Client{base: bases[0], bases: bases, http: &http.Client{Transport: tr, Timeout: timeout}, slowHTTP: &http.Client{Transport: tr}}, nil
}

// LoadTLS builds a TLS 1.3 client configuration from PEM files.
func LoadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	for _, f := range []struct{ name, path string }{{"CA certificate (--ca)", caFile}, {"client certificate (--cert)", certFile}, {"client key (--key)", keyFile}} {
		if f.path == "" {
			return nil, fmt.Errorf("client: %s file is required", f.name)
		}
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("client: read CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("client: %s holds no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client: load certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// request is one API call.
type request struct {
	method, path string
	query        url.Values
	header       http.Header
	contentType  string
	body         []byte
	// noRetry makes a 503 an answer rather than a reason to try again
	// (GET /v1/ready says "not ready" with it).
	noRetry bool
	// slow lifts Config.Timeout: only the context bounds the call.
	slow bool
}

// do sends req and decodes a 2xx JSON answer into out, or returns the
// server's error as *api.Error. It moves across the configured addresses
// on connection errors and 503 answers (see Config.Addrs).
func (c *Client) do(ctx context.Context, req request, out any) error {
	return c.withRetry(ctx, req.noRetry, func(base *url.URL) error { return c.doOnce(ctx, base, req, out) })
}

// doOnce sends req to one address.
func (c *Client) doOnce(ctx context.Context, base *url.URL, req request, out any) error {
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + req.path
	u.RawQuery = req.query.Encode()
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.method, req.path, err)
	}
	for k, v := range req.header {
		hr.Header[k] = v
	}
	if req.contentType != "" {
		hr.Header.Set("Content-Type", req.contentType)
	}
	hr.Header.Set("Accept", "application/json")
	hc := c.http
	if req.slow {
		hc = c.slowHTTP
	}
	resp, err := hc.Do(hr)
	if err != nil {
		return &connError{fmt.Errorf("%s %s: %w", req.method, req.path, err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return &connError{fmt.Errorf("%s %s: read answer: %w", req.method, req.path, err)}
	}
	if resp.StatusCode/100 != 2 {
		return unavailable(resp, decodeError(resp, raw))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", req.method, req.path, err)
	}
	return nil
}

func decodeError(resp *http.Response, raw []byte) error {
	var body api.ErrorBody
	if err := json.Unmarshal(raw, &body); err != nil || body.Error == nil {
		text := strings.TrimSpace(string(raw))
		if len(text) > 200 {
			text = text[:200] + "…"
		}
		return &api.Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: text}
	}
	body.Error.Status = resp.StatusCode
	return body.Error
}

func jsonBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return b, nil
}

// Health calls GET /v1/health.
func (c *Client) Health(ctx context.Context) (*api.Health, error) {
	var out api.Health
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/v1/health"}, &out)
}

// Ready calls GET /v1/ready. A node that is not ready answers 503 with the
// problems; Ready then returns both the answer and the error.
func (c *Client) Ready(ctx context.Context) (*api.Ready, error) {
	var out api.Ready
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/ready", noRetry: true}, &out)
	return &out, err
}

// Admission asks whether req.Source may do req.Action on req.Target.
func (c *Client) Admission(ctx context.Context, req api.AdmissionRequest) (*api.AdmissionResponse, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	var out api.AdmissionResponse
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admission", contentType: "application/json", body: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DecisionQuery filters GET /v1/decisions; zero values match all.
type DecisionQuery struct {
	Limit  int
	Result string
	Action string
	After  uint64
}

// Decisions reads the node's recent decisions.
func (c *Client) Decisions(ctx context.Context, q DecisionQuery) (*api.DecisionList, error) {
	v := url.Values{}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Result != "" {
		v.Set("result", q.Result)
	}
	if q.Action != "" {
		v.Set("action", q.Action)
	}
	if q.After > 0 {
		v.Set("after", strconv.FormatUint(q.After, 10))
	}
	var out api.DecisionList
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/decisions", query: v}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
