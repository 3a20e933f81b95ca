package service

import (
	"context"
	"errors"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Token use is audited as token.used at most once per token per TokenUseAuditEvery: the
// first use after the window, per coordinator process. The store's own last-use time is
// written at most once a minute (TouchAPIToken) and cannot tell when the last audit entry
// was written, so the window is kept in memory; a restart audits the next use again,
// which errs on the side of more entries.
const TokenUseAuditEvery = time.Hour

// touchEvery matches the store's throttle: a use is written when the recorded one is older.
const touchEvery = time.Minute

// AnonymousActor is the actor of audit entries about requests without a valid token.
const AnonymousActor = "anonymous"

// Unauthenticated requests are audited at most once per source and reason per
// anonDenialWindow; the entry carries how many were left out since the last one, so a
// flood of bad tokens costs one write a minute per source, not one per request.
const anonDenialWindow = time.Minute

// maxTracked bounds the in-memory tables of token uses and denial sources.
const maxTracked = 10000

// Authenticate returns the actor behind a presented API token. A missing or bad token
// gives unauthenticated, audited (rate-limited) with the request's source.
func (s *Service) Authenticate(ctx context.Context, presented, source string) (Actor, error) {
	now := s.clock()
	if presented == "" {
		return Actor{}, s.unauthenticated(ctx, source, "no bearer token", now)
	}
	tok, u, err := s.st.LookupAPIToken(ctx, presented, now)
	if errors.Is(err, store.ErrNotFound) {
		return Actor{}, s.unauthenticated(ctx, source, "unknown, revoked or expired API token", now)
	}
	if err != nil {
		return Actor{}, AsError(err)
	}
	if err := s.recordUse(ctx, tok, u, source, now); err != nil {
		return Actor{}, err
	}
	return Actor{user: u}, nil
}

// recordUse writes the token's last use and, once per window, a token.used entry.
func (s *Service) recordUse(ctx context.Context, tok store.APIToken, u store.User, source string, now time.Time) error {
	if s.tokenUse.Allow(tok.ID, now) {
		err := s.update(ctx, func(t *txn) error {
			if err := t.TouchAPIToken(ctx, tok.ID, now); err != nil {
				return err
			}
			return t.audit(ctx, audit.Entry{Actor: u.ID, Action: audit.ActionTokenUsed, Target: "token:" + tok.ID,
				Details: audit.Details("name", tok.Name, "source", source, "username", u.Username)})
		})
		if err != nil {
			// Fail closed: a use that cannot be audited is not allowed.
			s.tokenUse.Forget(tok.ID)
			return err
		}
		return nil
	}
	if now.Sub(tok.LastUsed) < touchEvery {
		return nil
	}
	if err := s.st.InTx(ctx, func(tx store.Tx) error { return tx.TouchAPIToken(ctx, tok.ID, now) }); err != nil {
		s.log.Warn().Err(err).Str("token_id", tok.ID).Msg("cannot record API token use")
	}
	return nil
}

// RefuseUnauthenticated refuses a request whose credentials could not even be read (a
// malformed Authorization header), audited like a bad token.
func (s *Service) RefuseUnauthenticated(ctx context.Context, source, reason string) error {
	return s.unauthenticated(ctx, source, reason, s.clock())
}

func (s *Service) unauthenticated(ctx context.Context, source, reason string, now time.Time) error {
	e := newErr(CodeUnauthenticated, "", "%s; send Authorization: Bearer <API token>", reason)
	if suppressed, ok := s.anon.AllowCount(source+"|"+reason, now); ok {
		err := s.update(ctx, func(t *txn) error {
			return t.audit(ctx, audit.Entry{Actor: AnonymousActor, Action: audit.ActionAccessDenied, Reason: reason,
				Details: audit.Details("code", string(CodeUnauthenticated), "source", source, "suppressed", suppressed)})
		})
		if err != nil {
			s.log.Warn().Err(err).Str("source", source).Msg("cannot audit an unauthenticated request")
		}
	}
	s.obs.Denial(CodeUnauthenticated)
	return e
}
