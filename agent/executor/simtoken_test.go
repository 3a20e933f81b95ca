//go:build cgo

package executor

import (
	"context"
	"encoding/hex"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/faults"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// simClock is a simulated token's clock and Sleeper: sleeping advances it, so the token's
// latency costs no wall time.
type simClock struct {
	mu    sync.Mutex
	now   time.Time
	slept time.Duration
}

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *simClock) Sleep(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.slept += d
}

func (c *simClock) Slept() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slept
}

// newSimAgent is newAgent over simulated tokens instead of SoftHSM2: what the fleet
// simulator runs.
func newSimAgent(t *testing.T, b *simtoken.Backend) *agent {
	t.Helper()
	ctx := context.Background()
	a := &agent{t: t, dir: t.TempDir(), logs: &syncBuffer{}, inj: &faults.Injector{}}
	log := zerolog.New(a.logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	var err error
	if a.pair, err = keys.LoadOrCreate(a.dir); err != nil {
		t.Fatal(err)
	}
	if a.j, err = journal.Open(ctx, filepath.Join(a.dir, journal.FileName), a.pair, journal.Options{Log: log}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.j.Close() })
	if a.mod, err = pkcs11.OpenBackend("simtoken", b, pkcs11.Options{Logger: log, Wrap: a.inj.Wrap}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.mod.Close(); err != nil {
			t.Errorf("close module: %v", err)
		}
	})
	ca, err := testenv.NewCA("tokenfleet test issuing CA")
	if err != nil {
		t.Fatal(err)
	}
	key, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a.coord = newCoordinator(a.pair, ca, key)
	if a.ex, err = New(Config{AgentID: testAgent, Journal: a.j, Keys: a.pair, Tokens: ModuleTokens{Module: a.mod},
		PollInterval: 20 * time.Millisecond, Log: log}); err != nil {
		t.Fatal(err)
	}
	a.start()
	return a
}

// An issue job runs, unchanged, on a blank simulated smart card: initialised, PINs set,
// key made, CSR signed on it, certificate written and verified; the token's time is
// counted apart from the agent's.
func TestIssueOnASimulatedToken(t *testing.T) {
	for _, kt := range []protocol.KeyType{protocol.KeyP256, protocol.KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			clock := &simClock{now: time.Now()}
			b, err := simtoken.New(simtoken.Options{Profile: simtoken.Smartcard, Seed: 1, Now: clock.Now, Sleeper: clock})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.AddToken(simtoken.TokenSpec{Serial: "SIMWS0001"}); err != nil {
				t.Fatal(err)
			}
			a := newSimAgent(t, b)
			ref := protocol.JobRef{JobID: "issue-sim-" + string(kt), Attempt: 1}
			a.submit(issueBlank(a, ref, newLabel(t), kt))
			res := a.result(ref)
			wantSuccess(t, res)
			want := []string{"progress:token_found", "progress:initialising", "progress:key_generated", "csr",
				"progress:csr_sent", "progress:certificate_written", "progress:verified", "result:succeeded"}
			if got := trace(a.coord.messages(ref)); !slices.Equal(got, want) {
				t.Fatalf("messages %v, want %v", got, want)
			}
			if res.Outputs == nil || res.Outputs.TokenSerial != "SIMWS0001" {
				t.Fatalf("outputs %+v", res.Outputs)
			}
			user, _ := a.pins(ref, res)
			a.stop()

			// The token, read afresh: the user PIN of the result opens it, and it holds the
			// certificate for its key.
			ctx := context.Background()
			tok, err := a.mod.FindToken(ctx, &uri.URI{Serial: "SIMWS0001"})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tok.Close() }()
			if err := tok.Login(ctx, user); err != nil {
				t.Fatalf("the user PIN of the result: %v", err)
			}
			id, err := hex.DecodeString(keyID(ref.JobID))
			if err != nil {
				t.Fatal(err)
			}
			if err := tok.VerifyKeyAndCertificate(ctx, id); err != nil {
				t.Fatal(err)
			}
			// A smart card's key generation alone is a second or more of token time, none
			// of it waited for here.
			if spent := b.TokenTime("SIMWS0001"); spent < time.Second || b.TotalTime() != clock.Slept() {
				t.Errorf("token time %s, total %s, slept %s", spent, b.TotalTime(), clock.Slept())
			}
		})
	}
}

