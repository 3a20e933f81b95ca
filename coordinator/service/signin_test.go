package service_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// cheapHashing keeps the tests' password hashes fast; the parameters are recorded in
// each hash, so they verify like production ones.
var cheapHashing = service.PasswordParams{Memory: 1024, Time: 1, Threads: 1}

const goodPassword = "correct horse battery staple"

// signinRig is a service over a store with an administrator, a help-desk operator and
// an approver of Acme, on a clock the test moves.
type signinRig struct {
	t               *testing.T
	ctx             context.Context
	s               *service.Service
	st              store.Store
	clock           *clock
	admin, hd, boss service.Actor
}

func newSigninRig(t *testing.T, cfg store.Config, o service.SignInOptions) *signinRig {
	t.Helper()
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	if o.Password == (service.PasswordParams{}) {
		o.Password = cheapHashing
	}
	s, st := openWith(t, cfg, service.Options{Now: clk.now, SignIn: o})
	r := &signinRig{t: t, ctx: ctx, s: s, st: st, clock: clk}
	r.admin = bootstrapAdmin(t, s, st)
	if _, err := s.CreateOrganization(ctx, r.admin, "Acme"); err != nil {
		t.Fatal(err)
	}
	r.hd = r.user("hank", jobs.RoleHelpdesk)
	r.boss = r.user("bea", jobs.RoleApprover)
	return r
}

func (r *signinRig) user(name string, roles ...jobs.Role) service.Actor {
	r.t.Helper()
	u, err := r.s.CreateUser(r.ctx, r.admin, service.UserRequest{Username: name, DisplayName: name, Organization: "Acme", Roles: roles})
	if err != nil {
		r.t.Fatal(err)
	}
	return service.ActorFor(u.User)
}

func (r *signinRig) setPassword(by service.Actor, username, pw string) {
	r.t.Helper()
	if err := r.s.SetPassword(r.ctx, by, username, pw); err != nil {
		r.t.Fatalf("set password of %s: %v", username, err)
	}
}

// signIn signs in with a password and starts a session.
func (r *signinRig) signIn(username, pw string) (string, service.Session) {
	r.t.Helper()
	a, err := r.s.SignInPassword(r.ctx, username, pw, "192.0.2.7")
	if err != nil {
		r.t.Fatalf("sign in as %s: %v", username, err)
	}
	secret, sess, err := r.s.StartSession(r.ctx, a, "password", "192.0.2.7")
	if err != nil {
		r.t.Fatalf("start session of %s: %v", username, err)
	}
	return secret, sess
}

// actions returns the actions of the audit entries after seq, in order.
func (r *signinRig) auditAfter(seq int64) []audit.Entry {
	r.t.Helper()
	var out []audit.Entry
	for e, err := range r.st.AuditEntries(r.ctx, seq+1) {
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func (r *signinRig) head() int64 {
	r.t.Helper()
	h, err := r.st.AuditHead(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	return h.Seq
}

func wantMsg(t *testing.T, err error, code service.Code, words ...string) {
	t.Helper()
	wantCode(t, err, code)
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not say %q", err, w)
		}
	}
}

func TestPasswordSignInAndSession(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		r := newSigninRig(t, cfg, service.SignInOptions{})
		r.setPassword(r.admin, "hank", goodPassword)
		secret, sess := r.signIn("HANK", goodPassword)
		if secret == "" || sess.ID == "" || sess.CSRF == "" || sess.Method != "password" || sess.User.Username != "hank" ||
			sess.User.Organization != "Acme" || sess.Actor.Username() != "hank" {
			t.Fatalf("session %+v", sess)
		}
		if strings.Contains(secret, sess.ID) || secret == sess.CSRF {
			t.Fatal("the secret holds the session's public ID or its CSRF token")
		}
		got, err := r.s.Session(r.ctx, secret, "192.0.2.7")
		if err != nil || got.ID != sess.ID || got.CSRF != sess.CSRF {
			t.Fatalf("session read back: %+v, %v", got, err)
		}
		if err := r.s.EndSession(r.ctx, secret, "192.0.2.7"); err != nil {
			t.Fatal(err)
		}
		_, err = r.s.Session(r.ctx, secret, "192.0.2.7")
		wantMsg(t, err, service.CodeUnauthenticated, "signed out")
	})
}

