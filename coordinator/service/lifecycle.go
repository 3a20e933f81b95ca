package service

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// AgentActorPrefix starts the actor of a change an agent's report caused ("agent:ID").
// Such a change is the agent's own news: the agent is not told about it again.
const AgentActorPrefix = "agent:"

// AgentActor names agent id as the actor of a change in timelines and the audit log.
func AgentActor(id string) string { return AgentActorPrefix + id }

// JobTx is a transaction in which jobs change state. The dispatcher handles every agent
// event and broker confirmation in one: its transitions then go through the same table,
// audit entries, dispatcher seams and counters as those of the API and the sweepers. The
// embedded store.Tx is for the records that are not job state (inbox, attempts, steps,
// certificates, tokens).
type JobTx struct {
	store.Tx
	t *txn
}

// UpdateJobs runs fn in one transaction, and again on fresh reads after a lost
// compare-and-set (an error matching store.ErrConflict), at most maxTxAttempts times.
// Transitions are counted once the transaction committed. fn's error is returned as it
// is, so that the caller can tell its own verdicts from store failures.
func (s *Service) UpdateJobs(ctx context.Context, fn func(jt *JobTx) error) error {
	var err error
	for range maxTxAttempts {
		var t *txn
		err = s.st.InTx(ctx, func(tx store.Tx) error {
			t = &txn{Tx: tx, s: s, now: s.clock()}
			return fn(&JobTx{Tx: tx, t: t})
		})
		if errors.Is(err, store.ErrConflict) {
			s.log.Debug().Err(err).Msg("concurrent change; reading again")
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range t.events {
			ev(s.obs)
		}
		return nil
	}
	return err
}

// Try runs fn inside a savepoint of the transaction. When fn fails, everything it wrote is
// undone and the transitions it made are not counted, while the transaction goes on with
// what came before; fn's error is returned as it is. Several messages handled in one
// transaction keep one message's refusal from undoing the others.
func (jt *JobTx) Try(ctx context.Context, fn func() error) error {
	if err := jt.Savepoint(ctx); err != nil {
		return err
	}
	n := len(jt.t.events)
	if err := fn(); err != nil {
		jt.t.events = jt.t.events[:n]
		// ROLLBACK TO keeps the savepoint itself; released, it does not pile up. When
		// either fails the transaction is unusable: that failure is returned, fn's error
		// only as text, so that no caller takes it for fn's verdict and goes on.
		if undoErr := jt.RollbackToSavepoint(ctx); undoErr != nil {
			return fmt.Errorf("%s; undoing it: %w", err.Error(), undoErr)
		}
		if undoErr := jt.ReleaseSavepoint(ctx); undoErr != nil {
			return fmt.Errorf("%s; undoing it: %w", err.Error(), undoErr)
		}
		return err
	}
	return jt.ReleaseSavepoint(ctx)
}

// Now is the transaction's time, in store precision.
func (jt *JobTx) Now() time.Time { return jt.t.now }

// Transition moves j to state to, checked against the kind's transition table, with its
// timeline event and audit entry; the dispatcher is told as for any other transition.
func (jt *JobTx) Transition(ctx context.Context, j store.Job, to jobs.State, c store.JobChange) (store.Job, error) {
	return jt.t.transition(ctx, j, to, c, "")
}

// TransitionAll is Transition for several jobs that take the same change, in a few
// statements for the whole set rather than a few a job: each is checked against its
// kind's table, and if one cannot move, none does. It returns the jobs as they are now,
// in the order of js.
func (jt *JobTx) TransitionAll(ctx context.Context, js []store.Job, to jobs.State, c store.JobChange) ([]store.Job, error) {
	return jt.t.transitionAll(ctx, js, to, c, "")
}

// Audit appends an audit entry in the transaction.
func (jt *JobTx) Audit(ctx context.Context, e audit.Entry) error { return jt.t.audit(ctx, e) }

// byAgent reports whether a change was caused by the job's agent reporting it.
func byAgent(c store.JobChange) bool { return strings.HasPrefix(c.Actor, AgentActorPrefix) }
