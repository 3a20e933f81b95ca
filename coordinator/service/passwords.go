package service

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Password rules. The minimum follows NIST SP 800-63B for a password that is the only
// factor; the maximum bounds the hashing work one request can ask for.
const (
	MinPasswordLength = 12   // characters
	MaxPasswordBytes  = 1024 // bytes of UTF-8
)

// PasswordParams are the argon2id parameters new hashes are made with. Every hash records
// its own, so a hash made with older parameters still verifies, and is made again with
// the current ones at its owner's next sign-in.
type PasswordParams struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8
}

// DefaultPasswordParams are RFC 9106's second recommended choice (64 MiB, 3 passes) with
// the 2 lanes a small coordinator has cores for: about a tenth of a second a sign-in.
var DefaultPasswordParams = PasswordParams{Memory: 64 * 1024, Time: 3, Threads: 2}

const (
	argonSaltLen = 16
	argonKeyLen  = 32
	// Bounds on the parameters a stored hash may name: a hash tampered with in the
	// database must not make a sign-in take the coordinator's memory.
	argonMaxMemory  = 1 << 20 // KiB: 1 GiB
	argonMaxTime    = 64
	argonMaxThreads = 64
)

var b64 = base64.RawStdEncoding

// encode is the PHC string form: $argon2id$v=19$m=65536,t=3,p=2$<salt>$<hash>.
func (p PasswordParams) encode(salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

func (p PasswordParams) valid() error {
	if p.Memory < 8*uint32(p.Threads) || p.Memory > argonMaxMemory || p.Time < 1 || p.Time > argonMaxTime ||
		p.Threads < 1 || p.Threads > argonMaxThreads {
		return fmt.Errorf("argon2id parameters m=%d,t=%d,p=%d are out of bounds (memory 8 KiB per thread to %d KiB, 1 to %d passes, 1 to %d threads)",
			p.Memory, p.Time, p.Threads, argonMaxMemory, argonMaxTime, argonMaxThreads)
	}
	return nil
}

// hashPassword makes an encoded argon2id hash of pw with a new random salt.
func hashPassword(pw string, p PasswordParams) string {
	salt := make([]byte, argonSaltLen)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails
	return p.encode(salt, argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, argonKeyLen))
}

// decodeHash reads an encoded hash.
func decodeHash(encoded string) (p PasswordParams, salt, key []byte, err error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, errors.New("not an argon2id hash")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return p, nil, nil, fmt.Errorf("argon2 version %q is not %d", parts[2], argon2.Version)
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return p, nil, nil, fmt.Errorf("argon2id parameters %q: %w", parts[3], err)
	}
	if err := p.valid(); err != nil {
		return p, nil, nil, err
	}
	if salt, err = b64.DecodeString(parts[4]); err != nil || len(salt) < 8 {
		return p, nil, nil, errors.New("bad salt")
	}
	if key, err = b64.DecodeString(parts[5]); err != nil || len(key) < 16 {
		return p, nil, nil, errors.New("bad hash")
	}
	return p, salt, key, nil
}

// verifyPassword reports whether pw matches the encoded hash, comparing in constant time,
// and whether the hash should be made again with the current parameters.
func verifyPassword(encoded, pw string, current PasswordParams) (ok, rehash bool, err error) {
	p, salt, key, err := decodeHash(encoded)
	if err != nil {
		return false, false, err
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, uint32(len(key)))
	ok = subtle.ConstantTimeCompare(got, key) == 1
	return ok, ok && (p != current || len(key) != argonKeyLen || len(salt) != argonSaltLen), nil
}

// checkNewPassword refuses a password too short, too long or not text.
func checkNewPassword(username, pw string) error {
	switch n := utf8.RuneCountInString(pw); {
	case pw == "":
		return badRequest("password", "is required")
	case len(pw) > MaxPasswordBytes:
		return badRequest("password", "is %d bytes long; at most %d", len(pw), MaxPasswordBytes)
	case !utf8.ValidString(pw):
		return badRequest("password", "is not valid UTF-8 text")
	case strings.ContainsAny(pw, "\x00\r\n"):
		return badRequest("password", "holds a line break or a NUL character")
	case n < MinPasswordLength:
		return badRequest("password", "is %d characters long; use at least %d (a few words make a long password easy to remember)", n, MinPasswordLength)
	case strings.EqualFold(strings.TrimSpace(pw), username):
		return badRequest("password", "is the username; choose another")
	}
	return nil
}