// TestPasswordRefusals: a wrong password, an unknown username and a user without a
// password get the same answer; every failure is audited, never with the password.
func TestPasswordRefusals(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		r := newSigninRig(t, cfg, service.SignInOptions{})
		r.setPassword(r.admin, "hank", goodPassword)
		before := r.head()
		var msgs []string
		for _, c := range []struct{ user, pw string }{
			{"hank", "wrong horse battery staple"},
			{"nobody", goodPassword},
			{"bea", goodPassword}, // bea has no password
		} {
			_, err := r.s.SignInPassword(r.ctx, c.user, c.pw, "198.51.100.1")
			wantMsg(t, err, service.CodeUnauthenticated, "wrong username or password")
			msgs = append(msgs, err.Error())
		}
		if msgs[0] != msgs[1] || msgs[1] != msgs[2] {
			t.Fatalf("refusals differ: %q", msgs)
		}
		entries := r.auditAfter(before)
		var reasons []string
		for _, e := range entries {
			if e.Action != audit.ActionSignInFailed || e.Actor != service.AnonymousActor {
				t.Fatalf("entry %s by %s", e.Action, e.Actor)
			}
			reasons = append(reasons, e.Reason)
			if strings.Contains(string(e.Details), "horse") {
				t.Fatalf("the audit log holds a password: %s", e.Details)
			}
		}
		if strings.Join(reasons, ",") != "wrong password,unknown username,wrong password" {
			t.Fatalf("failures audited as %q", reasons)
		}
		// Malformed input is refused before any work, naming the field.
		_, err := r.s.SignInPassword(r.ctx, "hank", strings.Repeat("x", 1025), "")
		wantMsg(t, err, service.CodeBadRequest, "1025 bytes", "1024")
		_, err = r.s.SignInPassword(r.ctx, "", goodPassword, "")
		wantMsg(t, err, service.CodeBadRequest, "username")
		_, err = r.s.SignInPassword(r.ctx, "hank", "", "")
		wantMsg(t, err, service.CodeBadRequest, "password")
	})
}

// TestLockout: five wrong passwords lock sign-in for a minute, the next lock two, then
// four, up to the longest; the right password is refused while locked; a success resets
// the count and the back-off.
func TestLockout(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		r := newSigninRig(t, cfg, service.SignInOptions{LockoutAttempts: 5, LockoutFirst: time.Minute, LockoutMax: 3 * time.Minute})
		r.setPassword(r.admin, "hank", goodPassword)
		fail := func() error {
			_, err := r.s.SignInPassword(r.ctx, "hank", "not the password at all", "198.51.100.2")
			return err
		}
		lock := func(d time.Duration, what string) {
			t.Helper()
			for i := range 4 {
				wantMsg(t, fail(), service.CodeUnauthenticated, "wrong username or password")
				_ = i
			}
			wantMsg(t, fail(), service.CodeLocked, "too many wrong passwords", "locked until", d.String())
			_, err := r.s.SignInPassword(r.ctx, "hank", goodPassword, "198.51.100.2")
			wantMsg(t, err, service.CodeLocked, "try again")
			r.clock.add(d - time.Second)
			_, err = r.s.SignInPassword(r.ctx, "hank", goodPassword, "198.51.100.2")
			wantMsg(t, err, service.CodeLocked, "1s from now")
			r.clock.add(time.Second)
		}
		before := r.head()
		lock(time.Minute, "first")
		lock(2*time.Minute, "second")
		lock(3*time.Minute, "third, capped")
		lock(3*time.Minute, "fourth, capped")
		if _, err := r.s.SignInPassword(r.ctx, "hank", goodPassword, "198.51.100.2"); err != nil {
			t.Fatalf("after the lock: %v", err)
		}
		// The success reset the count and the back-off: four failures do not lock, and the
		// next lock is a minute again.
		for range 4 {
			wantCode(t, fail(), service.CodeUnauthenticated)
		}
		if _, err := r.s.SignInPassword(r.ctx, "hank", goodPassword, ""); err != nil {
			t.Fatalf("fifth attempt right: %v", err)
		}
		lock(time.Minute, "after a success")

		locks, lockedAttempts := 0, 0
		for _, e := range r.auditAfter(before) {
			switch {
			case e.Action == audit.ActionSignInLocked:
				locks++
			case e.Action == audit.ActionSignInFailed && e.Reason == "sign-in locked":
				lockedAttempts++
			}
		}
		if locks != 5 || lockedAttempts == 0 {
			t.Fatalf("audited %d locks and %d attempts while locked", locks, lockedAttempts)
		}
		// An unknown username locks the same way: a lock tells nothing of who exists.
		for range 4 {
			_, err := r.s.SignInPassword(r.ctx, "ghost", goodPassword, "")
			wantCode(t, err, service.CodeUnauthenticated)
		}
		ghostHead := r.head()
		_, err := r.s.SignInPassword(r.ctx, "ghost", goodPassword, "")
		wantMsg(t, err, service.CodeLocked, "1m0s from now")
		_, err = r.s.SignInPassword(r.ctx, "ghost", goodPassword, "")
		wantMsg(t, err, service.CodeLocked, "1m0s from now")
		var ghostActions []string
		for _, e := range r.auditAfter(ghostHead) {
			ghostActions = append(ghostActions, e.Action+":"+e.Reason)
		}
		if strings.Join(ghostActions, " ") != "signin.failed:unknown username signin.locked:5 wrong passwords in a row signin.failed:sign-in locked" {
			t.Fatalf("an unknown username's lock audited as %q", ghostActions)
		}
	})
}

