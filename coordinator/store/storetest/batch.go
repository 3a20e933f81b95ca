package storetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// manyJobs is more jobs, entries or messages than one set-based statement takes, so that
// the set methods are tested across their batches.
const manyJobs = 503

// createJobs creates n jobs of f in one transaction.
func (f fixture) createJobs(t *testing.T, h *harness, n int) []store.Job {
	t.Helper()
	out := make([]store.Job, 0, n)
	h.tx(t, func(tx store.Tx) error {
		out = out[:0]
		for range n {
			j, err := tx.CreateJob(h.ctx, f.job())
			if err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	return out
}

func movesOf(js []store.Job) []store.JobMove {
	out := make([]store.JobMove, len(js))
	for i, j := range js {
		out[i] = store.JobMove{ID: j.ID, From: j.State, ExpectedVersion: j.Version}
	}
	return out
}

func jobIDs(js []store.Job) []string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = j.ID
	}
	return out
}

func testJobStatesSet(t *testing.T, h *harness) {
	f := newFixture(t, h)
	js := f.createJobs(t, h, manyJobs)

	// GetJobs keeps the order asked for, across batches, and names a missing job.
	reversed := make([]string, len(js))
	for i, j := range js {
		reversed[len(js)-1-i] = j.ID
	}
	got := must(h.s.GetJobs(h.ctx, reversed))(t)
	equal(t, "jobs read together, in the order asked", jobIDs(got), reversed)
	equal(t, "a job read together", got[len(got)-1], js[0])
	_, err := h.s.GetJobs(h.ctx, []string{js[0].ID, "nope"})
	wantErr(t, err, store.ErrNotFound)
	if !strings.Contains(err.Error(), "nope") {
		t.Fatalf("error %q does not name the missing job", err)
	}
	equal(t, "no jobs asked", len(must(h.s.GetJobs(h.ctx, nil))(t)), 0)

	at := base.Add(time.Minute)
	moved := do(t, h, func(tx store.Tx) ([]store.Job, error) {
		return tx.UpdateJobStates(h.ctx, movesOf(js), jobs.StateApproved, store.JobChange{Actor: f.approver.ID, Reason: "all of them", At: at})
	})
	equal(t, "moved jobs, in the order given", jobIDs(moved), jobIDs(js))
	for i, j := range moved {
		want := js[i]
		want.State, want.StateSince, want.Updated, want.Version = jobs.StateApproved, stored(at), stored(at), 2
		equal(t, "moved job", j, want)
	}
	equal(t, "moved job read back", must(h.s.GetJob(h.ctx, js[manyJobs-1].ID))(t), moved[manyJobs-1])
	for _, j := range []store.Job{moved[0], moved[manyJobs-1]} {
		evs := must(h.s.ListJobEvents(h.ctx, j.ID))(t)
		if len(evs) != 2 || evs[1].From != jobs.StatePendingApproval || evs[1].To != jobs.StateApproved || evs[1].Attempt != 1 ||
			evs[1].Actor != f.approver.ID || evs[1].Reason != "all of them" || !evs[1].At.Equal(stored(at)) {
			t.Fatalf("timeline of a moved job: %+v", evs)
		}
	}

	// A change with a new attempt and an error applies to each job, attempts included.
	two := moved[:2]
	h.tx(t, func(tx store.Tx) error {
		var err error
		two, err = tx.UpdateJobStates(h.ctx, movesOf(two), jobs.StateFailed, store.JobChange{Actor: "system:dispatch",
			Error: &store.JobError{Code: "e", Message: "broke"}, At: at})
		if err != nil {
			return err
		}
		two, err = tx.UpdateJobStates(h.ctx, movesOf(two), jobs.StateApproved, store.JobChange{Actor: f.requester.ID,
			NewAttempt: true, At: at.Add(time.Second)})
		return err
	})
	for _, j := range two {
		if j.Attempt != 2 || j.Version != 4 || j.ErrorCode != "e" || j.State != jobs.StateApproved {
			t.Fatalf("retried job: %+v", j)
		}
		as := must(h.s.ListJobAttempts(h.ctx, j.ID))(t)
		if len(as) != 2 || as[1].Attempt != 2 || !as[1].Started.Equal(stored(at.Add(time.Second))) {
			t.Fatalf("attempts of a retried job: %+v", as)
		}
	}

	// If one job is not as its caller read it, none moves: the others are unchanged even
	// inside the transaction that asked.
	rest := moved[2:]
	stale := movesOf(rest)
	stale[len(stale)-1].ExpectedVersion = 1
	wrongState := movesOf(rest)
	wrongState[3].From = jobs.StatePendingApproval
	dup := movesOf(rest[:2])
	dup = append(dup, dup[0])
	noActor := store.JobChange{}
	for _, tc := range []struct {
		name   string
		moves  []store.JobMove
		change store.JobChange
		want   error
		names  string
	}{
		{"stale version", stale, store.JobChange{Actor: "x"}, store.ErrConflict, rest[len(rest)-1].ID},
		{"wrong state", wrongState, store.JobChange{Actor: "x"}, store.ErrConflict, rest[3].ID},
		{"missing job", append(movesOf(rest[:2]), store.JobMove{ID: "nope", From: jobs.StateApproved, ExpectedVersion: 2}),
			store.JobChange{Actor: "x"}, store.ErrNotFound, "nope"},
		{"job twice", dup, store.JobChange{Actor: "x"}, store.ErrInvalid, rest[0].ID},
		{"no actor", movesOf(rest[:2]), noActor, store.ErrInvalid, "actor"},
		{"version zero", []store.JobMove{{ID: rest[0].ID, From: jobs.StateApproved}, movesOf(rest[1:2])[0]},
			store.JobChange{Actor: "x"}, store.ErrInvalid, "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := h.s.InTx(h.ctx, func(tx store.Tx) error {
				_, err := tx.UpdateJobStates(h.ctx, tc.moves, jobs.StateDispatched, tc.change)
				if err == nil {
					return nil
				}
				// On SQLite the transaction still takes statements: nothing may have moved.
				if h.cfg.Driver == store.DriverSQLite {
					for _, j := range rest[:3] {
						if now, gerr := tx.GetJob(h.ctx, j.ID); gerr != nil || now.State != jobs.StateApproved {
							t.Errorf("job %s after a refused set: %+v, %v", j.ID, now, gerr)
						}
					}
				}
				return err
			})
			wantErr(t, err, tc.want)
			if !strings.Contains(err.Error(), tc.names) {
				t.Fatalf("error %q does not name %q", err, tc.names)
			}
		})
	}
	equal(t, "unchanged by refused sets", must(h.s.GetJobs(h.ctx, jobIDs(rest)))(t), rest)
	if got := do(t, h, func(tx store.Tx) ([]store.Job, error) {
		return tx.UpdateJobStates(h.ctx, nil, jobs.StateDispatched, store.JobChange{Actor: "x"})
	}); len(got) != 0 {
		t.Fatalf("an empty set moved %d jobs", len(got))
	}
	// One job takes UpdateJobState's path, with its errors.
	one := do(t, h, func(tx store.Tx) ([]store.Job, error) {
		return tx.UpdateJobStates(h.ctx, movesOf(rest[:1]), jobs.StateDispatched, store.JobChange{Actor: "x"})
	})
	if len(one) != 1 || one[0].State != jobs.StateDispatched || one[0].Version != 3 {
		t.Fatalf("a set of one: %+v", one)
	}
	err = try(h, func(tx store.Tx) ([]store.Job, error) {
		return tx.UpdateJobStates(h.ctx, movesOf(rest[:1]), jobs.StateRunning, store.JobChange{Actor: "x"})
	})
	wantErr(t, err, store.ErrConflict)
}

