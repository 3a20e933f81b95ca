package service

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Sign-in defaults, when the configuration (console:) names none.
const (
	DefaultSessionIdle     = 30 * time.Minute
	DefaultSessionMax      = 12 * time.Hour
	DefaultLockoutAttempts = 5
	DefaultLockoutFirst    = time.Minute
	DefaultLockoutMax      = time.Hour
	// DefaultUsernameClaim is the ID token claim whose value is matched against usernames
	// at an identity's first sign-in.
	DefaultUsernameClaim = "preferred_username"
)

// SignInOptions are how people sign in to the web console. Zero fields take the defaults.
type SignInOptions struct {
	SessionIdle time.Duration // a session not used for this long ends
	SessionMax  time.Duration // a session ends this long after it started, used or not
	// After LockoutAttempts wrong passwords in a row, password sign-in is locked for
	// LockoutFirst; each further lock before a success lasts twice the one before, at
	// most LockoutMax.
	LockoutAttempts int
	LockoutFirst    time.Duration
	LockoutMax      time.Duration
	// UsernameClaim names, in refusals, the ID token claim OIDCIdentity.Username came from.
	UsernameClaim string
	// Password is how new password hashes are made; zero: DefaultPasswordParams.
	Password PasswordParams
	// ConcurrentHashes bounds the password hashes computed at once (each takes
	// Password.Memory); 0: the number of CPUs.
	ConcurrentHashes int
}

// setSignIn fills in the defaults and checks o.
func (s *Service) setSignIn(o SignInOptions) error {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.SessionIdle, DefaultSessionIdle)
	def(&o.SessionMax, DefaultSessionMax)
	def(&o.LockoutFirst, DefaultLockoutFirst)
	def(&o.LockoutMax, DefaultLockoutMax)
	if o.LockoutAttempts <= 0 {
		o.LockoutAttempts = DefaultLockoutAttempts
	}
	if o.UsernameClaim == "" {
		o.UsernameClaim = DefaultUsernameClaim
	}
	if o.Password == (PasswordParams{}) {
		o.Password = DefaultPasswordParams
	}
	if o.ConcurrentHashes <= 0 {
		o.ConcurrentHashes = runtime.NumCPU()
	}
	switch {
	case o.SessionIdle > o.SessionMax:
		return fmt.Errorf("service: session idle timeout %s is longer than the session's absolute limit %s", o.SessionIdle, o.SessionMax)
	case o.LockoutFirst > o.LockoutMax:
		return fmt.Errorf("service: first sign-in lock %s is longer than the longest %s", o.LockoutFirst, o.LockoutMax)
	}
	if err := o.Password.valid(); err != nil {
		return fmt.Errorf("service: password hashing: %w", err)
	}
	s.signin = o
	s.hasher = newHasher(o.Password, o.ConcurrentHashes)
	s.ghosts = newGhostLocks()
	return nil
}

// lockFor is how long the lock after lockouts earlier locks lasts: the first lock, doubled
// for each earlier one, at most the longest.
func (o SignInOptions) lockFor(lockouts int) time.Duration {
	d := o.LockoutFirst
	for range lockouts {
		if d >= o.LockoutMax/2 {
			return o.LockoutMax
		}
		d *= 2
	}
	return min(d, o.LockoutMax)
}

// errWrongPassword is the one answer to a wrong username or password: it does not say
// which, nor whether the user exists.
func errWrongPassword() *Error {
	return newErr(CodeUnauthenticated, "", "wrong username or password")
}

func errLocked(until, now time.Time) *Error {
	return newErr(CodeLocked, "", "too many wrong passwords: signing in with a password is locked until %s (%s from now); try again then, or ask an administrator to set a new password",
		until.UTC().Format("2006-01-02 15:04:05 UTC"), until.Sub(now).Round(time.Second))
}

// SignInPassword checks a username and password for the web console and returns the
// person they belong to. A wrong password, an unknown username or a user without a
// password all get the same answer after the same work; after LockoutAttempts wrong
// passwords in a row sign-in is locked (code locked) for a time that doubles with each
// further lock. Every success and failure is audited.
func (s *Service) SignInPassword(ctx context.Context, username, password, source string) (Actor, error) {
	username = strings.TrimSpace(username)
	switch {
	case username == "":
		return Actor{}, badRequest("username", "is required")
	case password == "":
		return Actor{}, badRequest("password", "is required")
	case len(username) > maxNameLen:
		return Actor{}, badRequest("username", "is longer than %d characters", maxNameLen)
	case len(password) > MaxPasswordBytes:
		// No password this long can be set: refused before any hashing work.
		return Actor{}, badRequest("password", "is %d bytes long; passwords are at most %d", len(password), MaxPasswordBytes)
	}
	u, err := s.checkPassword(ctx, username, password, source, func(t *txn, u store.User, rehashed bool) error {
		return t.audit(ctx, audit.Entry{Actor: u.ID, Action: audit.ActionSignIn, Target: "user:" + u.ID,
			Details: audit.Details("username", u.Username, "method", store.SessionPassword, "source", source, "rehashed", rehashed)})
	})
	if err != nil {
		return Actor{}, err
	}
	return Actor{user: u}, nil
}

