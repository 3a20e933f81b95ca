//go:build cgo

package executor

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// What a job that ends failed leaves on its token, on an agent with one simulated token
// (as the fault campaign's simulated agents have): nothing is undone (see the package
// documentation), so whoever plans the token's next job must count with it.

// failParked waits for the attempt to park for its certificate, then fails it as the
// coordinator does when it refuses the CSR, and returns the attempt's result.
func failParked(t *testing.T, a *agent, ref protocol.JobRef) protocol.Result {
	t.Helper()
	a.until("the job to park", func() bool { return a.state(ref) == journal.StateAwaitingCertificate })
	rc, err := a.ex.Cancel(context.Background(), a.coord.envelope(ref,
		protocol.Cancel{State: protocol.StateFailed, Reason: "CSR refused"}))
	if err != nil || rc.Disposition != journal.Accepted {
		t.Fatalf("Cancel: %+v, %v", rc, err)
	}
	res := a.result(ref)
	wantFailure(t, res, protocol.CodeJobCancelled, false)
	return res
}

// simObjects lists the key pairs (private ones, by ID) and the holder's certificates (by
// ID) on a simulated token, logged in with the PIN.
func simObjects(t *testing.T, a *agent, serial, pin string) (keys, certs []string) {
	t.Helper()
	ctx := context.Background()
	tok, err := a.mod.FindToken(ctx, &uri.URI{Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tok.Close() }()
	if err := tok.Login(ctx, pin); err != nil {
		t.Fatalf("login: %v", err)
	}
	ks, err := tok.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		if k.Private {
			keys = append(keys, k.ID.String())
		}
	}
	cs, err := tok.Certificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if !c.Authority {
			certs = append(certs, c.ID.String())
		}
	}
	slices.Sort(keys)
	slices.Sort(certs)
	return keys, certs
}

// An issue that fails after initialising the only blank token leaves it initialised, with
// the PINs its result carries: a later issue asking for a blank token (as a help desk's
// first issue does) waits for one, and ends at its deadline, though the holder's token
// is there. An issue naming the token re-initialises it with the SO PIN the failed job
// reported, and the token then holds that issue's key and certificate alone.
func TestAFailedIssueLeavesItsTokenInitialised(t *testing.T) {
	const serial = "SIMWS0010"
	b := simBackendWith(t, 10, simtoken.TokenSpec{Serial: serial})
	a := newSimAgent(t, b)
	a.coord.deliver = false
	label := newLabel(t)

	failed := protocol.JobRef{JobID: "issue-failed", Attempt: 1}
	a.submit(issueBlank(a, failed, label, protocol.KeyP256))
	res := failParked(t, a, failed)
	user, so := a.pins(failed, res)
	if user == "" || so == "" || res.Outputs.TokenSerial != serial || res.Outputs.KeyID != keyID(failed.JobID) {
		t.Fatalf("outputs %+v: want the token, its new PINs and the key left on it", res.Outputs)
	}
	if keys, certs := simObjects(t, a, serial, user); !slices.Equal(keys, []string{keyID(failed.JobID)}) || len(certs) != 0 {
		t.Fatalf("the failed issue left keys %v and certificates %v, want its key alone", keys, certs)
	}

	// The next issue for a blank token: the holder's token is no longer blank.
	blank := protocol.JobRef{JobID: "issue-wants-blank", Attempt: 1}
	env := a.coord.dispatch(blank, protocol.JobDispatch{
		Kind: protocol.KindIssue, Token: protocol.TokenSelector{Blank: true}, Initialise: true, TokenLabel: label,
		PINPolicy: policy(8, true), Key: &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(blank.JobID)},
		ResultKey: a.coord.resultKey(), Deadline: time.Now().Add(time.Second).UTC(),
	})
	a.submit(env)
	a.step(blank, protocol.StepWaitingForToken)
	wantFailure(t, a.result(blank), protocol.CodeDeadlineExceeded, true)

	// An issue naming the token, with the SO PIN the failed issue reported.
	named := protocol.JobRef{JobID: "issue-names-it", Attempt: 1}
	a.submit(a.coord.dispatch(named, protocol.JobDispatch{
		Kind: protocol.KindIssue, Token: protocol.TokenSelector{Serial: serial}, Initialise: true, TokenLabel: label,
		PINPolicy: policy(8, true), Key: &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(named.JobID)},
		PINs:      &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(named, protocol.PurposeSOPIN, so)},
		ResultKey: a.coord.resultKey(),
	}))
	deliverCSR(t, a, named)
	res = a.result(named)
	wantSuccess(t, res)
	user, _ = a.pins(named, res)
	if keys, certs := simObjects(t, a, serial, user); !slices.Equal(keys, []string{keyID(named.JobID)}) ||
		!slices.Equal(certs, []string{keyID(named.JobID)}) {
		t.Fatalf("after the issue naming the token: keys %v, certificates %v; want its own key and certificate alone", keys, certs)
	}
}

