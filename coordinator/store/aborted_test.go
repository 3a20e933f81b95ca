package store_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

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
	st, err := store.Open(ctx, store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	err = st.InTx(ctx, func(tx store.Tx) error {
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
