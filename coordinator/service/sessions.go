package service

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Session is a signed-in browser session, as the console sees it.
type Session struct {
	ID                   string // public identifier (never the secret), for logs and audit
	Actor                Actor
	User                 User   // the Whoami view of the signed-in user
	CSRF                 string // the session's anti-forgery token, random, stable for the session
	Method               string // "password" or "oidc"
	Created, LastSeen    time.Time
	IdleExpires, Expires time.Time // idle and absolute ends
}

// maxSecretLen bounds a presented session secret before it is hashed.
const maxSecretLen = 128

// StartSession starts a console session for a, who has just signed in with method
// ("password" or "oidc") from source. It returns the session's secret, for the browser's
// cookie only: the store keeps its hash. The session ends when idle for the configured
// idle timeout, or at its absolute end, whichever comes first.
func (s *Service) StartSession(ctx context.Context, a Actor, method, source string) (string, Session, error) {
	if method != store.SessionPassword && method != store.SessionOIDC {
		return "", Session{}, badRequest("method", "%q is not a sign-in method: password or oidc", method)
	}
	if a.user.ID == "" {
		return "", Session{}, newErr(CodeUnauthenticated, "", "no one signed in: sign in first")
	}
	var out Session
	var secret string
	err := s.update(ctx, func(t *txn) error {
		u, err := t.GetUser(ctx, a.user.ID)
		if err != nil {
			return err
		}
		if u.Disabled {
			return t.signInRefused(ctx, u, method, source, forbidden("%s is disabled; ask an administrator", u.Username))
		}
		st, sec, err := t.CreateSession(ctx, store.Session{UserID: u.ID, Method: method, Source: source, Created: t.now,
			IdleExpires: t.now.Add(t.s.signin.SessionIdle), Expires: t.now.Add(t.s.signin.SessionMax)})
		if err != nil {
			return err
		}
		secret = sec
		out = sessionOf(st, u, newNames(t).org(ctx, u.OrganizationID))
		return t.audit(ctx, audit.Entry{Actor: u.ID, Action: audit.ActionSessionStarted, Target: "session:" + st.ID,
			Details: audit.Details("username", u.Username, "method", method, "source", source,
				"idle_expires", st.IdleExpires.Format(time.RFC3339), "expires", st.Expires.Format(time.RFC3339))})
	})
	if err != nil {
		return "", Session{}, err
	}
	return secret, out, nil
}

func sessionOf(st store.Session, u store.User, org string) Session {
	return Session{ID: st.ID, Actor: Actor{user: u, session: st.ID}, User: User{User: u, Organization: org}, CSRF: st.CSRF,
		Method: st.Method, Created: st.Created, LastSeen: st.LastSeen, IdleExpires: st.IdleExpires, Expires: st.Expires}
}

// errSessionEnded says why a session presented is no longer one.
func errSessionEnded(st store.Session) *Error {
	why := "has ended"
	switch st.EndReason {
	case store.SessionSignedOut:
		why = "was signed out"
	case store.SessionIdle:
		why = "ended after being idle too long"
	case store.SessionExpired:
		why = "reached its time limit"
	case store.SessionPasswordChanged:
		why = "was ended when the password was changed"
	case store.SessionUserDisabled:
		why = "was ended when the user was disabled"
	}
	return newErr(CodeUnauthenticated, "", "this session %s; sign in again", why)
}

