//go:build cgo

package e2e_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/faults"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestCSRThenInstallCertificate: a csr job initialises a blank token and leaves a key on
// it, and no certificate; the coordinator signs its CSR. An install_certificate job for
// the same holder and profile then writes that certificate next to the key.
func TestCSRThenInstallCertificate(t *testing.T) {
	s := newSystem(t)
	const id = "ws-csr"
	s.enrol(id)
	s.startAgent(id, agentOptions{})

	csrJob := s.queue(jobs.KindCSR, id, holder)
	d := s.waitJob(csrJob, jobs.StateSucceeded)
	wantSteps(t, d, jobs.StepTokenFound, jobs.StepInitialising, jobs.StepKeyGenerated, jobs.StepCSRSent)
	serial := d.TokenSerial
	keyID := protocol.DeriveKeyID(csrJob)
	pin := s.revealPIN(csrJob)
	objs := objects(t, serial, pin)
	if count(objs, "Private Key", "") != 1 || count(objs, "Private Key", keyID) != 1 || count(objs, "Certificate", "") != 0 {
		t.Fatalf("after the csr job the token holds, want one private key with ID %s and no certificate:%s", keyID, describeObjects(objs))
	}
	cert := s.certificateOf(csrJob) // signed by the coordinator, not on the token yet

	install := s.queue(jobs.KindInstallCertificate, id, holder, "--token-serial", serial)
	d = s.waitJob(install, jobs.StateSucceeded)
	wantSteps(t, d, jobs.StepTokenFound, jobs.StepCertificateWritten, jobs.StepVerified)
	if d.TokenSerial != serial {
		t.Errorf("the install job ran on token %q, want %s", d.TokenSerial, serial)
	}
	certPEM := wantOnlyKeyAndCertificate(t, serial, pin, keyID, certificateDER(t, cert.PEM))
	wantVerifiedByCA(t, s.ctl(s.operator, "ca", "cert"), certPEM)
	if r := s.ctlRun(s.operator, "job", "pin", install); r.code == ctl.ExitOK {
		t.Errorf("tokenfleetctl job pin revealed a PIN for an install job, which sets none: %q", r.stdout)
	}
	s.finalChecks()
}

// TestRenew: a renew job on an issued token generates a new key and gets a new
// certificate; the old key and certificate stay on the token until the new certificate is
// verified (the test holds the agent at that moment and looks), and are gone once the job
// succeeds.
func TestRenew(t *testing.T) {
	s := newSystem(t)
	const id = "ws-renew"
	s.enrol(id)
	inj := &faults.Injector{}
	s.startAgent(id, agentOptions{wrap: inj.Wrap})

	issue := s.queue(jobs.KindIssue, id, holder)
	d := s.waitJob(issue, jobs.StateSucceeded)
	serial, oldKey := d.TokenSerial, protocol.DeriveKeyID(issue)
	pin := s.revealPIN(issue)
	oldCert := s.certificateOf(issue)

	// Hold the renewal at its verification: the first signature after the new
	// certificate is written.
	written := inj.Calls("CreateObject")
	verifying := newGate(t)
	inj.Hook("SignInit", func() {
		if inj.Calls("CreateObject") > written {
			verifying.hold()
		}
	})
	renew := s.queue(jobs.KindRenew, id, holder, "--token-serial", serial)
	newKey := protocol.DeriveKeyID(renew)
	verifying.waitHeld()
	objs := objects(t, serial, pin)
	for _, keyID := range []string{oldKey, newKey} {
		if count(objs, "Private Key", keyID) != 1 || count(objs, "Certificate", keyID) != 1 {
			t.Errorf("while the new certificate is verified the token holds, want the old and the new key and certificate (%s, %s):%s",
				oldKey, newKey, describeObjects(objs))
		}
	}
	verifying.release()
	inj.Hook("SignInit", nil)

	d = s.waitJob(renew, jobs.StateSucceeded)
	wantSteps(t, d, jobs.StepTokenFound, jobs.StepKeyGenerated, jobs.StepCSRSent, jobs.StepCertificateWritten, jobs.StepVerified)
	newCert := s.certificateOf(renew)
	if newCert.Serial == oldCert.Serial {
		t.Fatal("the renewal brought no new certificate")
	}
	certPEM := wantOnlyKeyAndCertificate(t, serial, pin, newKey, certificateDER(t, newCert.PEM))
	wantVerifiedByCA(t, s.ctl(s.operator, "ca", "cert"), certPEM)
	s.finalChecks()
}