// The journal commits of an issuance on a blank token whose serial is known before it is
// initialised (a chip's; a simulated token's), the sender's marks apart: the dispatch; the
// begin of initialise (running, token found, PINs, the serial); the begin of generate_key;
// the CSR; the certificate with the begin of write_certificate; the result. Each token
// write still follows the commit of its step's begin: the crash tests check that.
func TestIssueJournalCommits(t *testing.T) {
	b, err := simtoken.New(simtoken.Options{Profile: simtoken.Instant, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddToken(simtoken.TokenSpec{Serial: "SIMWS0002"}); err != nil {
		t.Fatal(err)
	}
	a := newSimAgent(t, b)
	ref := protocol.JobRef{JobID: "issue-commits", Attempt: 1}
	before := a.j.Commits()
	a.submit(issueBlank(a, ref, newLabel(t), protocol.KeyP256))
	wantSuccess(t, a.result(ref))
	a.stop()
	if got := a.j.Commits() - before - a.coord.markCommits(); got != 6 {
		t.Errorf("the issuance took %d journal commits besides marking messages sent, want 6", got)
	}
	if state := a.state(ref); state != journal.StateDone {
		t.Errorf("journal state %s", state)
	}
}

// A simulated token pulled out during key generation: the attempt fails at once with the
// removal code, retryable; the retry waits for the token and finishes on it.
func TestSimulatedTokenPulledOut(t *testing.T) {
	const serial, pin = "SIMWS0002", "24681357"
	b, err := simtoken.New(simtoken.Options{Seed: 2,
		Faults: map[simtoken.Op]simtoken.Fault{simtoken.OpKeygenEC: {Rate: 1, RV: p11.CKR_DEVICE_REMOVED}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddToken(simtoken.TokenSpec{Serial: serial, SOPIN: "13572468", Label: "sim", UserPIN: pin}); err != nil {
		t.Fatal(err)
	}
	a := newSimAgent(t, b)
	first := protocol.JobRef{JobID: "sim-removed", Attempt: 1}
	a.submit(issueWith(a, protocol.KindIssue, first, serial, pin))
	wantFailure(t, a.result(first), protocol.CodeTokenDeviceRemoved, true)

	if err := b.SetFaults(nil); err != nil {
		t.Fatal(err)
	}
	second := protocol.JobRef{JobID: first.JobID, Attempt: 2}
	a.submit(issueWith(a, protocol.KindIssue, second, serial, pin))
	a.step(second, protocol.StepWaitingForToken)
	if err := b.Insert(serial); err != nil {
		t.Fatal(err)
	}
	wantSuccess(t, a.result(second))
	if got := trace(a.coord.messages(second)); len(got) < 2 || got[0] != "progress:waiting_for_token" || got[1] != "progress:token_found" {
		t.Errorf("second attempt: %v", got)
	}
}

// Consecutive attempts of an issue that re-initialises a token, each failing before the
// new SO PIN reaches it, on a token that locks its SO PIN after three wrong tries (as
// hardware does): the token is first wiped, as the help desk does before issuing again.
// No attempt tries the new SO PIN unless the change may have reached the token, and one
// that was refused is not tried again until it is sent again: the token never comes near
// its lock, and the fourth attempt issues. Each retry used to try the new SO PIN first:
// after three such failures the token was locked and every later attempt failed with
// token.pin_locked.
func TestRetriesSpendNoSOPINTryOnAGuess(t *testing.T) {
	const serial, oldSO, oldUser = "SIMWS0003", "13572468", "24681357"
	b := simBackendWith(t, 3, simtoken.TokenSpec{Serial: serial, SOPIN: oldSO, Label: "sim", UserPIN: oldUser})
	a := newSimAgent(t, b)
	ctx := context.Background()
	soStatus := func() pkcs11.PINStatus {
		t.Helper()
		tok, err := a.mod.FindToken(ctx, &uri.URI{Serial: serial})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tok.Close() }()
		info, err := tok.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.SOPIN
	}

	wipe := protocol.JobRef{JobID: "sim-wipe", Attempt: 1}
	a.submit(a.coord.dispatch(wipe, protocol.JobDispatch{
		Kind: protocol.KindWipe, Token: protocol.TokenSelector{Serial: serial}, TokenLabel: "spare",
		PINs: &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(wipe, protocol.PurposeSOPIN, oldSO)},
	}))
	wantSuccess(t, a.result(wipe))

	issue := func(ref protocol.JobRef) protocol.Result {
		a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
			Kind: protocol.KindIssue, Token: protocol.TokenSelector{Serial: serial},
			Initialise: true, TokenLabel: "issued", PINPolicy: policy(8, true),
			Key:       &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
			PINs:      &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(ref, protocol.PurposeSOPIN, oldSO)},
			ResultKey: a.coord.resultKey(),
		}))
		return a.result(ref)
	}
	// Attempt 1: the SO PIN change fails without reaching the token. It may have, as far
	// as the agent knows: it checks once, and the token refuses the new SO PIN.
	// Attempts 2 and 3: initialising the token fails before the change is sent.
	for n, fail := range []string{"SetPIN", "InitToken", "InitToken"} {
		ref := protocol.JobRef{JobID: "sim-issue", Attempt: uint32(n + 1)}
		a.inj.Fail(fail, p11.CKR_DEVICE_ERROR, 1)
		res := issue(ref)
		wantFailure(t, res, protocol.CodeTokenDeviceError, true)
		if res.Outputs != nil && res.Outputs.PINs != nil {
			t.Fatalf("attempt %d reports PINs the token does not have", ref.Attempt)
		}
		if st := soStatus(); st.FinalTry || st.Locked {
			t.Fatalf("after attempt %d (%s failed) the SO PIN is %+v: the agent spent its tries on guesses", ref.Attempt, fail, st)
		}
	}
	last := protocol.JobRef{JobID: "sim-issue", Attempt: 4}
	res := issue(last)
	wantSuccess(t, res)
	user, so := a.pins(last, res)
	a.stop()
	if so == "" || so == oldSO || user == "" {
		t.Fatalf("the issue reports PINs user %t, SO %t (changed %t)", user != "", so != "", so != oldSO)
	}
	if st := soStatus(); st.CountLow || st.Locked {
		t.Errorf("after the issue the SO PIN is %+v", st)
	}
	wantTokenTakesPINs(t, a, serial, so, user, "the SO PIN the issue reports")
}

