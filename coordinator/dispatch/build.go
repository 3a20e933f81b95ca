package dispatch

import (
	"context"
	"crypto/ecdh"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/notify"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// defaultDeadline is the deadline of a dispatch whose job has none.
const defaultDeadline = 14 * 24 * time.Hour

// defaultWipeLabel labels a wiped token when the profile gives no label.
const defaultWipeLabel = "tokenfleet"

// waitError says why a dispatch cannot be built yet, for a reason that goes away by
// itself (the agent has not said hello, it reports no token yet): the job stays approved,
// the reason shows in job show, and it is tried again when something changes.
type waitError struct {
	reason string
	token  *tokenWait // the job waits for a token the agent does not report
}

func (w *waitError) Error() string { return w.reason }

func waitf(format string, args ...any) error {
	return &waitError{reason: fmt.Sprintf(format, args...)}
}

// failError says why a dispatch can never be built as the job stands (a PIN nobody
// kept, a profile that no longer renders, several tokens to choose from): the job fails
// with the reason, rather than wait until its deadline.
type failError struct {
	code   protocol.ErrorCode
	reason string
}

func (f *failError) Error() string { return f.reason }

func failf(code protocol.ErrorCode, format string, args ...any) error {
	return &failError{code: code, reason: fmt.Sprintf(format, args...)}
}

// builder builds one attempt's dispatch.
type builder struct {
	d *Dispatcher
	r store.Reader
	// jt is the transaction the dispatch is written in: a server_keygen dispatch records
	// its key's archive and certificate in it.
	jt    *service.JobTx
	job   store.Job
	p     profile.Profile
	id    profile.Identity
	agent store.Agent
	out   protocol.JobDispatch
	// serial is the token's serial when known: the job's, or the one token chosen.
	serial string
}

// build returns the dispatch of the job's current attempt, in jt. An error is a *waitError
// when the job must wait (see the package documentation), or a store failure.
func (d *Dispatcher) build(ctx context.Context, jt *service.JobTx, j store.Job) (*protocol.JobDispatch, error) {
	var r store.Reader = jt
	if !jobs.OnAgent(j.Kind) {
		return nil, fmt.Errorf("dispatch: a %s job is not dispatched to an agent", j.Kind)
	}
	if j.Kind == jobs.KindRecoverKey && j.AgentID == "" {
		// A recovery to an officer's PKCS#12: the officer's delivery ends it, no agent.
		return nil, waitf("a key-recovery officer delivers this key as a PKCS#12 file (tokenfleetctl recovery open %s --recovery-key KEY.pem --pkcs12 FILE)", j.ID)
	}
	agent, err := r.GetAgent(ctx, j.AgentID)
	if err != nil {
		return nil, err
	}
	p, err := d.jobProfile(ctx, r, j)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, failf(protocol.CodePolicyViolation, "%v", err)
		}
		return nil, err
	}
	id, err := identity(ctx, r, p, j)
	if err != nil {
		var pe *profile.Error
		if errors.As(err, &pe) {
			return nil, failf(protocol.CodePolicyViolation, "the holder's record no longer renders the profile: %v", err)
		}
		return nil, err
	}
	b := &builder{d: d, r: r, jt: jt, job: j, p: p, id: id, agent: agent}
	deadline := j.Deadline
	if deadline.IsZero() {
		deadline = d.clock().Add(defaultDeadline)
	}
	b.out = protocol.JobDispatch{Kind: j.Kind, Deadline: deadline, Profile: p.Name}
	if err := b.kind(ctx); err != nil {
		return nil, err
	}
	if err := b.out.Validate(); err != nil {
		// The builder follows the protocol's table; a dispatch it refuses is a bug or a
		// profile the protocol cannot express. Either way the job cannot go.
		return nil, failf(protocol.CodePolicyViolation, "the dispatch would be refused by the protocol: %v", err)
	}
	return &b.out, nil
}

