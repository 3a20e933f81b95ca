package storetest

import (
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func testRecoveryCertificates(t *testing.T, h *harness) {
	f := newFixture(t, h)
	add := func(kid, cn string, expires time.Time) store.RecoveryCertificate {
		return do(t, h, func(tx store.Tx) (store.RecoveryCertificate, error) {
			return tx.AddRecoveryCertificate(h.ctx, store.RecoveryCertificate{KeyID: kid, CommonName: cn, NotBefore: base,
				NotAfter: expires, DER: []byte("der of " + cn), Added: base, AddedBy: f.requester.ID})
		})
	}
	late := add("kid-late", "Backup key 2031", base.Add(6*365*24*time.Hour))
	early := add("kid-early", "Backup key 2029", base.Add(4*365*24*time.Hour))
	if late.ID == "" || late.CommonName != "Backup key 2031" || !late.NotAfter.Equal(stored(base.Add(6*365*24*time.Hour))) ||
		string(late.DER) != "der of Backup key 2031" || !late.Retired.IsZero() || late.AddedBy != f.requester.ID {
		t.Fatalf("added %+v", late)
	}
	equal(t, "get", must(h.s.GetRecoveryCertificate(h.ctx, late.ID))(t), late)
	wantErr(t, try(h, func(tx store.Tx) (store.RecoveryCertificate, error) {
		return tx.AddRecoveryCertificate(h.ctx, store.RecoveryCertificate{KeyID: "kid-late", CommonName: "again", NotBefore: base, NotAfter: base, DER: []byte{1}, AddedBy: f.requester.ID})
	}), store.ErrConflict)
	wantErr(t, try(h, func(tx store.Tx) (store.RecoveryCertificate, error) {
		return tx.AddRecoveryCertificate(h.ctx, store.RecoveryCertificate{KeyID: "kid-x", NotBefore: base, NotAfter: base, AddedBy: f.requester.ID})
	}), store.ErrInvalid)

	list := must(h.s.ListRecoveryCertificates(h.ctx, false))(t)
	if len(list) != 2 || list[0].ID != early.ID || list[1].ID != late.ID {
		t.Fatalf("list by expiry: %+v", list)
	}
	retired := do(t, h, func(tx store.Tx) (store.RecoveryCertificate, error) {
		return tx.RetireRecoveryCertificate(h.ctx, early.ID, f.requester.ID, "officer left", base.Add(time.Hour))
	})
	if !retired.Retired.Equal(stored(base.Add(time.Hour))) || retired.RetiredBy != f.requester.ID || retired.RetireReason != "officer left" {
		t.Fatalf("retired %+v", retired)
	}
	wantErr(t, try(h, func(tx store.Tx) (store.RecoveryCertificate, error) {
		return tx.RetireRecoveryCertificate(h.ctx, early.ID, f.requester.ID, "", base)
	}), store.ErrConflict)
	wantErr(t, try(h, func(tx store.Tx) (store.RecoveryCertificate, error) {
		return tx.RetireRecoveryCertificate(h.ctx, "no-such-id", f.requester.ID, "", base)
	}), store.ErrNotFound)
	if inUse := must(h.s.ListRecoveryCertificates(h.ctx, false))(t); len(inUse) != 1 || inUse[0].ID != late.ID {
		t.Fatalf("in use: %+v", inUse)
	}
	if all := must(h.s.ListRecoveryCertificates(h.ctx, true))(t); len(all) != 2 || all[0].ID != late.ID || all[1].ID != early.ID {
		t.Fatalf("with retired (in use first): %+v", all)
	}
}
