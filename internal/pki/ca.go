package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"time"
)

// Errors of loading a CA or a trust pool, checked with errors.Is.
var (
	// ErrNotCA: a certificate given as a CA or trust root is not a CA
	// certificate (often a leaf passed by mistake).
	ErrNotCA = errors.New("not a CA certificate")
	// ErrKeyMismatch: the private key does not belong to the certificate.
	ErrKeyMismatch = errors.New("private key does not match the certificate")
)

// CA is a certificate authority that can issue identity certificates.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// Key is the CA's private key; it signs every certificate issued.
	Key crypto.Signer
	// CertPEM is Cert as a PEM block, for trust bundles.
	CertPEM []byte
}

// NewCA creates a self-signed root CA valid from now for validity. It has no
// path length limit, so it may sign intermediates. now is not backdated:
// callers that expect clock skew between machines pass an earlier time.
func NewCA(commonName string, now time.Time, validity time.Duration) (*CA, error) {
	switch {
	case commonName == "":
		return nil, errors.New("new CA: common name is required")
	case now.IsZero():
		return nil, errors.New("new CA: start time is required")
	case validity <= 0:
		return nil, fmt.Errorf("new CA: validity %v must be positive", validity)
	}
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now,
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: EncodeCert(der)}, nil
}

// LoadCA reads a CA from a PEM certificate file and a PEM private key file
// (PKCS #8, or SEC 1 "EC PRIVATE KEY"). The certificate must be a CA and the
// key must be its own.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	certs, err := decodeCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate %s: %w", certFile, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("load CA certificate %s: holds %d certificates, want 1", certFile, len(certs))
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA certificate %s (%s): %w", certFile, cert.Subject, ErrNotCA)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	key, err := decodeKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA key %s: %w", keyFile, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("load CA key %s for certificate %s: %w", keyFile, certFile, ErrKeyMismatch)
	}
	return &CA{Cert: cert, Key: key, CertPEM: EncodeCert(cert.Raw)}, nil
}

// WriteFiles writes the CA certificate and key (mode 0600) as PEM. It
// refuses to replace an existing file unless force is set; the error then
// wraps fs.ErrExist.
func (ca *CA) WriteFiles(certFile, keyFile string, force bool) error {
	keyPEM, err := EncodeKey(ca.Key)
	if err != nil {
		return fmt.Errorf("write CA: %w", err)
	}
	return writePair(certFile, ca.CertPEM, keyFile, keyPEM, force)
}

// Pool returns a new pool holding only the CA certificate, for use as
// tls.Config.RootCAs / ClientCAs or engine.NewVerifier's roots.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// LoadPool reads a PEM bundle of one or more CA certificates as a trust
// pool. Every block must be a CA certificate: a leaf in a trust bundle is
// nearly always a wrong file name.
func LoadPool(caFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("load trust pool: %w", err)
	}
	certs, err := decodeCerts(data)
	if err != nil {
		return nil, fmt.Errorf("load trust pool %s: %w", caFile, err)
	}
	p := x509.NewCertPool()
	for i, c := range certs {
		if !c.IsCA {
			return nil, fmt.Errorf("load trust pool %s: certificate %d (%s): %w", caFile, i+1, c.Subject, ErrNotCA)
		}
		p.AddCert(c)
	}
	return p, nil
}

// Sign signs tmpl with the CA for the public key pub and returns the parsed
// certificate and its DER bytes. Nothing in tmpl is checked, so tests can
// craft defective certificates; Issue is the way to make correct ones. A
// nil tmpl.SerialNumber is replaced by a random one (tmpl itself is not
// modified).
func (ca *CA) Sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, []byte, error) {
	if tmpl == nil {
		return nil, nil, errors.New("sign: no template")
	}
	t := *tmpl
	if t.SerialNumber == nil {
		serial, err := randomSerial()
		if err != nil {
			return nil, nil, fmt.Errorf("sign: %w", err)
		}
		t.SerialNumber = serial
	}
	der, err := x509.CreateCertificate(rand.Reader, &t, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: parse the result: %w", err)
	}
	return cert, der, nil
}