func (b *builder) kind(ctx context.Context) error {
	switch b.job.Kind {
	case jobs.KindIssue, jobs.KindCSR:
		return b.issue(ctx)
	case jobs.KindRenew:
		return b.renew(ctx)
	case jobs.KindInstallCertificate:
		return b.install(ctx)
	case jobs.KindServerKeygen:
		return b.serverKeygen(ctx)
	case jobs.KindRecoverKey:
		return b.recoverKey(ctx)
	case jobs.KindRegisterCertificate:
		return b.registerCertificate(ctx)
	case jobs.KindUnblockPIN:
		if err := b.chooseToken(ctx, false); err != nil {
			return err
		}
		if err := b.needSerial("unblock its user PIN"); err != nil {
			return err
		}
		b.policy()
		return b.pins(ctx, store.PINPurposeSO)
	case jobs.KindWipe:
		if err := b.chooseToken(ctx, false); err != nil {
			return err
		}
		if err := b.needSerial("wipe it"); err != nil {
			return err
		}
		b.out.TokenLabel = b.id.TokenLabel
		if b.out.TokenLabel == "" {
			b.out.TokenLabel = defaultWipeLabel
		}
		return b.pins(ctx, store.PINPurposeSO)
	case jobs.KindInventory:
		b.out.Token = protocol.TokenSelector{Serial: b.job.TokenSerial}
		return nil
	}
	return fmt.Errorf("dispatch: no dispatch for job kind %s", b.job.Kind)
}

// issue: issue and csr jobs generate a key, initialising the token first when the
// profile says so.
func (b *builder) issue(ctx context.Context) error {
	kt, err := keyType(b.p.Key)
	if err != nil {
		return failf(protocol.CodePolicyViolation, "%v", err)
	}
	b.out.Key = &protocol.KeyParams{Type: kt, ID: protocol.DeriveKeyID(b.job.ID)}
	if !b.p.Token.Initialize {
		if err := b.chooseToken(ctx, false); err != nil {
			return err
		}
		if err := b.needSerial("log in to it"); err != nil {
			return err
		}
		return b.pins(ctx, store.PINPurposeUser)
	}
	b.out.Initialise = true
	b.out.TokenLabel = b.id.TokenLabel
	b.policy()
	if err := b.chooseToken(ctx, true); err != nil {
		return err
	}
	if b.out.Token.Blank {
		return nil // a blank token has no PIN yet
	}
	if err := b.needSerial("re-initialise it with its SO PIN"); err != nil {
		return err
	}
	return b.pins(ctx, store.PINPurposeSO)
}

// renew generates a new key on the token and replaces the key of the holder's current
// certificate of the profile on that token, if there is one.
func (b *builder) renew(ctx context.Context) error {
	kt, err := keyType(b.p.Key)
	if err != nil {
		return failf(protocol.CodePolicyViolation, "%v", err)
	}
	if err := b.chooseToken(ctx, false); err != nil {
		return err
	}
	if err := b.needSerial("log in to it"); err != nil {
		return err
	}
	b.out.Key = &protocol.KeyParams{Type: kt, ID: protocol.DeriveKeyID(b.job.ID)}
	old, err := b.currentCertificate(ctx, b.serial, false)
	if err != nil {
		return err
	}
	if old.JobID != "" {
		if replaces := protocol.DeriveKeyID(old.JobID); replaces != b.out.Key.ID {
			b.out.Key.Replaces = replaces
		}
	}
	return b.pins(ctx, store.PINPurposeUser)
}

// install writes the certificate a csr job of the same holder and profile obtained.
func (b *builder) install(ctx context.Context) error {
	serial := b.job.TokenSerial
	c, err := b.currentCertificate(ctx, serial, true)
	if err != nil {
		return err
	}
	if c.Serial == "" {
		return failf(protocol.CodePolicyViolation, "no certificate to install: no csr job of this holder and profile has a valid certificate on agent %s", b.job.AgentID)
	}
	b.serial = c.TokenSerial
	if serial != "" {
		b.serial = serial
	}
	if err := b.needSerial("log in to it"); err != nil {
		return err
	}
	b.out.Token = protocol.TokenSelector{Serial: b.serial}
	chain := make([][]byte, 0, 2)
	for _, ca := range b.d.ca.CACertificates() {
		chain = append(chain, ca.Raw)
	}
	b.out.Key = &protocol.KeyParams{ID: protocol.DeriveKeyID(c.JobID)}
	b.out.Certificates = &protocol.CertificateChain{Certificate: c.DER, Chain: chain}
	return b.pins(ctx, store.PINPurposeUser)
}

