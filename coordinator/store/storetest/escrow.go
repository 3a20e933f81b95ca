package storetest

import (
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func testEscrowedKeys(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, func(j *store.Job) { j.Kind = jobs.KindServerKeygen; j.TokenSerial = "0042" })
	add := func(attempt int, kid string) store.EscrowedKey {
		return do(t, h, func(tx store.Tx) (store.EscrowedKey, error) {
			return tx.AddEscrowedKey(h.ctx, store.EscrowedKey{JobID: j.ID, Attempt: attempt, HolderID: f.holder.ID, TokenSerial: "0042",
				KeyID: kid, CertificateSerial: "0a" + kid, Archive: []byte(`{"version":1}`), Created: base.Add(time.Duration(attempt-1) * time.Minute)})
		})
	}
	first := add(1, "k1")
	if first.ID == "" || first.State != store.EscrowPending || !first.StateSince.Equal(stored(base)) || string(first.Archive) != `{"version":1}` ||
		first.CertificateSerial != "0ak1" || first.RecoveredTo != "" || !first.Recovered.IsZero() {
		t.Fatalf("added %+v", first)
	}
	equal(t, "get", must(h.s.GetEscrowedKey(h.ctx, first.ID))(t), first)
	equal(t, "get of attempt", must(h.s.GetEscrowedKeyOfAttempt(h.ctx, j.ID, 1))(t), first)
	wantErr(t, try(h, func(tx store.Tx) (store.EscrowedKey, error) {
		return tx.AddEscrowedKey(h.ctx, store.EscrowedKey{JobID: j.ID, Attempt: 1, HolderID: f.holder.ID, KeyID: "k9", Archive: []byte("x")})
	}), store.ErrConflict)
	wantErr(t, try(h, func(tx store.Tx) (store.EscrowedKey, error) {
		return tx.AddEscrowedKey(h.ctx, store.EscrowedKey{JobID: j.ID, Attempt: 3, HolderID: f.holder.ID, KeyID: "k9"})
	}), store.ErrInvalid)
	_, err := h.s.GetEscrowedKeyOfAttempt(h.ctx, j.ID, 2)
	wantErr(t, err, store.ErrNotFound)

	superseded := do(t, h, func(tx store.Tx) (store.EscrowedKey, error) {
		return tx.SetEscrowedKeyState(h.ctx, first.ID, store.EscrowPending, store.EscrowSuperseded, "attempt 2 made a new key", base.Add(time.Minute))
	})
	if superseded.State != store.EscrowSuperseded || superseded.StateReason != "attempt 2 made a new key" || !superseded.StateSince.Equal(stored(base.Add(time.Minute))) {
		t.Fatalf("superseded %+v", superseded)
	}
	wantErr(t, try(h, func(tx store.Tx) (store.EscrowedKey, error) {
		return tx.SetEscrowedKeyState(h.ctx, first.ID, store.EscrowPending, store.EscrowActive, "", base)
	}), store.ErrConflict)
	wantErr(t, try(h, func(tx store.Tx) (store.EscrowedKey, error) {
		return tx.SetEscrowedKeyState(h.ctx, "no-such-key", store.EscrowPending, store.EscrowActive, "", base)
	}), store.ErrNotFound)

	second := add(2, "k2")
	do(t, h, func(tx store.Tx) (store.EscrowedKey, error) {
		return tx.SetEscrowedKeyState(h.ctx, second.ID, store.EscrowPending, store.EscrowActive, "job succeeded", base.Add(time.Hour))
	})
	active := []store.EscrowedKeyState{store.EscrowActive}
	if ks := must(h.s.ListEscrowedKeys(h.ctx, store.EscrowedKeyFilter{TokenSerial: "0042", States: active}))(t); len(ks) != 1 || ks[0].ID != second.ID {
		t.Fatalf("active on 0042: %+v", ks)
	}
	if ks := must(h.s.ListEscrowedKeys(h.ctx, store.EscrowedKeyFilter{HolderID: f.holder.ID}))(t); len(ks) != 2 || ks[0].ID != first.ID {
		t.Fatalf("of the holder: %+v", ks)
	}
	if ks := must(h.s.ListEscrowedKeys(h.ctx, store.EscrowedKeyFilter{HolderID: f.requester.ID}))(t); len(ks) != 0 {
		t.Fatalf("of another holder: %+v", ks)
	}

	rj := f.createJob(t, h, func(j *store.Job) { j.Kind = jobs.KindRecoverKey; j.TokenSerial = "0099" })
	rec := do(t, h, func(tx store.Tx) (store.EscrowedKey, error) {
		return tx.RecordEscrowedKeyRecovery(h.ctx, second.ID, rj.ID, "0099", base.Add(2*time.Hour))
	})
	if rec.RecoveredTo != "0099" || rec.RecoveredJobID != rj.ID || rec.TokenSerial != "0099" || !rec.Recovered.Equal(stored(base.Add(2*time.Hour))) {
		t.Fatalf("recovered to a token %+v", rec)
	}
	rec = do(t, h, func(tx store.Tx) (store.EscrowedKey, error) {
		return tx.RecordEscrowedKeyRecovery(h.ctx, second.ID, rj.ID, store.RecoveredToOfficer, base.Add(3*time.Hour))
	})
	if rec.RecoveredTo != store.RecoveredToOfficer || rec.TokenSerial != "0099" {
		t.Fatalf("recovered to an officer %+v", rec)
	}
	h.tx(t, func(tx store.Tx) error { return tx.SetEscrowedKeyToken(h.ctx, first.ID, "0043") })
	if k := must(h.s.GetEscrowedKey(h.ctx, first.ID))(t); k.TokenSerial != "0043" {
		t.Fatalf("token set: %+v", k)
	}

	// The holder's encryption keys.
	ek := do(t, h, func(tx store.Tx) (store.HolderEncryptionKey, error) {
		return tx.AddHolderEncryptionKey(h.ctx, store.HolderEncryptionKey{HolderID: f.holder.ID, KeyID: "k2", PublicKey: []byte("pub"),
			Certificate: []byte("cert"), CertificateSerial: "0ak2", TokenSerial: "0042", Source: store.SourceEscrowed, JobID: j.ID,
			EscrowedKeyID: second.ID, Created: base})
	})
	if ek.ID == "" || ek.Source != store.SourceEscrowed || string(ek.Certificate) != "cert" || ek.EscrowedKeyID != second.ID {
		t.Fatalf("added %+v", ek)
	}
	wantErr(t, try(h, func(tx store.Tx) (store.HolderEncryptionKey, error) {
		return tx.AddHolderEncryptionKey(h.ctx, store.HolderEncryptionKey{HolderID: f.holder.ID, KeyID: "k2", PublicKey: []byte("pub"),
			Certificate: []byte("cert"), Source: store.SourceEscrowed, JobID: j.ID, EscrowedKeyID: second.ID})
	}), store.ErrConflict)
	regJob := f.createJob(t, h, func(j *store.Job) { j.Kind = jobs.KindRegisterCertificate; j.TokenSerial = "0042" })
	wantErr(t, try(h, func(tx store.Tx) (store.HolderEncryptionKey, error) {
		return tx.AddHolderEncryptionKey(h.ctx, store.HolderEncryptionKey{HolderID: f.holder.ID, KeyID: "k3", PublicKey: []byte("pub"),
			Certificate: []byte("cert"), Source: store.SourceRegistered, JobID: regJob.ID, EscrowedKeyID: second.ID})
	}), store.ErrInvalid)
	reg := do(t, h, func(tx store.Tx) (store.HolderEncryptionKey, error) {
		return tx.AddHolderEncryptionKey(h.ctx, store.HolderEncryptionKey{HolderID: f.holder.ID, KeyID: "k3", PublicKey: []byte("pub3"),
			Certificate: []byte("cert3"), Source: store.SourceRegistered, JobID: regJob.ID, Created: base.Add(time.Hour)})
	})
	if ks := must(h.s.ListHolderEncryptionKeys(h.ctx, f.holder.ID))(t); len(ks) != 2 || ks[0].ID != ek.ID || ks[1].ID != reg.ID {
		t.Fatalf("holder's keys: %+v", ks)
	}
}

