package builtin_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/ca/builtin"
	"github.com/tokenfleet/tokenfleet/protocol"
)

func TestCreatedCA(t *testing.T) {
	tests := []struct {
		keyType protocol.KeyType
		want    string // openssl's name for the key
	}{
		{"", "NIST CURVE: P-384"}, // the default
		{protocol.KeyP256, "NIST CURVE: P-256"},
		{protocol.KeyRSA3072, "(3072 bit)"},
	}
	for _, tt := range tests {
		t.Run(string(tt.keyType), func(t *testing.T) {
			opts := testOptions(t)
			opts.Builtin.KeyType = tt.keyType
			authority := newCA(t, opts)

			keyPath := filepath.Join(opts.DataDir, builtin.KeyFileName)
			certPath := filepath.Join(opts.DataDir, builtin.CertFileName)
			for path, mode := range map[string]os.FileMode{keyPath: 0o600, certPath: 0o644} {
				info, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if info.Mode().Perm() != mode {
					t.Errorf("%s has mode %04o, want %04o", filepath.Base(path), info.Mode().Perm(), mode)
				}
			}
			entries, _ := os.ReadDir(opts.DataDir)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".tmp") {
					t.Errorf("temporary file %s left behind", e.Name())
				}
			}

			cert := parseCertPEM(t, certPath)
			if !cert.Equal(authority.CACertificates()[0]) {
				t.Error("the certificate on disk is not the CA's")
			}
			if !cert.IsCA || !cert.BasicConstraintsValid || cert.MaxPathLen != 0 || !cert.MaxPathLenZero {
				t.Errorf("basic constraints: CA %v pathlen %d", cert.IsCA, cert.MaxPathLen)
			}
			if cert.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("key usage %b", cert.KeyUsage)
			}
			if cert.Subject.CommonName != "tokenfleet CA Example Org" || len(cert.SubjectKeyId) != 20 {
				t.Errorf("subject %q, key id %x", cert.Subject, cert.SubjectKeyId)
			}
			if cert.SerialNumber.BitLen() < 64 {
				t.Errorf("CA serial %x is not random", cert.SerialNumber)
			}
			if got := cert.NotAfter.Sub(cert.NotBefore); got < builtin.DefaultValidity {
				t.Errorf("CA validity %s", got)
			}

			text := mustOpenSSL(t, "x509", "-in", certPath, "-noout", "-text")
			for _, want := range []string{"CA:TRUE, pathlen:0", "Certificate Sign, CRL Sign", "Subject Key Identifier", tt.want} {
				if !strings.Contains(text, want) {
					t.Errorf("openssl shows no %q:\n%s", want, text)
				}
			}
			if out := mustOpenSSL(t, "verify", "-CAfile", certPath, certPath); !strings.Contains(out, ": OK") {
				t.Errorf("the CA does not verify as its own root: %s", out)
			}
			if out := mustOpenSSL(t, "pkey", "-in", keyPath, "-noout", "-check"); !strings.Contains(out, "valid") && !strings.Contains(out, "ok") {
				t.Errorf("openssl pkey -check: %s", out)
			}
		})
	}
}

func TestReloadGivesSameCA(t *testing.T) {
	opts := testOptions(t)
	first := newCA(t, opts)
	second := newCA(t, opts)
	if !first.CACertificates()[0].Equal(second.CACertificates()[0]) {
		t.Fatal("a second start made a new CA")
	}
	// Certificates signed after the restart chain to the first start's certificate.
	cert, err := second.Sign(context.Background(), signRequest(t, loadProfiles(t)[0], testKey(t, protocol.KeyP256).Public()))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile := writeCAFile(t, first, dir)
	certFile := writePEM(t, dir, "cert.pem", "CERTIFICATE", cert.Raw)
	if out := mustOpenSSL(t, "verify", "-CAfile", caFile, certFile); !strings.Contains(out, ": OK") {
		t.Errorf("openssl verify: %s", out)
	}
}

