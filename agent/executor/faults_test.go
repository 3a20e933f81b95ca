//go:build cgo

package executor

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// A token pulled out while a key is generated or a certificate written: the attempt
// fails at once, retryable, and the next attempt, which waits for the token to come back,
// finishes with one key and one certificate.
func TestTokenRemovedMidOperation(t *testing.T) {
	for _, tc := range []struct {
		name, call string
		failedStep protocol.Step // the last step the first attempt reported
	}{
		{"during key generation", "GenerateKeyPair", protocol.StepTokenFound},
		{"during the certificate write", "CreateObject", protocol.StepCSRSent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			label, serial := initToken(t, soPIN, userPIN)
			a := newAgent(t, agentOptions{})
			slot := a.slotOf(serial)
			// The call reaches the token, then the token is gone: it keeps what the call did
			// (a key generation leaves half a key pair).
			a.inj.FailAfter(tc.call, p11.CKR_DEVICE_REMOVED, 1)
			first := protocol.JobRef{JobID: "removed-" + tc.call, Attempt: 1}
			a.submit(issueWith(a, protocol.KindIssue, first, serial, userPIN))
			res := a.result(first)
			wantFailure(t, res, protocol.CodeTokenDeviceRemoved, true)
			got := trace(a.coord.messages(first))
			if i := slices.Index(got, "progress:"+string(tc.failedStep)); i < 0 || i != len(got)-2 {
				t.Fatalf("first attempt: %v; want it to fail right after %s", got, tc.failedStep)
			}
			if a.state(first) != journal.StateFailed {
				t.Fatalf("first attempt is %s", a.state(first))
			}

			// The coordinator retries while the token is still out: the agent waits for it.
			second := protocol.JobRef{JobID: first.JobID, Attempt: 2}
			a.submit(issueWith(a, protocol.KindIssue, second, serial, userPIN))
			a.step(second, protocol.StepWaitingForToken)
			a.inj.Insert(slot)
			res = a.result(second)
			wantSuccess(t, res)
			if got := trace(a.coord.messages(second)); got[0] != "progress:waiting_for_token" || got[1] != "progress:token_found" {
				t.Errorf("second attempt: %v", got)
			}
			a.stop()
			wantOneKeyAndCertificate(t, label, userPIN, keyID(first.JobID))
			if objs := objects(t, label, userPIN); countObjects(objs, "Public Key", keyID(first.JobID)) != 1 {
				t.Errorf("public keys: %v", objs)
			}
		})
	}
}

func TestDeadlineWhileWaitingForTheToken(t *testing.T) {
	a := newAgent(t, agentOptions{})
	ref := protocol.JobRef{JobID: "deadline", Attempt: 1}
	env := a.coord.dispatch(ref, protocol.JobDispatch{
		Kind: protocol.KindIssue, Deadline: time.Now().Add(700 * time.Millisecond).UTC(),
		Token: protocol.TokenSelector{Serial: "not-plugged-in"},
		Key:   &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
		PINs:  &protocol.SealedPINs{UserPIN: a.coord.sealToAgent(ref, protocol.PurposeUserPIN, userPIN)},
	})
	a.submit(env)
	res := a.result(ref)
	wantFailure(t, res, protocol.CodeDeadlineExceeded, true)
	if got := trace(a.coord.messages(ref)); !slices.Equal(got, []string{"progress:waiting_for_token", "result:failed"}) {
		t.Fatalf("messages %v: waiting_for_token once, then the failure", got)
	}
	for _, e := range a.coord.messages(ref) {
		if p, err := protocol.DecodeBody[protocol.Progress](e); err == nil && !strings.Contains(p.Detail, "not-plugged-in") {
			t.Errorf("waiting_for_token does not say which token to insert: %q", p.Detail)
		}
	}
}

func TestDeadlinePassedBeforeTheJobStarts(t *testing.T) {
	now := time.Now()
	a := newAgent(t, agentOptions{now: func() time.Time { return now.Add(time.Hour) }})
	ref := protocol.JobRef{JobID: "deadline-past", Attempt: 1}
	a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
		Kind: protocol.KindIssue, Deadline: now.Add(time.Minute).UTC(),
		Token: protocol.TokenSelector{Serial: "whatever"},
		Key:   &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
		PINs:  &protocol.SealedPINs{UserPIN: a.coord.sealToAgent(ref, protocol.PurposeUserPIN, userPIN)},
	}))
	wantFailure(t, a.result(ref), protocol.CodeDeadlineExceeded, true)
	if got := trace(a.coord.messages(ref)); !slices.Equal(got, []string{"result:failed"}) {
		t.Fatalf("messages %v", got)
	}
}

