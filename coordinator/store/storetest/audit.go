package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// appendAudit appends e in a transaction of its own and returns it as s stored it.
func appendAudit(t *testing.T, h *harness, s store.Store, e audit.Entry) audit.Entry {
	t.Helper()
	if err := s.InTx(h.ctx, func(tx store.Tx) error {
		_, err := tx.AppendAudit(h.ctx, e, audit.Seal)
		return err
	}); err != nil {
		t.Fatalf("append audit: %v", err)
	}
	head := must(s.AuditHead(h.ctx))(t)
	for got, err := range s.AuditEntries(h.ctx, head.Seq) {
		if err != nil {
			t.Fatalf("read audit entry %d: %v", head.Seq, err)
		}
		return got
	}
	t.Fatalf("no audit entry %d after the append", head.Seq)
	return audit.Entry{}
}

func readAudit(t *testing.T, h *harness) []audit.Entry {
	t.Helper()
	var all []audit.Entry
	for e, err := range h.s.AuditEntries(h.ctx, 1) {
		if err != nil {
			t.Fatalf("read audit: %v", err)
		}
		all = append(all, e)
	}
	return all
}

func testAudit(t *testing.T, h *harness) {
	head := must(h.s.AuditHead(h.ctx))(t)
	equal(t, "empty log head", head, audit.NewVerifier().Head())

	// The seal puts details in canonical form; the store must keep that form byte for
	// byte (it is hashed), which jsonb, for one, would not.
	details := []byte(`{"z": 1,  "a": [true, null], "html": "<b>"}`)
	first := appendAudit(t, h, h.s, audit.Entry{Time: base, Actor: "helpdesk1", Action: audit.ActionJobCreated, JobID: "j1",
		Target: "alice", Reason: "new hire", Details: details})
	if first.Seq != 1 || first.PrevHash != audit.GenesisHash || first.Time != stored(base) || first.Hash == "" ||
		first.Actor != "helpdesk1" || first.JobID != "j1" || first.Target != "alice" || first.Reason != "new hire" {
		t.Fatalf("first entry: %+v", first)
	}
	jsonEqual(t, "details", first.Details, details)

	for i := 2; i <= 7; i++ {
		job := "j1"
		if i%2 == 1 {
			job = "j2"
		}
		appendAudit(t, h, h.s, audit.Entry{Time: base.Add(time.Duration(i) * time.Second), Actor: "system:dispatcher",
			Action: audit.ActionJobTransition, JobID: job, Reason: fmt.Sprintf("step %d", i)})
	}
	all := readAudit(t, h)
	if len(all) != 7 {
		t.Fatalf("%d entries, want 7", len(all))
	}
	equal(t, "first entry read back", all[0], first)
	if all[1].Details != nil {
		t.Fatalf("empty details came back as %q", all[1].Details)
	}
	verifyChain(t, all)
	equal(t, "head", must(h.s.AuditHead(h.ctx))(t), audit.Head{Seq: 7, Hash: all[6].Hash})
	// What the verifier streams from the store, from the start and resumed from a head.
	if got, err := audit.VerifySeq(audit.Head{}, h.s.AuditEntries(h.ctx, 1)); err != nil || got != (audit.Head{Seq: 7, Hash: all[6].Hash}) {
		t.Fatalf("VerifySeq over the store: %+v %v", got, err)
	}
	if got, err := audit.VerifySeq(audit.Head{Seq: 4, Hash: all[3].Hash}, h.s.AuditEntries(h.ctx, 5)); err != nil || got.Seq != 7 {
		t.Fatalf("VerifySeq resumed at 4: %+v %v", got, err)
	}

	seqs := func(es []audit.Entry) []int64 {
		out := []int64{}
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		filter store.AuditFilter
		want   []int64
	}{
		{"all", store.AuditFilter{}, []int64{1, 2, 3, 4, 5, 6, 7}},
		{"from", store.AuditFilter{FromSeq: 5}, []int64{5, 6, 7}},
		{"range", store.AuditFilter{FromSeq: 2, ToSeq: 4}, []int64{2, 3, 4}},
		{"job", store.AuditFilter{JobID: "j2"}, []int64{3, 5, 7}},
		{"job in range", store.AuditFilter{JobID: "j1", ToSeq: 4}, []int64{1, 2, 4}},
		{"past the end", store.AuditFilter{FromSeq: 8}, []int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, limit := range []int{1, 2, 100} {
				got := listAll(t, limit, func(p store.Page) ([]audit.Entry, string, error) { return h.s.ListAudit(h.ctx, tc.filter, p) })
				equal(t, fmt.Sprintf("limit %d", limit), seqs(got), tc.want)
			}
		})
	}

	// Reading from the middle, and stopping early.
	var from5 []int64
	for e, err := range h.s.AuditEntries(h.ctx, 5) {
		if err != nil {
			t.Fatal(err)
		}
		from5 = append(from5, e.Seq)
	}
	equal(t, "entries from 5", from5, []int64{5, 6, 7})
	// Breaking out must stop the reader (the runtime panics if it yields again).
	n := 0
	for _, err := range h.s.AuditEntries(h.ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 2 {
			break
		}
	}
	if n != 2 {
		t.Fatalf("read %d entries before stopping, want 2", n)
	}

	// Inside a transaction an entry waits for the end of its work: the head is not locked
	// or moved yet, and the commit chains it.
	before := must(h.s.AuditHead(h.ctx))(t)
	h.tx(t, func(tx store.Tx) error {
		e, err := tx.AppendAudit(h.ctx, audit.Entry{Actor: "admin1", Action: audit.ActionOrgCreated}, audit.Seal)
		if err != nil {
			return err
		}
		got, err := tx.AuditHead(h.ctx)
		if err != nil || got != before || e.Time.IsZero() || e.Seq != 0 {
			return fmt.Errorf("head inside the transaction: %+v, want %+v as before (entry %+v): %w", got, before, e, err)
		}
		return nil
	})
	if got := must(h.s.AuditHead(h.ctx))(t); got.Seq != before.Seq+1 {
		t.Fatalf("head after the commit: %+v, want entry %d", got, before.Seq+1)
	}
	// An entry given after a savepoint goes with it when the transaction rolls back to it,
	// and one given after that is kept, in order, as are those before.
	h.tx(t, func(tx store.Tx) error {
		steps := []func() error{
			func() error {
				return ignore(tx.AppendAudit(h.ctx, audit.Entry{Actor: "kept-1", Action: audit.ActionOrgCreated}, audit.Seal))
			},
			func() error { return tx.Savepoint(h.ctx) },
			func() error {
				return ignore(tx.AppendAudit(h.ctx, audit.Entry{Actor: "undone", Action: audit.ActionOrgCreated}, audit.Seal))
			},
			func() error { return tx.RollbackToSavepoint(h.ctx) },
			func() error {
				return ignore(tx.AppendAudit(h.ctx, audit.Entry{Actor: "kept-2", Action: audit.ActionOrgCreated}, audit.Seal))
			},
			func() error { return tx.ReleaseSavepoint(h.ctx) },
			func() error { return tx.Savepoint(h.ctx) },
			func() error {
				return ignore(tx.AppendAudit(h.ctx, audit.Entry{Actor: "kept-3", Action: audit.ActionOrgCreated}, audit.Seal))
			},
			func() error { return tx.ReleaseSavepoint(h.ctx) },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	})
	var actors []string
	for _, e := range readAudit(t, h)[before.Seq+1:] {
		actors = append(actors, e.Actor)
	}
	equal(t, "entries kept around savepoints", actors, []string{"kept-1", "kept-2", "kept-3"})
	verifyChain(t, readAudit(t, h))

	for _, tc := range []struct {
		name string
		e    audit.Entry
	}{
		{"no actor", audit.Entry{Action: audit.ActionOrgCreated}},
		{"no action", audit.Entry{Actor: "x"}},
		{"details not JSON", audit.Entry{Actor: "x", Action: audit.ActionOrgCreated, Details: []byte("{oops")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, try(h, func(tx store.Tx) (audit.Entry, error) { return tx.AppendAudit(h.ctx, tc.e, audit.Seal) }), store.ErrInvalid)
		})
	}
	// The seal's own refusal (an unknown action) comes back as its error.
	err := try(h, func(tx store.Tx) (audit.Entry, error) {
		return tx.AppendAudit(h.ctx, audit.Entry{Actor: "x", Action: "made.up"}, audit.Seal)
	})
	wantErr(t, err, audit.ErrInvalidEntry)
}