// TestExistingCAFromOpenSSL loads a CA that openssl made.
func TestExistingCAFromOpenSSL(t *testing.T) {
	dir := t.TempDir()
	certFile := filepath.Join(dir, "org-ca.pem")
	keyFile := filepath.Join(dir, "org-ca.key")
	mustOpenSSL(t, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", keyFile, "-out", certFile, "-subj", "/O=Example Org/CN=Example Org Issuing CA", "-days", "365",
		"-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
		"-addext", "keyUsage=critical,keyCertSign,cRLSign")
	if err := os.Chmod(keyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t)
	opts.Builtin.CertFile, opts.Builtin.KeyFile = certFile, keyFile
	authority := newCA(t, opts)
	if got := authority.CACertificates()[0].Subject.CommonName; got != "Example Org Issuing CA" {
		t.Fatalf("loaded CA %q", got)
	}
	if _, err := os.Stat(filepath.Join(opts.DataDir, builtin.KeyFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Error("a CA was created in the data directory although one was configured")
	}
	cert, err := authority.Sign(context.Background(), signRequest(t, loadProfiles(t)[0], testKey(t, protocol.KeyRSA2048).Public()))
	if err != nil {
		t.Fatal(err)
	}
	leaf := writePEM(t, dir, "leaf.pem", "CERTIFICATE", cert.Raw)
	if out := mustOpenSSL(t, "verify", "-CAfile", certFile, leaf); !strings.Contains(out, ": OK") {
		t.Errorf("openssl verify: %s", out)
	}
	crlDER, err := authority.CRL(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	crlPEM := writePEM(t, dir, "crl.pem", "X509 CRL", crlDER)
	if out := mustOpenSSL(t, "verify", "-crl_check", "-CAfile", certFile, "-CRLfile", crlPEM, leaf); !strings.Contains(out, ": OK") {
		t.Errorf("openssl verify with the CRL: %s", out)
	}
}

// caPair makes a CA certificate and key with Go, signed by parent (self-signed when nil).
type caPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func makeCA(t *testing.T, name string, key crypto.Signer, parent *caPair, edit func(*x509.Certificate)) caPair {
	t.Helper()
	skid, err := ca.KeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId: skid,
	}
	if edit != nil {
		edit(tmpl)
	}
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return caPair{cert, key}
}

func writeKey(t *testing.T, dir, name string, key crypto.Signer, mode os.FileMode) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return path
}

func TestIntermediateWithChain(t *testing.T) {
	dir := t.TempDir()
	root := makeCA(t, "Org Root", testKey(t, protocol.KeyP384), nil, nil)
	inter := makeCA(t, "Org Issuing", testKey(t, protocol.KeyP256), &root, func(c *x509.Certificate) {
		c.MaxPathLenZero = true
	})
	opts := testOptions(t)
	opts.Builtin.CertFile = writePEM(t, dir, "chain.pem", "CERTIFICATE", inter.cert.Raw, root.cert.Raw)
	opts.Builtin.KeyFile = writeKey(t, dir, "inter.key", inter.key, 0o600)
	authority := newCA(t, opts)
	chain := authority.CACertificates()
	if len(chain) != 2 || !chain[0].Equal(inter.cert) || !chain[1].Equal(root.cert) {
		t.Fatalf("chain of %d certificates", len(chain))
	}
	cert, err := authority.Sign(context.Background(), signRequest(t, loadProfiles(t)[0], testKey(t, protocol.KeyP256).Public()))
	if err != nil {
		t.Fatal(err)
	}
	rootFile := writePEM(t, dir, "root.pem", "CERTIFICATE", root.cert.Raw)
	interFile := writePEM(t, dir, "inter.pem", "CERTIFICATE", inter.cert.Raw)
	leaf := writePEM(t, dir, "leaf.pem", "CERTIFICATE", cert.Raw)
	if out := mustOpenSSL(t, "verify", "-CAfile", rootFile, "-untrusted", interFile, leaf); !strings.Contains(out, ": OK") {
		t.Errorf("openssl verify through the intermediate: %s", out)
	}
}

