package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coordinatord/coordinatord/api"
)

// ModuleOptions is the manifest of a module upload. Zero values take the
// server's defaults.
type ModuleOptions struct {
	// Kind is api.ModuleKindReporter or api.ModuleKindCorrelation
	// (required).
	Kind string
	// MemoryPages, CallTimeout and MaxOutputBytes override the default
	// limits when non-zero.
	MemoryPages    uint32
	CallTimeout    time.Duration
	MaxOutputBytes int
	// LogLinesPerSecond overrides the default log rate when non-nil (0
	// drops every line).
	LogLinesPerSecond *int
	// Sinks are a reporter's sink specs, "name=type[:target]".
	Sinks []string
	// IfVersion, when non-nil, makes the upload conditional on the
	// module's current version (0: the name must be free).
	IfVersion *uint64
}

func (o ModuleOptions) query() url.Values {
	q := url.Values{}
	if o.Kind != "" {
		q.Set("kind", o.Kind)
	}
	if o.MemoryPages != 0 {
		q.Set("memory_pages", strconv.FormatUint(uint64(o.MemoryPages), 10))
	}
	if o.CallTimeout != 0 {
		q.Set("call_timeout", o.CallTimeout.String())
	}
	if o.MaxOutputBytes != 0 {
		q.Set("max_output_bytes", strconv.Itoa(o.MaxOutputBytes))
	}
	if o.LogLinesPerSecond != nil {
		q.Set("log_lines_per_second", strconv.Itoa(*o.LogLinesPerSecond))
	}
	for _, s := range o.Sinks {
		q.Add("sink", s)
	}
	return q
}

func modulePath(name string, rest ...string) string {
	return "/v1/modules/" + url.PathEscape(name) + strings.Join(rest, "")
}

// PutModule uploads wasm as module name (PUT /v1/modules/{name}). The node
// validates and compiles it before anything is written; on the leader the
// call returns once the module is installed there, and every other node
// installs it shortly after (its "node" state in ListModules).
//
// Compiling a large module takes seconds, so Config.Timeout does not apply
// to this call: ctx alone bounds it. A retried upload (after a connection
// error or a 503) may store the module twice, as two versions of the same
// bytes; pass IfVersion to prevent that.
func (c *Client) PutModule(ctx context.Context, name string, wasm []byte, opts ModuleOptions) (*api.Module, error) {
	req := request{method: http.MethodPut, path: modulePath(name), query: opts.query(), contentType: "application/wasm", body: wasm, slow: true}
	if opts.IfVersion != nil {
		req.header = http.Header{"If-Match": {strconv.FormatUint(*opts.IfVersion, 10)}}
	}
	var out api.Module
	if err := c.do(ctx, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListModules lists the modules with the answering node's install state.
// stale reads the state of the node called rather than the leader's.
func (c *Client) ListModules(ctx context.Context, stale bool) (*api.ModuleList, error) {
	var out api.ModuleList
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/modules", query: staleQuery(stale)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetModule reads module name's metadata.
func (c *Client) GetModule(ctx context.Context, name string, stale bool) (*api.Module, error) {
	var out api.Module
	if err := c.do(ctx, request{method: http.MethodGet, path: modulePath(name), query: staleQuery(stale)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DownloadModule returns module name's bytes (GET
// /v1/modules/{name}?download=true).
func (c *Client) DownloadModule(ctx context.Context, name string) ([]byte, error) {
	var out []byte
	err := c.withRetry(ctx, false, func(base *url.URL) error {
		var err error
		out, err = c.downloadOnce(ctx, base, modulePath(name))
		return err
	})
	return out, err
}

func (c *Client) downloadOnce(ctx context.Context, base *url.URL, path string) ([]byte, error) {
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = url.Values{"download": {"true"}}.Encode()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	hr.Header.Set("Accept", "application/wasm, application/json")
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, &connError{fmt.Errorf("GET %s: %w", path, err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, &connError{fmt.Errorf("GET %s: read answer: %w", path, err)}
	}
	if resp.StatusCode/100 != 2 {
		return nil, unavailable(resp, decodeError(resp, raw))
	}
	return raw, nil
}

// DeleteModule deletes module name everywhere.
func (c *Client) DeleteModule(ctx context.Context, name string) (*api.DeleteModuleResponse, error) {
	var out api.DeleteModuleResponse
	if err := c.do(ctx, request{method: http.MethodDelete, path: modulePath(name)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// InvokeModule runs module name, as installed on the node that answers, on
// a sample event. A trap or timeout is not an error of the call: it comes
// back in the answer's Error. Nothing is written to any sink.
func (c *Client) InvokeModule(ctx context.Context, name string, req api.InvokeRequest) (*api.InvokeResponse, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	var out api.InvokeResponse
	if err := c.do(ctx, request{method: http.MethodPost, path: modulePath(name, "/invoke"), contentType: "application/json", body: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
