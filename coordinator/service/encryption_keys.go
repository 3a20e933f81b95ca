package service

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// EncryptionKey is a holder's encryption key as applications see it: a public key and its
// certificate others may encrypt to (tender envelopes, S/MIME), and whether it is the one
// to use now.
type EncryptionKey struct {
	store.HolderEncryptionKey
	Holder    string // username
	Subject   string // the certificate's subject, RFC 2253
	NotBefore time.Time
	NotAfter  time.Time
	// Revoked is when the certificate was revoked (zero when it was not, or when it was
	// issued elsewhere: the coordinator knows only its own CA's revocations).
	Revoked time.Time
	// Current is true for the key to encrypt to now (see ListEncryptionKeys); NotCurrent
	// says why another is not ("" when current).
	Current    bool
	NotCurrent string
}

// Reasons a holder's encryption key is not the current one.
const (
	notCurrentRevoked    = "its certificate is revoked"
	notCurrentExpired    = "its certificate has expired"
	notCurrentNotYet     = "its certificate is not valid yet"
	notCurrentSuperseded = "its escrowed key was superseded"
	notCurrentLater      = "a later key of the holder is current"
	notCurrentUnreadable = "its certificate does not parse"
)

// ListEncryptionKeys lists a holder's encryption keys, oldest first, optionally those of one
// token only. Reading them needs what reading certificates needs, within the holder's
// organisation; a holder always reads their own (self-service).
//
// A key is usable when its certificate is valid now, is not revoked (revocations by this
// coordinator's CA; a registered certificate from another CA is taken as unrevoked) and,
// for an escrowed key, its archive is still active. The current key is the newest usable
// one: a later key replaces an earlier one, as a renewal would. The same key re-installed
// on another token by a recovery is listed once per token, each entry current when the key
// is.
func (s *Service) ListEncryptionKeys(ctx context.Context, by Actor, holder, tokenSerial string) ([]EncryptionKey, error) {
	actor := by.user
	holder, tokenSerial = strings.TrimSpace(holder), strings.TrimSpace(tokenSerial)
	if holder == "" {
		return nil, badRequest("holder", "name the holder whose encryption keys to list (holder=USERNAME)")
	}
	if actor.Disabled {
		return nil, forbidden("user %s is disabled", actor.Username)
	}
	h, err := s.st.GetUserByUsername(ctx, holder)
	if errors.Is(err, store.ErrNotFound) {
		return nil, badRequest("holder", "no user named %q", holder)
	} else if err != nil {
		return nil, AsError(err)
	}
	if h.ID != actor.ID {
		sc, err := s.canRead(ctx, actor, resCertificates)
		if err != nil {
			return nil, err
		}
		if !sc.covers(h.OrganizationID) {
			return nil, s.deny(ctx, actor, "read encryption keys", "", "user:"+h.ID,
				newErr(CodeOutOfScope, "holder", "%s reads no encryption keys of %s's organisation", actor.Username, h.Username))
		}
	}
	ks, err := s.st.ListHolderEncryptionKeys(ctx, h.ID)
	if err != nil {
		return nil, AsError(err)
	}
	now := s.now()
	out := make([]EncryptionKey, 0, len(ks))
	for _, k := range ks {
		e := EncryptionKey{HolderEncryptionKey: k, Holder: h.Username}
		if err := s.encryptionKeyState(ctx, &e, now); err != nil {
			return nil, AsError(err)
		}
		out = append(out, e)
	}
	markCurrent(out)
	if tokenSerial != "" {
		out = slices.DeleteFunc(out, func(e EncryptionKey) bool { return e.TokenSerial != tokenSerial })
	}
	return out, nil
}

// encryptionKeyState reads e's certificate and says whether it is usable now (NotCurrent
// stays "" when it is).
func (s *Service) encryptionKeyState(ctx context.Context, e *EncryptionKey, now time.Time) error {
	c, ok := parseCertificate(e.Certificate)
	if !ok { // recorded after a check, so never expected; listed, never current
		e.NotCurrent = notCurrentUnreadable
		return nil
	}
	e.Subject, e.NotBefore, e.NotAfter = c.Subject.String(), c.NotBefore, c.NotAfter
	if e.CertificateSerial != "" {
		rec, err := s.st.GetCertificate(ctx, e.CertificateSerial)
		switch {
		case err == nil && !rec.RevokedAt.IsZero():
			e.Revoked = rec.RevokedAt
		case err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrInvalid):
			return err
		}
	}
	if e.Source == store.SourceEscrowed && e.EscrowedKeyID != "" {
		k, err := s.st.GetEscrowedKey(ctx, e.EscrowedKeyID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err == nil && k.State == store.EscrowSuperseded {
			e.NotCurrent = notCurrentSuperseded
		}
	}
	switch {
	case !e.Revoked.IsZero():
		e.NotCurrent = notCurrentRevoked
	case !now.Before(c.NotAfter):
		e.NotCurrent = notCurrentExpired
	case now.Before(c.NotBefore):
		e.NotCurrent = notCurrentNotYet
	}
	return nil
}

// markCurrent marks the newest usable key of ks (oldest first) current, with every entry
// of the same key (a recovery's re-installation), and says of the other usable ones that
// a later key replaced them.
func markCurrent(ks []EncryptionKey) {
	cur := ""
	for i := len(ks) - 1; i >= 0; i-- {
		if ks[i].NotCurrent == "" {
			cur = ks[i].KeyID
			break
		}
	}
	for i := range ks {
		switch {
		case ks[i].NotCurrent != "":
		case ks[i].KeyID == cur:
			ks[i].Current = true
		default:
			ks[i].NotCurrent = notCurrentLater
		}
	}
}

// parseCertificate parses der; false when it does not parse.
func parseCertificate(der []byte) (*x509.Certificate, bool) {
	c, err := x509.ParseCertificate(der)
	return c, err == nil
}