func TestLoadRefusals(t *testing.T) {
	goodCA := makeCA(t, "Good CA", testKey(t, protocol.KeyP256), nil, nil)
	otherKey := testKey(t, protocol.KeyP384)
	notCA := makeCA(t, "Leaf", testKey(t, protocol.KeyP256), nil, func(c *x509.Certificate) {
		c.IsCA = false
		c.KeyUsage = x509.KeyUsageDigitalSignature
	})
	noCRLSign := makeCA(t, "No CRL", testKey(t, protocol.KeyP256), nil, func(c *x509.Certificate) {
		c.KeyUsage = x509.KeyUsageCertSign
	})
	expired := makeCA(t, "Old CA", testKey(t, protocol.KeyP256), nil, func(c *x509.Certificate) {
		c.NotBefore = time.Now().Add(-48 * time.Hour)
		c.NotAfter = time.Now().Add(-24 * time.Hour)
	})
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edCA := makeCA(t, "Ed CA", edKey, nil, nil)

	type files struct{ cert, key string }
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) files
		code  ca.Code
		text  string
	}{
		{"world-readable key", func(t *testing.T, dir string) files {
			return files{writePEM(t, dir, "c.pem", "CERTIFICATE", goodCA.cert.Raw), writeKey(t, dir, "k.pem", goodCA.key, 0o644)}
		}, ca.CodeConfig, "mode 0644"},
		{"group-writable key", func(t *testing.T, dir string) files {
			return files{writePEM(t, dir, "c.pem", "CERTIFICATE", goodCA.cert.Raw), writeKey(t, dir, "k.pem", goodCA.key, 0o660)}
		}, ca.CodeConfig, "mode 0660"},
		{"missing certificate", func(t *testing.T, dir string) files {
			return files{filepath.Join(dir, "absent.pem"), writeKey(t, dir, "k.pem", goodCA.key, 0o600)}
		}, ca.CodeConfig, "absent.pem"},
		{"missing key", func(t *testing.T, dir string) files {
			return files{writePEM(t, dir, "c.pem", "CERTIFICATE", goodCA.cert.Raw), filepath.Join(dir, "absent.key")}
		}, ca.CodeConfig, "absent.key"},
		{"certificate without key option", func(t *testing.T, dir string) files {
			return files{writePEM(t, dir, "c.pem", "CERTIFICATE", goodCA.cert.Raw), ""}
		}, ca.CodeConfig, "both"},
		{"mismatched pair", func(t *testing.T, dir string) files {
			return files{writePEM(t, dir, "c.pem", "CERTIFICATE", goodCA.cert.Raw), writeKey(t, dir, "k.pem", otherKey, 0o600)}
		}, ca.CodeConfig, "does not match"},
		{"not a CA", func(t *testing.T, dir string) files {
			return files{writePEM(t, dir, "c.pem", "CERTIFICATE", notCA.cert.Raw), writeKey(t, dir, "k.pem", notCA.key, 0o600)}
		}, ca.CodeConfig, "not a CA"},
		{"no cRLSign", func(t *testing.T, dir string) files {
			return files{writePEM(t, dir, "c.pem", "CERTIFICATE", noCRLSign.cert.Raw), writeKey(t, dir, "k.pem", noCRLSign.key, 0o600)}
		}, ca.CodeConfig, "cRLSign"},
		{"expired CA", func(t *testing.T, dir string) files {
			return files{writePEM(t, dir, "c.pem", "CERTIFICATE", expired.cert.Raw), writeKey(t, dir, "k.pem", expired.key, 0o600)}
		}, ca.CodeExpired, "expired"},
		{"unsupported key type", func(t *testing.T, dir string) files {
			return files{writePEM(t, dir, "c.pem", "CERTIFICATE", edCA.cert.Raw), writeKey(t, dir, "k.pem", edCA.key, 0o600)}
		}, ca.CodeConfig, "unsupported CA key type"},
		{"encrypted key", func(t *testing.T, dir string) files {
			plain := writeKey(t, dir, "plain.pem", goodCA.key, 0o600)
			enc := filepath.Join(dir, "k.pem")
			mustOpenSSL(t, "pkcs8", "-topk8", "-in", plain, "-out", enc, "-passout", "pass:secret", "-v2", "aes-256-cbc")
			if err := os.Chmod(enc, 0o600); err != nil {
				t.Fatal(err)
			}
			return files{writePEM(t, dir, "c.pem", "CERTIFICATE", goodCA.cert.Raw), enc}
		}, ca.CodeConfig, "encrypted"},
		{"key file holds a certificate", func(t *testing.T, dir string) files {
			k := writePEM(t, dir, "k.pem", "CERTIFICATE", goodCA.cert.Raw)
			if err := os.Chmod(k, 0o600); err != nil {
				t.Fatal(err)
			}
			return files{writePEM(t, dir, "c.pem", "CERTIFICATE", goodCA.cert.Raw), k}
		}, ca.CodeConfig, "not a private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			f := tt.setup(t, t.TempDir())
			opts.Builtin.CertFile, opts.Builtin.KeyFile = f.cert, f.key
			_, err := builtin.New(context.Background(), opts)
			if ca.CodeOf(err) != tt.code || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("New: %v; want code %s mentioning %q", err, tt.code, tt.text)
			}
		})
	}

	t.Run("a created key made world-readable", func(t *testing.T) {
		opts := testOptions(t)
		newCA(t, opts)
		keyPath := filepath.Join(opts.DataDir, builtin.KeyFileName)
		if err := os.Chmod(keyPath, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := builtin.New(context.Background(), opts); !errors.Is(err, ca.ErrConfig) || !strings.Contains(err.Error(), "0644") {
			t.Errorf("New with a 0644 key: %v", err)
		}
	})
	t.Run("data directory with the certificate only", func(t *testing.T) {
		opts := testOptions(t)
		newCA(t, opts)
		if err := os.Remove(filepath.Join(opts.DataDir, builtin.KeyFileName)); err != nil {
			t.Fatal(err)
		}
		if _, err := builtin.New(context.Background(), opts); !errors.Is(err, ca.ErrConfig) || !strings.Contains(err.Error(), "only one") {
			t.Errorf("New with the key gone: %v", err)
		}
	})
}

