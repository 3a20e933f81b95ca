package builtin

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// Files of a CA created in the data directory.
const (
	CertFileName = "ca.pem"
	KeyFileName  = "ca-key.pem"
)

// File modes: the key is for the coordinator alone; the certificate is public.
const (
	keyFileMode  fs.FileMode = 0o600
	certFileMode fs.FileMode = 0o644
	dirMode      fs.FileMode = 0o700
)

// keyPermMask is the permissions a CA key file must not have: any access for others, or
// write access for the group. Read access for the group is allowed so that a key owned
// by root can be given to the service's group.
const keyPermMask fs.FileMode = 0o027

// authority is a loaded CA: its certificate, the issuers above it, and its key.
type authority struct {
	cert   *x509.Certificate
	chain  []*x509.Certificate // cert first
	signer crypto.Signer
}

// loadOrCreate loads the CA from the configured files, else from the data directory,
// creating it there on first start.
func loadOrCreate(opts ca.Options, cfg config, now time.Time) (authority, bool, error) {
	b := opts.Builtin
	if b.CertFile != "" || b.KeyFile != "" {
		if b.CertFile == "" || b.KeyFile == "" {
			return authority{}, false, ca.Errorf(ca.CodeConfig, "give both the CA certificate file and its key file, or neither")
		}
		a, err := load(b.CertFile, b.KeyFile, now)
		return a, false, err
	}
	if opts.DataDir == "" {
		return authority{}, false, ca.Errorf(ca.CodeConfig, "no data directory and no CA files configured")
	}
	certPath := filepath.Join(opts.DataDir, CertFileName)
	keyPath := filepath.Join(opts.DataDir, KeyFileName)
	certOK, err := exists(certPath)
	if err != nil {
		return authority{}, false, err
	}
	keyOK, err := exists(keyPath)
	if err != nil {
		return authority{}, false, err
	}
	switch {
	case certOK && keyOK:
		a, err := load(certPath, keyPath, now)
		return a, false, err
	case certOK || keyOK:
		// Making a new CA here would orphan every certificate the old one issued.
		return authority{}, false, ca.Errorf(ca.CodeConfig, "%s holds only one of %s and %s; restore the missing file (or remove both to create a new CA)", opts.DataDir, CertFileName, KeyFileName)
	}
	a, err := create(opts.DataDir, certPath, keyPath, cfg, now)
	return a, true, err
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, ca.Errorf(ca.CodeConfig, "%w", err)
}

// create makes a self-signed root CA and writes it to the data directory.
func create(dir, certPath, keyPath string, cfg config, now time.Time) (authority, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return authority{}, ca.Errorf(ca.CodeConfig, "CA data directory: %w", err)
	}
	signer, err := generateKey(cfg.keyType)
	if err != nil {
		return authority{}, err
	}
	serial, err := ca.RandomSerial()
	if err != nil {
		return authority{}, ca.Errorf(ca.CodeUnavailable, "%w", err)
	}
	skid, err := ca.KeyID(signer.Public())
	if err != nil {
		return authority{}, ca.Errorf(ca.CodeConfig, "CA key identifier: %w", err)
	}
	subject := pkix.Name{CommonName: cfg.name}
	if cfg.organization != "" {
		subject.Organization = []string{cfg.organization}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-cfg.backdate),
		NotAfter:              now.Add(cfg.validity),
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA issues end-entity certificates only.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:   skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return authority{}, ca.Errorf(ca.CodeConfig, "self-sign the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return authority{}, ca.Errorf(ca.CodeConfig, "parse the new CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return authority{}, ca.Errorf(ca.CodeConfig, "encode the CA key: %w", err)
	}
	// The key goes first: a certificate without its key is refused at the next start,
	// while a key alone is never served to anyone.
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), keyFileMode); err != nil {
		return authority{}, err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), certFileMode); err != nil {
		return authority{}, err
	}
	return authority{cert: cert, chain: []*x509.Certificate{cert}, signer: signer}, nil
}

func generateKey(t protocol.KeyType) (crypto.Signer, error) {
	var (
		k   crypto.Signer
		err error
	)
	switch t {
	case protocol.KeyP256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case protocol.KeyP384:
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case protocol.KeyRSA3072:
		k, err = rsa.GenerateKey(rand.Reader, 3072)
	case protocol.KeyRSA4096:
		k, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		return nil, ca.Errorf(ca.CodeConfig, "CA key type %q is not supported (p256, p384, rsa3072, rsa4096)", t)
	}
	if err != nil {
		return nil, ca.Errorf(ca.CodeConfig, "generate the CA key: %w", err)
	}
	return k, nil
}

// writeNew writes a file that must not exist yet, through a temporary file and a hard
// link, so that neither a crash nor a second coordinator starting at the same time
// leaves a partial file or overwrites one.
func writeNew(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return ca.Errorf(ca.CodeConfig, "write %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // the link holds the file by now
	// CreateTemp makes the file 0600; Chmod sets the mode exactly, whatever the umask.
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return ca.Errorf(ca.CodeConfig, "write %s: %w", path, err)
	}
	return nil
}

