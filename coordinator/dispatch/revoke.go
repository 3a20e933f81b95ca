package dispatch

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// txKey carries the transaction a revocation runs in, from RevokeCertificate through the
// CA to Revocations.
type txKey struct{}

func withTx(ctx context.Context, tx store.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

func txFrom(ctx context.Context) (store.Tx, bool) {
	tx, ok := ctx.Value(txKey{}).(store.Tx)
	return tx, ok
}

// Revocations is the built-in CA's revocation list over the store: a revoked certificate
// is a certificate row with its revocation time and reason. A revocation made through
// RevokeCertificate is written in the caller's transaction, with its audit entry;
// otherwise in a transaction of its own.
type Revocations struct {
	Store store.Store
}

var (
	_ ca.RevocationStore = Revocations{}
	_ ca.HoldStore       = Revocations{}
)

// ReleaseHold implements ca.HoldStore, in the caller's transaction when there is one.
func (r Revocations) ReleaseHold(ctx context.Context, serial *big.Int) error {
	if serial == nil || serial.Sign() <= 0 {
		return ca.Errorf(ca.CodeBadRequest, "release hold: serial must be positive")
	}
	hex := ca.FormatSerial(serial)
	write := func(tx store.Tx) error {
		_, err := tx.ReleaseCertificateHold(ctx, hex)
		switch {
		case errors.Is(err, store.ErrConflict):
			return ca.Errorf(ca.CodeNotOnHold, "certificate %s is not on hold", hex)
		case errors.Is(err, store.ErrNotFound):
			return ca.Errorf(ca.CodeUnknownCertificate, "no certificate %s was issued here", hex)
		case err != nil:
			return ca.Errorf(ca.CodeUnavailable, "release hold of %s: %w", hex, err)
		}
		return nil
	}
	if tx, ok := txFrom(ctx); ok {
		return write(tx)
	}
	return r.Store.InTx(ctx, write)
}

// Revoke implements ca.RevocationStore.
func (r Revocations) Revoke(ctx context.Context, rv ca.Revoked) error {
	if rv.Serial == nil || rv.Serial.Sign() <= 0 {
		return ca.Errorf(ca.CodeBadRequest, "revoke: serial must be positive")
	}
	serial := ca.FormatSerial(rv.Serial)
	write := func(tx store.Tx) error {
		_, err := tx.RevokeCertificate(ctx, serial, rv.RevokedAt, rv.Reason)
		switch {
		case errors.Is(err, store.ErrConflict):
			return ca.Errorf(ca.CodeAlreadyRevoked, "certificate %s is already revoked", serial)
		case errors.Is(err, store.ErrNotFound):
			return ca.Errorf(ca.CodeUnknownCertificate, "no certificate %s was issued here", serial)
		case err != nil:
			return ca.Errorf(ca.CodeUnavailable, "revoke %s: %w", serial, err)
		}
		return nil
	}
	if tx, ok := txFrom(ctx); ok {
		return write(tx)
	}
	return r.Store.InTx(ctx, write)
}

// Revoked implements ca.RevocationStore: every revoked certificate, read in the caller's
// transaction when there is one (so a CRL made during a revocation includes it).
func (r Revocations) Revoked(ctx context.Context) ([]ca.Revoked, error) {
	var rd store.Reader = r.Store
	if tx, ok := txFrom(ctx); ok {
		rd = tx
	}
	revoked := true
	var out []ca.Revoked
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		cs, next, err := rd.ListCertificates(ctx, store.CertificateFilter{Revoked: &revoked}, p)
		if err != nil {
			return nil, ca.Errorf(ca.CodeUnavailable, "list revoked certificates: %w", err)
		}
		for _, c := range cs {
			n, err := ca.ParseSerial(c.Serial)
			if err != nil {
				return nil, err
			}
			out = append(out, ca.Revoked{Serial: n, RevokedAt: c.RevokedAt, Reason: c.RevocationReason, NotAfter: c.NotAfter})
		}
		if next == "" {
			return out, nil
		}
		p.Cursor = next
	}
}

// RevokeCertificate revokes a certificate the coordinator issued, inside the caller's
// transaction: the CA records it (through Revocations, in tx) and makes a new CRL that
// lists it. It is the Issuer capability service.RevokeCertificate uses; the service
// checks the caller and audits.
//
// The CRL is made before tx commits: if the commit then failed, the CRL would list a
// revocation the store does not have until the CA's next refresh. That errs on the safe
// side, and revoking again succeeds.
func (d *Dispatcher) RevokeCertificate(ctx context.Context, tx store.Tx, c store.Certificate, reason int, at time.Time) error {
	serial, err := ca.ParseSerial(c.Serial)
	if err != nil {
		return err
	}
	if err := d.ca.Revoke(withTx(ctx, tx), serial, reason, at); err != nil {
		return err
	}
	// A CA that keeps its own revocation list (not Revocations) leaves the store's record
	// to this.
	cur, err := tx.GetCertificate(ctx, c.Serial)
	if err != nil {
		return err
	}
	if ca.Revocable(!cur.RevokedAt.IsZero(), cur.RevocationReason, reason) {
		if _, err := tx.RevokeCertificate(ctx, c.Serial, at, reason); err != nil {
			return fmt.Errorf("recording the revocation of %s: %w", c.Serial, err)
		}
	}
	return nil
}

// ReleaseCertificateHold lifts the hold of a certificate on hold, inside the caller's
// transaction: the CA forgets it (through Revocations, in tx) and makes a new CRL without
// it. It is the Issuer capability the token life cycle uses to reinstate a token.
func (d *Dispatcher) ReleaseCertificateHold(ctx context.Context, tx store.Tx, c store.Certificate) error {
	serial, err := ca.ParseSerial(c.Serial)
	if err != nil {
		return err
	}
	hr, ok := d.ca.(ca.HoldReleaser)
	if !ok {
		return ca.Errorf(ca.CodeConfig, "this CA cannot lift a certificate hold")
	}
	if err := hr.ReleaseHold(withTx(ctx, tx), serial); err != nil {
		return err
	}
	// A CA that keeps its own revocation list leaves the store's record to this.
	cur, err := tx.GetCertificate(ctx, c.Serial)
	if err != nil {
		return err
	}
	if !cur.RevokedAt.IsZero() && cur.RevocationReason == ca.ReasonCertificateHold {
		if _, err := tx.ReleaseCertificateHold(ctx, c.Serial); err != nil {
			return fmt.Errorf("recording the release of %s: %w", c.Serial, err)
		}
	}
	return nil
}

// CACertificates returns the issuing CA's certificate first, then its issuers: what
// relying parties need.
func (d *Dispatcher) CACertificates() []*x509.Certificate { return d.ca.CACertificates() }
