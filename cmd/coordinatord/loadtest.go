package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/internal/loadtest"
)

type loadFlags struct {
	op       string
	workers  int
	duration time.Duration
	warmup   time.Duration
	ttl      time.Duration
	target   string
	etcd     string
}

func newLoadTestCmd() *cobra.Command {
	var f loadFlags
	cmd := &cobra.Command{
		Use:   "loadtest",
		Short: "Measure lease or admission throughput and latency against a running cluster",
		Long: `Run an operation from many concurrent clients for a while and print
operations per second and latency percentiles.

  --op renew     each client acquires its own job, then renews it in a loop
  --op acquire   each operation acquires the lease of a new job
  --op check     each client checks its own job's token in a loop
  --op admission each operation asks POST /v1/admission (worker -> manager)

--target etcd runs the same lease operations against etcd's JSON gateway
(--etcd-endpoints), with the same certificate flags, for a side-by-side
comparison: renew is LeaseKeepAlive, acquire is a transaction that creates
the job's key with a lease only if it does not exist.`,
		Example: `  coordinatord loadtest --op renew --clients 64 --duration 10s --addr https://127.0.0.1:8443
  coordinatord loadtest --target etcd --etcd-endpoints https://127.0.0.1:2379 --op renew --clients 64`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnvAndFile(cmd, clientFlagNames...); err != nil {
				return err
			}
			op, cleanup, err := f.operation(cmd)
			if err != nil {
				return err
			}
			defer cleanup()
			rep, err := loadtest.Run(cmd.Context(), loadtest.Config{Workers: f.workers, Duration: f.duration, Warmup: f.warmup}, op)
			if err != nil {
				return err
			}
			if clientFlags.output == "json" {
				return printJSON(cmd.OutOrStdout(), map[string]any{
					"target": f.target, "op": f.op, "clients": rep.Workers, "seconds": rep.Duration.Seconds(),
					"ops": rep.Ops, "errors": rep.Errors, "ops_per_second": rep.OpsPerSecond(),
					"p50_us": rep.P50.Microseconds(), "p90_us": rep.P90.Microseconds(), "p99_us": rep.P99.Microseconds(), "max_us": rep.Max.Microseconds(),
				})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %s\n", f.target, f.op, rep)
			return err
		},
	}
	addClientFlags(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.op, "op", "renew", "operation: renew, acquire, check or admission")
	fl.IntVar(&f.workers, "clients", 1, "concurrent clients")
	fl.DurationVar(&f.duration, "duration", 10*time.Second, "how long to measure")
	fl.DurationVar(&f.warmup, "warmup", time.Second, "how long to run before measuring")
	fl.DurationVar(&f.ttl, "ttl", 30*time.Second, "lease TTL used by the lease operations")
	fl.StringVar(&f.target, "target", "coordinatord", "coordinatord or etcd")
	fl.StringVar(&f.etcd, "etcd-endpoints", "", "etcd client URL (with --target etcd)")
	return cmd
}

// operation prepares the measured operation and what each client needs.
func (f *loadFlags) operation(cmd *cobra.Command) (loadtest.Op, func(), error) {
	switch f.target {
	case "coordinatord":
		return f.coordinatordOp(cmd)
	case "etcd":
		return f.etcdOp()
	}
	return nil, nil, fmt.Errorf("--target %q: must be coordinatord or etcd", f.target)
}

