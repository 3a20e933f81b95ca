package dispatch_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
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
