package service_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
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
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st, err := store.Open(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	clk := &clock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	if o.Password == (service.PasswordParams{}) {
		o.Password = cheapHashing
	}
	s, err := service.New(service.Options{Store: st, Logger: log, Now: clk.now, SignIn: o})
	if err != nil {
		t.Fatal(err)
	}
	r := &signinRig{t: t, ctx: ctx, s: s, st: st, clock: clk}
	if _, err := s.Bootstrap(ctx, func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	au, err := st.GetUserByUsername(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	r.admin = service.ActorFor(au)
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

func bothStores(t *testing.T, fn func(t *testing.T, cfg store.Config)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, sqlite(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)})
	})
}

var _ = errors.New

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
