//go:build cgo

package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// stopBound is how soon after the coordinator's message a waiting job must have ended.
const stopBound = 5 * time.Second

// TestTheCoordinatorStopsAWaitingJob: whatever the coordinator did to a job (cancelled,
// failed, rejected, let it expire), a job waiting for its token or parked waiting for its
// certificate ends at once, not at its next poll: the poll interval here is an hour. The
// result is job_cancelled, worded after what the coordinator did, and the journal and the
// log say the same.
func TestTheCoordinatorStopsAWaitingJob(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parked bool // waiting for the certificate after the CSR, else for the token
		cancel protocol.Cancel
		state  journal.State
		says   string
	}{
		{"waiting for its token, cancelled", false,
			protocol.Cancel{State: protocol.StateCancelled, Reason: "the holder left"},
			journal.StateCancelled, "the coordinator cancelled the job: the holder left"},
		{"waiting for its token, failed", false,
			protocol.Cancel{State: protocol.StateFailed, Reason: "the profile no longer renders"},
			journal.StateFailed, "the coordinator failed the job: the profile no longer renders"},
		{"waiting for its certificate, cancelled", true,
			protocol.Cancel{State: protocol.StateCancelled},
			journal.StateCancelled, "the coordinator cancelled the job"},
		{"waiting for its certificate, failed", true,
			protocol.Cancel{State: protocol.StateFailed, Reason: "CSR refused: the public key is not the one reported"},
			journal.StateFailed, "the coordinator failed the job: CSR refused: the public key is not the one reported"},
		{"waiting for its certificate, rejected", true,
			protocol.Cancel{State: protocol.StateRejected, Reason: "not for this holder"},
			journal.StateCancelled, "the coordinator rejected the job: not for this holder"},
		{"waiting for its certificate, expired", true,
			protocol.Cancel{State: protocol.StateExpired, Reason: "nobody signed in time"},
			journal.StateCancelled, "the job expired on the coordinator: nobody signed in time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serial := "not-plugged-in"
			if tc.parked {
				_, serial = initToken(t, soPIN, userPIN)
			}
			a := newAgent(t, agentOptions{poll: time.Hour})
			a.coord.deliver = false
			ref := protocol.JobRef{JobID: "stopped-waiting", Attempt: 1}
			a.submit(issueWith(a, protocol.KindIssue, ref, serial, userPIN))
			if tc.parked {
				a.until("the job to park", func() bool { return a.state(ref) == journal.StateAwaitingCertificate })
			} else {
				a.step(ref, protocol.StepWaitingForToken)
			}

			rc, err := a.ex.Cancel(context.Background(), a.coord.envelope(ref, tc.cancel))
			if err != nil || rc.Disposition != journal.Accepted {
				t.Fatalf("Cancel: %+v, %v", rc, err)
			}
			res := a.resultWithin(stopBound, ref)
			wantFailure(t, res, protocol.CodeJobCancelled, false)
			if res.Error.Message != tc.says {
				t.Errorf("result says %q, want %q", res.Error.Message, tc.says)
			}
			if got := a.state(ref); got != tc.state {
				t.Errorf("journal state %s, want %s", got, tc.state)
			}
			if !logged(a.logs.Bytes(), tc.says) {
				t.Errorf("no log line %q; log tail:\n%s", tc.says, tail(a.logs.Bytes(), 4000))
			}
			got := trace(a.coord.messages(ref))
			if got[len(got)-1] != "result:failed" || slices.Index(got, "result:failed") != len(got)-1 {
				t.Errorf("messages %v: one result, last", got)
			}
			if !tc.parked {
				if res.Outputs != nil {
					t.Errorf("a job stopped before it found its token reports outputs %+v", res.Outputs)
				}
				return
			}
			// issue stopped after its CSR: the key stays on the token, reported by its ID;
			// no certificate was written.
			if res.Outputs == nil || res.Outputs.KeyID != keyID(ref.JobID) || res.Outputs.TokenSerial != serial ||
				res.Outputs.CertificateSerial != "" {
				t.Errorf("outputs %+v: want the token and the key left on it, no certificate", res.Outputs)
			}
		})
	}
}

// logged reports whether a log line has the message.
func logged(logs []byte, msg string) bool {
	for _, line := range bytes.Split(logs, []byte("\n")) {
		var l struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(line, &l) == nil && l.Message == msg {
			return true
		}
	}
	return false
}

// TestARetryAfterTheCoordinatorFailedTheJob: a job the coordinator failed may be retried
// (a new attempt), unlike a cancelled one. The agent keeps the PINs the failed attempt set
// on the token, so the retry neither wipes the token again nor makes a second key: it
// finishes the job with the token, PINs and key the first attempt left.
func TestARetryAfterTheCoordinatorFailedTheJob(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	a.coord.deliver = false
	newLabel := label + "-r"
	dispatch := func(ref protocol.JobRef) *protocol.Envelope {
		return a.coord.dispatch(ref, protocol.JobDispatch{
			Kind: protocol.KindIssue, Token: protocol.TokenSelector{Serial: serial},
			Initialise: true, TokenLabel: newLabel, PINPolicy: policy(10, false),
			Key:       &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
			PINs:      &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(ref, protocol.PurposeSOPIN, soPIN)},
			ResultKey: a.coord.resultKey(),
		})
	}
	first := protocol.JobRef{JobID: "failed-then-retried", Attempt: 1}
	a.submit(dispatch(first))
	a.until("the job to park", func() bool { return a.state(first) == journal.StateAwaitingCertificate })
	if _, err := a.ex.Cancel(context.Background(), a.coord.envelope(first,
		protocol.Cancel{State: protocol.StateFailed, Reason: "signing failed"})); err != nil {
		t.Fatal(err)
	}
	res := a.resultWithin(stopBound, first)
	wantFailure(t, res, protocol.CodeJobCancelled, false)
	// The token stays initialised with the new PINs, which the result reports.
	user, so := a.pins(first, res)
	if user == "" || so == "" || so == soPIN {
		t.Fatalf("the stopped attempt reports PINs user %t, SO %t, SO changed %t", user != "", so != "", so != soPIN)
	}

	a.coord.deliver = true
	second := protocol.JobRef{JobID: first.JobID, Attempt: 2}
	a.submit(dispatch(second))
	res = a.result(second)
	wantSuccess(t, res)
	user2, so2 := a.pins(second, res)
	if user2 != user || so2 != so {
		t.Error("the retry changed the PINs the failed attempt set")
	}
	if got := trace(a.coord.messages(second)); slices.Contains(got, "progress:"+string(protocol.StepInitialising)) {
		t.Errorf("the retry initialised the token again: %v", got)
	}
	a.stop()
	wantOneKeyAndCertificate(t, newLabel, user, keyID(first.JobID))
}