// checkPassword is the one check of a password: the user's, with the lockout, its
// audit entries and the same answer for every failure. On success it resets the user's
// failures, makes the hash again if its parameters are old, and calls success (when not
// nil) in the same transaction.
func (s *Service) checkPassword(ctx context.Context, username, password, source string,
	success func(t *txn, u store.User, rehashed bool) error) (store.User, error) {
	now := s.clock()
	u, err := s.st.GetUserByUsername(ctx, username)
	if errors.Is(err, store.ErrNotFound) {
		return store.User{}, s.unknownSignIn(ctx, username, password, source, now)
	}
	if err != nil {
		return store.User{}, AsError(err)
	}
	cred, err := s.st.GetCredential(ctx, u.ID)
	if err != nil {
		return store.User{}, AsError(err)
	}
	if now.Before(cred.LockedUntil) {
		return store.User{}, s.lockedSignIn(ctx, u, source, cred.LockedUntil, now)
	}
	ok, rehash, err := s.hasher.verify(ctx, cred.PasswordHash, password)
	if err != nil {
		// A hash that cannot be read refuses like a wrong password; the log says why.
		s.log.Error().Err(err).Str("user", u.Username).Msg("stored password hash is unreadable; set a new password")
		ok = false
	}
	if !ok {
		return store.User{}, s.wrongPassword(ctx, u, source)
	}
	var newHash string
	if rehash {
		if newHash, err = s.hasher.hash(ctx, password); err != nil {
			return store.User{}, err
		}
	}
	var out store.User
	err = s.update(ctx, func(t *txn) error {
		cur, err := t.GetUser(ctx, u.ID)
		if err != nil {
			return err
		}
		c, err := t.GetCredential(ctx, u.ID)
		if err != nil {
			return err
		}
		switch {
		case t.now.Before(c.LockedUntil):
			// Locked by concurrent failures since the check above.
			t.refusal = errLocked(c.LockedUntil, t.now)
			return nil
		case c.PasswordHash != cred.PasswordHash:
			// Changed meanwhile: the password checked is not the one set now.
			t.refusal = errWrongPassword()
			return nil
		case cur.Disabled:
			return t.signInRefused(ctx, cur, store.SessionPassword, source, forbidden("%s is disabled; ask an administrator", cur.Username))
		}
		if c.FailedSignIns > 0 || c.Lockouts > 0 || !c.LockedUntil.IsZero() {
			if err := t.ResetSignInFailures(ctx, u.ID); err != nil {
				return err
			}
		}
		if newHash != "" {
			if err := t.SetPasswordHash(ctx, u.ID, newHash, c.PasswordSet); err != nil {
				return err
			}
		}
		out = cur
		if success == nil {
			return nil
		}
		return success(t, cur, newHash != "")
	})
	if err != nil {
		return store.User{}, err
	}
	return out, nil
}

// wrongPassword counts a failure of an existing user, locks them after too many, and
// audits both.
func (s *Service) wrongPassword(ctx context.Context, u store.User, source string) error {
	return s.update(ctx, func(t *txn) error {
		c, err := t.AddSignInFailure(ctx, u.ID, t.now)
		if err != nil {
			return err
		}
		if t.now.Before(c.LockedUntil) {
			t.refusal = errLocked(c.LockedUntil, t.now) // locked by a concurrent failure
			return nil
		}
		t.refusal = errWrongPassword()
		if err := t.audit(ctx, audit.Entry{Actor: AnonymousActor, Action: audit.ActionSignInFailed, Target: "user:" + u.ID,
			Reason: "wrong password", Details: audit.Details("username", u.Username, "method", store.SessionPassword,
				"source", source, "failures", c.FailedSignIns)}); err != nil {
			return err
		}
		if c.FailedSignIns < t.s.signin.LockoutAttempts {
			return nil
		}
		d := t.s.signin.lockFor(c.Lockouts)
		until := t.now.Add(d)
		if _, err := t.LockSignIn(ctx, u.ID, until); err != nil {
			return err
		}
		t.refusal = errLocked(until, t.now)
		return t.audit(ctx, audit.Entry{Actor: AnonymousActor, Action: audit.ActionSignInLocked, Target: "user:" + u.ID,
			Reason:  fmt.Sprintf("%d wrong passwords in a row", c.FailedSignIns),
			Details: audit.Details("username", u.Username, "source", source, "until", until.Format(time.RFC3339), "lock", c.Lockouts+1, "duration", d.String())})
	})
}

