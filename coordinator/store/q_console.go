package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// ---- passwords and lockout ----

const credentialCols = "id, password_hash, password_set_at, failed_sign_ins, lockouts, locked_until"

func scanCredential(r scanner) (Credential, error) {
	var c Credential
	err := r.Scan(&c.UserID, strCol{&c.PasswordHash}, timeCol{&c.PasswordSet}, &c.FailedSignIns, &c.Lockouts, timeCol{&c.LockedUntil})
	return c, err
}

func (x *q) GetCredential(ctx context.Context, userID string) (Credential, error) {
	c, err := scanCredential(x.queryRow(ctx, "SELECT "+credentialCols+" FROM users WHERE id = ?", userID))
	return c, x.d.wrap("credential of user "+userID, err)
}

func (x *q) SetPasswordHash(ctx context.Context, userID, hash string, at time.Time) error {
	what := "set password of user " + userID
	if hash != "" && !strings.HasPrefix(hash, "$") {
		return fmt.Errorf("store: %s: not an encoded password hash: %w", what, ErrInvalid)
	}
	setAt := x.d.ts(orNow(at))
	if hash == "" {
		setAt = nil
	}
	res, err := x.exec(ctx, `UPDATE users SET password_hash = ?, password_set_at = ?, failed_sign_ins = 0, lockouts = 0,
			locked_until = NULL WHERE id = ?`, nullStr(hash), setAt, userID)
	if err != nil {
		return x.d.wrap(what, err)
	}
	return x.d.wrap(what, mustAffect(res))
}

func (x *q) AddSignInFailure(ctx context.Context, userID string, at time.Time) (Credential, error) {
	what := "sign-in failure of user " + userID
	// The lock is checked by the UPDATE itself: a failure racing with the one that locked
	// waits for its row and then sees the lock (PostgreSQL evaluates the condition again
	// on the row as committed), so it is not counted against the next lock.
	c, err := scanCredential(x.queryRow(ctx, `UPDATE users SET failed_sign_ins = failed_sign_ins + 1
		WHERE id = ? AND (locked_until IS NULL OR locked_until <= ?) RETURNING `+credentialCols, userID, x.d.ts(orNow(at))))
	if isNoRows(err) {
		return x.GetCredential(ctx, userID) // locked, or no such user (ErrNotFound)
	}
	return c, x.d.wrap(what, err)
}

func (x *q) LockSignIn(ctx context.Context, userID string, until time.Time) (Credential, error) {
	what := "lock sign-in of user " + userID
	if until.IsZero() {
		return Credential{}, fmt.Errorf("store: %s: no end: %w", what, ErrInvalid)
	}
	c, err := scanCredential(x.queryRow(ctx, `UPDATE users SET failed_sign_ins = 0, lockouts = lockouts + 1, locked_until = ?
		WHERE id = ? RETURNING `+credentialCols, x.d.ts(until), userID))
	return c, x.d.wrap(what, err)
}

func (x *q) ResetSignInFailures(ctx context.Context, userID string) error {
	what := "reset sign-in failures of user " + userID
	res, err := x.exec(ctx, "UPDATE users SET failed_sign_ins = 0, lockouts = 0, locked_until = NULL WHERE id = ?", userID)
	if err != nil {
		return x.d.wrap(what, err)
	}
	return x.d.wrap(what, mustAffect(res))
}

// ---- sessions ----

// Session secrets look like tfs_<52 base32 characters>: 256 random bits, found by their
// SHA-256 (like API tokens, a plain hash suffices for a value nobody chose).
const sessionPrefix = "tfs_"

// sessionTouchEvery is how stale last_seen may get before a use is written.
const sessionTouchEvery = time.Minute

const sessionCols = "id, user_id, method, csrf, source, created_at, last_seen_at, idle_expires_at, expires_at, ended_at, end_reason"

func scanSession(r scanner) (Session, error) {
	var s Session
	err := r.Scan(&s.ID, &s.UserID, &s.Method, &s.CSRF, &s.Source, timeCol{&s.Created}, timeCol{&s.LastSeen},
		timeCol{&s.IdleExpires}, timeCol{&s.Expires}, timeCol{&s.Ended}, &s.EndReason)
	return s, err
}

