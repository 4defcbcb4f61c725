package engine

import (
	"errors"
	"fmt"
	"strings"
)

// The defects a client certificate can have. Each is the Defect of an
// *IdentityError, which adds the claim and the details; callers test for
// them with errors.Is and report IdentityError.Code to clients and metrics.
var (
	// ErrNoCertificate: the peer presented no certificate at all.
	ErrNoCertificate = errors.New("no client certificate")
	// ErrMalformedCertificate: the certificate is structurally unusable, for
	// example it has no serial number or an undecodable SAN extension.
	ErrMalformedCertificate = errors.New("malformed certificate")
	// ErrUntrusted: the chain does not lead to a trusted root (unknown
	// authority, a bad signature, an intermediate that may not sign, ...).
	ErrUntrusted = errors.New("certificate is not trusted")
	// ErrExpired: now is past the NotAfter of a certificate in the chain.
	ErrExpired = errors.New("certificate has expired")
	// ErrNotYetValid: now is before the NotBefore of a certificate in the chain.
	ErrNotYetValid = errors.New("certificate is not yet valid")
	// ErrWrongKeyUsage: the certificate may not be used to authenticate a
	// client (no ClientAuth extended key usage, or it is a CA certificate).
	ErrWrongKeyUsage = errors.New("certificate is not valid for client authentication")
	// ErrNoURISAN: the spiffe mapping found no URI SAN.
	ErrNoURISAN = errors.New("certificate has no URI SAN")
	// ErrMultipleURISANs: the spiffe mapping found more than one URI SAN;
	// picking one would let the issuer smuggle a second identity in.
	ErrMultipleURISANs = errors.New("certificate has more than one URI SAN")
	// ErrMalformedSPIFFEID: the URI SAN is not a plain SPIFFE ID (wrong
	// scheme, a port, userinfo, query, fragment, or an empty path segment).
	ErrMalformedSPIFFEID = errors.New("malformed SPIFFE ID")
	// ErrWrongTrustDomain: the SPIFFE ID names another trust domain.
	ErrWrongTrustDomain = errors.New("SPIFFE ID names the wrong trust domain")
	// ErrMissingClaim: a required claim is absent.
	ErrMissingClaim = errors.New("claim is missing")
	// ErrEmptyClaim: a claim is present with an empty value.
	ErrEmptyClaim = errors.New("claim is empty")
	// ErrDuplicateClaim: a claim is given more than once.
	ErrDuplicateClaim = errors.New("claim is given more than once")
	// ErrUnknownClaimKey: a claim key the mapping does not define.
	ErrUnknownClaimKey = errors.New("unknown claim key")
	// ErrInvalidClaim: a claim value has characters outside [A-Za-z0-9._-],
	// is "." or "..", or is longer than MaxClaimLen bytes.
	ErrInvalidClaim = errors.New("claim value is invalid")
	// ErrUnknownRole: the role claim is not one of Roles.
	ErrUnknownRole = errors.New("unknown role")
	// ErrClaimOrder: the SPIFFE ID path has its claims in another order than
	// cluster, env, role, dc, node; one canonical spelling per identity keeps
	// SPIFFE IDs comparable as strings.
	ErrClaimOrder = errors.New("claim is out of order")
	// ErrMissingCN: the subject mapping found no subject common name (the
	// cluster claim).
	ErrMissingCN = errors.New("certificate subject has no common name")
	// ErrMultipleCN: the subject has more than one common name.
	ErrMultipleCN = errors.New("certificate subject has more than one common name")
	// ErrMissingOU: the subject mapping found no subject organizational unit
	// (the role claim).
	ErrMissingOU = errors.New("certificate subject has no organizational unit")
	// ErrMultipleOU: the subject has more than one organizational unit.
	ErrMultipleOU = errors.New("certificate subject has more than one organizational unit")
	// ErrMissingEnvExtension: the subject mapping found no OIDEnv extension.
	ErrMissingEnvExtension = errors.New("certificate has no env extension (OID 1.3.6.1.4.1.99999.1)")
	// ErrEnvNotUTF8: the OIDEnv extension is not exactly one DER UTF8String
	// holding valid UTF-8.
	ErrEnvNotUTF8 = errors.New("env extension is not a DER UTF8String")
)