// Session returns the open session whose secret the browser presented, and records its
// use (at most once a minute, which moves its idle end). An unknown secret, a session
// signed out or ended, idle past its timeout or past its absolute end, or a session of a
// disabled user is refused (unauthenticated), the message saying which; a session found
// expired is ended and audited then.
func (s *Service) Session(ctx context.Context, secret, source string) (Session, error) {
	now := s.clock()
	if secret == "" {
		return Session{}, newErr(CodeUnauthenticated, "", "not signed in; sign in first")
	}
	if len(secret) > maxSecretLen {
		return Session{}, s.unknownSession(ctx, source, now)
	}
	st, err := s.st.LookupSession(ctx, secret)
	if errors.Is(err, store.ErrNotFound) {
		return Session{}, s.unknownSession(ctx, source, now)
	}
	if err != nil {
		return Session{}, AsError(err)
	}
	if !st.Ended.IsZero() {
		return Session{}, errSessionEnded(st)
	}
	u, err := s.st.GetUser(ctx, st.UserID)
	if err != nil {
		return Session{}, AsError(err)
	}
	switch {
	case !now.Before(st.Expires):
		return Session{}, s.expireSession(ctx, st, u, source, store.SessionExpired,
			"%s reached its time limit (%s after signing in); sign in again", "this session", st.Expires.Sub(st.Created).Round(time.Second))
	case !now.Before(st.IdleExpires):
		return Session{}, s.expireSession(ctx, st, u, source, store.SessionIdle,
			"%s was idle for more than %s and has ended; sign in again", "this session", s.signin.SessionIdle)
	case u.Disabled:
		return Session{}, s.expireSession(ctx, st, u, source, store.SessionUserDisabled,
			"%s is disabled; ask an administrator", u.Username)
	}
	if now.Sub(st.LastSeen) >= store.SessionTouchEvery(s.signin.SessionIdle) {
		idle := now.Add(s.signin.SessionIdle)
		if idle.After(st.Expires) {
			idle = st.Expires
		}
		if err := s.st.InTx(ctx, func(tx store.Tx) error { return tx.TouchSession(ctx, st.ID, now, idle) }); err != nil {
			s.log.Warn().Err(err).Str("session_id", st.ID).Msg("cannot record a session's use")
		} else {
			st.LastSeen, st.IdleExpires = now, idle
		}
	}
	return sessionOf(st, u, newNames(s.st).org(ctx, u.OrganizationID)), nil
}

// unknownSession refuses a secret that names no session, audited like a bad API token
// (at most once per source and minute).
func (s *Service) unknownSession(ctx context.Context, source string, now time.Time) error {
	const reason = "unknown session"
	if suppressed, ok := s.anon.AllowCount(source+"|"+reason, now); ok {
		err := s.update(ctx, func(t *txn) error {
			return t.audit(ctx, audit.Entry{Actor: AnonymousActor, Action: audit.ActionAccessDenied, Reason: reason,
				Details: audit.Details("code", string(CodeUnauthenticated), "source", source, "suppressed", suppressed)})
		})
		if err != nil {
			s.log.Warn().Err(err).Str("source", source).Msg("cannot audit an unknown session")
		}
	}
	s.obs.Denial(CodeUnauthenticated)
	return newErr(CodeUnauthenticated, "", "unknown session; sign in again")
}

// expireSession ends a session found past one of its ends (or of a disabled user), audits
// it and returns the refusal.
func (s *Service) expireSession(ctx context.Context, st store.Session, u store.User, source, reason, format string, args ...any) error {
	refusal := newErr(CodeUnauthenticated, "", format, args...)
	err := s.update(ctx, func(t *txn) error {
		ended, err := t.EndSession(ctx, st.ID, t.now, reason)
		if errors.Is(err, store.ErrConflict) {
			return nil // ended meanwhile: audited by whoever ended it
		}
		if err != nil {
			return err
		}
		action := audit.ActionSessionExpired
		if reason == store.SessionUserDisabled {
			action = audit.ActionSessionEnded
		}
		return t.audit(ctx, audit.Entry{Actor: u.ID, Action: action, Target: "session:" + st.ID, Reason: reason,
			Details: audit.Details("username", u.Username, "source", source, "last_seen", ended.LastSeen.Format(time.RFC3339))})
	})
	if err != nil {
		return err
	}
	s.obs.Denial(CodeUnauthenticated)
	return refusal
}

// SessionLive reports whether the session by acts in still holds: not ended, not past
// its idle or absolute end, its user not disabled. It does not count as a use (the idle
// end stays): a long response, such as a job page's live stream, asks it to stop when the
// session does. An actor without a session (an API token) always holds.
func (s *Service) SessionLive(ctx context.Context, by Actor) error {
	if by.session == "" {
		return nil
	}
	st, err := s.st.GetSession(ctx, by.session)
	if err != nil {
		return AsError(err)
	}
	if !st.Ended.IsZero() {
		return errSessionEnded(st)
	}
	u, err := s.st.GetUser(ctx, st.UserID)
	if err != nil {
		return AsError(err)
	}
	if now := s.clock(); !now.Before(st.Expires) || !now.Before(st.IdleExpires) || u.Disabled {
		return newErr(CodeUnauthenticated, "", "this session has ended; sign in again")
	}
	return nil
}

