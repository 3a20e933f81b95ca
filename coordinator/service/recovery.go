package service

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/escrow"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// MaxRecoveryCertPEM bounds the PEM text of a recovery certificate.
const MaxRecoveryCertPEM = 64 << 10

// RecoveryCertificate is one of the organisation's backup keys, as people see it.
type RecoveryCertificate struct {
	store.RecoveryCertificate
	AddedBy   string // username
	RetiredBy string // username; "" while in use
}

// PEM is the certificate in PEM form.
func (c RecoveryCertificate) PEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER}))
}

func (s *Service) recoveryOut(ctx context.Context, c store.RecoveryCertificate) RecoveryCertificate {
	names := newNames(s.st)
	out := RecoveryCertificate{RecoveryCertificate: c, AddedBy: names.user(ctx, c.AddedBy)}
	if c.RetiredBy != "" {
		out.RetiredBy = names.user(ctx, c.RetiredBy)
	}
	return out
}

// parseRecoveryCert reads one PEM certificate and checks escrow can seal to its key.
func parseRecoveryCert(text string, now time.Time) (*x509.Certificate, string, error) {
	const field = "certificate"
	if strings.TrimSpace(text) == "" {
		return nil, "", badRequest(field, "is required: give the recovery certificate in PEM (-----BEGIN CERTIFICATE-----)")
	}
	if len(text) > MaxRecoveryCertPEM {
		return nil, "", badRequest(field, "is %d bytes, at most %d", len(text), MaxRecoveryCertPEM)
	}
	b, rest := pem.Decode([]byte(text))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, "", badRequest(field, "is not a PEM certificate: give the text from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, "", badRequest(field, "holds more than one PEM block: add one recovery certificate at a time")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, "", badRequest(field, "does not parse: %v", err)
	}
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, "", badRequest(field, "has a %d-bit RSA key; a recovery key needs at least 2048 bits", k.N.BitLen())
		}
		if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
			return nil, "", badRequest(field, "does not allow keyEncipherment: escrowed keys are encrypted to an RSA recovery key with RSA-OAEP")
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, "", badRequest(field, "has a key on %s; a recovery key is RSA, or EC on P-256 or P-384", k.Curve.Params().Name)
		}
		if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageKeyAgreement == 0 {
			return nil, "", badRequest(field, "does not allow keyAgreement: escrowed keys are encrypted to an EC recovery key by key agreement")
		}
	default:
		return nil, "", badRequest(field, "has a %T key; a recovery key is RSA, or EC on P-256 or P-384", c.PublicKey)
	}
	if now.After(c.NotAfter) {
		return nil, "", badRequest(field, "%q expired on %s", c.Subject.CommonName, c.NotAfter.UTC().Format(time.DateOnly))
	}
	kid, err := escrow.RecoveryKeyID(c.PublicKey)
	if err != nil {
		return nil, "", badRequest(field, "%v", err)
	}
	return c, kid, nil
}

// AddRecoveryCertificate adds one of the organisation's backup keys (PEM); escrowed keys
// will be sealed to it. Its private half stays with the key-recovery officers.
func (s *Service) AddRecoveryCertificate(ctx context.Context, by Actor, pemText string) (RecoveryCertificate, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "add recovery certificate", jobs.PermManageProfiles, ""); err != nil {
		return RecoveryCertificate{}, err
	}
	c, kid, err := parseRecoveryCert(pemText, s.now())
	if err != nil {
		return RecoveryCertificate{}, err
	}
	var out store.RecoveryCertificate
	err = s.update(ctx, func(t *txn) error {
		rc, err := t.AddRecoveryCertificate(ctx, store.RecoveryCertificate{KeyID: kid, CommonName: c.Subject.CommonName,
			NotBefore: c.NotBefore, NotAfter: c.NotAfter, DER: c.Raw, Added: t.now, AddedBy: actor.ID})
		if errors.Is(err, store.ErrConflict) {
			return newErr(CodeConflict, "certificate", "a recovery certificate of this key (%s) is kept already; list them with tokenfleetctl recovery-cert list --all", kid)
		}
		if err != nil {
			return err
		}
		out = rc
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionRecoveryCertAdded, Target: "recovery-cert:" + rc.ID,
			Details: audit.Details("common_name", rc.CommonName, "key_id", rc.KeyID, "not_after", rc.NotAfter.Format(time.RFC3339))})
	})
	if err != nil {
		return RecoveryCertificate{}, err
	}
	return s.recoveryOut(ctx, out), nil
}

// ListRecoveryCertificates lists the backup keys with their CN and expiry: those in use,
// and the retired ones too when asked. Whoever reads profiles reads them.
func (s *Service) ListRecoveryCertificates(ctx context.Context, by Actor, withRetired bool) ([]RecoveryCertificate, error) {
	if _, err := s.canRead(ctx, by.user, resProfiles); err != nil {
		return nil, err
	}
	cs, err := s.st.ListRecoveryCertificates(ctx, withRetired)
	if err != nil {
		return nil, AsError(err)
	}
	out := make([]RecoveryCertificate, len(cs))
	for i, c := range cs {
		out[i] = s.recoveryOut(ctx, c)
	}
	return out, nil
}

// RetireRecoveryCertificate stops sealing new archives to a backup key. It is kept: the
// archives already sealed to it still open with it.
func (s *Service) RetireRecoveryCertificate(ctx context.Context, by Actor, id, reason string) (RecoveryCertificate, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "retire recovery certificate", jobs.PermManageProfiles, ""); err != nil {
		return RecoveryCertificate{}, err
	}
	if strings.TrimSpace(reason) == "" {
		return RecoveryCertificate{}, newErr(CodeReasonRequired, "reason", "say why the recovery certificate is retired (the key is lost, the officer left, it is replaced)")
	}
	if err := checkReason("reason", reason); err != nil {
		return RecoveryCertificate{}, err
	}
	var out store.RecoveryCertificate
	err := s.update(ctx, func(t *txn) error {
		rc, err := t.RetireRecoveryCertificate(ctx, id, actor.ID, reason, t.now)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return newErr(CodeNotFound, "", "no recovery certificate %q", id)
		case errors.Is(err, store.ErrConflict):
			return newErr(CodeConflict, "", "recovery certificate %s is retired already", id)
		case err != nil:
			return err
		}
		out = rc
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionRecoveryCertRetired, Target: "recovery-cert:" + rc.ID,
			Reason: reason, Details: audit.Details("common_name", rc.CommonName, "key_id", rc.KeyID)})
	})
	if err != nil {
		return RecoveryCertificate{}, err
	}
	return s.recoveryOut(ctx, out), nil
}