// TestLockoutConcurrent: wrong passwords sent at once lock the account once, after
// exactly the configured number; none is counted against the next lock.
func TestLockoutConcurrent(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		r := newSigninRig(t, cfg, service.SignInOptions{LockoutAttempts: 5})
		r.setPassword(r.admin, "hank", goodPassword)
		before := r.head()
		const n = 16
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				_, err := r.s.SignInPassword(r.ctx, "hank", "a wrong password again", "198.51.100.4")
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		locked := 0
		for err := range errs {
			switch {
			case errors.Is(err, &service.Error{Code: service.CodeLocked}):
				locked++
			case errors.Is(err, &service.Error{Code: service.CodeUnauthenticated}):
			default:
				t.Fatalf("refused with %v", err)
			}
		}
		wrong, locks := 0, 0
		for _, e := range r.auditAfter(before) {
			switch {
			case e.Action == audit.ActionSignInFailed && e.Reason == "wrong password":
				wrong++
			case e.Action == audit.ActionSignInLocked:
				locks++
			}
		}
		if wrong != 5 || locks != 1 || locked != n-4 {
			t.Fatalf("%d failures counted, %d locks, %d refused as locked; want 5, 1, %d", wrong, locks, locked, n-4)
		}
		hank, _ := r.st.GetUserByUsername(r.ctx, "hank")
		if c, err := r.st.GetCredential(r.ctx, hank.ID); err != nil || c.FailedSignIns != 0 || c.Lockouts != 1 {
			t.Fatalf("credential after the burst: %+v, %v", c, err)
		}
		_, err := r.s.SignInPassword(r.ctx, "hank", goodPassword, "")
		wantCode(t, err, service.CodeLocked)
	})
}

