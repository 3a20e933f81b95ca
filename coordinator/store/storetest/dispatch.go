package storetest

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// testAttemptRecords covers what the dispatcher records per attempt: the dispatch message
// once, the waiting reason, the reported key (first one counts) and one CSR.
func testAttemptRecords(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, func(j *store.Job) { j.State = jobs.StateApproved })
	a := must(h.s.GetJobAttempt(h.ctx, j.ID, 1))(t)
	if a.DispatchMessageID != "" || a.WaitingReason != "" || a.PublicKey != nil || a.CSR != nil || !a.CSRAccepted.IsZero() {
		t.Fatalf("new attempt: %+v", a)
	}
	wantErr(t, func() error { _, err := h.s.GetJobAttempt(h.ctx, j.ID, 2); return err }(), store.ErrNotFound)

	changed := do(t, h, func(tx store.Tx) (bool, error) { return tx.SetAttemptWaiting(h.ctx, j.ID, 1, "no seal key") })
	again := do(t, h, func(tx store.Tx) (bool, error) { return tx.SetAttemptWaiting(h.ctx, j.ID, 1, "no seal key") })
	if !changed || again {
		t.Fatalf("waiting reason changed %v, then %v; want true, false", changed, again)
	}
	wantErr(t, try(h, func(tx store.Tx) (bool, error) { return tx.SetAttemptWaiting(h.ctx, j.ID, 9, "x") }), store.ErrNotFound)

	// The jobs whose current attempt waits for its dispatch, in one list.
	second := f.createJob(t, h, func(j *store.Job) { j.State = jobs.StateApproved })
	undispatched := func() []string {
		var ids []string
		for _, j := range listAll(t, 1, func(p store.Page) ([]store.Job, string, error) {
			return h.s.ListJobs(h.ctx, store.JobFilter{States: []jobs.State{jobs.StateApproved}, Undispatched: true}, p)
		}) {
			ids = append(ids, j.ID)
		}
		slices.Sort(ids)
		return ids
	}
	equal(t, "undispatched before", undispatched(), slices.Sorted(slices.Values([]string{second.ID, j.ID})))

	const msg = "0f8fad5b-d9cb-469f-a165-70867728950e"
	h.tx(t, func(tx store.Tx) error { return tx.RecordAttemptDispatch(h.ctx, j.ID, 1, msg) })
	equal(t, "undispatched after one dispatch", undispatched(), []string{second.ID})
	// An attempt is dispatched once, whoever tries again.
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptDispatch(h.ctx, j.ID, 1, "another") }), store.ErrConflict)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptDispatch(h.ctx, j.ID, 5, msg) }), store.ErrNotFound)
	a = must(h.s.GetJobAttempt(h.ctx, j.ID, 1))(t)
	if a.DispatchMessageID != msg || a.WaitingReason != "" {
		t.Fatalf("after dispatch: %+v (the waiting reason is cleared)", a)
	}

	key, other := []byte{0x30, 0x59, 1, 2, 3}, []byte{0x30, 0x59, 9, 9, 9}
	h.tx(t, func(tx store.Tx) error { return tx.RecordAttemptKey(h.ctx, j.ID, 1, key) })
	h.tx(t, func(tx store.Tx) error { return tx.RecordAttemptKey(h.ctx, j.ID, 1, key) }) // a repeated report
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptKey(h.ctx, j.ID, 1, other) }), store.ErrConflict)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptKey(h.ctx, j.ID, 1, nil) }), store.ErrInvalid)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptKey(h.ctx, j.ID, 3, key) }), store.ErrNotFound)

	csr := []byte{0x30, 0x82, 0x01, 0x00, 0xff}
	h.tx(t, func(tx store.Tx) error { return tx.RecordAttemptCSR(h.ctx, j.ID, 1, csr, base) })
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptCSR(h.ctx, j.ID, 1, csr, base) }), store.ErrConflict)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptCSR(h.ctx, j.ID, 4, csr, base) }), store.ErrNotFound)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptCSR(h.ctx, j.ID, 1, nil, base) }), store.ErrInvalid)

	a = must(h.s.GetJobAttempt(h.ctx, j.ID, 1))(t)
	if !bytes.Equal(a.PublicKey, key) || !bytes.Equal(a.CSR, csr) || !a.CSRAccepted.Equal(stored(base)) {
		t.Fatalf("attempt read back: %+v", a)
	}
	list := must(h.s.ListJobAttempts(h.ctx, j.ID))(t)
	if len(list) != 1 || list[0].DispatchMessageID != msg || !bytes.Equal(list[0].CSR, csr) {
		t.Fatalf("attempts listed: %+v", list)
	}

	// A new attempt starts with nothing recorded: its CSR and key are its own.
	cur := must(h.s.GetJob(h.ctx, j.ID))(t)
	do(t, h, func(tx store.Tx) (store.Job, error) {
		return tx.UpdateJobState(h.ctx, j.ID, jobs.StateApproved, jobs.StateDispatched, cur.Version, store.JobChange{Actor: "system", NewAttempt: true})
	})
	a2 := must(h.s.GetJobAttempt(h.ctx, j.ID, 2))(t)
	if a2.DispatchMessageID != "" || a2.PublicKey != nil || a2.CSR != nil {
		t.Fatalf("second attempt inherits records: %+v", a2)
	}
	h.tx(t, func(tx store.Tx) error { return tx.RecordAttemptCSR(h.ctx, j.ID, 2, csr, base) })

	// The token an attempt works on is set once; re-initialisation and the one result.
	h.tx(t, func(tx store.Tx) error { return tx.RecordAttemptToken(h.ctx, j.ID, 2, "TOK-A") })
	h.tx(t, func(tx store.Tx) error { return tx.RecordAttemptToken(h.ctx, j.ID, 2, "TOK-A") })
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptToken(h.ctx, j.ID, 2, "TOK-B") }), store.ErrConflict)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptToken(h.ctx, j.ID, 2, "") }), store.ErrInvalid)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptToken(h.ctx, j.ID, 7, "TOK-A") }), store.ErrNotFound)
	h.tx(t, func(tx store.Tx) error { return tx.MarkAttemptReinitialised(h.ctx, j.ID, 2) })
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.MarkAttemptReinitialised(h.ctx, j.ID, 7) }), store.ErrNotFound)
	h.tx(t, func(tx store.Tx) error {
		return tx.RecordAttemptResult(h.ctx, j.ID, 2, msg, "failed: job_cancelled: stopped")
	})
	h.tx(t, func(tx store.Tx) error {
		return tx.RecordAttemptResult(h.ctx, j.ID, 2, msg, "failed: job_cancelled: stopped")
	})
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAttemptResult(h.ctx, j.ID, 2, "another", "") }), store.ErrConflict)
	a2 = must(h.s.GetJobAttempt(h.ctx, j.ID, 2))(t)
	if a2.TokenSerial != "TOK-A" || !a2.Reinitialised || a2.ResultMessageID != msg || a2.ResultSummary != "failed: job_cancelled: stopped" {
		t.Fatalf("attempt 2 token records: %+v", a2)
	}
	a = must(h.s.GetJobAttempt(h.ctx, j.ID, 1))(t)
	if a.TokenSerial != "" || a.Reinitialised || a.ResultMessageID != "" {
		t.Fatalf("attempt 1 changed by attempt 2's records: %+v", a)
	}
}

