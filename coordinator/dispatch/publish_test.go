package dispatch_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// TestPublishRounds: the publisher sends rows of several agents with their confirms in
// flight together. One agent's three dispatches reach its queue in the order they were
// written; a dispatch to a queue that is gone comes back, is recorded as that row's
// failure and stays unsent while the others are marked sent with their jobs dispatched;
// once the queue is back it goes out after its backoff.
func TestPublishRounds(t *testing.T) {
	t.Parallel()
	f := newDispatchFixture(t, store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(t.TempDir(), "c.db")}, 4)
	lost := f.agents[3]
	lostQueue, err := protocol.AgentQueue(lost)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.raw.QueueDelete(lostQueue, false, false, false); err != nil {
		t.Fatal(err)
	}
	f.approveJobs(t, "h1", f.agents)
	f.approveJobs(t, "h2", f.agents[:1])
	f.approveJobs(t, "h3", f.agents[:1])
	rows, err := f.st.ListUnsentOutbox(f.ctx, 100)
	if err != nil || len(rows) != 6 {
		t.Fatalf("%d unsent rows, %v; want 6", len(rows), err)
	}
	first, _ := protocol.CommandRoutingKey(f.agents[0])
	var order []string
	var lostRow store.OutboxMessage
	for _, r := range rows {
		switch r.RoutingKey {
		case first:
			order = append(order, r.MessageID)
		case lost:
			lostRow = r
		}
	}

	f.d.PublishPass(f.ctx, f.conn)
	left, err := f.st.ListUnsentOutbox(f.ctx, 100)
	if err != nil || len(left) != 1 || left[0].ID != lostRow.ID {
		t.Fatalf("unsent after the pass: %+v, %v; want only the row for %s", left, err, lost)
	}
	if left[0].Attempts != 1 || !strings.Contains(left[0].LastError, "unroutable") {
		t.Errorf("returned row: %d attempts, last error %q", left[0].Attempts, left[0].LastError)
	}
	f.checkDispatchedOf(t, "h2", 1)
	f.checkDispatchedOf(t, "h3", 1)
	f.checkDispatchedOf(t, "h1", 3)
	q, _ := protocol.AgentQueue(f.agents[0])
	for i, want := range order {
		d, ok, err := f.raw.Get(q, true)
		if err != nil || !ok || d.MessageId != want {
			t.Fatalf("message %d in %s: %s (%v, %v), want %s", i, q, d.MessageId, ok, err, want)
		}
	}

	// The queue is declared again (here by the test: the dispatcher is not running), and
	// the row goes out once its backoff ends.
	if err := f.conn.Declare(f.ctx, func(ch amqp.Declarer) error { return amqp.DeclareAgent(ch, lost) }); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		f.d.PublishPass(f.ctx, f.conn)
		left, err := f.st.ListUnsentOutbox(f.ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("row for %s still unsent after %s: %+v", lost, waitTimeout, left)
		}
		<-tick.C
	}
	f.checkDispatched(t, "h1", 4)
	if d, ok, err := f.raw.Get(lostQueue, true); err != nil || !ok || d.MessageId != lostRow.MessageID {
		t.Errorf("message in %s: %s (%v, %v), want %s", lostQueue, d.MessageId, ok, err, lostRow.MessageID)
	}
}