// TestSessionTimeouts crosses the idle and absolute ends on the service's clock.
func TestSessionTimeouts(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		r := newSigninRig(t, cfg, service.SignInOptions{SessionIdle: 30 * time.Minute, SessionMax: 2 * time.Hour})
		r.setPassword(r.admin, "hank", goodPassword)
		secret, sess := r.signIn("hank", goodPassword)
		if !sess.IdleExpires.Equal(r.clock.now().Add(30*time.Minute)) || !sess.Expires.Equal(r.clock.now().Add(2*time.Hour)) {
			t.Fatalf("session ends %v / %v", sess.IdleExpires, sess.Expires)
		}
		// A use writes LastSeen at most once a minute.
		r.clock.add(30 * time.Second)
		got, err := r.s.Session(r.ctx, secret, "")
		if err != nil || !got.LastSeen.Equal(sess.Created) {
			t.Fatalf("after 30s: last seen %v (started %v), %v", got.LastSeen, sess.Created, err)
		}
		// Used every 29 minutes, it lives on past its first idle end...
		for range 3 {
			r.clock.add(29 * time.Minute)
			got, err = r.s.Session(r.ctx, secret, "")
			if err != nil {
				t.Fatalf("used within its idle timeout: %v", err)
			}
			if !got.LastSeen.Equal(r.clock.now()) || !got.IdleExpires.Equal(r.clock.now().Add(30*time.Minute)) {
				t.Fatalf("use not recorded: %+v", got)
			}
		}
		stored, err := r.st.GetSession(r.ctx, sess.ID)
		if err != nil || !stored.LastSeen.Equal(r.clock.now()) {
			t.Fatalf("stored last seen %v, %v", stored.LastSeen, err)
		}
		// ...until its absolute end, used or not.
		for r.clock.now().Add(29 * time.Minute).Before(sess.Expires) {
			r.clock.add(29 * time.Minute)
			if _, err := r.s.Session(r.ctx, secret, ""); err != nil {
				t.Fatalf("used within its idle timeout: %v", err)
			}
		}
		r.clock.set(sess.Expires.Add(-time.Second))
		if _, err := r.s.Session(r.ctx, secret, ""); err != nil {
			t.Fatalf("a second before its end: %v", err)
		}
		before := r.head()
		r.clock.add(time.Second)
		_, err = r.s.Session(r.ctx, secret, "")
		wantMsg(t, err, service.CodeUnauthenticated, "time limit", "sign in again")
		_, err = r.s.Session(r.ctx, secret, "")
		wantMsg(t, err, service.CodeUnauthenticated, "reached its time limit")
		es := r.auditAfter(before)
		if len(es) != 1 || es[0].Action != audit.ActionSessionExpired || es[0].Reason != store.SessionExpired || es[0].Target != "session:"+sess.ID {
			t.Fatalf("expiry audited as %+v", es)
		}

		// Idle: not used for the idle timeout ends it.
		secret, _ = r.signIn("hank", goodPassword)
		r.clock.add(30 * time.Minute)
		_, err = r.s.Session(r.ctx, secret, "")
		wantMsg(t, err, service.CodeUnauthenticated, "idle for more than 30m0s")
		_, err = r.s.Session(r.ctx, secret, "")
		wantMsg(t, err, service.CodeUnauthenticated, "idle too long")
	})
}

// TestShortIdleTimeout: with an idle timeout of seconds, a session in use is recorded
// often enough never to reach its idle end.
func TestShortIdleTimeout(t *testing.T) {
	t.Parallel()
	r := newSigninRig(t, sqlite(t), service.SignInOptions{SessionIdle: 8 * time.Second, SessionMax: time.Hour})
	r.setPassword(r.admin, "hank", goodPassword)
	secret, _ := r.signIn("hank", goodPassword)
	for range 20 {
		r.clock.add(3 * time.Second)
		if _, err := r.s.Session(r.ctx, secret, ""); err != nil {
			t.Fatalf("used every 3s with an 8s idle timeout: %v", err)
		}
	}
	r.clock.add(8 * time.Second)
	_, err := r.s.Session(r.ctx, secret, "")
	wantMsg(t, err, service.CodeUnauthenticated, "idle for more than 8s")
}

// TestPurgeSessions: sessions over for longer than the retention are deleted; a browser
// presenting one is then told it is unknown.
func TestPurgeSessions(t *testing.T) {
	t.Parallel()
	r := newSigninRig(t, sqlite(t), service.SignInOptions{SessionIdle: time.Hour, SessionMax: 2 * time.Hour})
	r.setPassword(r.admin, "hank", goodPassword)
	ended, _ := r.signIn("hank", goodPassword)
	if err := r.s.EndSession(r.ctx, ended, ""); err != nil {
		t.Fatal(err)
	}
	open, _ := r.signIn("hank", goodPassword)
	r.clock.add(service.SessionRetention)
	if n, err := r.s.PurgeSessions(r.ctx); err != nil || n != 0 {
		t.Fatalf("purged %d, %v before the retention passed", n, err)
	}
	r.clock.add(2*time.Hour + time.Minute)
	if n, err := r.s.PurgeSessions(r.ctx); err != nil || n != 2 {
		t.Fatalf("purged %d, %v; want the ended one and the expired one", n, err)
	}
	for _, sec := range []string{ended, open} {
		_, err := r.s.Session(r.ctx, sec, "")
		wantMsg(t, err, service.CodeUnauthenticated, "unknown session")
	}
}