// testAuditAppendOnly tries to change the log behind the store's back: the database itself
// refuses.
func testAuditAppendOnly(t *testing.T, h *harness) {
	appendAudit(t, h, h.s, audit.Entry{Actor: "a", Action: audit.ActionUserCreated})
	appendAudit(t, h, h.s, audit.Entry{Actor: "b", Action: audit.ActionUserUpdated})
	raw := h.raw(t)
	for _, stmt := range []string{
		"UPDATE audit_log SET actor = 'mallory' WHERE seq = 1",
		"DELETE FROM audit_log WHERE seq = 2",
		"DELETE FROM audit_log",
	} {
		if _, err := raw.ExecContext(h.ctx, stmt); err == nil {
			t.Fatalf("%s: accepted", stmt)
		}
	}
	if h.cfg.Driver == store.DriverPostgres {
		if _, err := raw.ExecContext(h.ctx, "TRUNCATE audit_log"); err == nil {
			t.Fatal("TRUNCATE audit_log: accepted")
		}
	}
	all := readAudit(t, h)
	if len(all) != 2 || all[0].Actor != "a" {
		t.Fatalf("log after tampering attempts: %+v", all)
	}
	verifyChain(t, all)
}

// testAuditSealChecked passes seal functions that misbehave: the store refuses to write
// what would break the chain.
func testAuditSealChecked(t *testing.T, h *harness) {
	appendAudit(t, h, h.s, audit.Entry{Actor: "a", Action: audit.ActionUserCreated})
	for _, tc := range []struct {
		name string
		seal store.SealFunc
	}{
		{"nil", nil},
		{"wrong sequence", func(p *audit.Entry, e audit.Entry) (audit.Entry, error) {
			e = audit.Next(p, e)
			e.Seq = 7
			return e, nil
		}},
		{"forked link", func(p *audit.Entry, e audit.Entry) (audit.Entry, error) {
			e = audit.Next(nil, e)
			e.Seq = p.Seq + 1
			return e, nil
		}},
		{"no hash", func(p *audit.Entry, e audit.Entry) (audit.Entry, error) {
			e = audit.Next(p, e)
			e.Hash = ""
			return e, nil
		}},
		{"time the store cannot keep", func(p *audit.Entry, e audit.Entry) (audit.Entry, error) {
			e = audit.Next(p, e)
			e.Time = e.Time.Add(time.Nanosecond)
			return e, nil
		}},
		{"details not JSON", func(p *audit.Entry, e audit.Entry) (audit.Entry, error) {
			e = audit.Next(p, e)
			e.Details = []byte("{")
			return e, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, try(h, func(tx store.Tx) (audit.Entry, error) {
				return tx.AppendAudit(h.ctx, audit.Entry{Actor: "b", Action: audit.ActionUserUpdated, Time: base}, tc.seal)
			}), store.ErrInvalid)
		})
	}
	failing := errors.New("signing key unavailable")
	err := try(h, func(tx store.Tx) (audit.Entry, error) {
		return tx.AppendAudit(h.ctx, audit.Entry{Actor: "b", Action: audit.ActionUserUpdated}, func(*audit.Entry, audit.Entry) (audit.Entry, error) {
			return audit.Entry{}, failing
		})
	})
	wantErr(t, err, failing)
	if all := readAudit(t, h); len(all) != 1 {
		t.Fatalf("%d entries after refused appends, want 1", len(all))
	}
	// The chain goes on where it was.
	appendAudit(t, h, h.s, audit.Entry{Actor: "c", Action: audit.ActionUserDisabled, Time: base})
	verifyChain(t, readAudit(t, h))
}

