package engine

import (
	"crypto/x509"
	"encoding/asn1"
	"strings"
	"unicode/utf8"
)

var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// subjectSANKeys maps the keys of "key=value" DNS SANs to claim names.
var subjectSANKeys = map[string]string{
	"node":   claimNode,
	"dc":     claimDatacenter,
	"region": claimRegion,
}

// subjectClaims reads the claims of the subject mapping: cluster from the
// subject CN, role from the subject OU, node/dc/region from "key=value" DNS
// SANs and env from the OIDEnv extension. URI SANs are not read.
func subjectClaims(cert *x509.Certificate) (Claims, error) {
	var c Claims
	cluster, err := subjectCN(cert)
	if err != nil {
		return Claims{}, err
	}
	if c.Cluster, err = checkClaimValue(claimCluster, cluster, "in subject common name"); err != nil {
		return Claims{}, err
	}

	switch ous := cert.Subject.OrganizationalUnit; len(ous) {
	case 0:
		return Claims{}, identityErr(ErrMissingOU, claimRole, "the subject mapping reads the role from the subject OU")
	case 1:
		role, err := checkClaimValue(claimRole, ous[0], "in subject organizational unit")
		if err != nil {
			return Claims{}, err
		}
		c.Role = Role(role)
	default:
		quoted := make([]string, len(ous))
		for i, ou := range ous {
			quoted[i] = quoteUntrusted(ou)
		}
		return Claims{}, identityErr(ErrMultipleOU, claimRole, "found %s", strings.Join(quoted, ", "))
	}

	env, err := envExtension(cert)
	if err != nil {
		return Claims{}, err
	}
	if c.Env, err = checkClaimValue(claimEnv, env, "in env extension"); err != nil {
		return Claims{}, err
	}

	sans := map[string]string{}
	for _, name := range cert.DNSNames {
		key, value, ok := strings.Cut(name, "=")
		if !ok {
			// A plain DNS name: a server certificate's host name.
			continue
		}
		claim, known := subjectSANKeys[key]
		if !known {
			return Claims{}, identityErr(ErrUnknownClaimKey, "", "DNS SAN %s has key %s; the subject mapping knows node=, dc= and region=", quoteUntrusted(name), quoteUntrusted(key))
		}
		if _, dup := sans[claim]; dup {
			return Claims{}, identityErr(ErrDuplicateClaim, claim, "DNS SAN key %q appears twice", key)
		}
		v, err := checkClaimValue(claim, value, "in DNS SAN "+quoteUntrusted(name))
		if err != nil {
			return Claims{}, err
		}
		sans[claim] = v
	}
	for _, req := range [...]struct{ claim, key string }{{claimDatacenter, "dc"}, {claimNode, "node"}} {
		if _, ok := sans[req.claim]; !ok {
			return Claims{}, identityErr(ErrMissingClaim, req.claim, "no DNS SAN %q", req.key+"=<id>")
		}
	}
	c.Datacenter, c.Node, c.Region = sans[claimDatacenter], sans[claimNode], sans[claimRegion]
	return c, nil
}

// checkClaimValue returns value if it is a valid claim, or an *IdentityError
// whose detail ends with where (which says where the value was found).
func checkClaimValue(claim, value, where string) (string, error) {
	if defect, reason := claimValueDefect(claim, value); defect != nil {
		if reason != "" {
			where = reason + " " + where
		}
		return "", &IdentityError{Defect: defect, Claim: claim, Detail: where}
	}
	return value, nil
}

// subjectCN returns the one subject common name. pkix.Name keeps only the
// last CN of several, so count them in the attribute list instead.
func subjectCN(cert *x509.Certificate) (string, error) {
	var cns []string
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(oidCommonName) {
			s, _ := atv.Value.(string)
			cns = append(cns, s)
		}
	}
	if len(cns) == 0 && cert.Subject.CommonName != "" {
		// Built in memory, not parsed: Names is empty.
		cns = append(cns, cert.Subject.CommonName)
	}
	switch {
	case len(cns) > 1:
		quoted := make([]string, len(cns))
		for i, cn := range cns {
			quoted[i] = quoteUntrusted(cn)
		}
		return "", identityErr(ErrMultipleCN, claimCluster, "found %s", strings.Join(quoted, ", "))
	case len(cns) == 0 || cns[0] == "":
		return "", identityErr(ErrMissingCN, claimCluster, "the subject mapping reads the cluster from the subject CN")
	}
	return cns[0], nil
}

// envExtension returns the env claim from the OIDEnv extension, which must
// be exactly one DER UTF8String of valid UTF-8.
func envExtension(cert *x509.Certificate) (string, error) {
	var (
		value []byte
		found int
	)
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(OIDEnv) {
			value = ext.Value
			found++
		}
	}
	if found == 0 {
		// Built in memory, not parsed: look where the issuer would put it.
		for _, ext := range cert.ExtraExtensions {
			if ext.Id.Equal(OIDEnv) {
				value = ext.Value
				found++
			}
		}
	}
	switch {
	case found == 0:
		return "", identityErr(ErrMissingEnvExtension, claimEnv, "the subject mapping reads env from it as a DER UTF8String")
	case found > 1:
		return "", identityErr(ErrDuplicateClaim, claimEnv, "extension %s appears %d times", OIDEnv, found)
	}
	var raw asn1.RawValue
	rest, err := asn1.Unmarshal(value, &raw)
	switch {
	case err != nil:
		return "", identityErr(ErrEnvNotUTF8, claimEnv, "extension %s does not decode: %v", OIDEnv, err)
	case len(rest) != 0:
		return "", identityErr(ErrEnvNotUTF8, claimEnv, "extension %s has %d bytes after the string", OIDEnv, len(rest))
	case raw.Class != asn1.ClassUniversal || raw.Tag != asn1.TagUTF8String || raw.IsCompound:
		return "", identityErr(ErrEnvNotUTF8, claimEnv, "extension %s holds ASN.1 class %d tag %d, not a UTF8String (tag %d)", OIDEnv, raw.Class, raw.Tag, asn1.TagUTF8String)
	case !utf8.Valid(raw.Bytes):
		return "", identityErr(ErrEnvNotUTF8, claimEnv, "extension %s holds invalid UTF-8 %s", OIDEnv, quoteUntrusted(string(raw.Bytes)))
	}
	return string(raw.Bytes), nil
}
