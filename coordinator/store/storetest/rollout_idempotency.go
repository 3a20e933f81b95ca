package storetest

import (
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// testRolloutIdempotencyKey: a rollout keeps the key and request hash it was created
// with, the key finds it, and the key is unique per creator only.
func testRolloutIdempotencyKey(t *testing.T, h *harness) {
	f := newFixture(t, h)
	r := f.createRollout(t, h, func(r *store.Rollout) { r.IdempotencyKey, r.RequestHash = "key-1", "hash-1" }, f.targets(2, 1, 1))
	if r.IdempotencyKey != "key-1" || r.RequestHash != "hash-1" {
		t.Fatalf("created rollout keeps key %q and hash %q", r.IdempotencyKey, r.RequestHash)
	}
	equal(t, "by key", must(h.s.GetRolloutByIdempotencyKey(h.ctx, f.requester.ID, "key-1"))(t), r)
	equal(t, "by ID", must(h.s.GetRollout(h.ctx, r.ID))(t), r)
	// A change of the rollout keeps its key.
	moved := do(t, h, func(tx store.Tx) (store.Rollout, error) {
		c := r
		c.State = "approved"
		return tx.UpdateRollout(h.ctx, c, r.Version)
	})
	if moved.IdempotencyKey != "key-1" || moved.RequestHash != "hash-1" {
		t.Fatalf("updated rollout keeps key %q and hash %q", moved.IdempotencyKey, moved.RequestHash)
	}

	_, err := h.s.GetRolloutByIdempotencyKey(h.ctx, f.requester.ID, "key-2")
	wantErr(t, err, store.ErrNotFound)
	_, err = h.s.GetRolloutByIdempotencyKey(h.ctx, f.approver.ID, "key-1")
	wantErr(t, err, store.ErrNotFound)
	_, err = h.s.GetRolloutByIdempotencyKey(h.ctx, f.requester.ID, "")
	wantErr(t, err, store.ErrInvalid)

	// The same key again from the same creator is refused by the unique index, and the
	// refused rollout leaves no target behind.
	wantErr(t, try(h, func(tx store.Tx) (store.Rollout, error) {
		in := f.rollout()
		in.IdempotencyKey, in.RequestHash = "key-1", "hash-2"
		return tx.CreateRollout(h.ctx, in, f.targets(1, 1, 1))
	}), store.ErrConflict)

	// Another creator may use the same key; rollouts without a key never collide.
	theirs := f.createRollout(t, h, func(r *store.Rollout) { r.CreatedBy, r.IdempotencyKey = f.approver.ID, "key-1" }, nil)
	if theirs.ID == r.ID {
		t.Fatal("another creator's key found the first creator's rollout")
	}
	a, b := f.createRollout(t, h, nil, nil), f.createRollout(t, h, nil, nil)
	if a.IdempotencyKey != "" || b.IdempotencyKey != "" {
		t.Fatalf("rollouts without a key read back keys %q, %q", a.IdempotencyKey, b.IdempotencyKey)
	}
}

// testRolloutCertificateOnce: a rollout has at most one target per certificate, even for
// targets that differ by agent (a token that moved between two coordinators' scans).
func testRolloutCertificateOnce(t *testing.T, h *harness) {
	f := newFixture(t, h)
	r := f.createRollout(t, h, func(r *store.Rollout) { r.Standing, r.State = true, "running" }, nil)
	first := f.target(0, "tok-1")
	first.CertificateSerial = "c1"
	if n := do(t, h, func(tx store.Tx) (int, error) { return tx.AddRolloutTargets(h.ctx, r.ID, []store.RolloutTarget{first}) }); n != 1 {
		t.Fatalf("added %d", n)
	}
	again := first
	again.TokenSerial = "tok-2"
	wantErr(t, try(h, func(tx store.Tx) (int, error) {
		return tx.AddRolloutTargets(h.ctx, r.ID, []store.RolloutTarget{again})
	}), store.ErrConflict)
	if got := must(h.s.GetRollout(h.ctx, r.ID))(t); got.TargetCount != 1 {
		t.Fatalf("target count %d", got.TargetCount)
	}
}
