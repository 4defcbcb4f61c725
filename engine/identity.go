package engine

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
)

// OIDEnv is the certificate extension that carries the env claim under the
// subject mapping, as a DER UTF8String. Issuers should mark it non-critical:
// crypto/x509 refuses chains with critical extensions it does not know.
var OIDEnv = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}

// MaxClaimLen is the longest claim value accepted, in bytes.
const MaxClaimLen = 128

// maxTrustDomainLen follows the SPIFFE specification's limit on the
// trust domain name (a DNS name).
const maxTrustDomainLen = 255

// Claim names, as used in IdentityError.Claim and ValidateClaimValue.
const (
	claimCluster    = "cluster"
	claimEnv        = "env"
	claimRole       = "role"
	claimDatacenter = "datacenter"
	claimNode       = "node"
	claimRegion     = "region"
)

// validTrustDomain checks td against the SPIFFE trust domain grammar:
// lower-case letters, digits, '.', '-' and '_'. Scheme and port get their
// own messages because they are the usual mistakes in configuration.
func validTrustDomain(td string) error {
	if td == "" {
		return errors.New("must not be empty")
	}
	if strings.Contains(td, "://") {
		return errors.New(`must not include a scheme (write "example.org", not "spiffe://example.org")`)
	}
	if len(td) > maxTrustDomainLen {
		return fmt.Errorf("is %d bytes, longer than %d", len(td), maxTrustDomainLen)
	}
	for i := 0; i < len(td); i++ {
		switch c := td[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '.', c == '-', c == '_':
		case 'A' <= c && c <= 'Z':
			return errors.New("must be lower case")
		case c == ':':
			return errors.New("must not include a port")
		case c == '/':
			return errors.New("must not include a path")
		default:
			return fmt.Errorf("has %q at byte %d; allowed are a-z 0-9 . - _", c, i)
		}
	}
	return nil
}

// claimValueDefect checks one claim value and returns the defect and a
// reason, or nil. The rules are the same for both mappings and for issuing,
// so that every certificate pki issues parses, and nothing else does.
func claimValueDefect(claim, value string) (defect error, reason string) {
	if value == "" {
		return ErrEmptyClaim, ""
	}
	if len(value) > MaxClaimLen {
		return ErrInvalidClaim, fmt.Sprintf("value is %d bytes, longer than %d", len(value), MaxClaimLen)
	}
	// "." and ".." would be dot segments in a SPIFFE ID path, which the
	// SPIFFE specification forbids.
	if value == "." || value == ".." {
		return ErrInvalidClaim, fmt.Sprintf("value %q is a dot segment", value)
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; !claimByte(c) {
			return ErrInvalidClaim, fmt.Sprintf("value %s has %q at byte %d (allowed: A-Z a-z 0-9 . _ -)", quoteUntrusted(value), c, i)
		}
	}
	if claim == claimRole && !Role(value).Valid() {
		return ErrUnknownRole, fmt.Sprintf("%q is not a role (%s)", value, roleNames())
	}
	return nil, ""
}

func claimByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

func roleNames() string {
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// ValidateClaimValue checks value as the claim named name ("cluster", "env",
// "role", "datacenter", "node" or "region") by the rules the parsers apply:
// non-empty, at most MaxClaimLen bytes of [A-Za-z0-9._-], not "." or "..",
// and for "role" one of Roles. The error is an *IdentityError. Issuers use it
// so that they never produce a certificate the parser would refuse.
func ValidateClaimValue(name, value string) error {
	switch name {
	case claimCluster, claimEnv, claimRole, claimDatacenter, claimNode, claimRegion:
	default:
		return identityErr(ErrUnknownClaimKey, "", "%q is not a claim name", name)
	}
	if defect, reason := claimValueDefect(name, value); defect != nil {
		return &IdentityError{Defect: defect, Claim: name, Detail: reason}
	}
	return nil
}

// ValidateClaims checks every claim of c as ValidateClaimValue does; Region
// may be empty, the others may not. SPIFFEID, Serial and NotAfter describe a
// certificate rather than an identity and are not checked.
func ValidateClaims(c Claims) error {
	for _, f := range [...]struct{ name, value string }{
		{claimCluster, c.Cluster},
		{claimEnv, c.Env},
		{claimRole, string(c.Role)},
		{claimDatacenter, c.Datacenter},
		{claimNode, c.Node},
	} {
		if err := ValidateClaimValue(f.name, f.value); err != nil {
			return err
		}
	}
	if c.Region != "" {
		return ValidateClaimValue(claimRegion, c.Region)
	}
	return nil
}

// SPIFFEID returns the canonical SPIFFE ID of c in trustDomain:
// spiffe://<td>/cluster/<c>/env/<e>/role/<r>/dc/<dc>/node/<id>. It does not
// validate; claims that passed ValidateClaims need no escaping.
func SPIFFEID(trustDomain string, c Claims) string {
	var b strings.Builder
	b.Grow(len(spiffeScheme) + len(trustDomain) + 32 + len(c.Cluster) + len(c.Env) + len(c.Role) + len(c.Datacenter) + len(c.Node))
	b.WriteString(spiffeScheme)
	b.WriteString(trustDomain)
	for _, kv := range [...][2]string{
		{"cluster", c.Cluster}, {"env", c.Env}, {"role", string(c.Role)}, {"dc", c.Datacenter}, {"node", c.Node},
	} {
		b.WriteByte('/')
		b.WriteString(kv[0])
		b.WriteByte('/')
		b.WriteString(kv[1])
	}
	return b.String()
}

// ParseClaims maps cert to claims under cfg, strictly: any missing, empty,
// duplicated, unknown or badly formed claim is an *IdentityError naming the
// claim, and no claim is ever defaulted. It does not verify the chain or the
// validity period; Verifier.Verify does both before calling it. Serial is the
// certificate serial number in lower-case hex, NotAfter is copied.
//
// cert should come from x509.ParseCertificate (as in a TLS handshake): the
// spiffe mapping reads the URI SANs from the raw extension, so that what is
// checked is exactly what the issuer signed.
func ParseClaims(cert *x509.Certificate, cfg IdentityConfig) (Claims, error) {
	if err := cfg.Validate(); err != nil {
		return Claims{}, fmt.Errorf("identity config: %w", err)
	}
	return parseClaims(cert, cfg)
}

// parseClaims is ParseClaims for a configuration that was validated already.
func parseClaims(cert *x509.Certificate, cfg IdentityConfig) (Claims, error) {
	if cert == nil {
		return Claims{}, &IdentityError{Defect: ErrNoCertificate}
	}
	if cert.SerialNumber == nil {
		return Claims{}, identityErr(ErrMalformedCertificate, "", "certificate has no serial number")
	}
	var (
		c   Claims
		err error
	)
	switch cfg.Mapping {
	case MappingSPIFFE:
		c, err = spiffeClaims(cert, cfg.TrustDomain)
	case MappingSubject:
		if c, err = subjectClaims(cert); err == nil {
			c.SPIFFEID = SPIFFEID(cfg.TrustDomain, c)
		}
	default:
		err = fmt.Errorf("identity mapping %q: must be %q or %q", cfg.Mapping, MappingSPIFFE, MappingSubject)
	}
	if err != nil {
		return Claims{}, err
	}
	c.Serial = cert.SerialNumber.Text(16)
	c.NotAfter = cert.NotAfter
	return c, nil
}