// currentCertificate is the newest valid certificate of the job's holder and profile
// issued through the job's agent (on the token, when serial is set); fromCSRJob keeps
// only certificates of csr jobs. The zero Certificate when there is none. Newest is the
// last stored: not_before has whole seconds and is backdated, clamped to the CA's own
// start, so certificates signed close together share it, and the list's order among
// them (by serial) says nothing of which came last.
func (b *builder) currentCertificate(ctx context.Context, serial string, fromCSRJob bool) (store.Certificate, error) {
	valid := false
	now := b.d.clock()
	p := store.Page{Limit: store.MaxPageLimit}
	var newest store.Certificate
	for {
		cs, next, err := b.r.ListCertificates(ctx, store.CertificateFilter{HolderID: b.job.HolderID, AgentID: b.job.AgentID,
			TokenSerial: serial, Revoked: &valid}, p)
		if err != nil {
			return store.Certificate{}, err
		}
		for _, c := range cs { // newest first
			if c.Profile != b.job.ProfileName || c.JobID == "" || !now.Before(c.NotAfter) || c.JobID == b.job.ID {
				continue
			}
			if fromCSRJob {
				src, err := b.r.GetJob(ctx, c.JobID)
				if err != nil {
					return store.Certificate{}, err
				}
				if src.Kind != jobs.KindCSR {
					continue
				}
			}
			if newest.Serial == "" || c.Created.After(newest.Created) {
				newest = c
			}
		}
		if next == "" {
			return newest, nil
		}
		p.Cursor = next
	}
}

func (b *builder) policy() {
	b.out.PINPolicy = &protocol.PINPolicy{MinLength: b.p.PINPolicy.MinLength, MaxLength: b.p.PINPolicy.MaxLength,
		DigitsOnly: b.p.PINPolicy.DigitsOnly, SOLength: b.p.PINPolicy.SOPINLength}
	b.out.ResultKey = b.d.ResultPublicKey()
}

// chooseToken sets the selector: the job's token; else, when initialising, any blank
// token if the profile allows it; else the profile's model; else the one token the agent
// reports. A chosen token the agent reports as not initialised is selected as blank when
// initialising: it needs no SO PIN.
func (b *builder) chooseToken(ctx context.Context, initialise bool) error {
	switch {
	case b.job.TokenSerial != "":
		b.serial = b.job.TokenSerial
	case initialise && b.p.Token.AnyBlank:
		b.out.Token = protocol.TokenSelector{Blank: true}
		return nil
	case b.p.Token.Model != "":
		b.out.Token = protocol.TokenSelector{Model: b.p.Token.Model}
		return nil
	default:
		ts, _, err := b.r.ListTokens(ctx, store.TokenFilter{AgentID: b.job.AgentID}, store.Page{Limit: 2})
		if err != nil {
			return err
		}
		switch len(ts) {
		case 0:
			return &waitError{reason: fmt.Sprintf("the request names no token and agent %s has reported none", b.job.AgentID),
				token: &tokenWait{}}
		case 1:
			b.serial = ts[0].Serial
		default:
			return failf(protocol.CodeTokenAmbiguous, "the request names no token and agent %s reports several; queue the job for one token serial", b.job.AgentID)
		}
	}
	b.out.Token = protocol.TokenSelector{Serial: b.serial}
	if initialise {
		t, err := b.r.GetToken(ctx, b.serial)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// Blank or not decides which PIN the dispatch needs: wait for the agent to
			// report the token.
			return &waitError{reason: fmt.Sprintf("agent %s has not reported token %s yet; the job goes when it does", b.job.AgentID, b.serial),
				token: &tokenWait{tok: notify.Token{Serial: b.serial}}}
		case err != nil:
			return err
		default:
			var f protocol.TokenFlags
			if json.Unmarshal(t.Flags, &f) == nil && !f.Initialized {
				b.out.Token.Blank = true
			}
		}
	}
	return nil
}

func (b *builder) needSerial(why string) error {
	if b.serial == "" {
		return failf(protocol.CodeTokenAmbiguous, "the token must be known by its serial to %s: name it in the request", why)
	}
	return nil
}

// inFlight are the states of a job whose dispatch may be on its way or running: with
// the dispatch written (approved), sent, or under way on the agent.
var inFlight = []jobs.State{jobs.StateApproved, jobs.StateDispatched, jobs.StateRunning,
	jobs.StateAwaitingCertificate, jobs.StateInstalling}

