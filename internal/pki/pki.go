// Package pki creates the certificate authority and the certificates that
// carry coordinatord identities: `coordinatord ca init/issue` and
// `coordinatord dev` use it, and so do tests that need real mTLS peers.
//
// Keys are ECDSA P-256. Certificates are written the way engine.ParseClaims
// reads them, and Request.Validate applies the engine's own claim rules, so a
// certificate issued here always parses and carries exactly the claims asked
// for.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
)

// PEM block types written and read by this package.
const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"    // PKCS #8
	pemECKey       = "EC PRIVATE KEY" // SEC 1, read for keys made by openssl
)

// File modes: private keys are for their owner only.
const (
	keyFileMode  fs.FileMode = 0o600
	certFileMode fs.FileMode = 0o644
)

// NewKey returns a new ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate P-256 key: %w", err)
	}
	return k, nil
}

// EncodeKey returns k as a PKCS #8 "PRIVATE KEY" PEM block.
func EncodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// EncodeCert returns DER certificate bytes as a "CERTIFICATE" PEM block.
func EncodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})
}

// decodeKey parses one PEM private key (PKCS #8 or SEC 1) that can sign.
func decodeKey(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if b, _ := pem.Decode(rest); b != nil {
		return nil, fmt.Errorf("more than one PEM block (second is %q)", b.Type)
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case pemPrivateKey:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case pemECKey:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, pemPrivateKey)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", key)
	}
	return signer, nil
}

// decodeCerts parses every PEM block of data, all of which must be
// certificates.
func decodeCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("PEM block %d is %q, want %q", n, block.Type, pemCertificate)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// randomSerial returns a random positive 128-bit serial number: unique
// without a counter to keep, as RFC 5280 requires.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// writePair writes a certificate and its key. Without force it refuses if
// either file exists (the error wraps fs.ErrExist) and never leaves half a
// pair behind; with force it replaces each file atomically.
func writePair(certFile string, certPEM []byte, keyFile string, keyPEM []byte, force bool) error {
	if certFile == "" || keyFile == "" {
		return errors.New("write certificate: certificate and key file names are required")
	}
	if certFile == keyFile {
		return fmt.Errorf("write certificate: certificate and key would both be %s", certFile)
	}
	if !force {
		for _, f := range []string{certFile, keyFile} {
			if _, err := os.Lstat(f); err == nil {
				return fmt.Errorf("write %s: %w (use force to replace it)", f, fs.ErrExist)
			}
		}
	}
	if err := writeFile(keyFile, keyPEM, keyFileMode, force); err != nil {
		return err
	}
	if err := writeFile(certFile, certPEM, certFileMode, force); err != nil {
		if !force {
			os.Remove(keyFile)
		}
		return err
	}
	return nil
}

// writeFile writes data to name with mode perm. Without force it creates the
// file exclusively; with force it writes a temporary file beside it and
// renames it, so a reader never sees a partial key or certificate.
func writeFile(name string, data []byte, perm fs.FileMode, force bool) (err error) {
	if !force {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if _, err = f.Write(data); err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(name)
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	// CreateTemp makes the file 0600, so a key is never readable by others,
	// not even for a moment.
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, perm)
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
