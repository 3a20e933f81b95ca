package store_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestPostgresDeadlockRunsAgain: two transactions lock two agents' rows in opposite
// orders, so PostgreSQL aborts one of them to break the deadlock (40P01). InTx runs the
// aborted one again and both commit, where the deadlock used to reach API clients as a
// conflict.
func TestPostgresDeadlockRunsAgain(t *testing.T) {
	t.Parallel()
	ctx := testenv.Context(t)
	st, _ := openPostgres(ctx, t)
	err := st.InTx(ctx, func(tx store.Tx) error {
		for _, id := range []string{"ws-a", "ws-b"} {
			if _, err := tx.CreateAgent(ctx, store.Agent{ID: id, Hostname: id + ".test"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Each transaction, on its first attempt, holds its first row until the other holds
	// its own; later attempts do not wait (the channels are closed by then).
	var attempts atomic.Int32
	holding := map[string]chan struct{}{"ws-a": make(chan struct{}), "ws-b": make(chan struct{})}
	var once sync.Map
	lockBoth := func(first, second string) func(store.Tx) error {
		return func(tx store.Tx) error {
			attempts.Add(1)
			at := time.Now().UTC()
			if err := tx.RecordAgentSeen(ctx, first, at, true); err != nil {
				return err
			}
			if o, _ := once.LoadOrStore(first, &sync.Once{}); o != nil {
				o.(*sync.Once).Do(func() { close(holding[first]) })
			}
			select {
			case <-holding[second]:
			case <-ctx.Done():
				return ctx.Err()
			}
			return tx.RecordAgentSeen(ctx, second, at, true)
		}
	}
	errs := make(chan error, 2)
	go func() { errs <- st.InTx(ctx, lockBoth("ws-a", "ws-b")) }()
	go func() { errs <- st.InTx(ctx, lockBoth("ws-b", "ws-a")) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a transaction failed: %v (aborted: %v)", err, errors.Is(err, store.ErrAborted))
		}
	}
	if n := attempts.Load(); n < 3 {
		t.Errorf("%d attempts in all, want 3 or more: the deadlock did not happen, so the test shows nothing", n)
	}
}

// TestAbortedIsNotConflict: a store error for a deadlock is not a taken value (ErrConflict):
// callers that turn ErrConflict into "already exists" or "already revoked" must not say
// so of a deadlock.
func TestAbortedIsNotConflict(t *testing.T) {
	if errors.Is(store.ErrAborted, store.ErrConflict) || errors.Is(store.ErrConflict, store.ErrAborted) {
		t.Fatal("ErrAborted and ErrConflict must be told apart")
	}
}

// TestPostgresAuditHeadTakenLast: a transaction that audits, then changes a row another
// transaction holds, used to hold the audit chain head while it waited for that row; the
// other, auditing in turn, waited for the head, and PostgreSQL broke the deadlock by
// aborting one (a second lost, and an API request failed after five). Entries are now
// chained at the end of a transaction's work: here neither waits for the other's lock
// while holding the head, both commit on their first attempt, and the chain verifies.
func TestPostgresAuditHeadTakenLast(t *testing.T) {
	t.Parallel()
	ctx := testenv.Context(t)
	st, _ := openPostgres(ctx, t)
	if err := st.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.CreateAgent(ctx, store.Agent{ID: "ws-a", Hostname: "ws-a.test"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var attempts atomic.Int32
	holding, audited := make(chan struct{}), make(chan struct{})
	var holdOnce, auditOnce sync.Once
	wait := func(c chan struct{}) error {
		select {
		case <-c:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// The row's holder audits once the other has audited, then commits.
	holder := func(tx store.Tx) error {
		attempts.Add(1)
		if err := tx.RecordAgentSeen(ctx, "ws-a", time.Now().UTC(), true); err != nil {
			return err
		}
		holdOnce.Do(func() { close(holding) })
		if err := wait(audited); err != nil {
			return err
		}
		_, err := tx.AppendAudit(ctx, audit.Entry{Actor: "holder", Action: audit.ActionAgentApproved, Target: "agent:ws-a"}, audit.Seal)
		return err
	}
	// The other audits first, then needs the held row.
	auditor := func(tx store.Tx) error {
		attempts.Add(1)
		if err := wait(holding); err != nil {
			return err
		}
		if _, err := tx.AppendAudit(ctx, audit.Entry{Actor: "auditor", Action: audit.ActionAgentApproved, Target: "agent:ws-a"}, audit.Seal); err != nil {
			return err
		}
		auditOnce.Do(func() { close(audited) })
		return tx.RecordAgentSeen(ctx, "ws-a", time.Now().UTC(), true)
	}
	errs := make(chan error, 2)
	go func() { errs <- st.InTx(ctx, holder) }()
	go func() { errs <- st.InTx(ctx, auditor) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a transaction failed: %v (aborted: %v)", err, errors.Is(err, store.ErrAborted))
		}
	}
	if n := attempts.Load(); n != 2 {
		t.Errorf("%d attempts in all, want 2: the database aborted one to break a deadlock", n)
	}
	head, err := audit.VerifySeq(audit.Head{}, st.AuditEntries(ctx, 1))
	if err != nil || head.Seq != 2 {
		t.Fatalf("audit chain: head %+v, %v; want two entries that verify", head, err)
	}
}

// TestPostgresHeartbeatsLockInOrder: a heartbeat flush given agents in any order locks
// their rows in the order of their IDs, as a transaction of events marks its agents seen:
// a transaction holding ws-a's row and wanting ws-b's, and a flush given ws-b before ws-a,
// used to hold one each and wait for the other until PostgreSQL aborted one. Here the
// flush waits for ws-a holding nothing, and both commit on their first attempt.
func TestPostgresHeartbeatsLockInOrder(t *testing.T) {
	t.Parallel()
	ctx := testenv.Context(t)
	st, dsn := openPostgres(ctx, t)
	// ws-b first: its row comes first in the table, and in the list given to the flush,
	// so that whatever plan PostgreSQL picks for the flush's UPDATE meets it first.
	if err := st.InTx(ctx, func(tx store.Tx) error {
		for _, id := range []string{"ws-b", "ws-a"} {
			a, err := tx.CreateAgent(ctx, store.Agent{ID: id, Hostname: id + ".test"})
			if err != nil {
				return err
			}
			if _, err := tx.SetAgentState(ctx, a.ID, store.AgentStateChange{State: store.AgentActive, Reason: "test", By: "test", At: time.Now()}, a.State); err != nil && !errors.Is(err, store.ErrConflict) {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	// flushWaits is closed once the flush waits for a row lock.
	flushWaits := make(chan struct{})
	var attempts atomic.Int32
	holding := make(chan struct{})
	var holdOnce sync.Once
	events := func(tx store.Tx) error {
		attempts.Add(1)
		now := time.Now().UTC()
		if err := tx.RecordAgentSeen(ctx, "ws-a", now, false); err != nil {
			return err
		}
		holdOnce.Do(func() { close(holding) })
		select {
		case <-flushWaits:
		case <-ctx.Done():
			return ctx.Err()
		}
		return tx.RecordAgentSeen(ctx, "ws-b", now, false)
	}
	flush := func(tx store.Tx) error {
		attempts.Add(1)
		now := time.Now().UTC()
		_, err := tx.RecordHeartbeats(ctx, []store.Heartbeat{{AgentID: "ws-b", At: now}, {AgentID: "ws-a", At: now}})
		return err
	}
	errs := make(chan error, 2)
	go func() { errs <- st.InTx(ctx, events) }()
	<-holding
	go func() { errs <- st.InTx(ctx, flush) }()
	// No event tells when a statement starts waiting for a lock: the server's own view
	// of its sessions does.
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		var waiting int
		if err := raw.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("the flush never waited for the held row")
		}
	}
	close(flushWaits)
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a transaction failed: %v (aborted: %v)", err, errors.Is(err, store.ErrAborted))
		}
	}
	if n := attempts.Load(); n != 2 {
		t.Errorf("%d attempts in all, want 2: the database aborted one to break a deadlock", n)
	}
}

// openPostgres opens a store on a PostgreSQL database of the test's own, closed when the
// test ends, and returns it with the database's DSN.
func openPostgres(ctx context.Context, t *testing.T) (store.Store, string) {
	t.Helper()
	dsn := testenv.PostgresDatabase(t)
	st, err := store.Open(ctx, store.Config{Driver: store.DriverPostgres, DSN: dsn}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st, dsn
}
