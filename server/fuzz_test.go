package server

import (
	"net/http"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
)

// FuzzAdmissionRequest feeds arbitrary bodies through the strict JSON
// decoder and the peer resolution of POST /v1/admission. Whatever the
// input, the answer is either resolved claims that pass the identity rules
// or a 4xx error naming a field; nothing panics.
//
//	go test ./server -run '^$' -fuzz FuzzAdmissionRequest -fuzztime 1m
func FuzzAdmissionRequest(f *testing.F) {
	f.Add([]byte(`{"source":{"spiffe_id":"spiffe://coordinatord.local/cluster/c/env/e/role/worker/dc/d/node/n"},"target":{"cluster":"c","env":"e","role":"gate","datacenter":"d","node":"g"},"action":"connect"}`))
	f.Add([]byte(`{"source_certificate":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","target":{"spiffe_id":"x"},"action":"a"}`))
	f.Add([]byte(`{"action":"connect","resource":{"a":[1,2,{"b":null}]}}`))
	f.Add([]byte(`{"source":{},"target":{},"action":""} {}`))
	ca := newCA(f)
	s := &Server{cfg: Config{Identity: engine.IdentityConfig{Mapping: engine.MappingSPIFFE, TrustDomain: testTD}}}
	v, err := engine.NewVerifier(ca.Pool(), s.cfg.Identity, time.Now)
	if err != nil {
		f.Fatal(err)
	}
	s.verifier = v
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.AdmissionRequest
		if err := decodeStrict(body, &req); err != nil {
			requireClientError(t, err)
			return
		}
		for _, side := range []struct {
			name string
			p    *api.Peer
			cert string
		}{{"source", req.Source, req.SourceCertificate}, {"target", req.Target, req.TargetCertificate}} {
			c, err := s.resolvePeer(side.name, side.p, side.cert)
			if err != nil {
				requireClientError(t, err)
				continue
			}
			if err := engine.ValidateClaims(c); err != nil {
				t.Fatalf("resolved %s claims %+v are invalid: %v", side.name, c, err)
			}
		}
	})
}

func requireClientError(t *testing.T, err error) {
	t.Helper()
	ae, ok := err.(*apiError)
	if !ok || ae.e.Status < 400 || ae.e.Status >= 500 || ae.e.Code == "" || ae.e.Message == "" || ae.e.Field == "" {
		t.Fatalf("error %v (%T) is not a 4xx naming a field", err, err)
	}
	if ae.e.Status == http.StatusInternalServerError {
		t.Fatal("internal error")
	}
}