// TestSessionRefusals: unknown and ended sessions, and sessions of a disabled user.
func TestSessionRefusals(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		r := newSigninRig(t, cfg, service.SignInOptions{})
		r.setPassword(r.admin, "hank", goodPassword)
		for _, bad := range []string{"tfs_nothing", "garbage", strings.Repeat("a", 4096)} {
			_, err := r.s.Session(r.ctx, bad, "198.51.100.3")
			wantMsg(t, err, service.CodeUnauthenticated, "unknown session")
		}
		_, err := r.s.Session(r.ctx, "", "")
		wantMsg(t, err, service.CodeUnauthenticated, "not signed in")

		secret, sess := r.signIn("hank", goodPassword)
		before := r.head()
		if err := r.s.EndSession(r.ctx, secret, "192.0.2.7"); err != nil {
			t.Fatal(err)
		}
		if err := r.s.EndSession(r.ctx, secret, "192.0.2.7"); err != nil {
			t.Fatalf("signing out twice: %v", err)
		}
		es := r.auditAfter(before)
		if len(es) != 1 || es[0].Action != audit.ActionSessionEnded || es[0].Target != "session:"+sess.ID || es[0].Actor != sess.Actor.ID() {
			t.Fatalf("sign-out audited as %+v", es)
		}
		wantCode(t, r.s.EndSession(r.ctx, "tfs_unknown", ""), service.CodeUnauthenticated)

		// Disabling a user ends their sessions at once, and refuses their sign-in.
		s1, _ := r.signIn("hank", goodPassword)
		s2, _ := r.signIn("hank", goodPassword)
		if _, err := r.s.SetUserDisabled(r.ctx, r.admin, "hank", true, "left the company"); err != nil {
			t.Fatal(err)
		}
		for _, sec := range []string{s1, s2} {
			_, err := r.s.Session(r.ctx, sec, "")
			wantMsg(t, err, service.CodeUnauthenticated, "ended when the user was disabled")
		}
		_, err = r.s.SignInPassword(r.ctx, "hank", goodPassword, "")
		wantMsg(t, err, service.CodeForbidden, "hank is disabled")
		_, err = r.s.SignInPassword(r.ctx, "hank", "a wrong password here", "")
		wantMsg(t, err, service.CodeUnauthenticated, "wrong username or password")
		// An actor read before the user was disabled starts no session.
		_, _, err = r.s.StartSession(r.ctx, r.hd, "password", "")
		wantMsg(t, err, service.CodeForbidden, "disabled")
		_, _, err = r.s.StartSession(r.ctx, r.boss, "kerberos", "")
		wantMsg(t, err, service.CodeBadRequest, "kerberos")
	})
}