func testAuditSet(t *testing.T, h *harness) {
	first := appendAudit(t, h, h.s, audit.Entry{Time: base, Actor: "helpdesk1", Action: audit.ActionJobCreated, JobID: "j0"})

	es := make([]audit.Entry, manyJobs)
	for i := range es {
		es[i] = audit.Entry{Time: base.Add(time.Duration(i) * time.Millisecond), Actor: "system:dispatch",
			Action: audit.ActionJobTransition, JobID: fmt.Sprintf("j%d", i), Reason: "confirmed",
			Details: audit.Details("from", "approved", "to", "dispatched", "attempt", 1)}
	}
	h.tx(t, func(tx store.Tx) error {
		_, err := tx.AppendAudits(h.ctx, es, audit.Seal)
		return err
	})
	all := readAudit(t, h)
	out := all[1:]
	if len(out) != manyJobs || out[0].Seq != 2 || out[0].PrevHash != first.Hash || out[manyJobs-1].Seq != manyJobs+1 {
		t.Fatalf("%d entries appended, first %+v", len(out), out[0])
	}
	verifyChain(t, all)
	for i, e := range out {
		if e.JobID != es[i].JobID || e.Action != es[i].Action || e.Time != stored(es[i].Time) {
			t.Fatalf("entry %d read back: %+v, want %+v", i, e, es[i])
		}
	}
	equal(t, "head after a set", must(h.s.AuditHead(h.ctx))(t), audit.Head{Seq: manyJobs + 1, Hash: out[manyJobs-1].Hash})

	// The chain goes on from a set, one entry at a time or another set.
	appendAudit(t, h, h.s, audit.Entry{Time: base, Actor: "helpdesk1", Action: audit.ActionJobCancelled, JobID: "j1"})
	h.tx(t, func(tx store.Tx) error {
		_, err := tx.AppendAudits(h.ctx, es[:2], audit.Seal)
		return err
	})
	all = readAudit(t, h)
	verifyChain(t, all)
	if len(all) != manyJobs+4 {
		t.Fatalf("%d entries, want %d", len(all), manyJobs+4)
	}

	// A bad entry anywhere refuses the set: nothing of it is written.
	bad := append([]audit.Entry{}, es[:3]...)
	bad[2].Action = "no such action"
	err := h.s.InTx(h.ctx, func(tx store.Tx) error {
		_, err := tx.AppendAudits(h.ctx, bad, audit.Seal)
		return err
	})
	if err == nil {
		t.Fatal("a set with an unknown action was appended")
	}
	noActor := append([]audit.Entry{}, es[:3]...)
	noActor[1].Actor = ""
	wantErr(t, try(h, func(tx store.Tx) ([]audit.Entry, error) { return tx.AppendAudits(h.ctx, noActor, audit.Seal) }), store.ErrInvalid)
	wantErr(t, try(h, func(tx store.Tx) ([]audit.Entry, error) { return tx.AppendAudits(h.ctx, es[:2], nil) }), store.ErrInvalid)
	equal(t, "entries after refused sets", len(readAudit(t, h)), manyJobs+4)
	if got := do(t, h, func(tx store.Tx) ([]audit.Entry, error) { return tx.AppendAudits(h.ctx, nil, audit.Seal) }); len(got) != 0 {
		t.Fatalf("an empty set appended %d entries", len(got))
	}
}