// defectCodes are the stable codes of the defects. They appear in API
// responses and as metric label values, so they never change once released.
var defectCodes = map[error]string{
	ErrNoCertificate:        "no_certificate",
	ErrMalformedCertificate: "malformed_certificate",
	ErrUntrusted:            "untrusted",
	ErrExpired:              "expired",
	ErrNotYetValid:          "not_yet_valid",
	ErrWrongKeyUsage:        "wrong_key_usage",
	ErrNoURISAN:             "no_uri_san",
	ErrMultipleURISANs:      "multiple_uri_sans",
	ErrMalformedSPIFFEID:    "malformed_spiffe_id",
	ErrWrongTrustDomain:     "wrong_trust_domain",
	ErrMissingClaim:         "missing_claim",
	ErrEmptyClaim:           "empty_claim",
	ErrDuplicateClaim:       "duplicate_claim",
	ErrUnknownClaimKey:      "unknown_claim_key",
	ErrInvalidClaim:         "invalid_claim",
	ErrUnknownRole:          "unknown_role",
	ErrClaimOrder:           "claim_order",
	ErrMissingCN:            "missing_cn",
	ErrMultipleCN:           "multiple_cn",
	ErrMissingOU:            "missing_ou",
	ErrMultipleOU:           "multiple_ou",
	ErrMissingEnvExtension:  "missing_env_extension",
	ErrEnvNotUTF8:           "env_not_utf8",
}

// codeUnknownDefect is the code of an IdentityError whose Defect is not one
// of the sentinels above; it keeps metric labels bounded.
const codeUnknownDefect = "invalid_identity"

// IdentityError is why a certificate was refused as an identity. Every
// rejection by ParseClaims, ParseSPIFFEID, ValidateClaimValue and
// Verifier.Verify is one, so the server can tell the client exactly what is
// wrong with its certificate.
type IdentityError struct {
	// Defect is one of the Err sentinels of this package.
	Defect error
	// Claim names the claim concerned ("cluster", "env", "role",
	// "datacenter", "node", "region"), or is empty when the defect is not
	// about one claim.
	Claim string
	// Detail says where and how, for humans: the offending value, the SPIFFE
	// ID, the times compared. It may quote certificate contents.
	Detail string
}

// Error names the claim and the defect, for example
// `identity: claim "env" is empty: in SPIFFE ID "spiffe://..."`.
func (e *IdentityError) Error() string {
	var b strings.Builder
	b.WriteString("identity: ")
	defect := "invalid identity"
	if e.Defect != nil {
		defect = e.Defect.Error()
	}
	if e.Claim != "" {
		// The path and SAN key of the datacenter claim is "dc"; say both so
		// an operator can find it in the certificate.
		name := fmt.Sprintf("claim %q", e.Claim)
		if e.Claim == claimDatacenter {
			name += ` (key "dc")`
		}
		if rest, ok := strings.CutPrefix(defect, "claim "); ok {
			defect = name + " " + rest
		} else {
			defect = name + ": " + defect
		}
	}
	b.WriteString(defect)
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap returns the defect, so errors.Is(err, ErrExpired) works.
func (e *IdentityError) Unwrap() error { return e.Defect }

// Code returns the stable snake_case code of the defect, such as "expired" or
// "missing_claim", for API error codes and metric labels. A defect that is
// not one of this package's sentinels gives "invalid_identity".
func (e *IdentityError) Code() string {
	if c, ok := defectCodes[e.Defect]; ok {
		return c
	}
	return codeUnknownDefect
}

// identityErr builds an *IdentityError with a formatted detail.
func identityErr(defect error, claim, format string, args ...any) *IdentityError {
	return &IdentityError{Defect: defect, Claim: claim, Detail: fmt.Sprintf(format, args...)}
}

// maxQuoted bounds how much of an untrusted value an error message repeats,
// so a hostile certificate cannot inflate logs and responses.
const maxQuoted = 256

// quoteUntrusted quotes s for an error message, cut to maxQuoted bytes.
func quoteUntrusted(s string) string {
	if len(s) > maxQuoted {
		return fmt.Sprintf("%q...(%d bytes)", s[:maxQuoted], len(s))
	}
	return fmt.Sprintf("%q", s)
}
