package executor

import (
	"context"
	"errors"
	"slices"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// The steps of each kind, by their journal names, after the token step (acquire):
//
//	issue                 [initialise | factory_pins] generate_key send_csr ‖ write_certificate verify
//	csr                   [initialise | factory_pins] generate_key send_csr (the result goes with the CSR)
//	renew                 generate_key send_csr ‖ write_certificate verify remove_old
//	install_certificate   write_certificate verify
//	server_keygen,
//	recover_key           import_key write_certificate verify
//	register_certificate  read_certificate (the result goes with it)
//	unblock_pin           reset_pin verify_pin
//	wipe                  wipe verify_wipe
//	inventory             inventory
//
// ‖ is where issue and renew park in awaiting_certificate until the certificate comes.
// Steps report the protocol's steps: initialise and wipe report initialising when they
// start; generate_key key_generated, import_key key_imported, send_csr csr_sent, write_certificate
// certificate_written, and verify, verify_pin and verify_wipe verified when they are done.
type step struct {
	name string
	run  func(r *run, ctx context.Context, resumed bool) error
	// needsCertificate: the step runs only once the certificate is delivered.
	needsCertificate bool
}

// Journal step names.
const (
	stepInitialise  = "initialise"
	stepFactoryPINs = "factory_pins"
	stepGenerateKey = "generate_key"
	stepImportKey   = "import_key"
	stepReadCert    = "read_certificate"
	stepSendCSR     = "send_csr"
	stepWriteCert   = "write_certificate"
	stepVerify      = "verify"
	stepRemoveOld   = "remove_old"
	stepResetPIN    = "reset_pin"
	stepVerifyPIN   = "verify_pin"
	stepWipe        = "wipe"
	stepVerifyWipe  = "verify_wipe"
	stepInventory   = "inventory"
)

// Names of the job's secrets in the journal.
const (
	secretUserPIN = "user_pin"
	secretSOPIN   = "so_pin"
)

func stepsFor(kind protocol.JobKind, d protocol.JobDispatch) []step {
	var s []step
	switch kind {
	case protocol.KindIssue, protocol.KindCSR:
		switch {
		case d.Initialise:
			s = append(s, step{name: stepInitialise, run: (*run).initialise})
		case d.FactoryPINs:
			s = append(s, step{name: stepFactoryPINs, run: (*run).replaceFactoryPINs})
		}
		s = append(s, step{name: stepGenerateKey, run: (*run).generateKey}, step{name: stepSendCSR, run: (*run).sendCSR})
		if kind == protocol.KindIssue {
			s = append(s, step{name: stepWriteCert, run: (*run).writeCertificate, needsCertificate: true},
				step{name: stepVerify, run: (*run).verify})
		}
	case protocol.KindRenew:
		s = []step{
			{name: stepGenerateKey, run: (*run).generateKey},
			{name: stepSendCSR, run: (*run).sendCSR},
			{name: stepWriteCert, run: (*run).writeCertificate, needsCertificate: true},
			{name: stepVerify, run: (*run).verify},
			{name: stepRemoveOld, run: (*run).removeOld},
		}
	case protocol.KindInstallCertificate:
		s = []step{{name: stepWriteCert, run: (*run).writeCertificate}, {name: stepVerify, run: (*run).verify}}
	case protocol.KindServerKeygen, protocol.KindRecoverKey:
		s = []step{
			{name: stepImportKey, run: (*run).importKey},
			{name: stepWriteCert, run: (*run).writeCertificate},
			{name: stepVerify, run: (*run).verify},
		}
	case protocol.KindRegisterCertificate:
		s = []step{{name: stepReadCert, run: (*run).readCertificate}}
	case protocol.KindUnblockPIN:
		s = []step{{name: stepResetPIN, run: (*run).resetPIN}, {name: stepVerifyPIN, run: (*run).verifyPIN}}
	case protocol.KindWipe:
		s = []step{{name: stepWipe, run: (*run).wipe}, {name: stepVerifyWipe, run: (*run).verifyWipe}}
	case protocol.KindInventory:
		s = []step{{name: stepInventory, run: (*run).inventory}}
	}
	return s
}

// begin journals a step as started, with what goes with it and the held change of the
// step before, unless a resumed pass finds it started already and there is nothing else
// to record.
func (r *run) begin(ctx context.Context, name string, c journal.Change) error {
	if r.job.Step == name && r.job.StepStatus == journal.StepStarted && len(c.Secrets) == 0 && len(c.Outbox) == 0 &&
		len(c.Sent) == 0 && c.State == "" && c.OldKeyID == "" && r.held == nil {
		return nil
	}
	c.Step, c.StepStatus = name, journal.StepStarted
	return r.update(ctx, c)
}

// beginReading begins a step that only reads the token (its key signs, nothing on the
// token changes): its start is held and journalled with its done, one commit instead of
// two. The journal is then as it was at the last token write, which is all a token write
// needs; a crash before the done finds the step before it, or this one, started, and
// both are safe to repeat (a key or certificate already on the token is found and kept).
func (r *run) beginReading(name string) {
	if r.job.Step == name && r.job.StepStatus == journal.StepStarted && r.held == nil {
		return
	}
	r.hold(journal.Change{Step: name, StepStatus: journal.StepStarted})
}

// done journals a step as done, with what goes with it. A done that changes no state
// and stores no secret and no result is held and written with the next change (the next
// step's begin, or the result): one commit instead of two. Nothing touches the token in
// between (every step begins before its first token call), so the journal is as it was
// at every token call; a crash in between leaves the step started, as a crash just before
// the done did, and steps are safe to repeat. A pass that stops in between writes it
// alone (settle). A state (awaiting the certificate, the end) is written at once.
func (r *run) done(ctx context.Context, name string, c journal.Change) error {
	c.Step, c.StepStatus = name, journal.StepDone
	if c.State == "" && c.Result == nil && len(c.Secrets) == 0 {
		r.hold(c)
		return nil
	}
	return r.update(ctx, c)
}

// hold keeps a change to be journalled with the next one, and shows it in r.job and
// r.secrets at once so that the steps read what they will have written.
func (r *run) hold(c journal.Change) {
	for _, n := range c.Applied {
		s := r.secrets[n]
		s.Applied = true
		r.secrets[n] = s
	}
	if r.held != nil {
		c = merge(*r.held, c)
	}
	r.held = &c
	r.overlay()
}

// overlay shows the held change in r.job.
func (r *run) overlay() {
	c := r.held
	if c == nil {
		return
	}
	if c.State != "" {
		r.job.State = c.State
	}
	if c.Step != "" {
		r.job.Step, r.job.StepStatus = c.Step, c.StepStatus
	}
	if c.TokenSerial != "" {
		r.job.TokenSerial = c.TokenSerial
	}
	if c.KeyID != "" {
		r.job.KeyID = c.KeyID
	}
	if c.PublicKey != nil {
		r.job.PublicKey = c.PublicKey
	}
	if c.OldKeyID != "" {
		r.job.OldKeyID = c.OldKeyID
	}
}

// flushHeld journals the held change alone, when the pass stops before a next change
// could carry it.
func (r *run) flushHeld(ctx context.Context) {
	if r.held == nil {
		return
	}
	if err := r.update(ctx, journal.Change{}); err != nil && !errors.Is(err, journal.ErrFinished) {
		r.log.Error().Err(err).Msg("journalling the last step; it is done again on the next start")
	}
}

// merge is a then b as one change: b's fields win, a's messages go first.
func merge(a, b journal.Change) journal.Change {
	out := b
	if out.State == "" {
		out.State = a.State
	}
	if out.Step == "" {
		out.Step, out.StepStatus = a.Step, a.StepStatus
	}
	if out.TokenSerial == "" {
		out.TokenSerial = a.TokenSerial
	}
	if out.KeyID == "" {
		out.KeyID = a.KeyID
	}
	if out.PublicKey == nil {
		out.PublicKey = a.PublicKey
	}
	if out.OldKeyID == "" {
		out.OldKeyID = a.OldKeyID
	}
	out.Secrets = append(slices.Clip(a.Secrets), b.Secrets...)
	out.Applied = append(slices.Clip(a.Applied), b.Applied...)
	out.Sent = append(slices.Clip(a.Sent), b.Sent...)
	out.Unsent = append(slices.Clip(a.Unsent), b.Unsent...)
	out.Outbox = append(slices.Clip(a.Outbox), b.Outbox...)
	if out.Result == nil {
		out.Result = a.Result
	}
	return out
}

// progressChange is a change carrying one progress message.
func (r *run) progressChange(p protocol.Progress) (journal.Change, error) {
	env, err := r.progress(p)
	if err != nil {
		return journal.Change{}, err
	}
	return journal.Change{Outbox: []*protocol.Envelope{env}}, nil
}

// requireToken fails the step unless the token is open.
func (r *run) requireToken() (*pkcs11.Token, error) {
	if r.tok == nil {
		return nil, protocol.NewError(protocol.CodeTokenNotInitialized, "the token is not initialised")
	}
	return r.tok, nil
}

func isCode(err error, code pkcs11.Code) bool { return pkcs11.CodeOf(err) == code }
