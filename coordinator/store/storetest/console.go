package storetest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func testCredentials(t *testing.T, h *harness) {
	f := newFixture(t, h)
	c := must(h.s.GetCredential(h.ctx, f.holder.ID))(t)
	equal(t, "a new user's credential", c, store.Credential{UserID: f.holder.ID})
	wantErr(t, try(h, func(tx store.Tx) (store.Credential, error) { return tx.GetCredential(h.ctx, "nope") }), store.ErrNotFound)

	const hash = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
	h.tx(t, func(tx store.Tx) error { return tx.SetPasswordHash(h.ctx, f.holder.ID, hash, base) })
	c = must(h.s.GetCredential(h.ctx, f.holder.ID))(t)
	equal(t, "password set", c, store.Credential{UserID: f.holder.ID, PasswordHash: hash, PasswordSet: stored(base)})
	wantErr(t, try(h, func(tx store.Tx) (int, error) { return 0, tx.SetPasswordHash(h.ctx, f.holder.ID, "plain text", base) }), store.ErrInvalid)
	wantErr(t, try(h, func(tx store.Tx) (int, error) { return 0, tx.SetPasswordHash(h.ctx, "nope", hash, base) }), store.ErrNotFound)

	// Failures count up; a lock clears them and counts itself.
	for i := 1; i <= 3; i++ {
		c = do(t, h, func(tx store.Tx) (store.Credential, error) { return tx.AddSignInFailure(h.ctx, f.holder.ID, base) })
		if c.FailedSignIns != i || c.PasswordHash != hash {
			t.Fatalf("failure %d: %+v", i, c)
		}
	}
	until := base.Add(time.Minute)
	c = do(t, h, func(tx store.Tx) (store.Credential, error) { return tx.LockSignIn(h.ctx, f.holder.ID, until) })
	locked := store.Credential{UserID: f.holder.ID, PasswordHash: hash, PasswordSet: stored(base), Lockouts: 1, LockedUntil: stored(until)}
	equal(t, "locked", c, locked)
	// While locked, a failure is not counted; from the lock's end on, it is.
	c = do(t, h, func(tx store.Tx) (store.Credential, error) {
		return tx.AddSignInFailure(h.ctx, f.holder.ID, until.Add(-time.Second))
	})
	equal(t, "failure while locked", c, locked)
	c = do(t, h, func(tx store.Tx) (store.Credential, error) { return tx.AddSignInFailure(h.ctx, f.holder.ID, until) })
	if c.FailedSignIns != 1 {
		t.Fatalf("failure at the lock's end: %+v", c)
	}
	wantErr(t, try(h, func(tx store.Tx) (store.Credential, error) { return tx.AddSignInFailure(h.ctx, "nope", base) }), store.ErrNotFound)
	c = do(t, h, func(tx store.Tx) (store.Credential, error) {
		return tx.LockSignIn(h.ctx, f.holder.ID, until.Add(time.Minute))
	})
	if c.Lockouts != 2 || c.FailedSignIns != 0 || !c.LockedUntil.Equal(stored(until.Add(time.Minute))) {
		t.Fatalf("second lock: %+v", c)
	}
	wantErr(t, try(h, func(tx store.Tx) (store.Credential, error) { return tx.LockSignIn(h.ctx, f.holder.ID, time.Time{}) }), store.ErrInvalid)
	h.tx(t, func(tx store.Tx) error { return tx.ResetSignInFailures(h.ctx, f.holder.ID) })
	equal(t, "reset", must(h.s.GetCredential(h.ctx, f.holder.ID))(t), store.Credential{UserID: f.holder.ID, PasswordHash: hash, PasswordSet: stored(base)})
	wantErr(t, try(h, func(tx store.Tx) (int, error) { return 0, tx.ResetSignInFailures(h.ctx, "nope") }), store.ErrNotFound)

	// Setting a password clears the failures and the lock; "" removes it.
	do(t, h, func(tx store.Tx) (store.Credential, error) { return tx.AddSignInFailure(h.ctx, f.holder.ID, base) })
	do(t, h, func(tx store.Tx) (store.Credential, error) { return tx.LockSignIn(h.ctx, f.holder.ID, until) })
	h.tx(t, func(tx store.Tx) error { return tx.SetPasswordHash(h.ctx, f.holder.ID, "", base) })
	equal(t, "password removed", must(h.s.GetCredential(h.ctx, f.holder.ID))(t), store.Credential{UserID: f.holder.ID})

	// Concurrent failures all count.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := h.s.InTx(h.ctx, func(tx store.Tx) error { _, err := tx.AddSignInFailure(h.ctx, f.holder.ID, base); return err }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if c := must(h.s.GetCredential(h.ctx, f.holder.ID))(t); c.FailedSignIns != 8 {
		t.Fatalf("8 concurrent failures counted as %d", c.FailedSignIns)
	}
	// The user's other fields are untouched by all this, and the user's record does not
	// carry the hash.
	equal(t, "user", must(h.s.GetUser(h.ctx, f.holder.ID))(t), f.holder)
}