// TestUnblockPINAfterLockout: the token's user PIN is locked by wrong tries at the
// workstation (SoftHSM2 has no retry counter: a fault injector in front of it, in the agent's
// process, emulates a token's). A renew job, which needs the user PIN, fails with
// token.pin_locked. An unblock_pin job sets a new user PIN with the SO PIN the coordinator
// kept from the issue; tokenfleetctl job pin reveals it, it logs in, the old one does not;
// the failed renewal, retried, succeeds with it.
func TestUnblockPINAfterLockout(t *testing.T) {
	s := newSystem(t)
	const id = "ws-unblock"
	s.enrol(id)
	inj := &faults.Injector{}
	s.startAgent(id, agentOptions{wrap: inj.Wrap})

	issue := s.queue(jobs.KindIssue, id, holder)
	serial := s.waitJob(issue, jobs.StateSucceeded).TokenSerial
	oldPIN := s.revealPIN(issue)

	// Three tries, as on most tokens; someone types three wrong PINs at the workstation.
	lockUserPIN(t, inj, serial, 3)

	renew := s.queue(jobs.KindRenew, id, holder, "--token-serial", serial)
	d := s.waitJob(renew, jobs.StateFailed)
	if d.ErrorCode != "token.pin_locked" {
		t.Fatalf("the renewal on a locked token failed with %s (%s), want token.pin_locked", d.ErrorCode, d.ErrorMessage)
	}

	unblock := s.queue(jobs.KindUnblockPIN, id, holder, "--token-serial", serial)
	d = s.waitJob(unblock, jobs.StateSucceeded)
	wantSteps(t, d, jobs.StepTokenFound, jobs.StepVerified)
	newPIN := s.revealPIN(unblock)
	if newPIN == oldPIN {
		t.Fatal("the unblock kept the old PIN")
	}
	if r := s.ctlRun(s.operator, "job", "pin", unblock); r.code == ctl.ExitOK {
		t.Error("the new PIN was revealed twice")
	}
	wantLogin(t, serial, newPIN, true)
	wantLogin(t, serial, oldPIN, false)

	s.ctl(s.operator, "retry", renew, "--reason", "PIN unblocked")
	d = s.waitJob(renew, jobs.StateSucceeded)
	if d.Attempt != 2 {
		t.Errorf("the retried renewal ended at attempt %d, want 2", d.Attempt)
	}
	wantOnlyKeyAndCertificate(t, serial, newPIN, protocol.DeriveKeyID(renew), certificateDER(t, s.certificateOf(renew).PEM))
	s.finalChecks()
}

