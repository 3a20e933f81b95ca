package service

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// API token lifetimes when the configuration names none (api_tokens.default_ttl,
// api_tokens.max_ttl). Only the bootstrap token never expires.
const (
	DefaultAPITokenTTL = 90 * 24 * time.Hour
	MaxAPITokenTTL     = 365 * 24 * time.Hour
)

// IssuedToken is a new API token: the secret is in Token, this once.
type IssuedToken struct {
	store.APIToken
	Token    string
	Username string
}

// APIToken is an API token as listed: never its secret.
type APIToken struct {
	store.APIToken
	Username string
}

// tokenLife turns a requested lifetime into one within the configured bounds.
func (s *Service) tokenLife(expiresIn string) (time.Duration, error) {
	if expiresIn == "" {
		return s.tokenTTL, nil
	}
	d, err := profile.ParseDuration(expiresIn)
	if err != nil {
		return 0, badRequest("expires_in", "%v", err)
	}
	life := time.Duration(d)
	switch {
	case life <= 0:
		return 0, badRequest("expires_in", "%q is not a positive duration", expiresIn)
	case life > s.tokenMaxTTL:
		return 0, badRequest("expires_in", "%s is longer than the longest API token life this coordinator allows (api_tokens.max_ttl %s); ask for %s or less",
			expiresIn, profile.Duration(s.tokenMaxTTL), profile.Duration(s.tokenMaxTTL))
	}
	return life, nil
}

// IssueAPIToken creates an API token for a person (manage_users). expiresIn is a Go
// duration or whole days ("90d"); empty means the configured default. Every token
// expires: at most the configured maximum from now.
func (s *Service) IssueAPIToken(ctx context.Context, by Actor, username, name, expiresIn string) (IssuedToken, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "issue API token", jobs.PermManageUsers, ""); err != nil {
		return IssuedToken{}, err
	}
	name = strings.TrimSpace(name)
	if name == "" {
		name = defaultTokenName
	}
	if err := checkText("name", name, maxTokenNameLen); err != nil {
		return IssuedToken{}, err
	}
	life, err := s.tokenLife(expiresIn)
	if err != nil {
		return IssuedToken{}, err
	}
	var out IssuedToken
	err = s.update(ctx, func(t *txn) error {
		u, err := t.GetUserByUsername(ctx, username)
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeNotFound, "", "no user named %q", username)
		}
		if err != nil {
			return err
		}
		if u.Disabled {
			return newErr(CodeConflict, "", "user %q is disabled", u.Username)
		}
		expires := t.now.Add(life)
		tok, secret, err := t.CreateAPIToken(ctx, u.ID, name, expires)
		if err != nil {
			return err
		}
		out = IssuedToken{APIToken: tok, Token: secret, Username: u.Username}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionTokenCreated, Target: "user:" + u.ID,
			Details: audit.Details("token_id", tok.ID, "name", tok.Name, "username", u.Username, "expires", expires.Format(time.RFC3339))})
	})
	return out, err
}

// ListAPITokens lists a person's API tokens, oldest first: anyone their own, a holder of
// manage_users anyone's.
func (s *Service) ListAPITokens(ctx context.Context, by Actor, username string) ([]APIToken, error) {
	actor := by.user
	u := actor
	if !strings.EqualFold(username, actor.Username) {
		if _, err := s.authorize(ctx, actor, "list API tokens", jobs.PermManageUsers, ""); err != nil {
			return nil, err
		}
		var err error
		u, err = s.st.GetUserByUsername(ctx, username)
		if errors.Is(err, store.ErrNotFound) {
			return nil, newErr(CodeNotFound, "", "no user named %q", username)
		}
		if err != nil {
			return nil, AsError(err)
		}
	}
	toks, err := s.st.ListAPITokens(ctx, u.ID)
	if err != nil {
		return nil, AsError(err)
	}
	out := make([]APIToken, len(toks))
	for i, t := range toks {
		out[i] = APIToken{APIToken: t, Username: u.Username}
	}
	return out, nil
}

// RevokeAPIToken revokes an API token at once: anyone their own, a holder of
// manage_users anyone's. Revoking a revoked token changes nothing and is not an error.
func (s *Service) RevokeAPIToken(ctx context.Context, by Actor, id, reason string) (APIToken, error) {
	actor := by.user
	const op = "revoke API token"
	if err := checkReason("reason", reason); err != nil {
		return APIToken{}, err
	}
	tok, err := s.st.GetAPIToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return APIToken{}, newErr(CodeNotFound, "id", "no API token %q (the ID is the part after tfk_ and before the next _)", id)
	}
	if err != nil {
		return APIToken{}, AsError(err)
	}
	if tok.UserID != actor.ID {
		if _, err := s.authorize(ctx, actor, op, jobs.PermManageUsers, ""); err != nil {
			return APIToken{}, err
		}
	}
	var out APIToken
	err = s.update(ctx, func(t *txn) error {
		cur, err := t.GetAPIToken(ctx, id)
		if err != nil {
			return err
		}
		owner, err := t.GetUser(ctx, cur.UserID)
		if err != nil {
			return err
		}
		out = APIToken{APIToken: cur, Username: owner.Username}
		if !cur.Revoked.IsZero() {
			return nil
		}
		if err := t.RevokeAPIToken(ctx, id, t.now); err != nil {
			return err
		}
		out.Revoked = t.now
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionTokenRevoked, Target: "token:" + id, Reason: strings.TrimSpace(reason),
			Details: audit.Details("name", cur.Name, "username", owner.Username)})
	})
	return out, err
}