// TestSetPassword: who may set whose password; a change ends the user's other sessions;
// the audit entry holds no password.
func TestSetPassword(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		r := newSigninRig(t, cfg, service.SignInOptions{})
		r.setPassword(r.admin, "hank", goodPassword)

		// Bad passwords, named.
		for _, c := range []struct{ pw, says string }{
			{"short pw", "at least 12"},
			{strings.Repeat("é", 513), "1026 bytes"},
			{"", "required"},
			{"line\nbreak in it", "line break"},
			{"  HANK  ", "at least 12"},
			{"hank", "at least 12"},
		} {
			err := r.s.SetPassword(r.ctx, r.hd, "hank", c.pw)
			wantMsg(t, err, service.CodeBadRequest, "password", c.says)
		}
		r.user("hank.the.long.name")
		err := r.s.SetPassword(r.ctx, r.admin, "hank.the.long.name", "HANK.THE.LONG.NAME")
		wantMsg(t, err, service.CodeBadRequest, "is the username")

		// Anyone their own (with the session that changes it kept); nobody else's
		// without manage_users.
		keep, keepSess := r.signIn("hank", goodPassword)
		other, _ := r.signIn("hank", goodPassword)
		const newPW = "a brand new passphrase"
		before := r.head()
		if err := r.s.SetPassword(r.ctx, keepSess.Actor, "hank", newPW); err != nil {
			t.Fatal(err)
		}
		if _, err := r.s.Session(r.ctx, keep, ""); err != nil {
			t.Fatalf("the session that changed its password: %v", err)
		}
		_, err = r.s.Session(r.ctx, other, "")
		wantMsg(t, err, service.CodeUnauthenticated, "password was changed")
		_, err = r.s.SignInPassword(r.ctx, "hank", goodPassword, "")
		wantCode(t, err, service.CodeUnauthenticated)
		if _, err := r.s.SignInPassword(r.ctx, "hank", newPW, ""); err != nil {
			t.Fatalf("new password: %v", err)
		}
		err = r.s.SetPassword(r.ctx, r.hd, "bea", goodPassword)
		wantMsg(t, err, service.CodeForbidden, "manage_users")
		// An administrator sets anyone's: every session of that user ends.
		if err := r.s.SetPassword(r.ctx, r.admin, "hank", goodPassword); err != nil {
			t.Fatal(err)
		}
		_, err = r.s.Session(r.ctx, keep, "")
		wantMsg(t, err, service.CodeUnauthenticated, "password was changed")
		err = r.s.SetPassword(r.ctx, r.admin, "nobody", goodPassword)
		wantCode(t, err, service.CodeNotFound)

		var set, denied int
		for _, e := range r.auditAfter(before) {
			if strings.Contains(string(e.Details), "passphrase") || strings.Contains(string(e.Details), "horse") {
				t.Fatalf("the audit log holds a password: %s %s", e.Action, e.Details)
			}
			switch e.Action {
			case audit.ActionPasswordSet:
				set++
			case audit.ActionAccessDenied:
				denied++
			}
		}
		if set != 2 || denied != 1 {
			t.Fatalf("audited %d password changes and %d denials", set, denied)
		}
		// The store keeps a self-describing argon2id hash.
		hank, _ := r.st.GetUserByUsername(r.ctx, "hank")
		c, err := r.st.GetCredential(r.ctx, hank.ID)
		if err != nil || !strings.HasPrefix(c.PasswordHash, "$argon2id$v=19$m=1024,t=1,p=1$") || strings.Contains(c.PasswordHash, "horse") {
			t.Fatalf("stored hash %q, %v", c.PasswordHash, err)
		}
	})
}