// testTokenPINs covers the sealed PINs kept at rest: the newest per token and purpose
// counts, one per job attempt and purpose, revealed at most once.
func testTokenPINs(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, nil)
	sealed := []byte(`{"alg": "x25519-hkdf-sha256-aes256gcm", "kid": "00", "ct": "AA=="}`)
	wantErr(t, func() error { _, err := h.s.GetTokenPIN(h.ctx, "TOK1", store.PINPurposeSO); return err }(), store.ErrNotFound)

	add := func(serial, purpose string, attempt int, at time.Time) store.TokenPIN {
		return do(t, h, func(tx store.Tx) (store.TokenPIN, error) {
			return tx.AddTokenPIN(h.ctx, store.TokenPIN{TokenSerial: serial, Purpose: purpose, JobID: j.ID, Attempt: attempt,
				Sealed: sealed, Recorded: at})
		})
	}
	so1 := add("TOK1", store.PINPurposeSO, 1, base)
	user1 := add("TOK1", store.PINPurposeUser, 1, base)
	if so1.ID == 0 || so1.TokenSerial != "TOK1" || so1.JobID != j.ID || so1.Attempt != 1 || !so1.Recorded.Equal(stored(base)) ||
		!so1.Revealed.IsZero() {
		t.Fatalf("added %+v", so1)
	}
	jsonEqual(t, "sealed kept byte for byte", so1.Sealed, sealed)
	equal(t, "newest SO PIN", must(h.s.GetTokenPIN(h.ctx, "TOK1", store.PINPurposeSO))(t), so1)

	so2 := add("TOK1", store.PINPurposeSO, 2, base.Add(time.Hour))
	equal(t, "newest SO PIN after attempt 2", must(h.s.GetTokenPIN(h.ctx, "TOK1", store.PINPurposeSO))(t), so2)
	equal(t, "user PIN unchanged", must(h.s.GetTokenPIN(h.ctx, "TOK1", store.PINPurposeUser))(t), user1)

	for _, tc := range []struct {
		name string
		p    store.TokenPIN
		want error
	}{
		{"same attempt and purpose", store.TokenPIN{TokenSerial: "TOK2", Purpose: store.PINPurposeSO, JobID: j.ID, Attempt: 1, Sealed: sealed}, store.ErrConflict},
		{"unknown purpose", store.TokenPIN{TokenSerial: "TOK1", Purpose: "puk", JobID: j.ID, Attempt: 3, Sealed: sealed}, store.ErrInvalid},
		{"no serial", store.TokenPIN{Purpose: store.PINPurposeSO, JobID: j.ID, Attempt: 3, Sealed: sealed}, store.ErrInvalid},
		{"no attempt", store.TokenPIN{TokenSerial: "TOK1", Purpose: store.PINPurposeSO, JobID: j.ID, Sealed: sealed}, store.ErrInvalid},
		{"not JSON", store.TokenPIN{TokenSerial: "TOK1", Purpose: store.PINPurposeSO, JobID: j.ID, Attempt: 3, Sealed: []byte("{")}, store.ErrInvalid},
		{"nothing sealed", store.TokenPIN{TokenSerial: "TOK1", Purpose: store.PINPurposeSO, JobID: j.ID, Attempt: 3}, store.ErrInvalid},
		{"unknown job", store.TokenPIN{TokenSerial: "TOK1", Purpose: store.PINPurposeSO, JobID: "nojob", Attempt: 1, Sealed: sealed}, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, try(h, func(tx store.Tx) (store.TokenPIN, error) { return tx.AddTokenPIN(h.ctx, tc.p) }), tc.want)
		})
	}

	h.tx(t, func(tx store.Tx) error { return tx.MarkTokenPINRevealed(h.ctx, user1.ID, base.Add(2*time.Hour)) })
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.MarkTokenPINRevealed(h.ctx, user1.ID, base) }), store.ErrConflict)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.MarkTokenPINRevealed(h.ctx, 999999, base) }), store.ErrNotFound)
	if got := must(h.s.GetTokenPIN(h.ctx, "TOK1", store.PINPurposeUser))(t); !got.Revealed.Equal(stored(base.Add(2 * time.Hour))) {
		t.Fatalf("revealed at %v", got.Revealed)
	}
}
