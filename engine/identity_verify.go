package engine

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Verifier turns a client's certificate chain into claims: validity period,
// chain to the trusted roots, client-auth usage, then ParseClaims. It exists
// so that the TLS layer can accept any certificate (tls.RequireAnyClientCert)
// and the server can still refuse with a reason the client can read: a
// failed handshake only says "bad certificate".
//
// A Verifier is immutable and safe for concurrent use.
type Verifier struct {
	roots *x509.CertPool
	cfg   IdentityConfig
	now   func() time.Time
}

// NewVerifier returns a Verifier trusting roots, mapping claims by cfg, and
// reading the time from now (which must return a non-zero time: crypto/x509
// would fall back to the wall clock on a zero one).
func NewVerifier(roots *x509.CertPool, cfg IdentityConfig, now func() time.Time) (*Verifier, error) {
	if roots == nil {
		return nil, errors.New("identity verifier: no trusted roots")
	}
	if now == nil {
		return nil, errors.New("identity verifier: no clock")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("identity verifier: %w", err)
	}
	return &Verifier{roots: roots, cfg: cfg, now: now}, nil
}

// Config returns the identity configuration the Verifier maps claims with.
func (v *Verifier) Config() IdentityConfig { return v.cfg }

// Verify checks chain (chain[0] the leaf, the rest intermediates, as in
// tls.ConnectionState.PeerCertificates) and returns the leaf's claims. Every
// error is an *IdentityError. The validity period of every certificate sent
// is checked before the chain, so an expired certificate is reported as
// expired whatever else is wrong with it (crypto/x509 would report an
// expired intermediate as an unknown authority). The leaf must allow
// ExtKeyUsageClientAuth (a leaf without extended key usages allows any, as
// RFC 5280 says) and must not be a CA.
func (v *Verifier) Verify(chain []*x509.Certificate) (Claims, error) {
	if len(chain) == 0 || chain[0] == nil {
		return Claims{}, identityErr(ErrNoCertificate, "", "the connection presented no client certificate")
	}
	now := v.now()
	for i, cert := range chain {
		if cert == nil {
			return Claims{}, identityErr(ErrMalformedCertificate, "", "certificate %d of the chain is nil", i)
		}
		if err := checkValidity(cert, i, now); err != nil {
			return Claims{}, err
		}
	}
	leaf := chain[0]
	opts := x509.VerifyOptions{
		Roots:       v.roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	if _, err := leaf.Verify(opts); err != nil {
		return Claims{}, verifyError(err, now)
	}
	// crypto/x509 would accept a CA certificate as a leaf; one that can sign
	// certificates must not also act as a peer.
	if leaf.IsCA || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return Claims{}, identityErr(ErrWrongKeyUsage, "", "the client certificate %s is a CA certificate", leaf.Subject)
	}
	return parseClaims(leaf, v.cfg)
}

// checkValidity reports a certificate outside its validity period, naming
// the times, so that a client with a skewed clock or a stale certificate
// sees why at once.
func checkValidity(cert *x509.Certificate, i int, now time.Time) error {
	which := "client certificate"
	if i > 0 {
		which = fmt.Sprintf("intermediate certificate %q", cert.Subject.String())
	}
	switch {
	case now.After(cert.NotAfter):
		return identityErr(ErrExpired, "", "%s expired at %s (NotAfter); now is %s",
			which, cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case now.Before(cert.NotBefore):
		return identityErr(ErrNotYetValid, "", "%s is valid from %s (NotBefore); now is %s",
			which, cert.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// verifyError maps a crypto/x509 verification error to an *IdentityError,
// keeping x509's text as the detail. Everything but usage and validity
// (unknown authority, bad signature, an intermediate that may not sign,
// name constraints, unhandled critical extensions) means the chain cannot
// be trusted.
func verifyError(err error, now time.Time) error {
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) {
		switch invalid.Reason {
		case x509.IncompatibleUsage:
			return identityErr(ErrWrongKeyUsage, "", "%v (need extended key usage clientAuth)", err)
		case x509.Expired:
			// Only a root can be outside its validity period here: the
			// chain's own certificates were checked before.
			if invalid.Cert != nil && now.Before(invalid.Cert.NotBefore) {
				return identityErr(ErrNotYetValid, "", "%v", err)
			}
			return identityErr(ErrExpired, "", "%v", err)
		}
	}
	return identityErr(ErrUntrusted, "", "%v", err)
}
