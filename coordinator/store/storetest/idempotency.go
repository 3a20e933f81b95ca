package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// testJobIdempotencyKey: a job keeps the key and request hash it was created with, the key
// finds it, and the key is unique per requester only.
func testJobIdempotencyKey(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, func(j *store.Job) { j.IdempotencyKey, j.RequestHash = "key-1", "hash-1" })
	if j.IdempotencyKey != "key-1" || j.RequestHash != "hash-1" {
		t.Fatalf("created job keeps key %q and hash %q", j.IdempotencyKey, j.RequestHash)
	}
	equal(t, "by key", must(h.s.GetJobByIdempotencyKey(h.ctx, f.requester.ID, "key-1"))(t), j)
	equal(t, "by ID", must(h.s.GetJob(h.ctx, j.ID))(t), j)

	_, err := h.s.GetJobByIdempotencyKey(h.ctx, f.requester.ID, "key-2")
	wantErr(t, err, store.ErrNotFound)
	_, err = h.s.GetJobByIdempotencyKey(h.ctx, f.approver.ID, "key-1")
	wantErr(t, err, store.ErrNotFound)
	_, err = h.s.GetJobByIdempotencyKey(h.ctx, f.requester.ID, "")
	wantErr(t, err, store.ErrInvalid)

	// The same key again from the same requester is refused by the unique index.
	wantErr(t, try(h, func(tx store.Tx) (store.Job, error) {
		in := f.job()
		in.IdempotencyKey, in.RequestHash = "key-1", "hash-2"
		return tx.CreateJob(h.ctx, in)
	}), store.ErrConflict)

	// Another requester may use the same key; jobs without a key never collide.
	theirs := f.createJob(t, h, func(j *store.Job) { j.RequesterID, j.IdempotencyKey = f.approver.ID, "key-1" })
	if theirs.ID == j.ID {
		t.Fatal("another requester's key found the first requester's job")
	}
	a, b := f.createJob(t, h, nil), f.createJob(t, h, nil)
	if a.IdempotencyKey != "" || b.IdempotencyKey != "" {
		t.Fatalf("jobs without a key read back keys %q, %q", a.IdempotencyKey, b.IdempotencyKey)
	}
}

// testJobIdempotencyConcurrent races creations with one requester's key on separate stores,
// as separate coordinators would: exactly one job is created, the others conflict.
func testJobIdempotencyConcurrent(t *testing.T, h *harness) {
	f := newFixture(t, h)
	stores := []store.Store{h.s, h.open(t), h.open(t)}
	const racers = 9
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			errs[i] = stores[i%len(stores)].InTx(h.ctx, func(tx store.Tx) error {
				_, err := tx.CreateJob(h.ctx, func() store.Job {
					j := f.job()
					j.IdempotencyKey, j.RequestHash = "same-key", "hash"
					return j
				}())
				return err
			})
		})
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrAborted):
		default:
			t.Errorf("racer %d: %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d racers created a job, want exactly 1", wins)
	}
	js, _, err := h.s.ListJobs(h.ctx, store.JobFilter{HolderID: f.holder.ID}, store.Page{Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 1 || js[0].IdempotencyKey != "same-key" {
		t.Fatalf("after the race: %d jobs %+v, want 1 with the key", len(js), js)
	}
}