// EndSession signs the session whose secret the browser presented out. Signing out a
// session that already ended changes nothing and is not an error; an unknown secret is
// refused (unauthenticated).
func (s *Service) EndSession(ctx context.Context, secret, source string) error {
	if secret == "" || len(secret) > maxSecretLen {
		return newErr(CodeUnauthenticated, "", "not signed in")
	}
	st, err := s.st.LookupSession(ctx, secret)
	if errors.Is(err, store.ErrNotFound) {
		return s.unknownSession(ctx, source, s.clock())
	}
	if err != nil {
		return AsError(err)
	}
	if !st.Ended.IsZero() {
		return nil
	}
	return s.update(ctx, func(t *txn) error {
		_, err := t.EndSession(ctx, st.ID, t.now, store.SessionSignedOut)
		if errors.Is(err, store.ErrConflict) {
			return nil
		}
		if err != nil {
			return err
		}
		u, err := t.GetUser(ctx, st.UserID)
		if err != nil {
			return err
		}
		return t.audit(ctx, audit.Entry{Actor: u.ID, Action: audit.ActionSessionEnded, Target: "session:" + st.ID, Reason: store.SessionSignedOut,
			Details: audit.Details("username", u.Username, "source", source)})
	})
}

// SessionRetention is how long a session is kept once it ended or reached its absolute
// end, so that a browser presenting it is told why it is over; the audit log keeps its
// history for good.
const SessionRetention = 7 * 24 * time.Hour

// sessionPurgeEvery spaces the purges of RunExpiry's sweep.
const sessionPurgeEvery = time.Hour

// PurgeSessions deletes the sessions that ended, or reached their absolute end, more
// than SessionRetention ago, and returns how many.
func (s *Service) PurgeSessions(ctx context.Context) (int64, error) {
	var n int64
	err := s.st.InTx(ctx, func(tx store.Tx) error {
		var err error
		n, err = tx.PurgeSessions(ctx, s.clock().Add(-SessionRetention))
		return err
	})
	if err != nil {
		return 0, AsError(err)
	}
	return n, nil
}

// endUserSessions ends every open session of user userID but keep ("" for none), for a
// disabled user or a new password, and returns their IDs for the audit entry of the
// change.
func (t *txn) endUserSessions(ctx context.Context, userID, keep, reason string) ([]string, error) {
	ended, err := t.EndUserSessions(ctx, userID, keep, t.now, reason)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ended))
	for i, s := range ended {
		ids[i] = s.ID
	}
	return ids, nil
}

// OIDCIdentity is what an identity provider vouched for, after the relying party verified
// the ID token (issuer, audience, expiry, nonce).
type OIDCIdentity struct{ Issuer, Subject, Username, Email string }

// SignInOIDC returns the person an identity provider's identity belongs to: the user
// linked to (issuer, subject) at an earlier sign-in, or else the user whose username is
// the identity's Username (the configured claim), then linked. An identity matching no
// user, a user linked to another subject of the same issuer, or a disabled user is
// refused. Every success and refusal is audited.
func (s *Service) SignInOIDC(ctx context.Context, id OIDCIdentity, source string) (Actor, error) {
	id.Issuer, id.Subject, id.Username = strings.TrimSpace(id.Issuer), strings.TrimSpace(id.Subject), strings.TrimSpace(id.Username)
	if id.Issuer == "" || id.Subject == "" {
		return Actor{}, badRequest("", "the identity provider's answer has no issuer or subject")
	}
	claim := s.signin.UsernameClaim
	var out store.User
	err := s.update(ctx, func(t *txn) error {
		link, err := t.GetOIDCIdentity(ctx, id.Issuer, id.Subject)
		switch {
		case err == nil:
			u, err := t.GetUser(ctx, link.UserID)
			if err != nil {
				return err
			}
			if u.Disabled {
				return t.signInRefused(ctx, u, store.SessionOIDC, source, forbidden("%s is disabled; ask an administrator", u.Username))
			}
			if err := t.TouchOIDCIdentity(ctx, id.Issuer, id.Subject, id.Email, t.now); err != nil {
				return err
			}
			out = u
		case errors.Is(err, store.ErrNotFound):
			u, err := t.linkOIDC(ctx, id, claim, source)
			if err != nil || t.refusal != nil {
				return err
			}
			out = u
		default:
			return err
		}
		return t.audit(ctx, audit.Entry{Actor: out.ID, Action: audit.ActionSignIn, Target: "user:" + out.ID,
			Details: audit.Details("username", out.Username, "method", store.SessionOIDC, "source", source,
				"issuer", id.Issuer, "subject", id.Subject)})
	})
	if err != nil {
		return Actor{}, err
	}
	return Actor{user: out}, nil
}

