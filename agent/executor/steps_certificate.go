package executor

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// chainID is the CKA_ID an issuer certificate is stored under: its subject key
// identifier, as tools expect, else a digest of its public key.
func chainID(c *x509.Certificate) []byte {
	if len(c.SubjectKeyId) > 0 {
		return c.SubjectKeyId
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return sum[:protocol.KeyIDSize]
}

// certificates returns what the job writes: the delivered certificate (issue, renew) or
// the dispatch's (install_certificate, server_keygen, recover_key); nil while none was
// delivered.
func (r *run) certificates() (*protocol.CertificateChain, error) {
	if r.job.Kind == protocol.KindInstallCertificate || importsKey(r.job.Kind) {
		return r.d.Certificates, nil
	}
	del, err := r.job.Delivery()
	if err != nil || del == nil {
		return nil, err
	}
	if del.KeyID != r.d.Key.ID {
		return nil, protocol.NewError(protocol.CodeKeyMismatch, "the certificate was delivered for key %s, the job's key is %s", del.KeyID, r.d.Key.ID)
	}
	return &del.Certificates, nil
}

func parseChain(c *protocol.CertificateChain) (*x509.Certificate, []*x509.Certificate, error) {
	leaf, err := x509.ParseCertificate(c.Certificate)
	if err != nil {
		return nil, nil, protocol.NewError(protocol.CodeBadRequest, "certificate: %v", err)
	}
	var chain []*x509.Certificate
	for i, der := range c.Chain {
		ca, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, protocol.NewError(protocol.CodeBadRequest, "chain[%d]: %v", i, err)
		}
		chain = append(chain, ca)
	}
	return leaf, chain, nil
}

// certificateSerial is the serial of the certificate the job wrote, once it is written.
func (r *run) certificateSerial() string {
	if !r.certificateWritten() {
		return ""
	}
	c, err := r.certificates()
	if err != nil || c == nil {
		return ""
	}
	leaf, _, err := parseChain(c)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(leaf.SerialNumber.Bytes())
}

func (r *run) certificateWritten() bool {
	switch r.job.Step {
	case stepWriteCert:
		return r.job.StepStatus == journal.StepDone
	case stepVerify, stepRemoveOld:
		return true
	}
	return false
}

// writeCertificate writes the certificate and its chain next to the key, after checking
// it is the key's. Idempotent: a certificate already there is left alone.
func (r *run) writeCertificate(ctx context.Context, _ bool) error {
	certs, err := r.certificates()
	if err != nil {
		return err
	}
	if certs == nil {
		return errParked
	}
	leaf, chain, err := parseChain(certs)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	if err != nil {
		return protocol.NewError(protocol.CodeBadRequest, "certificate public key: %v", err)
	}
	if r.job.Kind != protocol.KindInstallCertificate && string(pub) != string(r.job.PublicKey) {
		return protocol.NewError(protocol.CodeTokenCertificateKeyMismatch,
			"the certificate %q is not for the key this job generated (ID %s); refusing to write it", leaf.Subject, r.d.Key.ID)
	}
	if err := r.begin(ctx, stepWriteCert, journal.Change{}); err != nil {
		return err
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	if r.job.Kind == protocol.KindInstallCertificate {
		key, err := r.tok.Key(ctx, r.keyID)
		if err != nil {
			return err
		}
		have, err := x509.MarshalPKIXPublicKey(key.Public())
		if err != nil {
			return err
		}
		if string(have) != string(pub) {
			return protocol.NewError(protocol.CodeTokenCertificateKeyMismatch,
				"the certificate %q is not for the key with ID %s on the token; refusing to write it", leaf.Subject, r.d.Key.ID)
		}
	}
	label := certs.Label
	if label == "" {
		label = r.keyLabel()
	}
	w := pkcs11.CertificateWrite{ID: r.keyID, Label: label, Cert: leaf}
	for _, ca := range chain {
		w.Chain = append(w.Chain, pkcs11.ChainCertificate{ID: chainID(ca), Label: ca.Subject.CommonName, Cert: ca})
	}
	res, err := r.tok.WriteCertificate(ctx, w)
	if err != nil {
		return err
	}
	r.log.Info().Str("result", res.String()).Str("serial", hex.EncodeToString(leaf.SerialNumber.Bytes())).Msg("certificate on the token")
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepCertificateWritten, Detail: "certificate written: " + leaf.Subject.String()})
	if err != nil {
		return err
	}
	if r.job.KeyID == "" {
		c.KeyID, c.PublicKey = r.d.Key.ID, pub
	}
	return r.done(ctx, stepWriteCert, c)
}

// verify proves the key and certificate belong together and the key works: the token
// signs a fresh challenge that the certificate's public key verifies.
func (r *run) verify(ctx context.Context, _ bool) error {
	r.beginReading(stepVerify)
	if err := r.login(ctx); err != nil {
		return err
	}
	if err := r.tok.VerifyKeyAndCertificate(ctx, r.keyID); err != nil {
		return err
	}
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepVerified, Detail: "the key signs what its certificate verifies"})
	if err != nil {
		return err
	}
	return r.done(ctx, stepVerify, c)
}

// removeOld removes the key and certificate a renewal replaces, named by the dispatch's
// key.replaces: only now that the new certificate is written and verified. Safe to
// repeat: what is gone is not found again. Without key.replaces nothing is removed.
func (r *run) removeOld(ctx context.Context, _ bool) error {
	old := r.d.Key.Replaces
	if old == "" {
		r.log.Info().Msg("the dispatch names no key to replace; the old key and certificate stay")
		return r.done(ctx, stepRemoveOld, journal.Change{})
	}
	id, err := hex.DecodeString(old)
	if err != nil {
		return protocol.NewError(protocol.CodeBadRequest, "key.replaces: %v", err)
	}
	if err := r.begin(ctx, stepRemoveOld, journal.Change{OldKeyID: old}); err != nil {
		return err
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	certs, err := r.tok.DeleteCertificate(ctx, id)
	if err != nil {
		return err
	}
	keys, err := r.tok.DeleteKey(ctx, id)
	if err != nil {
		return err
	}
	r.log.Info().Str("old_key_id", old).Int("certificates", certs).Int("key_objects", keys).Msg("replaced key removed")
	return r.done(ctx, stepRemoveOld, journal.Change{})
}
