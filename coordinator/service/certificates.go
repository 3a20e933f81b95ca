package service

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// CertificateRevoker is an optional capability of the Issuer: revoking a certificate
// inside the transaction that audits it, with the CA's CRL updated.
type CertificateRevoker interface {
	RevokeCertificate(ctx context.Context, tx store.Tx, c store.Certificate, reason int, at time.Time) error
}

// CAChain is an optional capability of the Issuer: the CA certificates relying parties
// need, the issuing CA first.
type CAChain interface {
	CACertificates() []*x509.Certificate
}

// RFC 5280 CRL reasons a revocation may give, by name.
var revocationReasons = map[string]int{
	"unspecified":            0,
	"key_compromise":         1,
	"ca_compromise":          2,
	"affiliation_changed":    3,
	"superseded":             4,
	"cessation_of_operation": 5,
	"privilege_withdrawn":    9,
	"aa_compromise":          10,
}

// RevocationReasons lists the reason names RevokeCertificate takes.
func RevocationReasons() []string {
	return []string{"unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
		"cessation_of_operation", "privilege_withdrawn", "aa_compromise"}
}

// ParseRevocationReason reads a reason name (key_compromise, keyCompromise or
// key-compromise) or its RFC 5280 code.
func ParseRevocationReason(s string) (int, error) {
	t := strings.TrimSpace(s)
	if n, err := strconv.Atoi(t); err == nil {
		for _, code := range revocationReasons {
			if code == n {
				return n, nil
			}
		}
		return 0, badRequest("reason", "%d is not a CRL reason code this CA issues (%s)", n, strings.Join(RevocationReasons(), ", "))
	}
	var b strings.Builder
	for i, r := range t {
		switch {
		case r == '-' || r == ' ':
			b.WriteByte('_')
		case r >= 'A' && r <= 'Z':
			if i > 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r + ('a' - 'A'))
		default:
			b.WriteRune(r)
		}
	}
	if code, ok := revocationReasons[b.String()]; ok {
		return code, nil
	}
	return 0, badRequest("reason", "%q is not a revocation reason (%s)", s, strings.Join(RevocationReasons(), ", "))
}

// RevokeCertificate revokes a certificate the coordinator issued (admin or CA operator),
// with an RFC 5280 reason and a comment kept in the audit log. The CA's CRL lists it from
// then on. Revoking a revoked certificate is a conflict.
func (s *Service) RevokeCertificate(ctx context.Context, by Actor, serial string, reason int, comment string) (Certificate, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "revoke certificate", jobs.PermCAOperator, ""); err != nil {
		return Certificate{}, err
	}
	if err := checkReason("comment", comment); err != nil {
		return Certificate{}, err
	}
	revoker, ok := s.issuer.(CertificateRevoker)
	if !ok {
		return Certificate{}, newErr(CodeInternal, "", "this coordinator has no CA that revokes certificates")
	}
	var out store.Certificate
	err := s.update(ctx, func(t *txn) error {
		c, err := t.GetCertificate(ctx, serial)
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeNotFound, "serial", "no certificate %q was issued here", serial)
		}
		if errors.Is(err, store.ErrInvalid) {
			return badRequest("serial", "%q is not a hexadecimal serial number", serial)
		}
		if err != nil {
			return err
		}
		if !c.RevokedAt.IsZero() {
			return newErr(CodeConflict, "serial", "certificate %s was revoked at %s", c.Serial, c.RevokedAt.Format(time.RFC3339))
		}
		if err := revoker.RevokeCertificate(ctx, t.Tx, c, reason, t.now); err != nil {
			return fmt.Errorf("revoking %s: %w", c.Serial, err)
		}
		if out, err = t.GetCertificate(ctx, c.Serial); err != nil {
			return err
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionCertificateRevoked, JobID: c.JobID,
			Target: "certificate:" + c.Serial, Reason: strings.TrimSpace(comment),
			Details: audit.Details("reason_code", reason, "subject", c.Subject, "holder", c.HolderID, "username", actor.Username)})
	})
	if err != nil {
		return Certificate{}, err
	}
	return Certificate{Certificate: out, Holder: newNames(s.st).user(ctx, out.HolderID)}, nil
}

// CACertificates returns the CA certificates relying parties need, the issuing CA first.
// They are public: no caller is checked.
func (s *Service) CACertificates() ([]*x509.Certificate, error) {
	c, ok := s.issuer.(CAChain)
	if !ok {
		return nil, newErr(CodeNotFound, "", "this coordinator has no CA")
	}
	return c.CACertificates(), nil
}