// lockUserPIN gives the token a retry counter of tries user PINs and uses them up with
// wrong PINs, through the agent's own fault injector (the module is shared in this
// process, and so are slot IDs and the injector's counters).
func lockUserPIN(t *testing.T, inj *faults.Injector, serial string, tries int) {
	t.Helper()
	ctx := context.Background()
	mod, err := pkcs11.Open(testenv.SoftHSMModule, pkcs11.Options{Wrap: inj.Wrap})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mod.Close() }()
	slots, err := mod.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(slots, func(s pkcs11.Slot) bool { return s.Token != nil && s.Token.Serial == serial })
	if i < 0 {
		t.Fatalf("the agent's module shows no token %s", serial)
	}
	inj.LimitPINTries(slots[i].ID, tries, 3)
	tok, err := mod.FindToken(ctx, &uri.URI{Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tok.Close() }()
	for n := range tries {
		// The last wrong PIN may be reported as locking the token already.
		err := tok.Login(ctx, "wrong-pin-"+strings.Repeat("x", n+1))
		if code := pkcs11.CodeOf(err); code != pkcs11.CodePINIncorrect && (n < tries-1 || code != pkcs11.CodePINLocked) {
			t.Fatalf("wrong PIN %d: %v, want a PIN incorrect error", n+1, err)
		}
	}
	info, err := tok.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.UserPIN.Locked {
		t.Fatalf("after %d wrong PINs the token does not say its user PIN is locked: %+v", tries, info)
	}
}

// TestWipe: a wipe job re-initialises an issued token with the SO PIN the coordinator kept:
// the token is empty (no object in the SoftHSM2 store either), the user PIN is gone, the SO
// PIN still works. The token can be issued again.
func TestWipe(t *testing.T) {
	s := newSystem(t)
	const id = "ws-wipe"
	s.enrol(id)
	s.startAgent(id, agentOptions{})

	issue := s.queue(jobs.KindIssue, id, holder)
	serial := s.waitJob(issue, jobs.StateSucceeded).TokenSerial
	pin := s.revealPIN(issue)
	so := s.keptPIN(serial, "so_pin")
	if files := storeObjectFiles(t, s.tokens, serial); len(files) < 2 {
		t.Fatalf("the issued token's store holds %d objects", len(files))
	}

	wipe := s.queue(jobs.KindWipe, id, holder, "--token-serial", serial)
	d := s.waitJob(wipe, jobs.StateSucceeded)
	wantSteps(t, d, jobs.StepTokenFound, jobs.StepInitialising, jobs.StepVerified)
	slot := slotOf(t, serial)
	if !slot.initialized || strings.Contains(slot.flags, "PIN initialized") {
		t.Errorf("after the wipe the token's flags are %q: want initialised, without a user PIN", slot.flags)
	}
	if objs := objects(t, serial, ""); len(objs) != 0 {
		t.Errorf("after the wipe the token shows:%s", describeObjects(objs))
	}
	if files := storeObjectFiles(t, s.tokens, serial); len(files) != 0 {
		t.Errorf("after the wipe SoftHSM2 still stores objects of the token: %v", files)
	}
	wantLogin(t, serial, pin, false)
	wantSOLogin(t, serial, so)

	// Issued again: re-initialised with the kept SO PIN, a new key, new PINs.
	again := s.queue(jobs.KindIssue, id, holder, "--token-serial", serial)
	d = s.waitJob(again, jobs.StateSucceeded)
	wantIssueHistory(t, d)
	newPIN := s.revealPIN(again)
	wantOnlyKeyAndCertificate(t, serial, newPIN, protocol.DeriveKeyID(again), certificateDER(t, s.certificateOf(again).PEM))
	s.finalChecks()
}

// gate holds a goroutine (an agent's PKCS#11 call, through a fault injector's hook) until
// the test lets it go. Only the first hold waits; the test's end lets it go in any case.
type gate struct {
	t        *testing.T
	held     chan struct{}
	released chan struct{}
	once     sync.Once
	relOnce  sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{t: t, held: make(chan struct{}), released: make(chan struct{})}
	t.Cleanup(g.release)
	return g
}

// hold is called from the hook: the first caller waits for release.
func (g *gate) hold() {
	first := false
	g.once.Do(func() {
		first = true
		close(g.held)
	})
	if first {
		<-g.released
	}
}

func (g *gate) waitHeld() {
	g.t.Helper()
	select {
	case <-g.held:
	case <-time.After(waitLimit):
		g.t.Fatalf("the agent did not reach the held call within %v", waitLimit)
	}
}

func (g *gate) release() { g.relOnce.Do(func() { close(g.released) }) }
