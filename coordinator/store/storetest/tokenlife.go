package storetest

import (
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

// testTokenLife: a token's record is created at version 1 and moved by compare-and-set,
// each change in its history; temporary tokens are found by their original; a job's token
// request is kept once.
func testTokenLife(t *testing.T, h *harness) {
	f := newFixture(t, h)
	wantErr(t, try(h, func(tx store.Tx) (store.TokenLife, error) { return tx.GetTokenLife(h.ctx, "T1") }), store.ErrNotFound)

	l := store.TokenLife{Serial: "T1", State: tokenlife.Suspended, HolderID: f.holder.ID, Reason: "left at home",
		ChangedBy: f.requester.ID, ChangedAt: base}
	got := do(t, h, func(tx store.Tx) (store.TokenLife, error) {
		return tx.SetTokenLife(h.ctx, l, 0, store.TokenLifeEvent{From: tokenlife.Active})
	})
	want := l
	want.ChangedAt, want.Version = stored(base), 1
	equal(t, "created", got, want)
	equal(t, "read", must(h.s.GetTokenLife(h.ctx, "T1"))(t), want)
	// A second creation, and a change from a stale version, lose.
	wantErr(t, try(h, func(tx store.Tx) (store.TokenLife, error) {
		return tx.SetTokenLife(h.ctx, l, 0, store.TokenLifeEvent{})
	}), store.ErrConflict)
	lost := want
	lost.State, lost.Reason, lost.ChangedAt = tokenlife.Lost, "not found", base.Add(time.Hour)
	wantErr(t, try(h, func(tx store.Tx) (store.TokenLife, error) {
		return tx.SetTokenLife(h.ctx, lost, 7, store.TokenLifeEvent{From: tokenlife.Suspended})
	}), store.ErrConflict)
	got = do(t, h, func(tx store.Tx) (store.TokenLife, error) {
		return tx.SetTokenLife(h.ctx, lost, 1, store.TokenLifeEvent{From: tokenlife.Suspended})
	})
	lost.Version, lost.ChangedAt = 2, stored(lost.ChangedAt)
	equal(t, "moved", got, lost)
	wantErr(t, try(h, func(tx store.Tx) (store.TokenLife, error) {
		bad := lost
		bad.State = "misplaced"
		return tx.SetTokenLife(h.ctx, bad, 2, store.TokenLifeEvent{})
	}), store.ErrInvalid)

	es := must(h.s.ListTokenLifeEvents(h.ctx, "T1"))(t)
	if len(es) != 2 || es[0].From != tokenlife.Active || es[0].To != tokenlife.Suspended || es[0].Reason != "left at home" ||
		es[1].From != tokenlife.Suspended || es[1].To != tokenlife.Lost || !es[1].At.Equal(stored(base.Add(time.Hour))) ||
		es[1].Actor != f.requester.ID {
		t.Errorf("history %+v", es)
	}

	// Temporary tokens by their original.
	for _, s := range []string{"TMP2", "TMP1"} {
		do(t, h, func(tx store.Tx) (store.TokenLife, error) {
			return tx.SetTokenLife(h.ctx, store.TokenLife{Serial: s, State: tokenlife.Active, HolderID: f.holder.ID,
				TemporaryFor: "T1", ChangedBy: "system:tokenlife", ChangedAt: base}, 0, store.TokenLifeEvent{})
		})
	}
	temps := must(h.s.ListTemporaryTokens(h.ctx, "T1"))(t)
	if len(temps) != 2 || temps[0].Serial != "TMP1" || temps[1].Serial != "TMP2" {
		t.Errorf("temporary tokens %+v", temps)
	}
	if none := must(h.s.ListTemporaryTokens(h.ctx, ""))(t); len(none) != 0 {
		t.Errorf("tokens standing in for no token: %+v", none)
	}

	// A job's token request.
	j := do(t, h, func(tx store.Tx) (store.Job, error) { return tx.CreateJob(h.ctx, f.job()) })
	r := store.TokenRequest{JobID: j.ID, Purpose: store.PurposeReplacement, TokenSerial: "T1"}
	h.tx(t, func(tx store.Tx) error { return tx.AddTokenRequest(h.ctx, r) })
	equal(t, "token request", must(h.s.GetTokenRequest(h.ctx, j.ID))(t), r)
	wantErr(t, try(h, func(tx store.Tx) (int, error) { return 0, tx.AddTokenRequest(h.ctx, r) }), store.ErrConflict)
	wantErr(t, try(h, func(tx store.Tx) (int, error) {
		return 0, tx.AddTokenRequest(h.ctx, store.TokenRequest{JobID: j.ID, Purpose: "spare", TokenSerial: "T1"})
	}), store.ErrInvalid)
	wantErr(t, try(h, func(tx store.Tx) (int, error) {
		return 0, tx.AddTokenRequest(h.ctx, store.TokenRequest{JobID: "nope", Purpose: store.PurposeTemporary, TokenSerial: "T1"})
	}), store.ErrInvalid)
	wantErr(t, try(h, func(tx store.Tx) (store.TokenRequest, error) { return tx.GetTokenRequest(h.ctx, "nope") }), store.ErrNotFound)
}

// testCertificateHold: a certificate on hold is released, or revoked for good keeping the
// hold's time; a certificate that is not on hold is not released.
func testCertificateHold(t *testing.T, h *harness) {
	cert := func(serial string) store.Certificate {
		return store.Certificate{Serial: serial, Subject: "CN=a", Issuer: "CN=CA", NotBefore: base, NotAfter: base.AddDate(1, 0, 0), DER: []byte{1}}
	}
	h.tx(t, func(tx store.Tx) error {
		for _, s := range []string{"a1", "a2", "a3"} {
			if _, err := tx.AddCertificate(h.ctx, cert(s)); err != nil {
				return err
			}
		}
		return nil
	})
	release := func(serial string) error {
		return try(h, func(tx store.Tx) (store.Certificate, error) { return tx.ReleaseCertificateHold(h.ctx, serial) })
	}
	revoke := func(serial string, at time.Time, reason int) (store.Certificate, error) {
		var out store.Certificate
		err := try(h, func(tx store.Tx) (store.Certificate, error) {
			c, err := tx.RevokeCertificate(h.ctx, serial, at, reason)
			out = c
			return c, err
		})
		return out, err
	}
	wantErr(t, release("a1"), store.ErrConflict) // valid
	wantErr(t, release("beef"), store.ErrNotFound)
	if _, err := revoke("a1", base, 6); err != nil {
		t.Fatal(err)
	}
	_, err := revoke("a1", base.Add(time.Hour), 6)
	wantErr(t, err, store.ErrConflict) // on hold already
	if err := release("a1"); err != nil {
		t.Fatal(err)
	}
	if c := must(h.s.GetCertificate(h.ctx, "a1"))(t); !c.RevokedAt.IsZero() || c.RevocationReason != 0 {
		t.Errorf("released: %+v", c)
	}
	// Hold, then key compromise: the reason changes, the time stays the hold's.
	if _, err := revoke("a2", base, 6); err != nil {
		t.Fatal(err)
	}
	c, err := revoke("a2", base.Add(time.Hour), 1)
	if err != nil || !c.RevokedAt.Equal(stored(base)) || c.RevocationReason != 1 {
		t.Errorf("hold then revoke: %+v, %v", c, err)
	}
	wantErr(t, release("a2"), store.ErrConflict)
	// A final revocation is not put on hold, nor released.
	if _, err := revoke("a3", base, 5); err != nil {
		t.Fatal(err)
	}
	_, err = revoke("a3", base, 6)
	wantErr(t, err, store.ErrConflict)
	wantErr(t, release("a3"), store.ErrConflict)
}