func testKeyRequests(t *testing.T, h *harness) {
	f := newFixture(t, h)
	rj := f.createJob(t, h, func(j *store.Job) { j.Kind = jobs.KindRecoverKey; j.TokenSerial = "0099" })
	reg := f.createJob(t, h, func(j *store.Job) { j.Kind = jobs.KindRegisterCertificate; j.TokenSerial = "0042" })
	h.tx(t, func(tx store.Tx) error {
		return tx.AddKeyRequest(h.ctx, store.KeyRequest{JobID: rj.ID, EscrowedKeyID: "ek1", Target: store.RecoveryToToken})
	})
	h.tx(t, func(tx store.Tx) error {
		return tx.AddKeyRequest(h.ctx, store.KeyRequest{JobID: reg.ID, CKAID: "a1b2"})
	})
	wantErr(t, try(h, func(tx store.Tx) (int, error) {
		return 0, tx.AddKeyRequest(h.ctx, store.KeyRequest{JobID: reg.ID, CKAID: "a1b2"})
	}), store.ErrConflict)
	wantErr(t, try(h, func(tx store.Tx) (int, error) {
		return 0, tx.AddKeyRequest(h.ctx, store.KeyRequest{JobID: reg.ID, EscrowedKeyID: "ek1", CKAID: "a1b2", Target: store.RecoveryToOfficer})
	}), store.ErrInvalid)
	if k := must(h.s.GetKeyRequest(h.ctx, reg.ID))(t); k.CKAID != "a1b2" || k.EscrowedKeyID != "" || k.DeliveredKey != nil {
		t.Fatalf("register request %+v", k)
	}
	got := do(t, h, func(tx store.Tx) (store.KeyRequest, error) {
		return tx.SetKeyDelivery(h.ctx, rj.ID, 1, []byte(`{"alg":"x"}`), f.approver.ID, base)
	})
	if got.EscrowedKeyID != "ek1" || got.Target != store.RecoveryToToken || string(got.DeliveredKey) != `{"alg":"x"}` ||
		got.DeliveredAttempt != 1 || got.DeliveredBy != f.approver.ID || !got.Delivered.Equal(stored(base)) {
		t.Fatalf("delivered %+v", got)
	}
	wantErr(t, try(h, func(tx store.Tx) (store.KeyRequest, error) {
		return tx.SetKeyDelivery(h.ctx, rj.ID, 1, []byte("again"), f.approver.ID, base)
	}), store.ErrConflict)
	wantErr(t, try(h, func(tx store.Tx) (store.KeyRequest, error) {
		return tx.SetKeyDelivery(h.ctx, "no-such-job", 1, nil, f.approver.ID, base)
	}), store.ErrNotFound)
	// A later attempt is delivered anew; an officer's PKCS#12 leaves no key.
	if got := do(t, h, func(tx store.Tx) (store.KeyRequest, error) {
		return tx.SetKeyDelivery(h.ctx, rj.ID, 2, nil, f.approver.ID, base.Add(time.Hour))
	}); got.DeliveredKey != nil || got.DeliveredAttempt != 2 {
		t.Fatalf("delivered for attempt 2 %+v", got)
	}
}