// fence makes a job that carries a token's PINs wait while another job on that token is
// in flight: the other job may change the PINs (unblock, wipe, initialise), and a PIN
// sent before it did is stale: the job fails with token.pin_incorrect, and each try
// counts against the token's retry counter, which locks a real token after a few. The
// waiting job goes once the other ends (its result wakes the waiting jobs).
func (b *builder) fence(ctx context.Context) error {
	if b.serial == "" {
		return nil
	}
	others, _, err := b.r.ListJobs(ctx, store.JobFilter{TokenSerial: b.serial, States: inFlight}, store.Page{Limit: 20})
	if err != nil {
		return err
	}
	for _, o := range others {
		if o.ID == b.job.ID {
			continue
		}
		if o.State == jobs.StateApproved {
			// Approved and waiting itself: in flight only once its dispatch is written.
			a, err := b.r.GetJobAttempt(ctx, o.ID, o.Attempt)
			if errors.Is(err, store.ErrNotFound) || (err == nil && a.DispatchMessageID == "") {
				continue
			}
			if err != nil {
				return err
			}
		}
		return waitf("job %s (%s) is in progress on token %s and may change its PINs: this job goes once it ends", o.ID, o.Kind, b.serial)
	}
	return nil
}

// pins adds the token's current PINs of the purposes given, sealed to the agent for this
// job and attempt, once no other job in flight on the token may change them (fence).
func (b *builder) pins(ctx context.Context, purposes ...string) error {
	if err := b.fence(ctx); err != nil {
		return err
	}
	if len(b.agent.PublicKey) == 0 {
		return waitf("agent %s has not said hello yet: its seal key, which the job's PINs are sealed to, is unknown", b.agent.ID)
	}
	to, err := seal.ParsePublicKey(b.agent.PublicKey)
	if err != nil {
		return failf(protocol.CodeUnsealFailed, "agent %s's recorded seal key is unusable (tokenfleetctl agent reset-key %s): %v", b.agent.ID, b.agent.ID, err)
	}
	out := &protocol.SealedPINs{}
	for _, purpose := range purposes {
		kept, err := b.r.GetTokenPIN(ctx, b.serial, purpose)
		if errors.Is(err, store.ErrNotFound) {
			return failf(protocol.CodePINsUnknown, "the coordinator holds no %s for token %s (no tokenfleet job set it)", pinName(purpose), b.serial)
		}
		if err != nil {
			return err
		}
		s, err := b.d.reseal(kept, to, b.job)
		if err != nil {
			return failf(protocol.CodeUnsealFailed, "the %s of token %s cannot be passed on: %v", pinName(purpose), b.serial, err)
		}
		switch purpose {
		case store.PINPurposeUser:
			out.UserPIN = s
		case store.PINPurposeSO:
			out.SOPIN = s
		}
	}
	b.out.PINs = out
	return nil
}

func pinName(purpose string) string {
	if purpose == store.PINPurposeSO {
		return "SO PIN"
	}
	return "user PIN"
}

// reseal opens a kept PIN with the result key and seals it to the agent for this job's
// current attempt. The PIN exists in clear only in between, in memory.
func (d *Dispatcher) reseal(kept store.TokenPIN, to *ecdh.PublicKey, j store.Job) (*protocol.Sealed, error) {
	pin, err := OpenTokenPIN(d.resultKey, kept)
	if err != nil {
		return nil, err
	}
	defer clear(pin)
	return seal.Seal(to, pin, seal.Binding{JobID: j.ID, Attempt: uint32(j.Attempt), Purpose: protocol.SealPurpose(kept.Purpose)})
}

// OpenTokenPIN opens a kept PIN with the coordinator's result key. Clear the returned
// bytes after use; never log them.
func OpenTokenPIN(key *ecdh.PrivateKey, p store.TokenPIN) ([]byte, error) {
	var s protocol.Sealed
	if err := json.Unmarshal(p.Sealed, &s); err != nil {
		return nil, fmt.Errorf("kept %s %d: %w", p.Purpose, p.ID, err)
	}
	return seal.Open(key, &s, seal.Binding{JobID: p.JobID, Attempt: uint32(p.Attempt), Purpose: protocol.SealPurpose(p.Purpose)})
}

// OpenTokenPIN opens a kept PIN with this coordinator's result key (service.PINOpener).
func (d *Dispatcher) OpenTokenPIN(p store.TokenPIN) ([]byte, error) {
	return OpenTokenPIN(d.resultKey, p)
}