func TestConfigRefusals(t *testing.T) {
	tests := []struct {
		name string
		edit func(o *ca.Options)
		text string
	}{
		{"no CRL URL", func(o *ca.Options) { o.Builtin.CRLURL = "" }, "CRL URL is required"},
		{"relative CRL URL", func(o *ca.Options) { o.Builtin.CRLURL = "/crl" }, "not an absolute"},
		{"bad issuer URL", func(o *ca.Options) { o.Builtin.IssuerURL = "ftp://x/ca" }, "issuer URL"},
		{"refresh too slow", func(o *ca.Options) { o.Builtin.CRLValidity = time.Hour; o.Builtin.CRLRefresh = time.Hour }, "half"},
		{"negative validity", func(o *ca.Options) { o.Builtin.Validity = -time.Hour }, "negative"},
		{"huge backdate", func(o *ca.Options) { o.Builtin.Backdate = 48 * time.Hour }, "backdate"},
		{"unknown key type", func(o *ca.Options) { o.Builtin.KeyType = "p521" }, "p521"},
		{"no data directory", func(o *ca.Options) { o.DataDir = "" }, "data directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			tt.edit(&opts)
			_, err := builtin.New(context.Background(), opts)
			if !errors.Is(err, ca.ErrConfig) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("New: %v; want a config error mentioning %q", err, tt.text)
			}
		})
	}
}

func TestRegisteredAsBuiltin(t *testing.T) {
	opts := testOptions(t)
	opts.Type = "" // the default
	got, err := ca.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.(*builtin.CA); !ok {
		t.Fatalf("ca.New gave %T", got)
	}
	if _, ok := got.(ca.CRLSource); !ok {
		t.Error("the built-in CA does not offer its CRL")
	}
}