func (x *q) CreateSession(ctx context.Context, s Session) (Session, string, error) {
	const what = "create session"
	if err := required(what, "user", s.UserID, "method", s.Method); err != nil {
		return Session{}, "", err
	}
	if s.Method != SessionPassword && s.Method != SessionOIDC {
		return Session{}, "", fmt.Errorf("store: %s: unknown method %q: %w", what, s.Method, ErrInvalid)
	}
	s.Created = orNow(s.Created)
	if s.LastSeen.IsZero() {
		s.LastSeen = s.Created
	}
	if s.IdleExpires.IsZero() || s.Expires.IsZero() || !s.Expires.After(s.Created) {
		return Session{}, "", fmt.Errorf("store: %s: needs idle and absolute ends after its start: %w", what, ErrInvalid)
	}
	s.ID = newID()
	s.CSRF = randomString(32)
	secret := sessionPrefix + randomString(32)
	row := x.queryRow(ctx, `INSERT INTO sessions (id, secret_hash, user_id, method, csrf, source, created_at, last_seen_at,
			idle_expires_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING `+sessionCols,
		s.ID, hashToken(secret), s.UserID, s.Method, s.CSRF, s.Source, x.d.ts(s.Created), x.d.ts(s.LastSeen),
		x.d.ts(s.IdleExpires), x.d.ts(s.Expires))
	out, err := scanSession(row)
	if err != nil {
		return Session{}, "", x.d.wrap(what+" for user "+s.UserID, err)
	}
	return out, secret, nil
}

func (x *q) LookupSession(ctx context.Context, secret string) (Session, error) {
	if !strings.HasPrefix(secret, sessionPrefix) || len(secret) > 128 {
		return Session{}, fmt.Errorf("store: session: malformed secret: %w", ErrNotFound)
	}
	// The secret is found by its hash: an index lookup on a SHA-256 of 256 random bits
	// tells a timing observer nothing about the secret.
	s, err := scanSession(x.queryRow(ctx, "SELECT "+sessionCols+" FROM sessions WHERE secret_hash = ?", hashToken(secret)))
	return s, x.d.wrap("session", err)
}

func (x *q) GetSession(ctx context.Context, id string) (Session, error) {
	s, err := scanSession(x.queryRow(ctx, "SELECT "+sessionCols+" FROM sessions WHERE id = ?", id))
	return s, x.d.wrap("session "+id, err)
}

func (x *q) ListOpenSessions(ctx context.Context, userID string, at time.Time) ([]Session, error) {
	at = orNow(at)
	rows, err := x.query(ctx, "SELECT "+sessionCols+` FROM sessions
		WHERE user_id = ? AND ended_at IS NULL AND idle_expires_at > ? AND expires_at > ? ORDER BY created_at, id`,
		userID, x.d.ts(at), x.d.ts(at))
	if err != nil {
		return nil, x.d.wrap("list sessions", err)
	}
	return collect(rows, x.d, "list sessions", scanSession)
}

// SessionTouchEvery is how stale a session's last use may get before a use is written:
// a minute, or a quarter of the idle timeout when that is shorter, so that a session in
// use never reaches its idle end.
func SessionTouchEvery(idle time.Duration) time.Duration {
	return max(min(sessionTouchEvery, idle/4), 0)
}