func testOutboxSet(t *testing.T, h *harness) {
	var msgs []store.OutboxMessage
	h.tx(t, func(tx store.Tx) error {
		for i := range manyJobs {
			m, err := tx.AddOutbox(h.ctx, store.OutboxMessage{Exchange: "tokenfleet.commands", RoutingKey: "ws-0001",
				Type: "job.issue", CorrelationID: "job-" + itoa(i), Body: []byte("{}"), Created: base})
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
		}
		return nil
	})
	ids := make([]int64, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	early, late := base.Add(time.Minute), base.Add(time.Hour)
	h.tx(t, func(tx store.Tx) error { return tx.MarkOutboxSent(h.ctx, ids[7], early) })
	// Marking a set that holds a message sent already is no error, and keeps its time.
	h.tx(t, func(tx store.Tx) error { return tx.MarkOutboxesSent(h.ctx, ids, late) })
	if got := must(h.s.ListUnsentOutbox(h.ctx, 10))(t); len(got) != 0 {
		t.Fatalf("%d messages unsent after the set was marked", len(got))
	}
	for i, want := range map[int]time.Time{0: late, 7: early, manyJobs - 1: late} {
		if got := must(h.s.GetOutbox(h.ctx, ids[i]))(t); !got.SentAt.Equal(stored(want)) {
			t.Fatalf("message %d sent at %v, want %v", i, got.SentAt, stored(want))
		}
	}
	h.tx(t, func(tx store.Tx) error { return tx.MarkOutboxesSent(h.ctx, ids[:3], late) })
	h.tx(t, func(tx store.Tx) error { return tx.MarkOutboxesSent(h.ctx, nil, late) })

	err := h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.MarkOutboxesSent(h.ctx, []int64{ids[0], 1 << 40}, late) })
	wantErr(t, err, store.ErrNotFound)
	if !strings.Contains(err.Error(), itoa(1<<40)) {
		t.Fatalf("error %q does not name the missing message", err)
	}
}
