package engine

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"strings"
)

const spiffeScheme = "spiffe://"

// maxSPIFFEIDLen is the SPIFFE specification's limit on a SPIFFE ID.
const maxSPIFFEIDLen = 2048

// spiffePath is the SPIFFE ID path layout: keys in this order, each once.
var spiffePath = [...]struct{ key, claim string }{
	{"cluster", claimCluster},
	{"env", claimEnv},
	{"role", claimRole},
	{"dc", claimDatacenter},
	{"node", claimNode},
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// spiffeClaims reads the claims from the certificate's one URI SAN.
func spiffeClaims(cert *x509.Certificate, trustDomain string) (Claims, error) {
	uris, err := uriSANs(cert)
	if err != nil {
		return Claims{}, err
	}
	switch len(uris) {
	case 0:
		return Claims{}, identityErr(ErrNoURISAN, "", "the spiffe mapping needs one URI SAN spiffe://%s/cluster/<c>/env/<e>/role/<r>/dc/<dc>/node/<id>", trustDomain)
	case 1:
	default:
		quoted := make([]string, len(uris))
		for i, u := range uris {
			quoted[i] = quoteUntrusted(u)
		}
		return Claims{}, identityErr(ErrMultipleURISANs, "", "found %d: %s", len(uris), strings.Join(quoted, ", "))
	}
	return parseSPIFFEID(uris[0], trustDomain)
}

// uriSANs returns the URI SANs exactly as the issuer encoded them.
// crypto/x509 hands them over as *url.URL, and url.URL.String does not give
// back the original in every case (an empty fragment "#" disappears, for
// one); the SAN extension itself does.
func uriSANs(cert *x509.Certificate) ([]string, error) {
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(oidSubjectAltName) {
			uris, err := parseURISANs(ext.Value)
			if err != nil {
				return nil, identityErr(ErrMalformedCertificate, "", "subject alternative name extension: %v", err)
			}
			return uris, nil
		}
	}
	// Certificates built in memory rather than parsed have no raw
	// extensions; their URIs are all there is.
	uris := make([]string, 0, len(cert.URIs))
	for _, u := range cert.URIs {
		if u != nil {
			uris = append(uris, u.String())
		}
	}
	return uris, nil
}

// parseURISANs extracts the uniformResourceIdentifier entries ([6]
// IMPLICIT IA5String) of a DER GeneralNames sequence.
func parseURISANs(der []byte) ([]string, error) {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(rest))
	}
	if seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return nil, fmt.Errorf("not a SEQUENCE")
	}
	var uris []string
	for b := seq.Bytes; len(b) > 0; {
		var gn asn1.RawValue
		if b, err = asn1.Unmarshal(b, &gn); err != nil {
			return nil, err
		}
		if gn.Class == asn1.ClassContextSpecific && gn.Tag == 6 {
			if gn.IsCompound {
				return nil, fmt.Errorf("URI name is not a primitive IA5String")
			}
			uris = append(uris, string(gn.Bytes))
		}
	}
	return uris, nil
}

// ParseSPIFFEID parses id as a coordinatord SPIFFE ID in trustDomain:
// spiffe://<td>/cluster/<c>/env/<e>/role/<r>/dc/<dc>/node/<id>, keys in that
// order, each once, values as ValidateClaimValue requires. The result has the
// five claims and SPIFFEID set. A bad trustDomain is a plain error; a bad id
// is an *IdentityError.
func ParseSPIFFEID(id, trustDomain string) (Claims, error) {
	if err := validTrustDomain(trustDomain); err != nil {
		return Claims{}, fmt.Errorf("trust domain %q: %w", trustDomain, err)
	}
	return parseSPIFFEID(id, trustDomain)
}