// load reads a CA certificate (with its issuers) and its key, and checks that they make
// a usable CA.
func load(certPath, keyPath string, now time.Time) (authority, error) {
	chain, err := readCertificates(certPath)
	if err != nil {
		return authority{}, err
	}
	signer, err := readKey(keyPath)
	if err != nil {
		return authority{}, err
	}
	cert := chain[0]
	if err := checkCACert(certPath, cert, now); err != nil {
		return authority{}, err
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := signer.Public().(equaler); !ok || !pub.Equal(cert.PublicKey) {
		return authority{}, ca.Errorf(ca.CodeConfig, "the key in %s does not match the certificate in %s", keyPath, certPath)
	}
	for i, issuer := range chain[1:] {
		if err := chain[i].CheckSignatureFrom(issuer); err != nil {
			return authority{}, ca.Errorf(ca.CodeConfig, "%s: certificate %d is not signed by certificate %d after it: %w", certPath, i+1, i+2, err)
		}
	}
	return authority{cert: cert, chain: chain, signer: signer}, nil
}

func checkCACert(path string, c *x509.Certificate, now time.Time) error {
	switch {
	case !c.BasicConstraintsValid || !c.IsCA:
		return ca.Errorf(ca.CodeConfig, "%s: %q is not a CA certificate (basic constraints CA:TRUE missing)", path, c.Subject)
	case c.KeyUsage&x509.KeyUsageCertSign == 0:
		return ca.Errorf(ca.CodeConfig, "%s: %q lacks the keyCertSign key usage", path, c.Subject)
	case c.KeyUsage&x509.KeyUsageCRLSign == 0:
		// The CA signs its own CRL.
		return ca.Errorf(ca.CodeConfig, "%s: %q lacks the cRLSign key usage", path, c.Subject)
	case len(c.SubjectKeyId) == 0:
		// Issued certificates and CRLs name their issuer's key by this identifier.
		return ca.Errorf(ca.CodeConfig, "%s: %q has no subject key identifier", path, c.Subject)
	case !now.Before(c.NotAfter):
		return ca.Errorf(ca.CodeExpired, "%s: %q expired on %s", path, c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if _, err := protocol.KeyTypeOf(c.PublicKey); err != nil {
		return ca.Errorf(ca.CodeConfig, "%s: unsupported CA key type: %w", path, err)
	}
	return nil
}

func readCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ca.Errorf(ca.CodeConfig, "CA certificate: %w", err)
	}
	var chain []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, ca.Errorf(ca.CodeConfig, "%s: PEM block %q where a CERTIFICATE was expected", path, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, ca.Errorf(ca.CodeConfig, "%s: certificate %d: %w", path, len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, ca.Errorf(ca.CodeConfig, "%s: no PEM CERTIFICATE found", path)
	}
	return chain, nil
}

func readKey(path string) (crypto.Signer, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, ca.Errorf(ca.CodeConfig, "CA key: %w", err)
	}
	// Windows has no Unix permission bits; ACLs protect the file there.
	if perm := info.Mode().Perm(); runtime.GOOS != "windows" && perm&keyPermMask != 0 {
		return nil, ca.Errorf(ca.CodeConfig, "CA key %s has mode %04o: other users can read or change it; chmod 600 it (640 to share with the service group)", path, perm)
	}
	if !info.Mode().IsRegular() {
		return nil, ca.Errorf(ca.CodeConfig, "CA key %s is not a regular file", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ca.Errorf(ca.CodeConfig, "CA key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, ca.Errorf(ca.CodeConfig, "%s: no PEM block found", path)
	}
	if block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] != "" {
		return nil, ca.Errorf(ca.CodeConfig, "%s: the key is encrypted; give it unencrypted and protect the file instead", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, ca.Errorf(ca.CodeConfig, "%s: PEM block %q is not a private key", path, block.Type)
	}
	if err != nil {
		return nil, ca.Errorf(ca.CodeConfig, "%s: %w", path, err)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if _, err := protocol.KeyTypeOf(&k.PublicKey); err != nil {
			return nil, ca.Errorf(ca.CodeConfig, "%s: unsupported CA key type: %w", path, err)
		}
		return k, nil
	case *rsa.PrivateKey:
		if _, err := protocol.KeyTypeOf(&k.PublicKey); err != nil {
			return nil, ca.Errorf(ca.CodeConfig, "%s: unsupported CA key type: %w", path, err)
		}
		return k, nil
	}
	return nil, ca.Errorf(ca.CodeConfig, "%s: unsupported CA key type %T (RSA or ECDSA P-256/P-384)", path, key)
}

// describeKey names a CA key for logs.
func describeKey(pub crypto.PublicKey) string {
	t, err := protocol.KeyTypeOf(pub)
	if err != nil {
		return fmt.Sprintf("%T", pub)
	}
	return string(t)
}
