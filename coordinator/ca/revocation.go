package ca

import (
	"context"
	"math/big"
	"slices"
	"sync"
	"time"
)

// CRL reason codes (RFC 5280, 5.3.1).
const (
	ReasonUnspecified          = 0
	ReasonKeyCompromise        = 1
	ReasonCACompromise         = 2
	ReasonAffiliationChanged   = 3
	ReasonSuperseded           = 4
	ReasonCessationOfOperation = 5
	ReasonCertificateHold      = 6
	ReasonRemoveFromCRL        = 8
	ReasonPrivilegeWithdrawn   = 9
	ReasonAACompromise         = 10
)

// CheckReason refuses reason codes a revocation cannot carry here: unknown ones (7 is
// unassigned) and removeFromCRL (delta CRLs only). certificateHold is the one reversible
// reason: ReleaseHold lifts it, and a later revocation with another reason makes it final.
func CheckReason(reason int) error {
	switch reason {
	case ReasonUnspecified, ReasonKeyCompromise, ReasonCACompromise, ReasonAffiliationChanged,
		ReasonSuperseded, ReasonCessationOfOperation, ReasonCertificateHold, ReasonPrivilegeWithdrawn, ReasonAACompromise:
		return nil
	case ReasonRemoveFromCRL:
		return Errorf(CodeBadRequest, "reason removeFromCRL (8) belongs to delta CRLs only; lift a hold with ReleaseHold")
	}
	return Errorf(CodeBadRequest, "reason code %d is not an RFC 5280 CRL reason", reason)
}

// Revocable reports whether a certificate may be revoked with reason: one not revoked
// always, one on hold (certificateHold) with another reason, which makes the hold final,
// and one revoked otherwise never. current is its reason when revoked.
func Revocable(revoked bool, current, reason int) bool {
	return !revoked || (current == ReasonCertificateHold && reason != ReasonCertificateHold)
}

// HoldReleaser is an optional capability of a CA: lifting a certificateHold. On a full
// CRL the certificate simply leaves the list (RFC 5280 5.3.1: removeFromCRL appears only
// in delta CRLs). A certificate that is not on hold gives CodeNotOnHold.
type HoldReleaser interface {
	ReleaseHold(ctx context.Context, serial *big.Int) error
}

// HoldStore is the optional capability of a RevocationStore that a CA's ReleaseHold
// needs: forgetting a revocation whose reason is certificateHold.
type HoldStore interface {
	// ReleaseHold forgets the hold of serial; CodeNotOnHold when it is not on hold,
	// CodeUnknownCertificate when the store does not know it.
	ReleaseHold(ctx context.Context, serial *big.Int) error
}

// Revoked is one revoked certificate.
type Revoked struct {
	Serial    *big.Int
	RevokedAt time.Time
	Reason    int
	// NotAfter is the certificate's expiry, zero when unknown. A certificate past it
	// may leave the CRL: no relying party accepts it anyway.
	NotAfter time.Time
}

// RevocationStore keeps the revocation state of a CA that publishes its CRL through the
// coordinator. The coordinator implements it over its store (certificates with
// RevokedAt set; store.ErrConflict maps to CodeAlreadyRevoked and store.ErrNotFound to
// CodeUnknownCertificate); MemRevocations serves tests.
type RevocationStore interface {
	// Revoke records r. A serial already revoked gives an error with
	// CodeAlreadyRevoked, unless it is on hold (certificateHold) and r.Reason is another:
	// the hold then becomes r's revocation, keeping the hold's time. One the store does
	// not know gives CodeUnknownCertificate.
	Revoke(ctx context.Context, r Revoked) error
	// Revoked lists every revoked certificate, in any order.
	Revoked(ctx context.Context) ([]Revoked, error)
}

// CRLNumberer is an optional capability of a RevocationStore: a source of CRL numbers
// shared by every coordinator using the store. Without it the built-in CA keeps the
// number in a file of its data directory.
type CRLNumberer interface {
	// NextCRLNumber returns a number greater than every one it returned before.
	NextCRLNumber(ctx context.Context) (*big.Int, error)
}

// MemRevocations is an in-memory RevocationStore; its zero value is ready. It knows no
// issued certificates, so it accepts any serial.
type MemRevocations struct {
	mu sync.Mutex         // guards m
	m  map[string]Revoked // by FormatSerial
}

// Revoke implements RevocationStore.
func (m *MemRevocations) Revoke(ctx context.Context, r Revoked) error {
	if err := ctx.Err(); err != nil {
		return Errorf(CodeUnavailable, "revoke: %w", err)
	}
	if r.Serial == nil || r.Serial.Sign() <= 0 {
		return Errorf(CodeBadRequest, "revoke: serial must be positive")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := FormatSerial(r.Serial)
	if cur, dup := m.m[key]; dup {
		if !Revocable(true, cur.Reason, r.Reason) {
			return Errorf(CodeAlreadyRevoked, "certificate %s is already revoked", key)
		}
		r.RevokedAt = cur.RevokedAt
	}
	if m.m == nil {
		m.m = map[string]Revoked{}
	}
	r.Serial = new(big.Int).Set(r.Serial)
	m.m[key] = r
	return nil
}

// Revoked implements RevocationStore; the list is sorted by serial.
func (m *MemRevocations) Revoked(ctx context.Context) ([]Revoked, error) {
	if err := ctx.Err(); err != nil {
		return nil, Errorf(CodeUnavailable, "revoked: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Revoked, 0, len(m.m))
	for _, r := range m.m {
		r.Serial = new(big.Int).Set(r.Serial)
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Revoked) int { return a.Serial.Cmp(b.Serial) })
	return out, nil
}

// ReleaseHold implements HoldStore.
func (m *MemRevocations) ReleaseHold(ctx context.Context, serial *big.Int) error {
	if err := ctx.Err(); err != nil {
		return Errorf(CodeUnavailable, "release hold: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := FormatSerial(serial)
	if cur, ok := m.m[key]; !ok || cur.Reason != ReasonCertificateHold {
		return Errorf(CodeNotOnHold, "certificate %s is not on hold", key)
	}
	delete(m.m, key)
	return nil
}
