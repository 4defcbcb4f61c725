package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
)

// fakeNode is an HTTPS server answering GET /v1/cluster with status codes
// from a script, then 200.
type fakeNode struct {
	srv   *httptest.Server
	hits  atomic.Int32
	codes []int
}

func newFakeNode(t *testing.T, codes ...int) *fakeNode {
	f := &fakeNode{codes: codes}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(f.hits.Add(1))
		code := http.StatusOK
		if n <= len(f.codes) {
			code = f.codes[n-1]
		}
		w.Header().Set("Content-Type", "application/json")
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(code)
		if code == http.StatusOK {
			_, _ = w.Write([]byte(`{"node":"n","leader_id":"n","members":[]}`))
			return
		}
		_, _ = w.Write([]byte(`{"error":{"code":"c","message":"m"}}`))
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeNode) addr() string { return f.srv.Listener.Addr().String() }

// downAddr is an address nobody listens on.
func downAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func testClient(t *testing.T, f *fakeNode, addrs ...string) *Client {
	pool := x509.NewCertPool()
	pool.AddCert(f.srv.Certificate())
	c, err := New(Config{Addrs: addrs, TLS: &tls.Config{RootCAs: pool}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestTheClientMovesToTheNextAddressAndRetries503(t *testing.T) {
	node := newFakeNode(t, http.StatusServiceUnavailable)
	c := testClient(t, node, downAddr(t), node.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := c.ClusterStatus(ctx, false); err != nil {
		t.Fatal(err)
	}
	if node.hits.Load() != 2 {
		t.Fatalf("node answered %d times, want a 503 then a 200", node.hits.Load())
	}
	// The pause honours Retry-After (1s, jittered down to half) within the
	// client's cap.
	if waited := time.Since(start); waited < 400*time.Millisecond {
		t.Errorf("retried after %s, sooner than Retry-After allows", waited)
	}
	// The next call starts at the address that answered.
	if _, err := c.ClusterStatus(ctx, false); err != nil || node.hits.Load() != 3 {
		t.Fatalf("second call: %v, hits %d", err, node.hits.Load())
	}
}

func TestTheClientDoesNotRetryAnswers(t *testing.T) {
	node := newFakeNode(t, http.StatusConflict)
	other := newFakeNode(t)
	c := testClient(t, node, node.addr(), other.addr())
	_, err := c.ClusterStatus(context.Background(), false)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		t.Fatalf("err = %v, want the 409", err)
	}
	if other.hits.Load() != 0 {
		t.Fatal("a 409 was retried on another address")
	}
}

func TestTheClientStopsAtItsDeadlineWithTheLastAnswer(t *testing.T) {
	node := newFakeNode(t, 503, 503, 503, 503, 503, 503)
	c := testClient(t, node, node.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.ClusterStatus(ctx, false)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
		t.Fatalf("err = %v, want the last 503 rather than a bare deadline", err)
	}
}

func TestReadyIsAnAnswerNotARetry(t *testing.T) {
	node := newFakeNode(t, 503)
	c := testClient(t, node, node.addr())
	if _, err := c.Ready(context.Background()); err == nil || node.hits.Load() != 1 {
		t.Fatalf("Ready = %v after %d calls, want the 503 at once", err, node.hits.Load())
	}
}

func TestNewSplitsAddressLists(t *testing.T) {
	c, err := New(Config{Addr: "a:1, https://b:2", Addrs: []string{"c:3"}, TLS: &tls.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range c.bases {
		got = append(got, b.String())
	}
	want := []string{"https://a:1", "https://b:2", "https://c:3"}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("addresses %v, want %v", got, want)
	}
	if _, err := New(Config{Addr: "http://a:1", TLS: &tls.Config{}}); err == nil {
		t.Fatal("an http address was accepted")
	}
	if _, err := New(Config{TLS: &tls.Config{}}); err == nil {
		t.Fatal("no address was accepted")
	}
}