func TestCancelWhileWaitingForTheToken(t *testing.T) {
	a := newAgent(t, agentOptions{})
	ref := protocol.JobRef{JobID: "cancel-waiting", Attempt: 1}
	a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
		Kind:  protocol.KindIssue,
		Token: protocol.TokenSelector{Serial: "not-plugged-in"},
		Key:   &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
		PINs:  &protocol.SealedPINs{UserPIN: a.coord.sealToAgent(ref, protocol.PurposeUserPIN, userPIN)},
	}))
	a.step(ref, protocol.StepWaitingForToken)
	cancel := a.coord.envelope(ref, protocol.Cancel{State: protocol.StateCancelled, Reason: "the user left"})
	rc, err := a.ex.Cancel(context.Background(), cancel)
	if err != nil || rc.Disposition != journal.Accepted {
		t.Fatalf("Cancel: %+v, %v", rc, err)
	}
	res := a.result(ref)
	wantFailure(t, res, protocol.CodeJobCancelled, false)
	if !strings.Contains(res.Error.Message, "the user left") {
		t.Errorf("cancel message %q", res.Error.Message)
	}
	if a.state(ref) != journal.StateCancelled {
		t.Errorf("journal state %s", a.state(ref))
	}
	if rc, _ := a.ex.Cancel(context.Background(), cancel); rc.Disposition != journal.Duplicate {
		t.Errorf("a redelivered cancel: %s", rc.Disposition)
	}
}

func TestCancelOfAParkedJob(t *testing.T) {
	_, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	a.coord.deliver = false
	ref := protocol.JobRef{JobID: "cancel-parked", Attempt: 1}
	a.submit(issueWith(a, protocol.KindIssue, ref, serial, userPIN))
	a.until("the job to park", func() bool { return a.state(ref) == journal.StateAwaitingCertificate })
	if _, err := a.ex.Cancel(context.Background(), a.coord.envelope(ref, protocol.Cancel{State: protocol.StateExpired})); err != nil {
		t.Fatal(err)
	}
	res := a.result(ref)
	wantFailure(t, res, protocol.CodeJobCancelled, false)
	if res.Outputs == nil || res.Outputs.KeyID != keyID(ref.JobID) || res.Outputs.TokenSerial != serial {
		t.Errorf("a cancelled job still reports what it left on the token: %+v", res.Outputs)
	}
}

func TestADispatchRedeliveredRunsOnce(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	ref := protocol.JobRef{JobID: "redelivered", Attempt: 1}
	env := issueWith(a, protocol.KindIssue, ref, serial, userPIN)
	if rc := a.submit(env); rc.Disposition != journal.Accepted {
		t.Fatalf("first delivery: %s", rc.Disposition)
	}
	if rc := a.submit(env); rc.Disposition != journal.Duplicate {
		t.Fatalf("second delivery while running: %s", rc.Disposition)
	}
	wantSuccess(t, a.result(ref))
	if rc := a.submit(env); rc.Disposition != journal.Duplicate {
		t.Fatalf("third delivery after the result: %s", rc.Disposition)
	}
	// The same attempt under another message ID (a coordinator re-sending it) is no new job.
	if rc := a.submit(issueWith(a, protocol.KindIssue, ref, serial, userPIN)); rc.Disposition != journal.Duplicate {
		t.Fatalf("the same attempt again: %s", rc.Disposition)
	}
	a.stop()
	msgs, err := a.j.Messages(context.Background(), ref.JobID)
	if err != nil {
		t.Fatal(err)
	}
	n := map[protocol.MessageType]int{}
	for _, m := range msgs {
		n[m.Type]++
	}
	if n[protocol.TypeResult] != 1 || n[protocol.TypeCSR] != 1 {
		t.Fatalf("the job ran more than once: %v", n)
	}
	wantOneKeyAndCertificate(t, label, userPIN, keyID(ref.JobID))
}

func TestStaleAndSupersededAttempts(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	// Attempt 1 waits for a token that is not there...
	first := protocol.JobRef{JobID: "superseded", Attempt: 1}
	a.submit(a.coord.dispatch(first, protocol.JobDispatch{
		Kind:  protocol.KindIssue,
		Token: protocol.TokenSelector{Serial: "not-plugged-in"},
		Key:   &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(first.JobID)},
		PINs:  &protocol.SealedPINs{UserPIN: a.coord.sealToAgent(first, protocol.PurposeUserPIN, userPIN)},
	}))
	a.step(first, protocol.StepWaitingForToken)
	// ...when the coordinator dispatches attempt 2, for the right token: attempt 1 stops.
	second := protocol.JobRef{JobID: first.JobID, Attempt: 2}
	rc := a.submit(issueWith(a, protocol.KindIssue, second, serial, userPIN))
	if rc.Disposition != journal.Accepted || !slices.Equal(rc.Superseded, []protocol.JobRef{first}) {
		t.Fatalf("attempt 2: %+v", rc)
	}
	wantSuccess(t, a.result(second))
	if got := trace(a.coord.messages(first)); !slices.Equal(got, []string{"progress:waiting_for_token"}) {
		t.Errorf("the superseded attempt said more: %v", got)
	}
	if a.state(first) != journal.StateSuperseded {
		t.Errorf("attempt 1 is %s", a.state(first))
	}
	// A late copy of attempt 1 is stale: ignored, never run.
	if rc := a.submit(issueWith(a, protocol.KindIssue, first, serial, userPIN)); rc.Disposition != journal.Stale {
		t.Fatalf("attempt 1 again: %s", rc.Disposition)
	}
	cert := protocol.CertificateDelivery{KeyID: keyID(first.JobID), Certificates: protocol.CertificateChain{Certificate: a.coord.ca.Cert.Raw}}
	if rc, err := a.ex.DeliverCertificate(context.Background(), a.coord.envelope(first, cert), cert); err != nil || rc.Disposition != journal.Stale {
		t.Fatalf("a certificate for attempt 1: %+v, %v", rc, err)
	}
	a.stop()
	if got := trace(a.coord.messages(first)); len(got) != 1 {
		t.Errorf("the stale attempt ran: %v", got)
	}
	wantOneKeyAndCertificate(t, label, userPIN, keyID(first.JobID))
}

