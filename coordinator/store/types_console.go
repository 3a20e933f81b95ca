package store

import "time"

// Credential is a user's password sign-in state: never the password, only its hash.
type Credential struct {
	UserID string
	// PasswordHash is the self-describing hash of the password ("$argon2id$..."); "" when
	// the user has no password and cannot sign in with one.
	PasswordHash string
	PasswordSet  time.Time // zero when no password was ever set
	// FailedSignIns counts wrong passwords since the last success or lock.
	FailedSignIns int
	// Lockouts counts the locks since the last success: each lock lasts twice the one
	// before.
	Lockouts    int
	LockedUntil time.Time // zero when not locked
}

// Session methods.
const (
	SessionPassword = "password"
	SessionOIDC     = "oidc"
)

// Why a session ended.
const (
	SessionSignedOut       = "signed_out"
	SessionIdle            = "idle"
	SessionExpired         = "expired"
	SessionPasswordChanged = "password_changed"
	SessionUserDisabled    = "user_disabled"
)

// Session is the stored side of a signed-in browser session: never its secret, which the
// store hands out once, when the session starts.
type Session struct {
	ID          string // public identifier, for logs and the audit log
	UserID      string
	Method      string // SessionPassword or SessionOIDC
	CSRF        string // the anti-forgery token of the session's forms
	Source      string // where the browser signed in from
	Created     time.Time
	LastSeen    time.Time
	IdleExpires time.Time // the session ends if not used before this
	Expires     time.Time // the session ends at this time whatever its use
	Ended       time.Time // zero while open
	EndReason   string    // one of the Session* reasons once ended
}

// OIDCIdentity links an identity provider's subject to a user.
type OIDCIdentity struct {
	Issuer   string
	Subject  string
	UserID   string
	Email    string // as the provider said at the last sign-in
	Created  time.Time
	LastUsed time.Time
}
