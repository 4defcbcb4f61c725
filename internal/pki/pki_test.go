package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/internal/pki"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("pki test CA", t0.Add(-time.Hour), 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestNewCA(t *testing.T) {
	ca := newCA(t)
	c := ca.Cert
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 || c.Subject.CommonName != "pki test CA" {
		t.Errorf("CA certificate: IsCA=%v KeyUsage=%v Subject=%v", c.IsCA, c.KeyUsage, c.Subject)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if !c.NotBefore.Equal(t0.Add(-time.Hour)) || !c.NotAfter.Equal(t0.Add(-time.Hour+365*24*time.Hour)) {
		t.Errorf("validity %v..%v", c.NotBefore, c.NotAfter)
	}
	if c.SerialNumber.Sign() <= 0 {
		t.Errorf("serial %v is not positive", c.SerialNumber)
	}
	if block, _ := pem.Decode(ca.CertPEM); block == nil || block.Type != "CERTIFICATE" {
		t.Errorf("CertPEM is not a certificate PEM block")
	}

	for _, tt := range []struct {
		name     string
		cn       string
		now      time.Time
		validity time.Duration
	}{
		{name: "an empty common name is refused", cn: "", now: t0, validity: time.Hour},
		{name: "a zero start time is refused", cn: "ca", validity: time.Hour},
		{name: "a zero validity is refused", cn: "ca", now: t0},
		{name: "a negative validity is refused", cn: "ca", now: t0, validity: -time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := pki.NewCA(tt.cn, tt.now, tt.validity); err == nil {
				t.Fatal("got a CA, want an error")
			}
		})
	}
}

func TestCAFilesRoundTrip(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := ca.WriteFiles(certFile, keyFile, false); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	loaded, err := pki.LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || string(loaded.CertPEM) != string(ca.CertPEM) {
		t.Error("loaded CA certificate differs")
	}

	t.Run("existing files are not overwritten without force", func(t *testing.T) {
		other := newCA(t)
		err := other.WriteFiles(certFile, keyFile, false)
		if !errors.Is(err, fs.ErrExist) {
			t.Fatalf("got %v, want fs.ErrExist", err)
		}
		again, err := pki.LoadCA(certFile, keyFile)
		if err != nil || !again.Cert.Equal(ca.Cert) {
			t.Fatalf("files changed: %v", err)
		}
	})
	t.Run("an existing key alone blocks the pair, leaving no half-written certificate", func(t *testing.T) {
		d := t.TempDir()
		cf, kf := filepath.Join(d, "c.pem"), filepath.Join(d, "k.pem")
		if err := os.WriteFile(kf, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := ca.WriteFiles(cf, kf, false); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("got %v, want fs.ErrExist", err)
		}
		if _, err := os.Stat(cf); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("certificate file was written: %v", err)
		}
	})
	t.Run("force replaces both files and keeps the key private", func(t *testing.T) {
		other := newCA(t)
		if err := other.WriteFiles(certFile, keyFile, true); err != nil {
			t.Fatal(err)
		}
		again, err := pki.LoadCA(certFile, keyFile)
		if err != nil || !again.Cert.Equal(other.Cert) {
			t.Fatalf("force did not replace: %v", err)
		}
		if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("key file mode %v (%v), want 0600", st.Mode().Perm(), err)
		}
		if st, err := os.Stat(certFile); err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("certificate file mode %v (%v), want 0644", st.Mode().Perm(), err)
		}
	})
}

func TestLoadCARefusesBadFiles(t *testing.T) {
	ca := newCA(t)
	other := newCA(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, err := pki.EncodeKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := pki.EncodeKey(other.Key)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := ca.Issue(clientRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := write("ca.pem", ca.CertPEM), write("ca-key.pem", caKey)

	tests := []struct {
		name              string
		certFile, keyFile string
		want              error // checked with errors.Is when set
		msg               []string
	}{
		{name: "a missing certificate file is named", certFile: filepath.Join(dir, "nope.pem"), keyFile: keyFile, want: fs.ErrNotExist, msg: []string{"nope.pem"}},
		{name: "a file without PEM is refused naming the file", certFile: write("junk.pem", []byte("hello")), keyFile: keyFile, msg: []string{"junk.pem", "no PEM"}},
		{name: "a key where the certificate belongs is refused", certFile: keyFile, keyFile: keyFile, msg: []string{`"PRIVATE KEY"`}},
		{name: "a leaf certificate is not a CA", certFile: write("leaf.pem", issued.CertPEM), keyFile: write("leaf-key.pem", issued.KeyPEM), want: pki.ErrNotCA, msg: []string{"leaf.pem"}},
		{name: "another CA's key does not match", certFile: certFile, keyFile: write("other-key.pem", otherKey), want: pki.ErrKeyMismatch, msg: []string{"other-key.pem"}},
		{name: "a certificate where the key belongs is refused", certFile: certFile, keyFile: certFile, msg: []string{`"CERTIFICATE"`}},
		{name: "two certificates in the CA file are refused", certFile: write("two.pem", append(append([]byte{}, ca.CertPEM...), other.CertPEM...)), keyFile: keyFile, msg: []string{"2 certificates"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pki.LoadCA(tt.certFile, tt.keyFile)
			if err == nil {
				t.Fatal("got a CA, want an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q does not contain %q", err, m)
				}
			}
		})
	}
}

func TestLoadPool(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundle, append(append([]byte{}, ca.CertPEM...), other.CertPEM...), 0o644); err != nil {
		t.Fatal(err)
	}
	pool, err := pki.LoadPool(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if !pool.Equal(func() *x509.CertPool { p := ca.Pool(); p.AddCert(other.Cert); return p }()) {
		t.Error("pool does not hold both CAs")
	}

	issued, err := ca.Issue(clientRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	leaf := filepath.Join(dir, "leaf.pem")
	if err := os.WriteFile(leaf, issued.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadPool(leaf); !errors.Is(err, pki.ErrNotCA) {
		t.Errorf("a leaf as trust root: got %v, want ErrNotCA", err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadPool(empty); err == nil || !strings.Contains(err.Error(), "empty.pem") {
		t.Errorf("an empty bundle: got %v, want an error naming the file", err)
	}
}