func testSessions(t *testing.T, h *harness) {
	f := newFixture(t, h)
	newSession := func(userID string, at time.Time) (store.Session, string) {
		t.Helper()
		var s store.Session
		var secret string
		h.tx(t, func(tx store.Tx) error {
			var err error
			s, secret, err = tx.CreateSession(h.ctx, store.Session{UserID: userID, Method: store.SessionPassword, Source: "192.0.2.1",
				Created: at, IdleExpires: at.Add(30 * time.Minute), Expires: at.Add(12 * time.Hour)})
			return err
		})
		return s, secret
	}
	s1, sec1 := newSession(f.requester.ID, base)
	if s1.ID == "" || len(s1.CSRF) < 43 || !strings.HasPrefix(sec1, "tfs_") || len(sec1) < 4+52 {
		t.Fatalf("session %+v, secret %q", s1, sec1)
	}
	want := store.Session{ID: s1.ID, UserID: f.requester.ID, Method: store.SessionPassword, CSRF: s1.CSRF, Source: "192.0.2.1",
		Created: stored(base), LastSeen: stored(base), IdleExpires: stored(base.Add(30 * time.Minute)), Expires: stored(base.Add(12 * time.Hour))}
	equal(t, "created", s1, want)
	equal(t, "looked up", must(h.s.LookupSession(h.ctx, sec1))(t), want)
	equal(t, "by ID", must(h.s.GetSession(h.ctx, s1.ID))(t), want)
	for _, bad := range []string{"", "tfs_", sec1[:len(sec1)-1], "x" + sec1, s1.ID, s1.CSRF, strings.Repeat("tfs_", 100)} {
		wantErr(t, try(h, func(tx store.Tx) (store.Session, error) { return tx.LookupSession(h.ctx, bad) }), store.ErrNotFound)
	}
	for name, s := range map[string]store.Session{
		"no user":        {Method: store.SessionPassword, IdleExpires: base.Add(time.Hour), Expires: base.Add(time.Hour)},
		"unknown method": {UserID: f.requester.ID, Method: "kerberos", IdleExpires: base.Add(time.Hour), Expires: base.Add(time.Hour)},
		"no ends":        {UserID: f.requester.ID, Method: store.SessionOIDC, Created: base},
		"unknown user":   {UserID: "nope", Method: store.SessionOIDC, Created: base, IdleExpires: base.Add(time.Hour), Expires: base.Add(time.Hour)},
	} {
		err := try(h, func(tx store.Tx) (string, error) { _, sec, err := tx.CreateSession(h.ctx, s); return sec, err })
		if err == nil {
			t.Fatalf("%s: session created", name)
		}
	}

	// A use is written at most once a minute.
	h.tx(t, func(tx store.Tx) error {
		return tx.TouchSession(h.ctx, s1.ID, base.Add(30*time.Second), base.Add(31*time.Minute))
	})
	equal(t, "touched within a minute", must(h.s.GetSession(h.ctx, s1.ID))(t).LastSeen, stored(base))
	h.tx(t, func(tx store.Tx) error {
		return tx.TouchSession(h.ctx, s1.ID, base.Add(2*time.Minute), base.Add(32*time.Minute))
	})
	got := must(h.s.GetSession(h.ctx, s1.ID))(t)
	if !got.LastSeen.Equal(stored(base.Add(2*time.Minute))) || !got.IdleExpires.Equal(stored(base.Add(32*time.Minute))) {
		t.Fatalf("touched after two minutes: %+v", got)
	}
	wantErr(t, try(h, func(tx store.Tx) (int, error) { return 0, tx.TouchSession(h.ctx, "nope", base, base) }), store.ErrNotFound)

	// Open sessions, by user, neither ended nor expired.
	s2, _ := newSession(f.requester.ID, base.Add(time.Minute))
	s3, _ := newSession(f.requester.ID, base.Add(2*time.Minute))
	sOther, _ := newSession(f.approver.ID, base)
	open := must(h.s.ListOpenSessions(h.ctx, f.requester.ID, base.Add(10*time.Minute)))(t)
	if len(open) != 3 || open[0].ID != s1.ID || open[2].ID != s3.ID {
		t.Fatalf("open sessions %+v", open)
	}
	if open := must(h.s.ListOpenSessions(h.ctx, f.requester.ID, base.Add(31*time.Minute+30*time.Second)))(t); len(open) != 2 || open[1].ID != s3.ID {
		t.Fatalf("open sessions once the second is idle: %+v", open)
	}

	// Ending: once; the user's others at once, but one.
	ended := do(t, h, func(tx store.Tx) (store.Session, error) {
		return tx.EndSession(h.ctx, s2.ID, base.Add(5*time.Minute), store.SessionSignedOut)
	})
	if !ended.Ended.Equal(stored(base.Add(5*time.Minute))) || ended.EndReason != store.SessionSignedOut {
		t.Fatalf("ended %+v", ended)
	}
	wantErr(t, try(h, func(tx store.Tx) (store.Session, error) {
		return tx.EndSession(h.ctx, s2.ID, base.Add(6*time.Minute), store.SessionIdle)
	}), store.ErrConflict)
	wantErr(t, try(h, func(tx store.Tx) (store.Session, error) { return tx.EndSession(h.ctx, "nope", base, store.SessionIdle) }), store.ErrNotFound)
	wantErr(t, try(h, func(tx store.Tx) (store.Session, error) { return tx.EndSession(h.ctx, s3.ID, base, "") }), store.ErrInvalid)
	// A touch leaves an ended session as it is.
	h.tx(t, func(tx store.Tx) error {
		return tx.TouchSession(h.ctx, s2.ID, base.Add(time.Hour), base.Add(2*time.Hour))
	})
	equal(t, "ended session touched", must(h.s.GetSession(h.ctx, s2.ID))(t), ended)
	all := do(t, h, func(tx store.Tx) ([]store.Session, error) {
		return tx.EndUserSessions(h.ctx, f.requester.ID, s3.ID, base.Add(7*time.Minute), store.SessionPasswordChanged)
	})
	if len(all) != 1 || all[0].ID != s1.ID || all[0].EndReason != store.SessionPasswordChanged {
		t.Fatalf("ended the others: %+v", all)
	}
	all = do(t, h, func(tx store.Tx) ([]store.Session, error) {
		return tx.EndUserSessions(h.ctx, f.requester.ID, "", base.Add(8*time.Minute), store.SessionUserDisabled)
	})
	if len(all) != 1 || all[0].ID != s3.ID {
		t.Fatalf("ended all: %+v", all)
	}
	if open := must(h.s.ListOpenSessions(h.ctx, f.requester.ID, base))(t); len(open) != 0 {
		t.Fatalf("open after ending all: %+v", open)
	}
	equal(t, "another user's session", must(h.s.GetSession(h.ctx, sOther.ID))(t).Ended, time.Time{})

	// Purging drops what ended or expired before the time given.
	n := do(t, h, func(tx store.Tx) (int64, error) { return tx.PurgeSessions(h.ctx, base.Add(time.Hour)) })
	if n != 3 {
		t.Fatalf("purged %d, want the 3 ended", n)
	}
	n = do(t, h, func(tx store.Tx) (int64, error) { return tx.PurgeSessions(h.ctx, base.Add(13*time.Hour)) })
	if n != 1 {
		t.Fatalf("purged %d, want the expired one", n)
	}
	wantErr(t, try(h, func(tx store.Tx) (store.Session, error) { return tx.LookupSession(h.ctx, sec1) }), store.ErrNotFound)
}