// testAuditConcurrent appends from many goroutines over several stores at once, as
// several coordinators would: the chain must stay one line, without gaps or forks.
func testAuditConcurrent(t *testing.T, h *harness) {
	stores := []store.Store{h.s, h.open(t), h.open(t)}
	const workers, each = 6, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			s := stores[w%len(stores)]
			for i := range each {
				err := s.InTx(h.ctx, func(tx store.Tx) error {
					// Something else in the same transaction, as a state change would be.
					if _, err := tx.AddOutbox(h.ctx, store.OutboxMessage{Exchange: "x", RoutingKey: "k", Type: "t"}); err != nil {
						return err
					}
					_, err := tx.AppendAudit(h.ctx, audit.Entry{Actor: fmt.Sprintf("w%d", w), Action: audit.ActionJobTransition,
						Reason: fmt.Sprintf("%d/%d", w, i)}, audit.Seal)
					return err
				})
				if err != nil {
					errs <- fmt.Errorf("worker %d append %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	all := readAudit(t, h)
	if len(all) != workers*each {
		t.Fatalf("%d entries, want %d", len(all), workers*each)
	}
	verifyChain(t, all)
	seen := map[string]bool{}
	for _, e := range all {
		if seen[e.Reason] {
			t.Fatalf("entry %q appended twice", e.Reason)
		}
		seen[e.Reason] = true
	}
	equal(t, "head", must(h.s.AuditHead(h.ctx))(t), audit.Head{Seq: int64(workers * each), Hash: all[len(all)-1].Hash})
}

// ignore keeps an error and drops the value beside it.
func ignore[T any](_ T, err error) error { return err }