// linkOIDC finds the user an identity signing in for the first time belongs to, by
// username, and links the identity to them.
func (t *txn) linkOIDC(ctx context.Context, id OIDCIdentity, claim, source string) (store.User, error) {
	anon := store.User{Username: id.Username}
	if id.Username == "" {
		return store.User{}, t.signInRefused(ctx, anon, store.SessionOIDC, source, newErr(CodeUnauthenticated, "",
			"the identity provider gave no %s claim for subject %q, so no tokenfleet user can be found for it; have the provider send it, or set console.oidc.username_claim",
			claim, id.Subject))
	}
	u, err := t.GetUserByUsername(ctx, id.Username)
	if errors.Is(err, store.ErrNotFound) {
		return store.User{}, t.signInRefused(ctx, anon, store.SessionOIDC, source, newErr(CodeUnauthenticated, "",
			"no tokenfleet user is named %q (the identity provider's %s claim); ask an administrator to create one", id.Username, claim))
	}
	if err != nil {
		return store.User{}, err
	}
	if u.Disabled {
		return store.User{}, t.signInRefused(ctx, u, store.SessionOIDC, source, forbidden("%s is disabled; ask an administrator", u.Username))
	}
	links, err := t.ListOIDCIdentities(ctx, u.ID)
	if err != nil {
		return store.User{}, err
	}
	for _, l := range links {
		if l.Issuer == id.Issuer {
			// The provider's username now names another subject: a name given again to
			// someone else must not take over the first one's account.
			return store.User{}, t.signInRefused(ctx, u, store.SessionOIDC, source, newErr(CodeUnauthenticated, "",
				"tokenfleet user %q is linked to another identity of %s (subject %q), not to subject %q; if it is the same person, an administrator removes the old link (tokenfleetctl user unlink-oidc %s)",
				u.Username, id.Issuer, l.Subject, id.Subject, u.Username))
		}
	}
	if _, err := t.LinkOIDCIdentity(ctx, store.OIDCIdentity{Issuer: id.Issuer, Subject: id.Subject, UserID: u.ID, Email: id.Email,
		Created: t.now}); err != nil {
		return store.User{}, casLost(err) // linked by a concurrent first sign-in: read again
	}
	return u, t.audit(ctx, audit.Entry{Actor: u.ID, Action: audit.ActionOIDCLinked, Target: "user:" + u.ID,
		Details: audit.Details("username", u.Username, "issuer", id.Issuer, "subject", id.Subject, "claim", claim, "email", id.Email, "source", source)})
}

// UnlinkOIDC removes a person's links to identity providers' subjects (manage_users), with
// a reason, audited: their next OIDC sign-in links them again by username. For a person
// whose account at the provider was made anew (another subject), whose sign-in is refused
// while the old link stands. It returns how many links it removed.
func (s *Service) UnlinkOIDC(ctx context.Context, by Actor, username, reason string) (int, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "unlink OIDC identities", jobs.PermManageUsers, ""); err != nil {
		return 0, err
	}
	reason, err := requiredReason("reason", reason)
	if err != nil {
		return 0, err
	}
	var n int
	err = s.update(ctx, func(t *txn) error {
		u, err := t.GetUserByUsername(ctx, username)
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeNotFound, "", "no user named %q", username)
		}
		if err != nil {
			return err
		}
		gone, err := t.UnlinkOIDCIdentities(ctx, u.ID)
		if err != nil {
			return err
		}
		n = len(gone)
		if n == 0 {
			return nil // nothing to remove or audit
		}
		links := make([]map[string]string, n)
		for i, l := range gone {
			links[i] = map[string]string{"issuer": l.Issuer, "subject": l.Subject}
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionOIDCUnlinked, Target: "user:" + u.ID, Reason: reason,
			Details: audit.Details("username", u.Username, "identities", links)})
	})
	return n, err
}