// parseSPIFFEID parses id by hand rather than with net/url: url.Parse
// accepts and normalises much that a SPIFFE ID must not contain
// (percent-encoding, an upper-case scheme, empty queries).
func parseSPIFFEID(id, trustDomain string) (Claims, error) {
	malformed := func(format string, args ...any) error {
		return identityErr(ErrMalformedSPIFFEID, "", "%s: %s", quoteUntrusted(id), fmt.Sprintf(format, args...))
	}
	if len(id) > maxSPIFFEIDLen {
		return Claims{}, malformed("%d bytes, longer than %d", len(id), maxSPIFFEIDLen)
	}
	rest, ok := strings.CutPrefix(id, spiffeScheme)
	if !ok {
		return Claims{}, malformed("must start with %q", spiffeScheme)
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		return Claims{}, malformed("must not have a query or fragment (%q at byte %d)", rest[i], len(spiffeScheme)+i)
	}
	authority, path, hasPath := strings.Cut(rest, "/")
	switch {
	case authority == "":
		return Claims{}, malformed("has no trust domain")
	case strings.Contains(authority, "@"):
		return Claims{}, malformed("must not have userinfo")
	case strings.Contains(authority, ":"):
		return Claims{}, malformed("must not have a port")
	case authority != trustDomain:
		return Claims{}, identityErr(ErrWrongTrustDomain, "", "%s names trust domain %s, expected %q", quoteUntrusted(id), quoteUntrusted(authority), trustDomain)
	}
	if !hasPath || path == "" {
		return Claims{}, identityErr(ErrMissingClaim, claimCluster, "SPIFFE ID %s has no path", quoteUntrusted(id))
	}

	segs := strings.Split(path, "/")
	var values [len(spiffePath)]string
	next := 0 // index in spiffePath of the key expected next
	for i := 0; i < len(segs); i += 2 {
		key := segs[i]
		if key == "" {
			return Claims{}, malformed("has an empty path segment (a doubled or trailing slash)")
		}
		k := spiffeKeyIndex(key)
		switch {
		case k < 0:
			return Claims{}, identityErr(ErrUnknownClaimKey, "", "path key %s in SPIFFE ID %s; the path is /cluster/<c>/env/<e>/role/<r>/dc/<dc>/node/<id>", quoteUntrusted(key), quoteUntrusted(id))
		case k < next:
			// Every key before next was seen exactly once, in order.
			return Claims{}, identityErr(ErrDuplicateClaim, spiffePath[k].claim, "path key %q appears twice in SPIFFE ID %s", key, quoteUntrusted(id))
		case k > next:
			want := spiffePath[next]
			if !keyFollows(segs[i+1:], want.key) {
				return Claims{}, identityErr(ErrMissingClaim, want.claim, "no path key %q before %q in SPIFFE ID %s", want.key, key, quoteUntrusted(id))
			}
			return Claims{}, identityErr(ErrClaimOrder, spiffePath[k].claim, "found path key %q where %q was expected in SPIFFE ID %s", key, want.key, quoteUntrusted(id))
		}
		if i+1 >= len(segs) {
			return Claims{}, identityErr(ErrEmptyClaim, spiffePath[k].claim, "SPIFFE ID %s ends after path key %q", quoteUntrusted(id), key)
		}
		value := segs[i+1]
		if defect, reason := claimValueDefect(spiffePath[k].claim, value); defect != nil {
			if reason != "" {
				reason += " "
			}
			return Claims{}, identityErr(defect, spiffePath[k].claim, "%sin SPIFFE ID %s", reason, quoteUntrusted(id))
		}
		values[k] = value
		next++
	}
	if next < len(spiffePath) {
		want := spiffePath[next]
		return Claims{}, identityErr(ErrMissingClaim, want.claim, "no path key %q in SPIFFE ID %s", want.key, quoteUntrusted(id))
	}
	return Claims{
		Cluster:    values[0],
		Env:        values[1],
		Role:       Role(values[2]),
		Datacenter: values[3],
		Node:       values[4],
		SPIFFEID:   id,
	}, nil
}

func spiffeKeyIndex(key string) int {
	for i, p := range spiffePath {
		if p.key == key {
			return i
		}
	}
	return -1
}

// keyFollows reports whether key is among the key positions of segs, which
// starts at a value. It tells a misplaced claim from a missing one.
func keyFollows(segs []string, key string) bool {
	for i := 1; i < len(segs); i += 2 {
		if segs[i] == key {
			return true
		}
	}
	return false
}
