package engine_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
)

func idClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestNewVerifierRefusesIncompleteConfiguration(t *testing.T) {
	f := newIDFixture(t)
	tests := []struct {
		name  string
		roots *x509.CertPool
		cfg   engine.IdentityConfig
		now   func() time.Time
	}{
		{name: "no roots means nothing could be trusted", cfg: idSPIFFECfg, now: idClock(idT0)},
		{name: "no clock is refused rather than defaulted to the wall clock", roots: f.ca.Pool(), cfg: idSPIFFECfg},
		{name: "an unknown mapping is refused", roots: f.ca.Pool(), cfg: engine.IdentityConfig{Mapping: "cn", TrustDomain: idTrustDomain}, now: idClock(idT0)},
		{name: "a trust domain with a scheme is refused", roots: f.ca.Pool(), cfg: engine.IdentityConfig{Mapping: engine.MappingSPIFFE, TrustDomain: "spiffe://x"}, now: idClock(idT0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v, err := engine.NewVerifier(tt.roots, tt.cfg, tt.now); err == nil {
				t.Fatalf("got verifier %v, want an error", v)
			}
		})
	}
}

func TestVerifier(t *testing.T) {
	f := newIDFixture(t)
	otherCA, err := pki.NewCA("other CA", idT0.Add(-time.Hour), 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// An intermediate CA below the fixture's root.
	intKey, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	intermediate := func(notAfter time.Time) *pki.CA {
		cert, der, err := f.ca.Sign(&x509.Certificate{
			Subject:               pkix.Name{CommonName: "identity test intermediate"},
			NotBefore:             idT0.Add(-48 * time.Hour),
			NotAfter:              notAfter,
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign,
		}, intKey.Public())
		if err != nil {
			t.Fatal(err)
		}
		return &pki.CA{Cert: cert, Key: intKey, CertPEM: pki.EncodeCert(der)}
	}
	sign := func(ca *pki.CA, tmpl *x509.Certificate) *x509.Certificate {
		cert, _, err := ca.Sign(tmpl, f.key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	spiffeLeaf := func(mutate func(*x509.Certificate)) *x509.Certificate {
		tmpl := idSPIFFETemplate(t, idSPIFFEID)
		mutate(tmpl)
		return sign(f.ca, tmpl)
	}
	same := func(*x509.Certificate) {}
	liveInt := intermediate(idT0.Add(24 * time.Hour))
	deadInt := intermediate(idT0.Add(-time.Minute))

	tests := []struct {
		name   string
		cfg    engine.IdentityConfig
		chain  []*x509.Certificate
		defect error
		claim  string
		msg    []string
	}{
		{name: "a valid spiffe certificate from the root yields its claims", chain: []*x509.Certificate{spiffeLeaf(same)}},
		{name: "a valid subject certificate yields its claims", cfg: idSubjectCfg, chain: []*x509.Certificate{f.sign(t, idSubjectTemplate(t))}},
		{
			name:  "a leaf signed by an intermediate verifies when the intermediate is sent",
			chain: []*x509.Certificate{sign(liveInt, idSPIFFETemplate(t, idSPIFFEID)), liveInt.Cert},
		},
		{
			name:  "a leaf without extended key usages may authenticate a client, as RFC 5280 allows any use",
			chain: []*x509.Certificate{spiffeLeaf(func(c *x509.Certificate) { c.ExtKeyUsage = nil })},
		},
		{name: "an empty chain is no certificate", chain: nil, defect: engine.ErrNoCertificate},
		{name: "a nil leaf is no certificate", chain: []*x509.Certificate{nil}, defect: engine.ErrNoCertificate},
		{
			name:   "an expired certificate is reported as expired with both times",
			chain:  []*x509.Certificate{spiffeLeaf(func(c *x509.Certificate) { c.NotAfter = idT0.Add(-time.Second) })},
			defect: engine.ErrExpired, msg: []string{"2026-03-01T11:59:59Z", "now is 2026-03-01T12:00:00Z"},
		},
		{
			name: "a certificate valid only from tomorrow is not yet valid and names NotBefore",
			chain: []*x509.Certificate{spiffeLeaf(func(c *x509.Certificate) {
				c.NotBefore = idT0.Add(24 * time.Hour)
				c.NotAfter = idT0.Add(48 * time.Hour)
			})},
			defect: engine.ErrNotYetValid, msg: []string{"2026-03-02T12:00:00Z"},
		},
		{
			name: "expiry is reported before an unknown authority",
			chain: []*x509.Certificate{func() *x509.Certificate {
				tmpl := idSPIFFETemplate(t, idSPIFFEID)
				tmpl.NotAfter = idT0.Add(-time.Hour)
				return sign(otherCA, tmpl)
			}()},
			defect: engine.ErrExpired,
		},
		{name: "a certificate from another CA is untrusted", chain: []*x509.Certificate{sign(otherCA, idSPIFFETemplate(t, idSPIFFEID))}, defect: engine.ErrUntrusted, msg: []string{"unknown authority"}},
		{
			name:   "a leaf from an intermediate that was not sent is untrusted",
			chain:  []*x509.Certificate{sign(liveInt, idSPIFFETemplate(t, idSPIFFEID))},
			defect: engine.ErrUntrusted,
		},
		{
			name:   "an expired intermediate is reported as expired and named",
			chain:  []*x509.Certificate{sign(deadInt, idSPIFFETemplate(t, idSPIFFEID)), deadInt.Cert},
			defect: engine.ErrExpired, msg: []string{"intermediate", "identity test intermediate"},
		},
		{
			name:   "a server-only certificate may not authenticate a client",
			chain:  []*x509.Certificate{spiffeLeaf(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })},
			defect: engine.ErrWrongKeyUsage, msg: []string{"clientAuth"},
		},
		{
			name: "a CA certificate may not act as a client",
			chain: []*x509.Certificate{spiffeLeaf(func(c *x509.Certificate) {
				c.IsCA = true
				c.KeyUsage |= x509.KeyUsageCertSign
			})},
			defect: engine.ErrWrongKeyUsage,
		},
		{
			name:   "a trusted certificate with a bad claim is refused naming the claim",
			chain:  []*x509.Certificate{sign(f.ca, idSPIFFETemplate(t, "spiffe://coordinatord.test/cluster/prod-eu/env/staging/role/root/dc/dc1/node/gate-7"))},
			defect: engine.ErrUnknownRole, claim: "role",
		},
		{
			name:   "a subject certificate under the spiffe mapping has no URI SAN",
			chain:  []*x509.Certificate{f.sign(t, idSubjectTemplate(t))},
			defect: engine.ErrNoURISAN,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg == (engine.IdentityConfig{}) {
				cfg = idSPIFFECfg
			}
			v, err := engine.NewVerifier(f.ca.Pool(), cfg, idClock(idT0))
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(tt.chain)
			if tt.defect != nil {
				checkIdentityError(t, err, tt.defect, tt.claim, tt.msg...)
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := idClaims()
			want.SPIFFEID = idSPIFFEID
			want.Serial = tt.chain[0].SerialNumber.Text(16)
			want.NotAfter = tt.chain[0].NotAfter
			if got != want {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
			if v.Config() != cfg {
				t.Errorf("Config() = %+v, want %+v", v.Config(), cfg)
			}
		})
	}
}

func TestVerifierReadsTheInjectedClock(t *testing.T) {
	f := newIDFixture(t)
	leaf := f.sign(t, idSPIFFETemplate(t, idSPIFFEID))
	now := idT0
	v, err := engine.NewVerifier(f.ca.Pool(), idSPIFFECfg, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify([]*x509.Certificate{leaf}); err != nil {
		t.Fatalf("at t0: %v", err)
	}
	now = leaf.NotAfter.Add(time.Nanosecond)
	_, err = v.Verify([]*x509.Certificate{leaf})
	checkIdentityError(t, err, engine.ErrExpired, "")
}

func TestVerifierIsSafeForConcurrentUse(t *testing.T) {
	f := newIDFixture(t)
	v, err := engine.NewVerifier(f.ca.Pool(), idSPIFFECfg, idClock(idT0))
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{f.sign(t, idSPIFFETemplate(t, idSPIFFEID))}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if _, err := v.Verify(chain); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