// TestSignInOIDC: an identity is linked to the user of its username at its first sign-in
// and found by the link afterwards; identities that fit no user are refused, naming why.
func TestSignInOIDC(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		r := newSigninRig(t, cfg, service.SignInOptions{UsernameClaim: "upn_short"})
		const iss = "https://idp.example.test/realms/acme"
		before := r.head()
		a, err := r.s.SignInOIDC(r.ctx, service.OIDCIdentity{Issuer: iss, Subject: "sub-hank", Username: "Hank", Email: "hank@acme.test"}, "192.0.2.9")
		if err != nil || a.Username() != "hank" {
			t.Fatalf("first sign-in: %v, %v", a.Username(), err)
		}
		var actions []string
		for _, e := range r.auditAfter(before) {
			actions = append(actions, e.Action)
		}
		if strings.Join(actions, " ") != audit.ActionOIDCLinked+" "+audit.ActionSignIn {
			t.Fatalf("first sign-in audited as %v", actions)
		}
		hank, _ := r.st.GetUserByUsername(r.ctx, "hank")
		link, err := r.st.GetOIDCIdentity(r.ctx, iss, "sub-hank")
		if err != nil || link.UserID != hank.ID || link.Email != "hank@acme.test" {
			t.Fatalf("link %+v, %v", link, err)
		}
		// Later the link decides, whatever the username claim says now.
		a, err = r.s.SignInOIDC(r.ctx, service.OIDCIdentity{Issuer: iss, Subject: "sub-hank", Username: "henry"}, "")
		if err != nil || a.Username() != "hank" {
			t.Fatalf("sign-in by the link: %v, %v", a.Username(), err)
		}
		if _, _, err := r.s.StartSession(r.ctx, a, "oidc", ""); err != nil {
			t.Fatal(err)
		}

		for _, c := range []struct {
			id   service.OIDCIdentity
			code service.Code
			says []string
		}{
			{service.OIDCIdentity{Issuer: iss, Subject: "sub-x", Username: "xavier"}, service.CodeUnauthenticated,
				[]string{`no tokenfleet user is named "xavier"`, "upn_short claim"}},
			{service.OIDCIdentity{Issuer: iss, Subject: "sub-y"}, service.CodeUnauthenticated,
				[]string{"no upn_short claim", "sub-y"}},
			// A username given again to someone else at the provider takes no account over.
			{service.OIDCIdentity{Issuer: iss, Subject: "sub-other", Username: "hank"}, service.CodeUnauthenticated,
				[]string{"linked to another identity", "sub-hank", "tokenfleetctl user unlink-oidc hank"}},
			{service.OIDCIdentity{Subject: "sub-z", Username: "hank"}, service.CodeBadRequest, []string{"no issuer"}},
		} {
			_, err := r.s.SignInOIDC(r.ctx, c.id, "")
			wantMsg(t, err, c.code, c.says...)
		}
		// The same person made anew at the provider: an administrator removes the old link,
		// and the next sign-in links the new subject.
		_, err = r.s.UnlinkOIDC(r.ctx, r.hd, "hank", "new account at the provider")
		wantCode(t, err, service.CodeForbidden)
		_, err = r.s.UnlinkOIDC(r.ctx, r.admin, "hank", " ")
		wantMsg(t, err, service.CodeBadRequest, "reason")
		_, err = r.s.UnlinkOIDC(r.ctx, r.admin, "nobody", "x")
		wantCode(t, err, service.CodeNotFound)
		if n, err := r.s.UnlinkOIDC(r.ctx, r.admin, "hank", "new account at the provider"); err != nil || n != 1 {
			t.Fatalf("unlinked %d, %v", n, err)
		}
		if n, err := r.s.UnlinkOIDC(r.ctx, r.admin, "hank", "again"); err != nil || n != 0 {
			t.Fatalf("unlinked again %d, %v", n, err)
		}
		if a, err := r.s.SignInOIDC(r.ctx, service.OIDCIdentity{Issuer: iss, Subject: "sub-other", Username: "hank"}, ""); err != nil || a.Username() != "hank" {
			t.Fatalf("after the unlink: %v, %v", a.Username(), err)
		}
		// Another issuer's subject links to the same user.
		if _, err := r.s.SignInOIDC(r.ctx, service.OIDCIdentity{Issuer: "https://other.example.test", Subject: "sub-hank", Username: "hank"}, ""); err != nil {
			t.Fatalf("second issuer: %v", err)
		}
		// A disabled user is refused, linked or not.
		if _, err := r.s.SignInOIDC(r.ctx, service.OIDCIdentity{Issuer: iss, Subject: "sub-bea", Username: "bea"}, ""); err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{"hank", "bea"} {
			if _, err := r.s.SetUserDisabled(r.ctx, r.admin, u, true, "on leave"); err != nil {
				t.Fatal(err)
			}
		}
		_, err = r.s.SignInOIDC(r.ctx, service.OIDCIdentity{Issuer: iss, Subject: "sub-other"}, "")
		wantMsg(t, err, service.CodeForbidden, "hank is disabled")
		r.user("carl")
		if _, err := r.s.SetUserDisabled(r.ctx, r.admin, "carl", true, "not yet"); err != nil {
			t.Fatal(err)
		}
		_, err = r.s.SignInOIDC(r.ctx, service.OIDCIdentity{Issuer: iss, Subject: "sub-carl", Username: "carl"}, "")
		wantMsg(t, err, service.CodeForbidden, "carl is disabled")
		if _, err := r.st.GetOIDCIdentity(r.ctx, iss, "sub-carl"); err == nil {
			t.Fatal("a disabled user's identity was linked")
		}
		failed := 0
		for _, e := range r.auditAfter(before) {
			if e.Action == audit.ActionSignInFailed {
				failed++
			}
		}
		if failed != 5 {
			t.Fatalf("%d refused OIDC sign-ins audited, want 5", failed)
		}
	})
}