// A renewal that fails after making its key leaves that key beside the current key and
// certificate. The next renewal replaces the current ones and leaves the failed
// renewal's key: the token ends with two private keys, only one of them certified. A
// retry of the failed renewal instead reuses its key and leaves one.
func TestAFailedRenewalLeavesItsKeyBesideTheCurrentOne(t *testing.T) {
	const serial, so, pin = "SIMWS0011", "13572468", "24681357"
	b := simBackendWith(t, 11, simtoken.TokenSpec{Serial: serial, SOPIN: so, Label: "sim", UserPIN: pin})
	a := newSimAgent(t, b)
	a.coord.deliver = false

	issue := protocol.JobRef{JobID: "renew-base", Attempt: 1}
	a.submit(issueWith(a, protocol.KindIssue, issue, serial, pin))
	deliverCSR(t, a, issue)
	wantSuccess(t, a.result(issue))

	renew := func(ref protocol.JobRef, replaces string) *protocol.Envelope {
		return a.coord.dispatch(ref, protocol.JobDispatch{
			Kind: protocol.KindRenew, Token: protocol.TokenSelector{Serial: serial},
			Key:  &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID), Replaces: keyID(replaces)},
			PINs: &protocol.SealedPINs{UserPIN: a.coord.sealToAgent(ref, protocol.PurposeUserPIN, pin)},
		})
	}
	failed := protocol.JobRef{JobID: "renew-failed", Attempt: 1}
	a.submit(renew(failed, issue.JobID))
	res := failParked(t, a, failed)
	if res.Outputs == nil || res.Outputs.KeyID != keyID(failed.JobID) {
		t.Fatalf("outputs %+v: want the key left on the token", res.Outputs)
	}
	keys, certs := simObjects(t, a, serial, pin)
	if want := sorted(keyID(issue.JobID), keyID(failed.JobID)); !slices.Equal(keys, want) || !slices.Equal(certs, []string{keyID(issue.JobID)}) {
		t.Fatalf("after the failed renewal: keys %v, certificates %v; want keys %v and the issue's certificate", keys, certs, want)
	}

	next := protocol.JobRef{JobID: "renew-next", Attempt: 1}
	a.submit(renew(next, issue.JobID))
	deliverCSR(t, a, next)
	wantSuccess(t, a.result(next))
	keys, certs = simObjects(t, a, serial, pin)
	if want := sorted(keyID(failed.JobID), keyID(next.JobID)); !slices.Equal(keys, want) || !slices.Equal(certs, []string{keyID(next.JobID)}) {
		t.Fatalf("after the next renewal: keys %v, certificates %v; want keys %v and the next renewal's certificate", keys, certs, want)
	}

	// A retry of the failed renewal takes its key back: one key, its certificate.
	retry := protocol.JobRef{JobID: failed.JobID, Attempt: 2}
	a.submit(renew(retry, next.JobID))
	deliverCSR(t, a, retry)
	wantSuccess(t, a.result(retry))
	keys, certs = simObjects(t, a, serial, pin)
	if !slices.Equal(keys, []string{keyID(failed.JobID)}) || !slices.Equal(certs, []string{keyID(failed.JobID)}) {
		t.Fatalf("after the retry: keys %v, certificates %v; want the retried renewal's key and certificate alone", keys, certs)
	}
}

// deliverCSR waits for the attempt's CSR and delivers its certificate, as the coordinator
// does once it signed it.
func deliverCSR(t *testing.T, a *agent, ref protocol.JobRef) {
	t.Helper()
	var csr *protocol.Envelope
	a.until("the CSR of "+ref.JobID, func() bool {
		for _, e := range a.coord.messages(ref) {
			if e.Type == protocol.TypeCSR {
				csr = e
			}
		}
		return csr != nil
	})
	if err := a.coord.deliverFor(context.Background(), csr, a.ex); err != nil {
		t.Fatal(err)
	}
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}