// lockedSignIn refuses a sign-in while the user is locked. The attempts are audited at
// most once per user and minute, with how many were left out.
func (s *Service) lockedSignIn(ctx context.Context, u store.User, source string, until, now time.Time) error {
	if held, ok := s.anon.AllowCount("signin-locked|"+u.ID, now); ok {
		s.auditAnonymous(ctx, source, audit.Entry{Actor: AnonymousActor, Action: audit.ActionSignInFailed, Target: "user:" + u.ID,
			Reason: "sign-in locked", Details: audit.Details("username", u.Username, "method", store.SessionPassword,
				"source", source, "until", until.Format(time.RFC3339), "suppressed", held)})
	}
	s.obs.Denial(CodeLocked)
	return errLocked(until, now)
}

// unknownSignIn refuses a username no user has, the way a user's wrong password is
// refused: after the same hashing work, with the same answer, audited the same way (each
// failure, then attempts while locked at most once a minute), and locked out like a user
// (in memory), so that neither the answer, its time nor a lock tells which usernames
// exist.
func (s *Service) unknownSignIn(ctx context.Context, username, password, source string, now time.Time) error {
	key := strings.ToLower(username)
	if until, locked := s.ghosts.locked(key, now); locked {
		if held, ok := s.anon.AllowCount("signin-locked|"+key, now); ok {
			s.auditAnonymous(ctx, source, audit.Entry{Actor: AnonymousActor, Action: audit.ActionSignInFailed, Reason: "sign-in locked",
				Details: audit.Details("username", username, "method", store.SessionPassword, "source", source,
					"until", until.Format(time.RFC3339), "suppressed", held)})
		}
		s.obs.Denial(CodeLocked)
		return errLocked(until, now)
	}
	if _, _, err := s.hasher.verify(ctx, "", password); err != nil {
		return err
	}
	refusal := errWrongPassword()
	failures, lock, until := s.ghosts.fail(key, now, s.signin)
	entries := []audit.Entry{{Actor: AnonymousActor, Action: audit.ActionSignInFailed, Reason: "unknown username",
		Details: audit.Details("username", username, "method", store.SessionPassword, "source", source, "failures", failures)}}
	if !until.IsZero() {
		refusal = errLocked(until, now)
		entries = append(entries, audit.Entry{Actor: AnonymousActor, Action: audit.ActionSignInLocked,
			Reason: fmt.Sprintf("%d wrong passwords in a row", failures),
			Details: audit.Details("username", username, "source", source, "until", until.Format(time.RFC3339), "lock", lock,
				"duration", until.Sub(now).String())})
	}
	s.auditAnonymous(ctx, source, entries...)
	s.obs.Denial(refusal.Code)
	return refusal
}

// auditAnonymous records entries about a request nobody is known for; a failure to is
// logged, not returned: the request is refused anyway.
func (s *Service) auditAnonymous(ctx context.Context, source string, es ...audit.Entry) {
	err := s.update(ctx, func(t *txn) error {
		for _, e := range es {
			if err := t.audit(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Warn().Err(err).Str("source", source).Msg("cannot audit a refused sign-in")
	}
}

// signInRefused records a refused sign-in of a known user (disabled, or an identity that
// cannot be linked) and makes err the operation's answer.
func (t *txn) signInRefused(ctx context.Context, u store.User, method, source string, err *Error) error {
	target := ""
	if u.ID != "" {
		target = "user:" + u.ID
	}
	if e := t.audit(ctx, audit.Entry{Actor: AnonymousActor, Action: audit.ActionSignInFailed, Target: target, Reason: err.Msg,
		Details: audit.Details("username", u.Username, "method", method, "source", source, "code", string(err.Code))}); e != nil {
		return e
	}
	t.refusal = err
	t.events = append(t.events, func(o Observer) { o.Denial(err.Code) })
	return nil
}

// ghostLocks is the lockout of usernames that no user has, kept in memory: what a real
// user's row keeps in the store.
type ghostLocks struct {
	mu   sync.Mutex // guards m
	m    map[string]*ghost
	full int
}

type ghost struct {
	failures, lockouts int
	until, last        time.Time
}

func newGhostLocks() *ghostLocks { return &ghostLocks{m: map[string]*ghost{}, full: maxTracked} }

func (g *ghostLocks) locked(key string, now time.Time) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e, ok := g.m[key]; ok && now.Before(e.until) {
		return e.until, true
	}
	return time.Time{}, false
}

// fail counts a failure of key and returns the failures in a row, and the lock it
// starts, if it does: its number and end (zero when none).
func (g *ghostLocks) fail(key string, now time.Time, o SignInOptions) (failures, lock int, until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.m[key]
	if !ok {
		if len(g.m) >= g.full {
			// Forget the usernames untouched for longer than the longest lock: their
			// next lock would be the first anyway for most.
			for k, e := range g.m {
				if now.Sub(e.last) > o.LockoutMax {
					delete(g.m, k)
				}
			}
			if len(g.m) >= g.full {
				return 1, 0, time.Time{}
			}
		}
		e = &ghost{}
		g.m[key] = e
	}
	e.last = now
	e.failures++
	if failures = e.failures; failures < o.LockoutAttempts {
		return failures, 0, time.Time{}
	}
	e.until = now.Add(o.lockFor(e.lockouts))
	e.failures = 0
	e.lockouts++
	return failures, e.lockouts, e.until
}