// hasher runs password hashes, a few at a time: each takes the parameters' memory, so a
// burst of sign-ins waits its turn instead of taking all the coordinator's memory.
type hasher struct {
	params PasswordParams
	slots  chan struct{}

	dummySalt []byte // what a password is hashed with when there is no hash to check it against
}

func newHasher(p PasswordParams, concurrent int) *hasher {
	salt := make([]byte, argonSaltLen)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails
	return &hasher{params: p, slots: make(chan struct{}, max(concurrent, 1)), dummySalt: salt}
}

func (h *hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return internal(fmt.Errorf("waiting to hash a password: %w", ctx.Err()))
	}
}

func (h *hasher) release() { <-h.slots }

// hash makes the encoded hash of a new password.
func (h *hasher) hash(ctx context.Context, pw string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	return hashPassword(pw, h.params), nil
}

// verify checks pw against encoded. An empty encoded (a user without a password, or no
// user at all) matches nothing after the same work as a real check: the password is
// hashed with the current parameters all the same.
func (h *hasher) verify(ctx context.Context, encoded, pw string) (ok, rehash bool, err error) {
	if err := h.acquire(ctx); err != nil {
		return false, false, err
	}
	defer h.release()
	if encoded == "" {
		_ = argon2.IDKey([]byte(pw), h.dummySalt, h.params.Time, h.params.Memory, h.params.Threads, argonKeyLen)
		return false, false, nil
	}
	return verifyPassword(encoded, pw, h.params)
}

// SetPassword sets a person's password for signing in to the console: anyone their own,
// a holder of manage_users anyone's. It ends the person's other sessions (all of them when
// set by someone else) and clears their failures and lock. The audit entry never holds
// the password.
func (s *Service) SetPassword(ctx context.Context, by Actor, username, password string) error {
	actor := by.user
	const op = "set password"
	self := strings.EqualFold(strings.TrimSpace(username), actor.Username)
	if self {
		// The actor as they are now: a user disabled since their session was read is not
		// one to change anything.
		cur, err := s.st.GetUser(ctx, actor.ID)
		if err != nil {
			return AsError(err)
		}
		if cur.Disabled {
			return s.deny(ctx, cur, op, "", "user:"+cur.ID, forbidden("%s is disabled", cur.Username))
		}
	} else if _, err := s.authorize(ctx, actor, op, jobs.PermManageUsers, ""); err != nil {
		return err
	}
	if err := checkNewPassword(username, password); err != nil {
		return err
	}
	encoded, err := s.hasher.hash(ctx, password)
	if err != nil {
		return err
	}
	return s.update(ctx, func(t *txn) error {
		u, err := t.GetUserByUsername(ctx, username)
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeNotFound, "", "no user named %q", username)
		}
		if err != nil {
			return err
		}
		if err := t.SetPasswordHash(ctx, u.ID, encoded, t.now); err != nil {
			return err
		}
		keep := ""
		if u.ID == actor.ID {
			keep = by.session // the session that changed its own password stays signed in
		}
		ended, err := t.endUserSessions(ctx, u.ID, keep, store.SessionPasswordChanged)
		if err != nil {
			return err
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionPasswordSet, Target: "user:" + u.ID,
			Details: audit.Details("username", u.Username, "sessions_ended", ended)})
	})
}

// ChangePassword changes the actor's own password, given the current one: what a console
// page offers, where a session left open must not be enough to take the account over. A
// wrong current password counts towards the lockout like a failed sign-in; then it is
// SetPassword: the actor's other sessions end, audited.
func (s *Service) ChangePassword(ctx context.Context, by Actor, current, newPassword, source string) error {
	switch {
	case current == "":
		return badRequest("current_password", "is required")
	case len(current) > MaxPasswordBytes:
		return badRequest("current_password", "is wrong")
	}
	if err := checkNewPassword(by.user.Username, newPassword); err != nil {
		return err
	}
	if current == newPassword {
		return badRequest("password", "is the current password; choose another")
	}
	if _, err := s.checkPassword(ctx, by.user.Username, current, source, nil); err != nil {
		if errors.Is(err, &Error{Code: CodeUnauthenticated}) {
			return badRequest("current_password", "is wrong (someone who never had a password is given one by an administrator: tokenfleetctl user password)")
		}
		return err
	}
	return s.SetPassword(ctx, by, by.user.Username, newPassword)
}