// runID keeps job ids of different runs apart.
func runID() string { return fmt.Sprintf("load-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6) }

func (f *loadFlags) coordinatordOp(cmd *cobra.Command) (loadtest.Op, func(), error) {
	c, err := newClient(cmd)
	if err != nil {
		return nil, nil, err
	}
	prefix := runID()
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	switch f.op {
	case "renew", "check":
		leases := make([]*api.Lease, f.workers)
		for w := range leases {
			if leases[w], err = c.Acquire(ctx, fmt.Sprintf("%s-%d", prefix, w), f.ttl, false); err != nil {
				c.Close()
				return nil, nil, fmt.Errorf("acquire the lease of client %d: %w", w, err)
			}
		}
		release := func() {
			for _, l := range leases {
				if _, err := c.Release(context.Background(), l.JobID, l.Token); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "release %s: %v\n", l.JobID, err)
				}
			}
			c.Close()
		}
		if f.op == "check" {
			return func(ctx context.Context, w int) error {
				res, err := c.Check(ctx, leases[w].JobID, leases[w].Token)
				if err == nil && !res.Current {
					err = fmt.Errorf("job %s: token %d not current", leases[w].JobID, leases[w].Token)
				}
				return err
			}, release, nil
		}
		return func(ctx context.Context, w int) error {
			_, err := c.Renew(ctx, leases[w].JobID, leases[w].Token, 0)
			return err
		}, release, nil
	case "acquire":
		var n atomic.Int64
		return func(ctx context.Context, w int) error {
			_, err := c.Acquire(ctx, fmt.Sprintf("%s-%d", prefix, n.Add(1)), f.ttl, false)
			return err
		}, c.Close, nil
	case "admission":
		id := func(role, node string) string {
			return fmt.Sprintf("spiffe://coordinatord.local/cluster/dev/env/dev/role/%s/dc/dc1/node/%s", role, node)
		}
		req := api.AdmissionRequest{Source: &api.Peer{SPIFFEID: id("worker", "w-1")}, Target: &api.Peer{SPIFFEID: id("manager", "m-1")}, Action: "connect"}
		return func(ctx context.Context, w int) error {
			_, err := c.Admission(ctx, req)
			return err
		}, c.Close, nil
	}
	c.Close()
	return nil, nil, fmt.Errorf("--op %q: must be renew, acquire, check or admission", f.op)
}

// etcdGateway calls etcd's JSON gateway, the same way over HTTP and TLS
// as coordinatord's client does, so that neither side gets a faster wire.
type etcdGateway struct {
	base string
	http *http.Client
}

func (e *etcdGateway) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %d %s", path, resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func (f *loadFlags) etcdOp() (loadtest.Op, func(), error) {
	if f.etcd == "" {
		return nil, nil, fmt.Errorf("--etcd-endpoints is required with --target etcd")
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	if strings.HasPrefix(f.etcd, "https://") {
		tlsCfg, err := client.LoadTLS(clientFlags.ca, clientFlags.cert, clientFlags.key)
		if err != nil {
			return nil, nil, err
		}
		tr.TLSClientConfig = tlsCfg
	}
	e := &etcdGateway{base: strings.TrimSuffix(f.etcd, "/"), http: &http.Client{Transport: tr, Timeout: clientFlags.timeout}}
	ctx := context.Background()
	grant := func() (string, error) {
		var out struct {
			ID string `json:"ID"`
		}
		err := e.call(ctx, "/v3/lease/grant", map[string]any{"TTL": int64(f.ttl.Seconds())}, &out)
		return out.ID, err
	}
	leases := make([]string, f.workers)
	for w := range leases {
		id, err := grant()
		if err != nil {
			return nil, nil, fmt.Errorf("etcd lease grant: %w", err)
		}
		leases[w] = id
	}
	cleanup := func() {
		for _, id := range leases {
			if err := e.call(ctx, "/v3/lease/revoke", map[string]any{"ID": id}, nil); err != nil {
				fmt.Fprintf(os.Stderr, "etcd revoke %s: %v\n", id, err)
			}
		}
		tr.CloseIdleConnections()
	}
	prefix := runID()
	switch f.op {
	case "renew":
		return func(ctx context.Context, w int) error {
			var out struct {
				Result struct {
					TTL string `json:"TTL"`
				} `json:"result"`
			}
			if err := e.call(ctx, "/v3/lease/keepalive", map[string]any{"ID": leases[w]}, &out); err != nil {
				return err
			}
			if out.Result.TTL == "" || out.Result.TTL == "0" {
				return fmt.Errorf("etcd lease %s not renewed", leases[w])
			}
			return nil
		}, cleanup, nil
	case "acquire":
		var n atomic.Int64
		return func(ctx context.Context, w int) error {
			key := base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("/jobs/%s-%d", prefix, n.Add(1))))
			var out struct {
				Succeeded bool `json:"succeeded"`
			}
			err := e.call(ctx, "/v3/kv/txn", map[string]any{
				"compare": []any{map[string]any{"key": key, "target": "CREATE", "create_revision": "0"}},
				"success": []any{map[string]any{"request_put": map[string]any{"key": key, "value": base64.StdEncoding.EncodeToString([]byte("owner")), "lease": leases[w]}}},
			}, &out)
			if err == nil && !out.Succeeded {
				err = fmt.Errorf("etcd txn did not create its key")
			}
			return err
		}, cleanup, nil
	}
	cleanup()
	return nil, nil, fmt.Errorf("--op %q: with --target etcd, must be renew or acquire", f.op)
}