// Shutdown while a step holds the token: the step finishes, the job parks, and the next
// start resumes it where it was.
func TestShutdownParksAndTheNextStartResumes(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	dir := t.TempDir()
	a := newAgent(t, agentOptions{dir: dir})
	held := make(chan struct{})
	release := make(chan struct{})
	var once bool
	a.inj.Hook("GenerateKeyPair", func() {
		if !once {
			once = true
			close(held)
			<-release
		}
	})
	ref := protocol.JobRef{JobID: "shutdown", Attempt: 1}
	a.submit(issueWith(a, protocol.KindIssue, ref, serial, userPIN))
	select {
	case <-held:
	case <-time.After(waitFor):
		t.Fatal("key generation never started")
	}
	// Ask for the shutdown before the held step may finish, so that the executor sees it
	// at the next step boundary whatever the scheduling.
	a.cancel()
	stopped := make(chan struct{})
	go func() { a.stop(); close(stopped) }()
	if act := a.ex.Active(); len(act) != 1 || act[0].Job != ref || act[0].Step != protocol.StepTokenFound {
		t.Errorf("active jobs %+v", act)
	}
	select {
	case <-stopped:
		t.Fatal("Run returned while a token call was in flight")
	default:
	}
	close(release)
	select {
	case <-stopped:
	case <-time.After(waitFor):
		t.Fatal("Run did not return after the token call finished")
	}
	job, err := a.j.Job(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	// The step in flight finished and was journalled; the job stopped at the next step
	// boundary.
	if job.State.Finished() || job.Step != stepGenerateKey || job.StepStatus != journal.StepDone {
		t.Fatalf("after shutdown the job is %s at %s %s; want it parked after %s", job.State, job.Step, job.StepStatus, stepGenerateKey)
	}
	a.inj.Hook("GenerateKeyPair", nil)

	// The next start (a new executor over the same journal) finishes it.
	b := newAgent(t, agentOptions{dir: dir, coord: a.coord, noRun: true})
	if n, err := b.ex.Resume(context.Background()); err != nil || n != 1 {
		t.Fatalf("Resume: %d, %v", n, err)
	}
	b.start()
	wantSuccess(t, b.result(ref))
	b.stop()
	wantOneKeyAndCertificate(t, label, userPIN, keyID(ref.JobID))
}

// A failure after the token got new PINs still hands them to the coordinator, and the
// retry of the job carries on with that token and those PINs instead of looking for
// another blank token.
func TestFailureAfterInitialiseReportsThePINsAndTheRetryKeepsThem(t *testing.T) {
	a := newAgent(t, agentOptions{})
	label := newLabel(t)
	first := protocol.JobRef{JobID: "init-then-removed", Attempt: 1}
	a.inj.FailAfter("GenerateKeyPair", p11.CKR_DEVICE_REMOVED, 1)
	a.submit(issueBlank(a, first, label, protocol.KeyP256))
	res := a.result(first)
	wantFailure(t, res, protocol.CodeTokenDeviceRemoved, true)
	user, so := a.pins(first, res)
	serial := res.Outputs.TokenSerial
	if user == "" || so == "" || serial == "" {
		t.Fatalf("partial outputs %+v", res.Outputs)
	}
	a.insertAll()

	second := protocol.JobRef{JobID: first.JobID, Attempt: 2}
	a.submit(issueBlank(a, second, label, protocol.KeyP256))
	res = a.result(second)
	wantSuccess(t, res)
	user2, so2 := a.pins(second, res)
	if user2 != user || so2 != so || res.Outputs.TokenSerial != serial {
		t.Fatal("the retry did not keep the token and PINs the first attempt set")
	}
	if got := trace(a.coord.messages(second)); slices.Contains(got, "progress:initialising") {
		t.Errorf("the retry initialised the token again: %v", got)
	}
	a.stop()
	wantOneKeyAndCertificate(t, label, user, keyID(first.JobID))
	if n := tokensLabelled(t, label); n != 1 {
		t.Errorf("%d tokens labelled %q", n, label)
	}
}