// testSessionStorage: the store keeps the SHA-256 of a session's secret, never the secret.
func testSessionStorage(t *testing.T, h *harness) {
	f := newFixture(t, h)
	var secret string
	h.tx(t, func(tx store.Tx) error {
		var err error
		_, secret, err = tx.CreateSession(h.ctx, store.Session{UserID: f.holder.ID, Method: store.SessionOIDC,
			IdleExpires: base.Add(time.Hour), Expires: base.Add(time.Hour), Created: base})
		return err
	})
	wantHash := hashOf([]byte(secret))
	body := strings.TrimPrefix(secret, "tfs_")
	cols, rows := tableText(t, h, "sessions")
	sawHash := false
	for _, row := range rows {
		for i, s := range row {
			if strings.Contains(s, body) {
				t.Fatalf("column %s holds the session secret in clear", cols[i])
			}
			sawHash = sawHash || s == wantHash
		}
	}
	if !sawHash {
		t.Fatal("no column holds the secret's SHA-256")
	}
}

func testOIDCIdentities(t *testing.T, h *harness) {
	f := newFixture(t, h)
	const iss = "https://idp.example.test"
	o := do(t, h, func(tx store.Tx) (store.OIDCIdentity, error) {
		return tx.LinkOIDCIdentity(h.ctx, store.OIDCIdentity{Issuer: iss, Subject: "s-1", UserID: f.holder.ID, Email: "a@acme.test", Created: base})
	})
	want := store.OIDCIdentity{Issuer: iss, Subject: "s-1", UserID: f.holder.ID, Email: "a@acme.test", Created: stored(base), LastUsed: stored(base)}
	equal(t, "linked", o, want)
	equal(t, "get", must(h.s.GetOIDCIdentity(h.ctx, iss, "s-1"))(t), want)
	wantErr(t, try(h, func(tx store.Tx) (store.OIDCIdentity, error) { return tx.GetOIDCIdentity(h.ctx, iss, "S-1") }), store.ErrNotFound)
	wantErr(t, try(h, func(tx store.Tx) (store.OIDCIdentity, error) { return tx.GetOIDCIdentity(h.ctx, iss+"/", "s-1") }), store.ErrNotFound)
	// (issuer, subject) is unique: a second link, even to another user, is a conflict.
	wantErr(t, try(h, func(tx store.Tx) (store.OIDCIdentity, error) {
		return tx.LinkOIDCIdentity(h.ctx, store.OIDCIdentity{Issuer: iss, Subject: "s-1", UserID: f.approver.ID})
	}), store.ErrConflict)
	for name, bad := range map[string]store.OIDCIdentity{
		"no issuer":    {Subject: "s", UserID: f.holder.ID},
		"no subject":   {Issuer: iss, UserID: f.holder.ID},
		"no user":      {Issuer: iss, Subject: "s-9"},
		"unknown user": {Issuer: iss, Subject: "s-9", UserID: "nope"},
	} {
		if err := try(h, func(tx store.Tx) (store.OIDCIdentity, error) { return tx.LinkOIDCIdentity(h.ctx, bad) }); err == nil {
			t.Fatalf("%s: linked", name)
		}
	}
	do(t, h, func(tx store.Tx) (store.OIDCIdentity, error) {
		return tx.LinkOIDCIdentity(h.ctx, store.OIDCIdentity{Issuer: "https://b.example.test", Subject: "s-1", UserID: f.holder.ID})
	})
	links := must(h.s.ListOIDCIdentities(h.ctx, f.holder.ID))(t)
	if len(links) != 2 || links[0].Issuer != "https://b.example.test" || links[1].Issuer != iss {
		t.Fatalf("links %+v", links)
	}
	h.tx(t, func(tx store.Tx) error {
		return tx.TouchOIDCIdentity(h.ctx, iss, "s-1", "alice@acme.test", base.Add(time.Hour))
	})
	got := must(h.s.GetOIDCIdentity(h.ctx, iss, "s-1"))(t)
	if got.Email != "alice@acme.test" || !got.LastUsed.Equal(stored(base.Add(time.Hour))) || !got.Created.Equal(stored(base)) {
		t.Fatalf("touched %+v", got)
	}
	wantErr(t, try(h, func(tx store.Tx) (int, error) { return 0, tx.TouchOIDCIdentity(h.ctx, iss, "nope", "", base) }), store.ErrNotFound)

	// Unlinking removes the user's links, and only theirs; the subject may be linked again.
	do(t, h, func(tx store.Tx) (store.OIDCIdentity, error) {
		return tx.LinkOIDCIdentity(h.ctx, store.OIDCIdentity{Issuer: iss, Subject: "s-2", UserID: f.approver.ID})
	})
	gone := do(t, h, func(tx store.Tx) ([]store.OIDCIdentity, error) { return tx.UnlinkOIDCIdentities(h.ctx, f.holder.ID) })
	if len(gone) != 2 {
		t.Fatalf("unlinked %+v", gone)
	}
	if links := must(h.s.ListOIDCIdentities(h.ctx, f.holder.ID))(t); len(links) != 0 {
		t.Fatalf("links left %+v", links)
	}
	if links := must(h.s.ListOIDCIdentities(h.ctx, f.approver.ID))(t); len(links) != 1 {
		t.Fatalf("another user's links %+v", links)
	}
	if gone := do(t, h, func(tx store.Tx) ([]store.OIDCIdentity, error) { return tx.UnlinkOIDCIdentities(h.ctx, f.holder.ID) }); len(gone) != 0 {
		t.Fatalf("unlinked again %+v", gone)
	}
	do(t, h, func(tx store.Tx) (store.OIDCIdentity, error) {
		return tx.LinkOIDCIdentity(h.ctx, store.OIDCIdentity{Issuer: iss, Subject: "s-1", UserID: f.approver.ID})
	})
}
