package pki

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/coordinatord/coordinatord/engine"
)

// Request describes an identity certificate to issue.
type Request struct {
	// Claims is the identity. Cluster, Env, Role, Datacenter and Node are
	// required; Region is optional and only the subject mapping carries it.
	// SPIFFEID, Serial and NotAfter are outputs of parsing and are ignored.
	Claims engine.Claims
	// Mapping chooses how the claims are written (engine.MappingSPIFFE or
	// engine.MappingSubject); it must match the verifier's configuration.
	Mapping engine.Mapping
	// TrustDomain is the SPIFFE trust domain of the URI SAN. Required for
	// the spiffe mapping; the subject mapping does not write it, and checks
	// it only if set.
	TrustDomain string
	// NotBefore and NotAfter bound the validity; both are required.
	NotBefore, NotAfter time.Time
	// Server adds the ServerAuth extended key usage, for coordinatord nodes
	// that both accept and make connections.
	Server bool
	// DNSNames and IPAddresses are the host names a server certificate is
	// valid for; at least one is required when Server is set, and none is
	// allowed otherwise.
	DNSNames    []string
	IPAddresses []net.IP
}

// Validate reports the first bad field of r, named. The claims are checked
// by engine.ValidateClaims, the parser's own rules.
func (r Request) Validate() error {
	switch r.Mapping {
	case engine.MappingSPIFFE:
		cfg := engine.IdentityConfig{Mapping: r.Mapping, TrustDomain: r.TrustDomain}
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("certificate request: TrustDomain: %w", err)
		}
		if r.Claims.Region != "" {
			return fmt.Errorf("certificate request: Claims.Region %q: the spiffe mapping has no region; use the subject mapping or leave it empty", r.Claims.Region)
		}
	case engine.MappingSubject:
		if r.TrustDomain != "" {
			cfg := engine.IdentityConfig{Mapping: r.Mapping, TrustDomain: r.TrustDomain}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("certificate request: TrustDomain: %w", err)
			}
		}
	default:
		return fmt.Errorf("certificate request: Mapping %q: must be %q or %q", r.Mapping, engine.MappingSPIFFE, engine.MappingSubject)
	}
	if err := engine.ValidateClaims(r.Claims); err != nil {
		return fmt.Errorf("certificate request: Claims: %w", err)
	}
	switch {
	case r.NotBefore.IsZero():
		return errors.New("certificate request: NotBefore is required")
	case r.NotAfter.IsZero():
		return errors.New("certificate request: NotAfter is required")
	case !r.NotAfter.After(r.NotBefore):
		return fmt.Errorf("certificate request: NotAfter %s is not after NotBefore %s",
			r.NotAfter.UTC().Format(time.RFC3339), r.NotBefore.UTC().Format(time.RFC3339))
	}
	if !r.Server {
		if len(r.DNSNames) > 0 || len(r.IPAddresses) > 0 {
			return errors.New("certificate request: DNSNames and IPAddresses are only for server certificates (set Server)")
		}
		return nil
	}
	if len(r.DNSNames) == 0 && len(r.IPAddresses) == 0 {
		return errors.New("certificate request: a server certificate needs DNSNames or IPAddresses")
	}
	for i, name := range r.DNSNames {
		if err := validHostname(name); err != nil {
			return fmt.Errorf("certificate request: DNSNames[%d] %q: %w", i, name, err)
		}
	}
	for i, ip := range r.IPAddresses {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("certificate request: IPAddresses[%d] %v: not an IP address", i, ip)
		}
	}
	return nil
}

// validHostname checks a server DNS name. Under the subject mapping claims
// live in the same SAN list as "key=value", so a name with '=' would be
// read as a claim; the stricter LDH rule excludes that and other mistakes.
func validHostname(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("must be 1 to 253 bytes")
	}
	labels := strings.Split(strings.TrimPrefix(name, "*."), ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("has an empty or over-long label")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("has %q; host names use letters, digits, '-' and '.'", c)
			}
		}
	}
	return nil
}

// Issued is a certificate with its new private key.
type Issued struct {
	// Cert is the issued certificate.
	Cert *x509.Certificate
	// CertPEM and KeyPEM are the certificate and its PKCS #8 key as PEM.
	CertPEM, KeyPEM []byte
}

// TLSCertificate returns the certificate and key for tls.Config.
func (is *Issued) TLSCertificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issued certificate: %w", err)
	}
	return c, nil
}

// WriteFiles writes the certificate and key (mode 0600) as PEM. It refuses
// to replace an existing file unless force is set; the error then wraps
// fs.ErrExist.
func (is *Issued) WriteFiles(certFile, keyFile string, force bool) error {
	return writePair(certFile, is.CertPEM, keyFile, is.KeyPEM, force)
}

// Issue validates req and issues a certificate with a new P-256 key, writing
// the claims as req.Mapping says: one URI SAN for spiffe; subject CN and OU,
// node=/dc=/region= DNS SANs and the engine.OIDEnv extension (non-critical,
// since crypto/x509 rejects unknown critical extensions) for subject. The
// certificate may not outlive the CA.
func (ca *CA) Issue(req Request) (*Issued, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if req.NotAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("certificate request: NotAfter %s is after the CA's NotAfter %s",
			req.NotAfter.UTC().Format(time.RFC3339), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl, err := template(req)
	if err != nil {
		return nil, err
	}
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	cert, der, err := ca.Sign(tmpl, key.Public())
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	return &Issued{Cert: cert, CertPEM: EncodeCert(der), KeyPEM: keyPEM}, nil
}

// template lays out a validated request as a certificate template.
func template(req Request) (*x509.Certificate, error) {
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if req.Server {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	tmpl := &x509.Certificate{
		NotBefore:             req.NotBefore,
		NotAfter:              req.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		IPAddresses:           req.IPAddresses,
	}
	c := req.Claims
	switch req.Mapping {
	case engine.MappingSPIFFE:
		u, err := url.Parse(engine.SPIFFEID(req.TrustDomain, c))
		if err != nil {
			return nil, fmt.Errorf("issue: SPIFFE ID: %w", err)
		}
		tmpl.URIs = []*url.URL{u}
		tmpl.DNSNames = append([]string(nil), req.DNSNames...)
	case engine.MappingSubject:
		env, err := asn1.MarshalWithParams(c.Env, "utf8")
		if err != nil {
			return nil, fmt.Errorf("issue: env extension: %w", err)
		}
		tmpl.Subject = pkix.Name{CommonName: c.Cluster, OrganizationalUnit: []string{string(c.Role)}}
		tmpl.DNSNames = []string{"node=" + c.Node, "dc=" + c.Datacenter}
		if c.Region != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, "region="+c.Region)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, req.DNSNames...)
		tmpl.ExtraExtensions = []pkix.Extension{{Id: engine.OIDEnv, Value: env}}
	}
	return tmpl, nil
}