func (x *q) TouchSession(ctx context.Context, id string, at, idleExpires time.Time) error {
	at = orNow(at)
	res, err := x.exec(ctx, `UPDATE sessions SET last_seen_at = ?, idle_expires_at = ?
		WHERE id = ? AND ended_at IS NULL AND last_seen_at < ?`,
		x.d.ts(at), x.d.ts(idleExpires), id, x.d.ts(at.Add(-SessionTouchEvery(idleExpires.Sub(at)))))
	if err != nil {
		return x.d.wrap("touch session "+id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return x.exists(ctx, "session "+id, "SELECT 1 FROM sessions WHERE id = ?", id)
	}
	return nil
}

func (x *q) EndSession(ctx context.Context, id string, at time.Time, reason string) (Session, error) {
	what := "end session " + id
	if err := required(what, "reason", reason); err != nil {
		return Session{}, err
	}
	s, err := scanSession(x.queryRow(ctx, "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL RETURNING "+sessionCols,
		x.d.ts(orNow(at)), reason, id))
	if isNoRows(err) {
		if err := x.exists(ctx, "session "+id, "SELECT 1 FROM sessions WHERE id = ?", id); err != nil {
			return Session{}, err
		}
		return Session{}, fmt.Errorf("store: %s: already ended: %w", what, ErrConflict)
	}
	return s, x.d.wrap(what, err)
}

func (x *q) EndUserSessions(ctx context.Context, userID, exceptID string, at time.Time, reason string) ([]Session, error) {
	what := "end sessions of user " + userID
	if err := required(what, "reason", reason); err != nil {
		return nil, err
	}
	rows, err := x.query(ctx, "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE user_id = ? AND id <> ? AND ended_at IS NULL RETURNING "+sessionCols,
		x.d.ts(orNow(at)), reason, userID, exceptID)
	if err != nil {
		return nil, x.d.wrap(what, err)
	}
	return collect(rows, x.d, what, scanSession)
}

func (x *q) PurgeSessions(ctx context.Context, before time.Time) (int64, error) {
	res, err := x.exec(ctx, "DELETE FROM sessions WHERE expires_at < ? OR ended_at < ?", x.d.ts(before), x.d.ts(before))
	if err != nil {
		return 0, x.d.wrap("purge sessions", err)
	}
	n, err := res.RowsAffected()
	return n, x.d.wrap("purge sessions", err)
}

// ---- OpenID Connect identities ----

const oidcCols = "issuer, subject, user_id, email, created_at, last_used_at"

func scanOIDCIdentity(r scanner) (OIDCIdentity, error) {
	var o OIDCIdentity
	err := r.Scan(&o.Issuer, &o.Subject, &o.UserID, &o.Email, timeCol{&o.Created}, timeCol{&o.LastUsed})
	return o, err
}

func (x *q) GetOIDCIdentity(ctx context.Context, issuer, subject string) (OIDCIdentity, error) {
	o, err := scanOIDCIdentity(x.queryRow(ctx, "SELECT "+oidcCols+" FROM oidc_identities WHERE issuer = ? AND subject = ?", issuer, subject))
	return o, x.d.wrap(fmt.Sprintf("OIDC identity %q of %s", subject, issuer), err)
}

func (x *q) ListOIDCIdentities(ctx context.Context, userID string) ([]OIDCIdentity, error) {
	rows, err := x.query(ctx, "SELECT "+oidcCols+" FROM oidc_identities WHERE user_id = ? ORDER BY issuer, subject", userID)
	if err != nil {
		return nil, x.d.wrap("list OIDC identities", err)
	}
	return collect(rows, x.d, "list OIDC identities", scanOIDCIdentity)
}

func (x *q) LinkOIDCIdentity(ctx context.Context, o OIDCIdentity) (OIDCIdentity, error) {
	what := fmt.Sprintf("link OIDC identity %q of %s", o.Subject, o.Issuer)
	if err := required(what, "issuer", o.Issuer, "subject", o.Subject, "user", o.UserID); err != nil {
		return OIDCIdentity{}, err
	}
	o.Created = orNow(o.Created)
	if o.LastUsed.IsZero() {
		o.LastUsed = o.Created
	}
	row := x.queryRow(ctx, `INSERT INTO oidc_identities (issuer, subject, user_id, email, created_at, last_used_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (issuer, subject) DO NOTHING RETURNING `+oidcCols,
		o.Issuer, o.Subject, o.UserID, o.Email, x.d.ts(o.Created), x.d.ts(o.LastUsed))
	out, err := scanOIDCIdentity(row)
	if isNoRows(err) {
		return OIDCIdentity{}, fmt.Errorf("store: %s: already linked: %w", what, ErrConflict)
	}
	return out, x.d.wrap(what, err)
}

func (x *q) TouchOIDCIdentity(ctx context.Context, issuer, subject, email string, at time.Time) error {
	what := fmt.Sprintf("OIDC identity %q of %s", subject, issuer)
	res, err := x.exec(ctx, "UPDATE oidc_identities SET email = ?, last_used_at = ? WHERE issuer = ? AND subject = ?",
		email, x.d.ts(orNow(at)), issuer, subject)
	if err != nil {
		return x.d.wrap(what, err)
	}
	return x.d.wrap(what, mustAffect(res))
}

func (x *q) UnlinkOIDCIdentities(ctx context.Context, userID string) ([]OIDCIdentity, error) {
	what := "unlink OIDC identities of user " + userID
	rows, err := x.query(ctx, "DELETE FROM oidc_identities WHERE user_id = ? RETURNING "+oidcCols, userID)
	if err != nil {
		return nil, x.d.wrap(what, err)
	}
	return collect(rows, x.d, what, scanOIDCIdentity)
}
