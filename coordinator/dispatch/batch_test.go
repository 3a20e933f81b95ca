package dispatch_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestEventsTogether: events that wait together are handled in one transaction, each in
// a savepoint of its own. An agent's burst (its steps, a step forged for another agent's
// job in the middle of them, the CSR behind) keeps everything but the forged step, which
// is refused and audited and changes nothing of the other job; the steps handled together
// carry their transaction's one time, and the job goes on to the end.
func TestEventsTogether(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-burst", "")
	a.Hello()
	other := w.agent("ws-other", "")
	other.Hello()
	job := w.job(jobs.KindIssue, "ws-burst", "blank-issue", "")
	theirs := w.job(jobs.KindIssue, "ws-other", "blank-issue", "")
	denv := a.Next(protocol.TypeDispatch, job.ID)
	other.Next(protocol.TypeDispatch, theirs.ID)
	w.waitState(theirs.ID, jobs.StateDispatched)

	// The test holds the store's one writer while the burst arrives, so that the whole of
	// it waits in the consumer's prefetch.
	release, holding, held := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		held <- w.c.Store.InTx(context.WithoutCancel(w.ctx), func(store.Tx) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	d, err := protocol.DecodeBody[protocol.JobDispatch](denv)
	if err != nil {
		t.Fatal(err)
	}
	ref := denv.Job()
	is := &dispatchtest.Issued{Ref: ref, Dispatch: d, Serial: "B1", Pins: dispatchtest.RandomPins(), Key: dispatchtest.NewKey(t, d.Key.Type)}
	pub := dispatchtest.PublicKeyDER(t, is.Key)
	a.Progress(ref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "B1"})
	a.Progress(ref, protocol.Progress{Step: protocol.StepInitialising})
	forged := a.Progress(protocol.JobRef{JobID: theirs.ID, Attempt: 1}, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "X9"})
	a.Progress(ref, protocol.Progress{Step: protocol.StepKeyGenerated, KeyID: d.Key.ID, PublicKey: pub})
	a.Send(ref, protocol.CSRSubmission{CSR: dispatchtest.CSR(t, is.Key), KeyID: d.Key.ID, PublicKey: pub, TokenSerial: "B1"})
	a.Progress(ref, protocol.Progress{Step: protocol.StepCSRSent})
	waitHandedOut(t, w.broker.URL, protocol.EventsQueue)
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}

	got := w.waitState(job.ID, jobs.StateInstalling)
	want := []jobs.Step{jobs.StepTokenFound, jobs.StepInitialising, jobs.StepKeyGenerated, jobs.StepCSRSent}
	if s := steps(got, 1); !slices.Equal(s, want) {
		t.Fatalf("steps %v, want %v", s, want)
	}
	// The first step was taken alone while the store was held; those that waited behind
	// it shared transactions (how many a transaction takes depends on how fast the client
	// library hands deliveries over, on a busy machine a few at a time).
	if n := w.metric(`tokenfleet_coordinator_event_transaction_size_bucket{le="1"}`); n >= w.metric(`tokenfleet_coordinator_event_transaction_size_count`) {
		var lines []string
		for l := range strings.Lines(w.metrics()) {
			if strings.HasPrefix(l, "tokenfleet_coordinator_event_transaction_size") {
				lines = append(lines, strings.TrimSpace(l))
			}
		}
		t.Errorf("transactions of one event: %v, want some transaction of several: %v", n, lines)
	}
	rejected := w.waitAudit(audit.ActionMessageRejected, theirs.ID)
	if len(rejected) != 1 || !containsAll(string(rejected[0].Details), forged.ID) {
		t.Fatalf("refusals audited for the other job: %+v, want the forged step %s", rejected, forged.ID)
	}
	if d, err := w.admin.GetJob(w.ctx, theirs.ID); err != nil || d.State != jobs.StateDispatched || len(d.Steps) != 0 {
		t.Fatalf("the other agent's job after the forged step: %+v, %v", d, err)
	}

	a.Finish(is)
	w.waitState(job.ID, jobs.StateSucceeded)
	w.verifyAudit()
}

// waitHandedOut waits until queue on the broker at url has no message ready: with a
// consumer whose prefetch takes them all, every message is then on its way to it. (A
// passive declare answers at once; the management API's figures lag by seconds.)
func waitHandedOut(t *testing.T, url, queue string) {
	t.Helper()
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(waitTimeout)
	for {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still ready in %s after %v", q.Messages, queue, waitTimeout)
		}
		<-tick.C
	}
}

// TestPINsOfAnAttemptStoppedMidInitialise: the help desk cancels a job while its agent
// waits for the token; the token comes meanwhile, and the agent, stopped mid-initialise,
// reports its initialising step and its failed result (job_cancelled, with the PINs the
// token now has) only after the job ended.
// The coordinator keeps those PINs, and the next job on the token goes with them: keeping
// the old SO PIN would fail every later job on the token.
func TestPINsOfAnAttemptStoppedMidInitialise(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-midinit", "")
	a.Hello()
	job := w.job(jobs.KindIssue, "ws-midinit", "blank-issue", "")
	denv := a.Next(protocol.TypeDispatch, job.ID)
	d, err := protocol.DecodeBody[protocol.JobDispatch](denv)
	if err != nil {
		t.Fatal(err)
	}
	ref := denv.Job()
	is := &dispatchtest.Issued{Ref: ref, Dispatch: d, Serial: "M1", Pins: dispatchtest.RandomPins()}
	a.Progress(ref, protocol.Progress{Step: protocol.StepWaitingForToken, Detail: "insert a blank token"})
	w.waitState(job.ID, jobs.StateRunning)
	if _, err := w.desk.Cancel(w.ctx, job.ID, "the holder left"); err != nil {
		t.Fatal(err)
	}
	a.Next(protocol.TypeCancel, job.ID)

	// Meanwhile the token came and the agent began initialising it; stopped there, it
	// reports only now.
	a.Progress(ref, protocol.Progress{Step: protocol.StepInitialising})
	a.Result(is, protocol.OutcomeFailed, protocol.NewError(protocol.CodeJobCancelled, "the coordinator cancelled the job: the holder left"))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(waitTimeout)
	for {
		p, err := w.c.Store.GetTokenPIN(w.ctx, "M1", store.PINPurposeSO)
		if err == nil && p.JobID == job.ID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the SO PIN of token M1 after the late result: %+v, %v; want the cancelled job's", p, err)
		}
		<-tick.C
	}
	if got, err := w.admin.GetJob(w.ctx, job.ID); err != nil || got.State != jobs.StateCancelled {
		t.Fatalf("the job after its late step and result: %+v, %v; want it still cancelled", got.Job, err)
	}

	a.Hello(dispatchtest.Token("M1", true))
	next := w.job(jobs.KindIssue, "ws-midinit", "blank-issue", "M1")
	nenv := a.Next(protocol.TypeDispatch, next.ID)
	nd, err := protocol.DecodeBody[protocol.JobDispatch](nenv)
	if err != nil {
		t.Fatal(err)
	}
	if nd.PINs == nil || nd.PINs.SOPIN == nil {
		t.Fatalf("the next job on the token carries no SO PIN: %+v", nd.PINs)
	}
	if got := a.OpenPIN(nenv.Job(), nd.PINs.SOPIN, protocol.PurposeSOPIN); got != is.Pins.SO {
		t.Fatal("the next job on the token carries another SO PIN than the one the stopped attempt set")
	}
	w.verifyAudit()
}
