package executor

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// keySpec maps a profile's key type to the driver's.
func keySpec(t protocol.KeyType) (pkcs11.KeySpec, error) {
	switch t {
	case protocol.KeyRSA2048:
		return pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 2048}, nil
	case protocol.KeyRSA3072:
		return pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 3072}, nil
	case protocol.KeyRSA4096:
		return pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 4096}, nil
	case protocol.KeyP256:
		return pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}, nil
	case protocol.KeyP384:
		return pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-384"}, nil
	}
	return pkcs11.KeySpec{}, protocol.NewError(protocol.CodeBadRequest, "key.type %q is not one the agent generates", t)
}

func (r *run) keyLabel() string {
	if r.d.Key != nil && r.d.Key.Label != "" {
		return r.d.Key.Label
	}
	return r.job.Ref.JobID
}

// generateKey makes the key on the token under the job's CKA_ID; a key already there
// (made by an interrupted pass or an earlier attempt) is reused, never doubled.
func (r *run) generateKey(ctx context.Context, _ bool) error {
	spec, err := keySpec(r.d.Key.Type)
	if err != nil {
		return err
	}
	if err := r.begin(ctx, stepGenerateKey, journal.Change{}); err != nil {
		return err
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	key, created, err := r.tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: r.keyID, Label: r.keyLabel(), Spec: spec, Usage: pkcs11.UsageSign})
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("encode the public key: %w", err)
	}
	detail := fmt.Sprintf("%s key generated on the token", spec)
	if !created {
		detail = fmt.Sprintf("%s key found on the token, made by an earlier attempt", spec)
	}
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepKeyGenerated, Detail: detail,
		KeyID: r.d.Key.ID, PublicKey: pub, KeyExisted: !created})
	if err != nil {
		return err
	}
	c.KeyID, c.PublicKey, c.TokenSerial = r.d.Key.ID, pub, r.serial
	r.log.Info().Str("key_id", r.d.Key.ID).Bool("created", created).Msg("key on the token")
	return r.done(ctx, stepGenerateKey, c)
}

// sendCSR signs a CSR with the token's key. Its subject is a placeholder: the coordinator
// takes subject and SANs from the approved request. The CSR, csr_sent and, for a csr job,
// the result are journalled in one transaction, so the attempt sends exactly one CSR.
func (r *run) sendCSR(ctx context.Context, _ bool) error {
	r.beginReading(stepSendCSR)
	if err := r.login(ctx); err != nil {
		return err
	}
	key, err := r.tok.Key(ctx, r.keyID)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("encode the public key: %w", err)
	}
	if r.job.PublicKey != nil && string(pub) != string(r.job.PublicKey) {
		return protocol.NewError(protocol.CodeKeyMismatch, "the key under ID %s is not the one reported at key_generated", r.d.Key.ID)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: r.job.Ref.JobID},
	}, key)
	if err != nil {
		return fmt.Errorf("sign the CSR on the token: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return fmt.Errorf("the token's CSR does not verify: %w", err)
	}
	sub, err := r.message(protocol.CSRSubmission{CSR: der, KeyID: r.d.Key.ID, PublicKey: pub, TokenSerial: r.serial})
	if err != nil {
		return err
	}
	detail := "CSR sent; waiting for the certificate"
	if r.job.Kind == protocol.KindCSR {
		detail = "CSR sent; the certificate comes with an install_certificate job"
	}
	sent, err := r.progress(protocol.Progress{Step: protocol.StepCSRSent, Detail: detail})
	if err != nil {
		return err
	}
	c := journal.Change{Outbox: []*protocol.Envelope{sub, sent}, State: journal.StateAwaitingCertificate}
	if r.job.Kind == protocol.KindCSR {
		// A csr job ends here, its result in the same transaction as its CSR.
		res, err := r.message(protocol.Result{Outcome: protocol.OutcomeSucceeded, Outputs: r.outputs()})
		if err != nil {
			return err
		}
		c.State, c.Result = journal.StateDone, res
	}
	return r.done(ctx, stepSendCSR, c)
}