// An attempt re-initialising a token is superseded by a retry of the job just as the
// token takes the new SO PIN, before the journal says so; the retry is cancelled before it
// reaches its own initialise. Its result still reports the PINs the token has (the job's
// secrets are marked sent, so the token is checked for them), with the initialising step
// that gives the coordinator the right to keep them: the cancel would otherwise take them
// out of the journal, the coordinator would keep the SO PIN the token no longer has, and
// the next wipe would spend the SO PIN's tries with it until the token locked.
func TestSupersededInitialiseThenCancelledRetryReportsThePINs(t *testing.T) {
	const serial, oldSO, oldUser = "SIMWS0004", "13572468", "24681357"
	b := simBackendWith(t, 4, simtoken.TokenSpec{Serial: serial, SOPIN: oldSO, Label: "sim", UserPIN: oldUser})
	a := newSimAgent(t, b)
	ctx := context.Background()
	dispatch := func(ref protocol.JobRef) *protocol.Envelope {
		return a.coord.dispatch(ref, protocol.JobDispatch{
			Kind: protocol.KindIssue, Token: protocol.TokenSelector{Serial: serial},
			Initialise: true, TokenLabel: "issued", PINPolicy: policy(8, true),
			Key:       &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
			PINs:      &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(ref, protocol.PurposeSOPIN, oldSO)},
			ResultKey: a.coord.resultKey(),
		})
	}
	first := protocol.JobRef{JobID: "sim-superseded", Attempt: 1}
	second := protocol.JobRef{JobID: first.JobID, Attempt: 2}
	var once sync.Once
	// The first C_InitPIN comes right after the SO PIN change: the retry and its cancel
	// arrive then.
	a.inj.Hook("InitPIN", func() {
		once.Do(func() {
			if _, err := a.ex.Submit(ctx, dispatch(second)); err != nil {
				t.Errorf("submit the retry: %v", err)
			}
			if _, err := a.ex.Cancel(ctx, a.coord.envelope(second, protocol.Cancel{State: protocol.StateCancelled, Reason: "asked by mistake"})); err != nil {
				t.Errorf("cancel the retry: %v", err)
			}
		})
	})
	a.submit(dispatch(first))
	res := a.result(second)
	wantFailure(t, res, protocol.CodeJobCancelled, false)
	user, so := a.pins(second, res)
	if so == "" || so == oldSO || user == "" {
		t.Fatalf("the cancelled retry reports PINs user %t, SO %t (changed %t)", user != "", so != "", so != oldSO)
	}
	if got := trace(a.coord.messages(second)); !slices.Contains(got, "progress:initialising") {
		t.Errorf("the cancelled retry does not report the initialising step that sets PINs: %v", got)
	}
	a.stop()
	wantTokenTakesPINs(t, a, serial, so, user, "the SO PIN the retry reports")
}

// simBackendWith is a simulated token backend (seeded, default profile) holding one token.
func simBackendWith(t *testing.T, seed uint64, spec simtoken.TokenSpec) *simtoken.Backend {
	t.Helper()
	b, err := simtoken.New(simtoken.Options{Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddToken(spec); err != nil {
		t.Fatal(err)
	}
	return b
}

// wantTokenTakesPINs checks that the token takes so as its SO PIN (setting user as its
// user PIN): the PINs a job reported are the token's. what names them in the failure.
func wantTokenTakesPINs(t *testing.T, a *agent, serial, so, user, what string) {
	t.Helper()
	ctx := context.Background()
	tok, err := a.mod.FindToken(ctx, &uri.URI{Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tok.Close() }()
	if err := tok.InitUserPIN(ctx, so, user); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}