// TestPublishMarksRoundsAsSets: the rows of a round are marked sent, and their jobs
// dispatched, as one set, on both back ends. Every dispatched job has its timeline event
// and its audit entry, a job cancelled after its dispatch was written stays cancelled
// (its dispatch and then its cancel are sent), and the audit chain verifies.
func TestPublishMarksRoundsAsSets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) store.Config
	}{
		{"sqlite", func(t *testing.T) store.Config {
			return store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(t.TempDir(), "c.db")}
		}},
		{"postgres", func(t *testing.T) store.Config {
			return store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 12
			f := newDispatchFixture(t, tc.cfg(t), n)
			f.approveJobs(t, "h1", f.agents)
			approved, _, err := f.svc.ListJobs(f.ctx, f.admin, service.JobQuery{Holder: "h1", State: jobs.StateApproved},
				service.Page{Limit: store.MaxPageLimit})
			if err != nil || len(approved) != n {
				t.Fatalf("%d approved jobs, %v; want %d", len(approved), err, n)
			}
			cancelled := approved[0].ID
			if _, err := f.svc.Cancel(f.ctx, f.admin, cancelled, "not needed after all"); err != nil {
				t.Fatal(err)
			}
			head, err := f.st.AuditHead(f.ctx)
			if err != nil {
				t.Fatal(err)
			}

			f.d.PublishPass(f.ctx, f.conn)
			if rows, err := f.st.ListUnsentOutbox(f.ctx, 10); err != nil || len(rows) != 0 {
				t.Fatalf("after the pass: %d unsent rows, %v", len(rows), err)
			}
			f.checkDispatchedOf(t, "h1", n-1)
			if j, err := f.st.GetJob(f.ctx, cancelled); err != nil || j.State != jobs.StateCancelled {
				t.Fatalf("cancelled job after the pass: %s, %v", j.State, err)
			}
			for _, j := range approved[1:] {
				evs, err := f.st.ListJobEvents(f.ctx, j.ID)
				if err != nil {
					t.Fatal(err)
				}
				last := evs[len(evs)-1]
				if last.From != jobs.StateApproved || last.To != jobs.StateDispatched || last.Actor != dispatch.ActorDispatch {
					t.Fatalf("last timeline event of %s: %+v", j.ID, last)
				}
			}

			// One entry a dispatched job, after the head before the pass, chained on.
			entries, _, err := f.st.ListAudit(f.ctx, store.AuditFilter{FromSeq: head.Seq + 1}, store.Page{Limit: store.MaxPageLimit})
			if err != nil {
				t.Fatal(err)
			}
			dispatched := map[string]int{}
			for _, e := range entries {
				if e.Action == audit.ActionJobTransition && strings.Contains(string(e.Details), `"to":"dispatched"`) {
					dispatched[e.JobID]++
				}
			}
			if len(dispatched) != n-1 || dispatched[cancelled] != 0 {
				t.Fatalf("dispatch audit entries: %v; want one for each of %d jobs, none for %s", dispatched, n-1, cancelled)
			}
			for id, k := range dispatched {
				if k != 1 {
					t.Fatalf("job %s has %d dispatch audit entries", id, k)
				}
			}
			if _, err := audit.VerifySeq(audit.Head{}, f.st.AuditEntries(f.ctx, 1)); err != nil {
				t.Fatalf("audit chain after the pass: %v", err)
			}

			// The cancelled job's agent got its dispatch, then its cancel.
			q, err := protocol.AgentQueue(approved[0].AgentID)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{string(protocol.TypeDispatch), string(protocol.TypeCancel)} {
				d, ok, err := f.raw.Get(q, true)
				if err != nil || !ok || d.Type != want {
					t.Fatalf("next message in %s: %q (%v, %v), want %s", q, d.Type, ok, err, want)
				}
			}
		})
	}
}

// TestPublisherSendsWhileMarking: a dispatch queued while the publisher's last round is
// still being marked sent leaves at once; it does not wait for that commit. The first
// job's marking is held until the second job's dispatch is in its agent's queue, then
// both are marked sent and their jobs dispatched.
func TestPublisherSendsWhileMarking(t *testing.T) {
	t.Parallel()
	f := newDispatchFixture(t, store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(t.TempDir(), "c.db")}, 2)
	marking, hold := make(chan struct{}), make(chan struct{})
	var once, release sync.Once
	t.Cleanup(func() { release.Do(func() { close(hold) }) })
	f.d.BeforeMark(func() {
		once.Do(func() {
			close(marking)
			<-hold
		})
	})
	ctx, cancel := context.WithCancel(f.ctx)
	ran := make(chan error, 1)
	go func() { ran <- f.d.Run(ctx) }()
	t.Cleanup(func() {
		release.Do(func() { close(hold) })
		cancel()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	})

	f.approveJobs(t, "h1", f.agents[:1])
	<-marking
	f.approveJobs(t, "h2", f.agents[1:])
	q, err := protocol.AgentQueue(f.agents[1])
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second dispatch in its queue while the first is being marked", func() bool {
		st, err := f.raw.QueueDeclarePassive(q, true, false, false, false, nil)
		return err == nil && st.Messages == 1
	})
	release.Do(func() { close(hold) })
	waitFor(t, "both jobs dispatched", func() bool {
		rows, err := f.st.ListUnsentOutbox(f.ctx, 10)
		if err != nil || len(rows) != 0 {
			return false
		}
		for _, h := range []string{"h1", "h2"} {
			js, _, err := f.svc.ListJobs(f.ctx, f.admin, service.JobQuery{Holder: h, State: jobs.StateDispatched},
				service.Page{Limit: store.MaxPageLimit})
			if err != nil || len(js) != 1 {
				return false
			}
		}
		return true
	})
}