// TestPasswordRehash: a hash made with older parameters still verifies, and is made again
// with the current ones at the next sign-in.
func TestPasswordRehash(t *testing.T) {
	t.Parallel()
	cfg := sqlite(t)
	r := newSigninRig(t, cfg, service.SignInOptions{})
	r.setPassword(r.admin, "hank", goodPassword)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	stronger := service.PasswordParams{Memory: 2048, Time: 2, Threads: 1}
	s2, err := service.New(service.Options{Store: r.st, Logger: log, Now: r.clock.now, SignIn: service.SignInOptions{Password: stronger}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.SignInPassword(r.ctx, "hank", goodPassword, ""); err != nil {
		t.Fatalf("old hash: %v", err)
	}
	hank, _ := r.st.GetUserByUsername(r.ctx, "hank")
	c, err := r.st.GetCredential(r.ctx, hank.ID)
	if err != nil || !strings.HasPrefix(c.PasswordHash, "$argon2id$v=19$m=2048,t=2,p=1$") {
		t.Fatalf("hash after sign-in %q, %v", c.PasswordHash, err)
	}
	// And the old service verifies the new hash (its parameters are in it).
	if _, err := r.s.SignInPassword(r.ctx, "hank", goodPassword, ""); err != nil {
		t.Fatalf("new hash, old service: %v", err)
	}
	// Bad options are refused.
	_, err = service.New(service.Options{Store: r.st, SignIn: service.SignInOptions{SessionIdle: 2 * time.Hour, SessionMax: time.Hour}})
	if err == nil || !strings.Contains(err.Error(), "idle") {
		t.Fatalf("idle longer than max: %v", err)
	}
}

// TestChangePassword: one's own password, given the current one; a wrong current one
// counts towards the lockout.
func TestChangePassword(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		r := newSigninRig(t, cfg, service.SignInOptions{LockoutAttempts: 3})
		r.setPassword(r.admin, "hank", goodPassword)
		keep, sess := r.signIn("hank", goodPassword)
		other, _ := r.signIn("hank", goodPassword)
		const newPW = "another long passphrase"

		err := r.s.ChangePassword(r.ctx, sess.Actor, "not the current one", newPW, "")
		wantMsg(t, err, service.CodeBadRequest, "current_password", "is wrong")
		err = r.s.ChangePassword(r.ctx, sess.Actor, goodPassword, "short", "")
		wantMsg(t, err, service.CodeBadRequest, "password", "at least 12")
		err = r.s.ChangePassword(r.ctx, sess.Actor, goodPassword, goodPassword, "")
		wantMsg(t, err, service.CodeBadRequest, "is the current password")
		err = r.s.ChangePassword(r.ctx, sess.Actor, "", newPW, "")
		wantMsg(t, err, service.CodeBadRequest, "current_password", "required")
		hank, _ := r.st.GetUserByUsername(r.ctx, "hank")
		if c, _ := r.st.GetCredential(r.ctx, hank.ID); c.FailedSignIns != 1 {
			t.Fatalf("a wrong current password counted %d failures, want 1", c.FailedSignIns)
		}

		before := r.head()
		if err := r.s.ChangePassword(r.ctx, sess.Actor, goodPassword, newPW, "192.0.2.7"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.s.Session(r.ctx, keep, ""); err != nil {
			t.Fatalf("the session that changed the password: %v", err)
		}
		_, err = r.s.Session(r.ctx, other, "")
		wantMsg(t, err, service.CodeUnauthenticated, "password was changed")
		if _, err := r.s.SignInPassword(r.ctx, "hank", newPW, ""); err != nil {
			t.Fatalf("the new password: %v", err)
		}
		var actions []string
		for _, e := range r.auditAfter(before) {
			actions = append(actions, e.Action)
			if strings.Contains(string(e.Details), "passphrase") || strings.Contains(string(e.Details), "horse") {
				t.Fatalf("the audit log holds a password: %s", e.Details)
			}
		}
		if actions[0] != audit.ActionPasswordSet {
			t.Fatalf("change audited as %v", actions)
		}

		// Wrong current passwords lock like failed sign-ins.
		for range 2 {
			wantCode(t, r.s.ChangePassword(r.ctx, sess.Actor, "still not the current one", goodPassword, ""), service.CodeBadRequest)
		}
		wantCode(t, r.s.ChangePassword(r.ctx, sess.Actor, "still not the current one", goodPassword, ""), service.CodeLocked)
		wantCode(t, r.s.ChangePassword(r.ctx, sess.Actor, newPW, goodPassword, ""), service.CodeLocked)

		// Someone who never had a password gets one from an administrator.
		err = r.s.ChangePassword(r.ctx, r.boss, "whatever it may be", newPW, "")
		wantMsg(t, err, service.CodeBadRequest, "current_password", "tokenfleetctl user password")
	})
}
