package tests

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
)

// BenchmarkVersusOPA measures the same admission question — may this
// worker connect to that manager, under the default policy — asked of a
// coordinatord node and of `opa run --server` loaded with the same policy,
// side by side in one run, both over mTLS on kept-alive connections.
// coordinatord's answer also includes authorising the caller (a second
// decision) and recording the decision; OPA runs with decision logs off.
//
//	scripts/bench-vs-opa.sh   (installs opa v1.22.3, then runs this)
func BenchmarkVersusOPA(b *testing.B) {
	opaBin, err := exec.LookPath("opa")
	if err != nil {
		b.Skip("opa is not installed; scripts/bench-vs-opa.sh installs it")
	}
	p := newPKI(b)
	nodes := map[string]*node{}
	for _, cache := range []string{"0", "10000"} {
		nodes[cache] = startServerArgs(b, p, engine.MappingSPIFFE, b.TempDir(), "--decision-cache-size", cache, "--log-level", "warn")
	}
	opaAddr := startOPA(b, opaBin, p)

	worker := api.Claims{Cluster: e2eCluster, Env: e2eEnv, Role: "worker", Datacenter: e2eDC, Node: "w-1"}
	manager := api.Claims{Cluster: e2eCluster, Env: e2eEnv, Role: "manager", Datacenter: e2eDC, Node: "m-1"}
	worker.SPIFFEID = engine.SPIFFEID(e2eTD, engine.Claims{Cluster: e2eCluster, Env: e2eEnv, Role: "worker", Datacenter: e2eDC, Node: "w-1"})
	manager.SPIFFEID = engine.SPIFFEID(e2eTD, engine.Claims{Cluster: e2eCluster, Env: e2eEnv, Role: "manager", Datacenter: e2eDC, Node: "m-1"})
	coordBody, err := json.Marshal(api.AdmissionRequest{Source: &api.Peer{SPIFFEID: worker.SPIFFEID}, Target: &api.Peer{SPIFFEID: manager.SPIFFEID}, Action: "connect"})
	if err != nil {
		b.Fatal(err)
	}
	opaBody, err := json.Marshal(map[string]any{"input": map[string]any{"source": worker, "target": manager, "action": "connect", "resource": map[string]any{}}})
	if err != nil {
		b.Fatal(err)
	}
	callerCert := p.tlsCert("bench", request(engine.MappingSPIFFE, engine.RoleManager, "bench-1"))
	targets := []struct {
		name, url string
		body      []byte
		allowed   func([]byte) bool
	}{
		{"coordinatord-uncached", "https://" + nodes["0"].addr + "/v1/admission", coordBody, coordAllowed},
		{"coordinatord-cached", "https://" + nodes["10000"].addr + "/v1/admission", coordBody, coordAllowed},
		{"opa", "https://" + opaAddr + "/v1/data/coordinatord/admission/allow", opaBody, opaAllowed},
	}
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			hc := benchClient(p, callerCert)
			defer hc.CloseIdleConnections()
			if body := post(b, hc, tg.url, tg.body); !tg.allowed(body) {
				b.Fatalf("%s did not allow: %s", tg.name, body)
			}
			b.ResetTimer()
			for b.Loop() {
				post(b, hc, tg.url, tg.body)
			}
		})
		b.Run(tg.name+"-parallel", func(b *testing.B) {
			hc := benchClient(p, callerCert)
			defer hc.CloseIdleConnections()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					post(b, hc, tg.url, tg.body)
				}
			})
		})
	}
}

func coordAllowed(body []byte) bool {
	var r api.AdmissionResponse
	return json.Unmarshal(body, &r) == nil && r.Allowed
}

func opaAllowed(body []byte) bool {
	var r struct {
		Result bool `json:"result"`
	}
	return json.Unmarshal(body, &r) == nil && r.Result
}

func benchClient(p *pkiDir, cert tls.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: p.ca.Pool(), Certificates: []tls.Certificate{cert}},
		MaxIdleConnsPerHost: 64,
	}, Timeout: 10 * time.Second}
}

func post(b *testing.B, hc *http.Client, url string, body []byte) []byte {
	resp, err := hc.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: %d %v %s", url, resp.StatusCode, err, out)
	}
	return out
}

// startOPA runs `opa run --server` with the default policy, mTLS required.
func startOPA(b *testing.B, opaBin string, p *pkiDir) string {
	b.Helper()
	req := request(engine.MappingSPIFFE, engine.RoleCoordinator, "opa")
	req.Server = true
	req.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	cert, key := p.issue("opa", req)
	policy, err := os.ReadFile(filepath.Join(repoRoot, "policies", "default.rego"))
	if err != nil {
		b.Fatal(err)
	}
	policyFile := filepath.Join(b.TempDir(), "default.rego")
	if err := os.WriteFile(policyFile, policy, 0o600); err != nil {
		b.Fatal(err)
	}
	addr := freeAddr(b)
	startProc(b, "", nil, opaBin, "run", "--server", "--addr", addr, "--log-level", "error",
		"--tls-cert-file", cert, "--tls-private-key-file", key, "--tls-ca-cert-file", p.caFile(),
		"--authentication", "tls", policyFile)
	hc := benchClient(p, p.tlsCert("probe", request(engine.MappingSPIFFE, engine.RoleAdmin, "probe")))
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/health", nil)
		resp, err := hc.Do(r)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("opa not healthy within 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
