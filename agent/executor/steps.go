package executor

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/usb"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// The steps of each kind, by their journal names, after the token step (acquire):
//
//	issue                 [initialise | factory_pins] generate_key send_csr ‖ write_certificate verify
//	csr                   [initialise | factory_pins] generate_key send_csr (the result goes with the CSR)
//	renew                 generate_key send_csr ‖ write_certificate verify remove_old
//	install_certificate   write_certificate verify
//	unblock_pin           reset_pin verify_pin
//	wipe                  wipe verify_wipe
//	inventory             inventory
//
// ‖ is where issue and renew park in awaiting_certificate until the certificate comes.
// Steps report the protocol's steps: initialise and wipe report initialising when they
// start; generate_key key_generated, send_csr csr_sent, write_certificate
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
	case protocol.KindUnblockPIN:
		s = []step{{name: stepResetPIN, run: (*run).resetPIN}, {name: stepVerifyPIN, run: (*run).verifyPIN}}
	case protocol.KindWipe:
		s = []step{{name: stepWipe, run: (*run).wipe}, {name: stepVerifyWipe, run: (*run).verifyWipe}}
	case protocol.KindInventory:
		s = []step{{name: stepInventory, run: (*run).inventory}}
	}
	return s
}

// begin journals a step as started, with what goes with it, unless a resumed pass finds
// it started already and there is nothing else to record.
func (r *run) begin(ctx context.Context, name string, c journal.Change) error {
	if r.job.Step == name && r.job.StepStatus == journal.StepStarted && len(c.Secrets) == 0 && len(c.Outbox) == 0 &&
		c.State == "" && c.OldKeyID == "" {
		return nil
	}
	c.Step, c.StepStatus = name, journal.StepStarted
	return r.update(ctx, c)
}

// done journals a step as done, with what goes with it.
func (r *run) done(ctx context.Context, name string, c journal.Change) error {
	c.Step, c.StepStatus = name, journal.StepDone
	return r.update(ctx, c)
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

// dispatchPIN opens a PIN the dispatch carries, sealed to the agent.
func (r *run) dispatchPIN(purpose protocol.SealPurpose) (string, error) {
	var s *protocol.Sealed
	if r.d.PINs != nil {
		switch purpose {
		case protocol.PurposeUserPIN:
			s = r.d.PINs.UserPIN
		case protocol.PurposeSOPIN:
			s = r.d.PINs.SOPIN
		}
	}
	if s == nil {
		return "", protocol.NewError(protocol.CodeBadRequest, "the dispatch carries no %s", purpose)
	}
	b := sealBinding(r.job.Ref, purpose)
	pin, err := r.e.cfg.Keys.Open(s, b)
	if err != nil {
		return "", err
	}
	return string(pin), nil
}

// userPIN is the PIN to log in with: the one this job set, else the dispatch's.
func (r *run) userPIN() (string, error) {
	if s := r.secrets[secretUserPIN]; s.Applied {
		return s.Value, nil
	}
	return r.dispatchPIN(protocol.PurposeUserPIN)
}

// login logs the user in once per pass (PIN changes log out and reset this). A wrong PIN is
// never tried twice.
func (r *run) login(ctx context.Context) error {
	if r.loggedIn {
		return nil
	}
	tok, err := r.requireToken()
	if err != nil {
		return err
	}
	pin, err := r.userPIN()
	if err != nil {
		return err
	}
	if err := r.refuseFactoryUserPIN(ctx, pin); err != nil {
		return err
	}
	if err := tok.Login(ctx, pin); err != nil {
		return err
	}
	r.loggedIn = true
	return nil
}

// refuseFactoryUserPIN stops an issue or csr job from putting a key on a token whose user
// PIN is still its model's factory PIN: such a token must be dispatched with factory_pins.
func (r *run) refuseFactoryUserPIN(ctx context.Context, pin string) error {
	if r.job.Kind != protocol.KindIssue && r.job.Kind != protocol.KindCSR || r.secrets[secretUserPIN].Applied ||
		r.e.cfg.FactoryPINs == nil || r.slot.Token == nil {
		return nil
	}
	def, err := r.factoryDefaults(ctx)
	if err != nil || def == nil {
		return nil //nolint:nilerr // an unknown model is no reason to refuse; factory_pins jobs check strictly
	}
	if def.UserPIN != "" && def.UserPIN == pin {
		return protocol.NewError(protocol.CodePolicyViolation,
			"the token's user PIN is still its model's factory PIN; dispatch the job with factory_pins to replace it")
	}
	return nil
}

// factoryDefaults looks up the factory PINs of the job's token model.
func (r *run) factoryDefaults(ctx context.Context) (*usb.Defaults, error) {
	if r.e.cfg.FactoryPINs == nil {
		return nil, nil
	}
	slots, err := r.e.cfg.Tokens.Present(ctx)
	if err != nil {
		return nil, err
	}
	present := make([]pkcs11.TokenInfo, 0, len(slots))
	for _, s := range slots {
		present = append(present, *s.Token)
	}
	return r.e.cfg.FactoryPINs.Defaults(ctx, *r.slot.Token, present)
}

func (r *run) requireFactoryDefaults(ctx context.Context) (*usb.Defaults, error) {
	def, err := r.factoryDefaults(ctx)
	if err != nil {
		return nil, protocol.NewError(protocol.CodeFactoryPINsUnknown, "looking up the token's model: %v", err)
	}
	if def == nil || (def.UserPIN == "" && def.SOPIN == "") {
		return nil, protocol.NewError(protocol.CodeFactoryPINsUnknown,
			"no factory PINs are known for token %s (%s %s): it cannot be tied to a registry model that lists them",
			r.serial, r.slot.Token.Manufacturer, r.slot.Token.Model)
	}
	return def, nil
}

func (r *run) tokenPINLimits() (uint, uint) {
	if r.slot.Token == nil {
		return 0, 0
	}
	return r.slot.Token.MinPINLen, r.slot.Token.MaxPINLen
}

func (r *run) policy() (protocol.PINPolicy, error) {
	if r.d.PINPolicy == nil {
		return protocol.PINPolicy{}, protocol.NewError(protocol.CodeBadRequest, "the dispatch has no pin_policy")
	}
	return *r.d.PINPolicy, nil
}

// newPINs generates the named secrets, all different from each other and from avoid.
func (r *run) newPINs(names []string, avoid []string) ([]journal.Secret, error) {
	p, err := r.policy()
	if err != nil {
		return nil, err
	}
	lo, hi := r.tokenPINLimits()
	out := make([]journal.Secret, 0, len(names))
	for _, n := range names {
		pol := p
		if n == secretSOPIN {
			pol = soPolicy(p)
		}
		pin, err := generatePIN(pol, lo, hi, avoid...)
		if err != nil {
			return nil, err
		}
		avoid = append(avoid, pin)
		out = append(out, journal.Secret{Name: n, Value: pin})
	}
	return out, nil
}

func isCode(err error, code pkcs11.Code) bool { return pkcs11.CodeOf(err) == code }

// initialise wipes and initialises the token with a fresh SO PIN, user PIN and label.
//
// Safe to repeat: the new PINs are journalled (sealed) before the token is touched, so a
// resumed step first tries them (the new SO PIN setting the new user PIN). If they work,
// the earlier pass got through; if the SO PIN is refused, the token still has its old
// one and the step runs again. That costs at most one wrong SO PIN try, which the good
// one resets. A token this job initialised in an earlier attempt is not wiped again.
func (r *run) initialise(ctx context.Context, _ bool) error {
	so, user := r.secrets[secretSOPIN], r.secrets[secretUserPIN]
	if so.Applied && user.Applied && r.tok != nil {
		r.log.Info().Msg("the token was initialised by an earlier attempt of this job; keeping it")
		return r.done(ctx, stepInitialise, journal.Change{TokenSerial: r.serial})
	}
	var factory *usb.Defaults
	if r.d.FactoryPINs {
		def, err := r.requireFactoryDefaults(ctx)
		if err != nil {
			return err
		}
		factory = def
	}
	fresh := so.Value == "" || user.Value == ""
	var c journal.Change
	if r.job.Step != stepInitialise { // a resumed step reported initialising already
		var err error
		if c, err = r.progressChange(protocol.Progress{Step: protocol.StepInitialising, Detail: "initialising the token " + r.d.TokenLabel}); err != nil {
			return err
		}
	}
	if fresh {
		var err error
		var avoid []string
		if factory != nil {
			avoid = append(avoid, factory.UserPIN, factory.SOPIN)
		}
		if c.Secrets, err = r.newPINs([]string{secretSOPIN, secretUserPIN}, avoid); err != nil {
			return err
		}
	}
	if err := r.begin(ctx, stepInitialise, c); err != nil {
		return err
	}
	so, user = r.secrets[secretSOPIN], r.secrets[secretUserPIN]
	r.loggedIn = false
	if r.tok == nil {
		if err := r.initBlank(ctx, so.Value, user.Value); err != nil {
			return err
		}
	} else if err := r.reinitialise(ctx, !fresh, factory, so.Value, user.Value); err != nil {
		return err
	}
	return r.done(ctx, stepInitialise, journal.Change{TokenSerial: r.serial, Applied: []string{secretSOPIN, secretUserPIN}})
}

func (r *run) initBlank(ctx context.Context, so, user string) error {
	info, err := r.e.cfg.Tokens.InitBlank(ctx, r.slot.ID, pkcs11.InitOptions{Label: r.d.TokenLabel, SOPIN: so})
	if err != nil {
		return err
	}
	tok, err := r.e.cfg.Tokens.Open(ctx, info.Serial)
	if err != nil {
		return err
	}
	r.tok, r.serial = tok, info.Serial
	r.slot.Token = &info
	r.log = r.log.With().Str("token", r.serial).Logger()
	// The token has a serial now: hold its own lock instead of the blank tokens' one, so
	// that jobs waiting for another blank token need not wait for this job.
	if release, err := r.e.locks.acquire(ctx, r.serial, nil); err == nil {
		r.release()
		r.release = release
	}
	// Journal the serial at once: a crash before the user PIN is set then finds the token
	// by it.
	if err := r.update(ctx, journal.Change{TokenSerial: r.serial}); err != nil {
		return err
	}
	return tok.InitUserPIN(ctx, so, user)
}

func (r *run) reinitialise(ctx context.Context, probe bool, factory *usb.Defaults, so, user string) error {
	tok := r.tok
	if probe {
		err := tok.InitUserPIN(ctx, so, user)
		if err == nil {
			return nil
		}
		if !isCode(err, pkcs11.CodePINIncorrect) {
			return err
		}
	}
	var oldSO string
	if factory != nil && factory.SOPIN != "" {
		oldSO = factory.SOPIN
	} else {
		pin, err := r.dispatchPIN(protocol.PurposeSOPIN)
		if err != nil {
			return err
		}
		oldSO = pin
	}
	// C_InitToken on an initialised token checks, and keeps, its SO PIN: change it after.
	info, err := tok.Init(ctx, pkcs11.InitOptions{Label: r.d.TokenLabel, SOPIN: oldSO, Force: true})
	if err != nil {
		return err
	}
	r.slot.Token = &info
	if err := tok.ChangeSOPIN(ctx, oldSO, so); err != nil {
		return err
	}
	return tok.InitUserPIN(ctx, so, user)
}

// replaceFactoryPINs replaces the factory PINs of a token that arrived initialised with
// them: the SO PIN (when the model has a factory one) and the user PIN. Safe to repeat
// like initialise: a resumed step tries the new PINs first.
func (r *run) replaceFactoryPINs(ctx context.Context, _ bool) error {
	tok, err := r.requireToken()
	if err != nil {
		return err
	}
	def, err := r.requireFactoryDefaults(ctx)
	if err != nil {
		return err
	}
	names := []string{secretUserPIN}
	if def.SOPIN != "" {
		names = append(names, secretSOPIN)
	}
	applied := true
	for _, n := range names {
		applied = applied && r.secrets[n].Applied
	}
	if applied {
		r.log.Info().Msg("the factory PINs were replaced by an earlier attempt of this job")
		return r.done(ctx, stepFactoryPINs, journal.Change{})
	}
	fresh := r.secrets[secretUserPIN].Value == "" || (def.SOPIN != "" && r.secrets[secretSOPIN].Value == "")
	var c journal.Change
	if fresh {
		if c.Secrets, err = r.newPINs(names, []string{def.UserPIN, def.SOPIN}); err != nil {
			return err
		}
	}
	if err := r.begin(ctx, stepFactoryPINs, c); err != nil {
		return err
	}
	user, so := r.secrets[secretUserPIN].Value, r.secrets[secretSOPIN].Value
	r.loggedIn = false
	if def.SOPIN != "" {
		err := errors.New("not tried")
		if !fresh {
			err = tok.InitUserPIN(ctx, so, user)
			if err != nil && !isCode(err, pkcs11.CodePINIncorrect) {
				return err
			}
		}
		if err != nil {
			if err := tok.ChangeSOPIN(ctx, def.SOPIN, so); err != nil {
				return err
			}
			if err := tok.InitUserPIN(ctx, so, user); err != nil {
				return err
			}
		}
	} else {
		err := errors.New("not tried")
		if !fresh {
			err = tok.Login(ctx, user)
			if err != nil && !isCode(err, pkcs11.CodePINIncorrect) {
				return err
			}
		}
		if err != nil {
			if err := tok.ChangeUserPIN(ctx, def.UserPIN, user); err != nil {
				return err
			}
		}
		_ = tok.Logout(ctx) // log in again with the new PIN through login
	}
	return r.done(ctx, stepFactoryPINs, journal.Change{TokenSerial: r.serial, Applied: names})
}

// keySpec maps a profile's key type to the driver's.
func keySpec(t protocol.KeyType) (pkcs11.KeySpec, error) {
	switch t {
	case protocol.KeyRSA2048:
		return pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 2048}, nil
	case protocol.KeyRSA3072:
		return pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 3072}, nil
	case protocol.KeyRSA4096:
		return pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 4096}, nil
	case protocol.KeyP256:
		return pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}, nil
	case protocol.KeyP384:
		return pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-384"}, nil
	}
	return pkcs11.KeySpec{}, protocol.NewError(protocol.CodeBadRequest, "key.type %q is not one the agent generates", t)
}

func (r *run) keyLabel() string {
	if r.d.Key != nil && r.d.Key.Label != "" {
		return r.d.Key.Label
	}
	return r.job.Ref.JobID
}

// generateKey makes the key on the token under the job's CKA_ID; a key already there
// (made by an interrupted pass or an earlier attempt) is reused, never doubled.
func (r *run) generateKey(ctx context.Context, _ bool) error {
	spec, err := keySpec(r.d.Key.Type)
	if err != nil {
		return err
	}
	if err := r.begin(ctx, stepGenerateKey, journal.Change{}); err != nil {
		return err
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	key, created, err := r.tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: r.keyID, Label: r.keyLabel(), Spec: spec, Usage: pkcs11.UsageSign})
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("encode the public key: %w", err)
	}
	detail := fmt.Sprintf("%s key generated on the token", spec)
	if !created {
		detail = fmt.Sprintf("%s key found on the token, made by an earlier attempt", spec)
	}
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepKeyGenerated, Detail: detail,
		KeyID: r.d.Key.ID, PublicKey: pub, KeyExisted: !created})
	if err != nil {
		return err
	}
	c.KeyID, c.PublicKey, c.TokenSerial = r.d.Key.ID, pub, r.serial
	r.log.Info().Str("key_id", r.d.Key.ID).Bool("created", created).Msg("key on the token")
	return r.done(ctx, stepGenerateKey, c)
}

// sendCSR signs a CSR with the token's key. Its subject is a placeholder: the coordinator
// takes subject and SANs from the approved request. The CSR, csr_sent and, for a csr job,
// the result are journalled in one transaction, so the attempt sends exactly one CSR.
func (r *run) sendCSR(ctx context.Context, _ bool) error {
	if err := r.begin(ctx, stepSendCSR, journal.Change{}); err != nil {
		return err
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	key, err := r.tok.Key(ctx, r.keyID)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("encode the public key: %w", err)
	}
	if r.job.PublicKey != nil && string(pub) != string(r.job.PublicKey) {
		return protocol.NewError(protocol.CodeKeyMismatch, "the key under ID %s is not the one reported at key_generated", r.d.Key.ID)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: r.job.Ref.JobID},
	}, key)
	if err != nil {
		return fmt.Errorf("sign the CSR on the token: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return fmt.Errorf("the token's CSR does not verify: %w", err)
	}
	sub, err := r.message(protocol.CSRSubmission{CSR: der, KeyID: r.d.Key.ID, PublicKey: pub, TokenSerial: r.serial})
	if err != nil {
		return err
	}
	detail := "CSR sent; waiting for the certificate"
	if r.job.Kind == protocol.KindCSR {
		detail = "CSR sent; the certificate comes with an install_certificate job"
	}
	sent, err := r.progress(protocol.Progress{Step: protocol.StepCSRSent, Detail: detail})
	if err != nil {
		return err
	}
	c := journal.Change{Outbox: []*protocol.Envelope{sub, sent}, State: journal.StateAwaitingCertificate}
	if r.job.Kind == protocol.KindCSR {
		// A csr job ends here, its result in the same transaction as its CSR.
		res, err := r.message(protocol.Result{Outcome: protocol.OutcomeSucceeded, Outputs: r.outputs()})
		if err != nil {
			return err
		}
		c.State, c.Result = journal.StateDone, res
	}
	return r.done(ctx, stepSendCSR, c)
}

// chainID is the CKA_ID an issuer certificate is stored under: its subject key
// identifier, as tools expect, else a digest of its public key.
func chainID(c *x509.Certificate) []byte {
	if len(c.SubjectKeyId) > 0 {
		return c.SubjectKeyId
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return sum[:protocol.KeyIDSize]
}

// certificates returns what the job writes: the delivered certificate (issue, renew) or
// the dispatch's (install_certificate); nil while none was delivered.
func (r *run) certificates() (*protocol.CertificateChain, error) {
	if r.job.Kind == protocol.KindInstallCertificate {
		return r.d.Certificates, nil
	}
	del, err := r.job.Delivery()
	if err != nil || del == nil {
		return nil, err
	}
	if del.KeyID != r.d.Key.ID {
		return nil, protocol.NewError(protocol.CodeKeyMismatch, "the certificate was delivered for key %s, the job's key is %s", del.KeyID, r.d.Key.ID)
	}
	return &del.Certificates, nil
}

func parseChain(c *protocol.CertificateChain) (*x509.Certificate, []*x509.Certificate, error) {
	leaf, err := x509.ParseCertificate(c.Certificate)
	if err != nil {
		return nil, nil, protocol.NewError(protocol.CodeBadRequest, "certificate: %v", err)
	}
	var chain []*x509.Certificate
	for i, der := range c.Chain {
		ca, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, protocol.NewError(protocol.CodeBadRequest, "chain[%d]: %v", i, err)
		}
		chain = append(chain, ca)
	}
	return leaf, chain, nil
}

// certificateSerial is the serial of the certificate the job wrote, once it is written.
func (r *run) certificateSerial() string {
	if !r.certificateWritten() {
		return ""
	}
	c, err := r.certificates()
	if err != nil || c == nil {
		return ""
	}
	leaf, _, err := parseChain(c)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(leaf.SerialNumber.Bytes())
}

func (r *run) certificateWritten() bool {
	switch r.job.Step {
	case stepWriteCert:
		return r.job.StepStatus == journal.StepDone
	case stepVerify, stepRemoveOld:
		return true
	}
	return false
}

// writeCertificate writes the certificate and its chain next to the key, after checking
// it is the key's. Idempotent: a certificate already there is left alone.
func (r *run) writeCertificate(ctx context.Context, _ bool) error {
	certs, err := r.certificates()
	if err != nil {
		return err
	}
	if certs == nil {
		return errParked
	}
	leaf, chain, err := parseChain(certs)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	if err != nil {
		return protocol.NewError(protocol.CodeBadRequest, "certificate public key: %v", err)
	}
	if r.job.Kind != protocol.KindInstallCertificate && string(pub) != string(r.job.PublicKey) {
		return protocol.NewError(protocol.CodeTokenCertificateKeyMismatch,
			"the certificate %q is not for the key this job generated (ID %s); refusing to write it", leaf.Subject, r.d.Key.ID)
	}
	if err := r.begin(ctx, stepWriteCert, journal.Change{}); err != nil {
		return err
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	if r.job.Kind == protocol.KindInstallCertificate {
		key, err := r.tok.Key(ctx, r.keyID)
		if err != nil {
			return err
		}
		have, err := x509.MarshalPKIXPublicKey(key.Public())
		if err != nil {
			return err
		}
		if string(have) != string(pub) {
			return protocol.NewError(protocol.CodeTokenCertificateKeyMismatch,
				"the certificate %q is not for the key with ID %s on the token; refusing to write it", leaf.Subject, r.d.Key.ID)
		}
	}
	label := certs.Label
	if label == "" {
		label = r.keyLabel()
	}
	w := pkcs11.CertificateWrite{ID: r.keyID, Label: label, Cert: leaf}
	for _, ca := range chain {
		w.Chain = append(w.Chain, pkcs11.ChainCertificate{ID: chainID(ca), Label: ca.Subject.CommonName, Cert: ca})
	}
	res, err := r.tok.WriteCertificate(ctx, w)
	if err != nil {
		return err
	}
	r.log.Info().Str("result", res.String()).Str("serial", hex.EncodeToString(leaf.SerialNumber.Bytes())).Msg("certificate on the token")
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepCertificateWritten, Detail: "certificate written: " + leaf.Subject.String()})
	if err != nil {
		return err
	}
	if r.job.KeyID == "" {
		c.KeyID, c.PublicKey = r.d.Key.ID, pub
	}
	return r.done(ctx, stepWriteCert, c)
}

// verify proves the key and certificate belong together and the key works: the token
// signs a fresh challenge that the certificate's public key verifies.
func (r *run) verify(ctx context.Context, _ bool) error {
	if err := r.begin(ctx, stepVerify, journal.Change{}); err != nil {
		return err
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	if err := r.tok.VerifyKeyAndCertificate(ctx, r.keyID); err != nil {
		return err
	}
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepVerified, Detail: "the key signs what its certificate verifies"})
	if err != nil {
		return err
	}
	return r.done(ctx, stepVerify, c)
}

// removeOld removes the key and certificate a renewal replaces, named by the dispatch's
// key.replaces: only now that the new certificate is written and verified. Safe to
// repeat: what is gone is not found again. Without key.replaces nothing is removed.
func (r *run) removeOld(ctx context.Context, _ bool) error {
	old := r.d.Key.Replaces
	if old == "" {
		r.log.Info().Msg("the dispatch names no key to replace; the old key and certificate stay")
		return r.done(ctx, stepRemoveOld, journal.Change{})
	}
	id, err := hex.DecodeString(old)
	if err != nil {
		return protocol.NewError(protocol.CodeBadRequest, "key.replaces: %v", err)
	}
	if err := r.begin(ctx, stepRemoveOld, journal.Change{OldKeyID: old}); err != nil {
		return err
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	certs, err := r.tok.DeleteCertificate(ctx, id)
	if err != nil {
		return err
	}
	keys, err := r.tok.DeleteKey(ctx, id)
	if err != nil {
		return err
	}
	r.log.Info().Str("old_key_id", old).Int("certificates", certs).Int("key_objects", keys).Msg("replaced key removed")
	return r.done(ctx, stepRemoveOld, journal.Change{})
}

// resetPIN sets a new user PIN with the SO PIN (C_InitPIN): the unblock. The new PIN is
// journalled before it is set, so a resumed step sets the same one again.
func (r *run) resetPIN(ctx context.Context, _ bool) error {
	tok, err := r.requireToken()
	if err != nil {
		return err
	}
	so, err := r.dispatchPIN(protocol.PurposeSOPIN)
	if err != nil {
		return err
	}
	var c journal.Change
	if r.secrets[secretUserPIN].Value == "" {
		if c.Secrets, err = r.newPINs([]string{secretUserPIN}, []string{so}); err != nil {
			return err
		}
	}
	if err := r.begin(ctx, stepResetPIN, c); err != nil {
		return err
	}
	r.loggedIn = false
	if err := tok.InitUserPIN(ctx, so, r.secrets[secretUserPIN].Value); err != nil {
		return err
	}
	return r.done(ctx, stepResetPIN, journal.Change{Applied: []string{secretUserPIN}})
}

// verifyPIN logs in with the new user PIN.
func (r *run) verifyPIN(ctx context.Context, _ bool) error {
	if err := r.begin(ctx, stepVerifyPIN, journal.Change{}); err != nil {
		return err
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepVerified, Detail: "the new user PIN works"})
	if err != nil {
		return err
	}
	return r.done(ctx, stepVerifyPIN, c)
}

func (r *run) wipeLabel() string {
	if r.d.TokenLabel != "" {
		return r.d.TokenLabel
	}
	if r.slot.Token != nil && r.slot.Token.Label != "" {
		return r.slot.Token.Label
	}
	return "tokenfleet"
}

// wipe re-initialises the token with its SO PIN: every object on it goes. Repeating it
// wipes an empty token again, which is harmless.
func (r *run) wipe(ctx context.Context, _ bool) error {
	tok, err := r.requireToken()
	if err != nil {
		return err
	}
	so, err := r.dispatchPIN(protocol.PurposeSOPIN)
	if err != nil {
		return err
	}
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepInitialising, Detail: "wiping the token"})
	if err != nil {
		return err
	}
	if r.job.Step == stepWipe {
		c = journal.Change{} // resumed: initialising was reported already
	}
	if err := r.begin(ctx, stepWipe, c); err != nil {
		return err
	}
	r.loggedIn = false
	info, err := tok.Init(ctx, pkcs11.InitOptions{Label: r.wipeLabel(), SOPIN: so, Force: true})
	if err != nil {
		return err
	}
	r.slot.Token = &info
	return r.done(ctx, stepWipe, journal.Change{})
}

// verifyWipe checks the token is initialised with the label and holds no object anyone
// can see.
func (r *run) verifyWipe(ctx context.Context, _ bool) error {
	if err := r.begin(ctx, stepVerifyWipe, journal.Change{}); err != nil {
		return err
	}
	info, err := r.tok.Info(ctx)
	if err != nil {
		return err
	}
	if !info.Initialized || info.Label != r.wipeLabel() {
		return protocol.NewError(protocol.CodeTokenGeneralError, "after the wipe the token is labelled %q (initialised %t), want %q",
			info.Label, info.Initialized, r.wipeLabel())
	}
	certs, err := r.tok.Certificates(ctx)
	if err != nil {
		return err
	}
	keys, err := r.tok.Keys(ctx)
	if err != nil {
		return err
	}
	if len(certs)+len(keys) != 0 {
		return protocol.NewError(protocol.CodeTokenGeneralError, "after the wipe the token still shows %d certificates and %d keys",
			len(certs), len(keys))
	}
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepVerified, Detail: "the token is empty"})
	if err != nil {
		return err
	}
	return r.done(ctx, stepVerifyWipe, c)
}

// inventory answers with the tokens this agent sees (those the selector picks, if it has
// criteria) in the result.
func (r *run) inventory(ctx context.Context, _ bool) error {
	if r.e.cfg.Inventory == nil {
		return errors.New("no inventory source is configured")
	}
	if err := r.begin(ctx, stepInventory, journal.Change{}); err != nil {
		return err
	}
	tokens, err := r.e.cfg.Inventory(ctx)
	if err != nil {
		return err
	}
	if !r.sel.empty() {
		kept := tokens[:0]
		for _, t := range tokens {
			if t.Serial == r.serial {
				kept = append(kept, t)
			}
		}
		tokens = kept
	}
	if len(tokens) > protocol.MaxTokens {
		r.log.Warn().Int("tokens", len(tokens)).Int("reported", protocol.MaxTokens).Msg("more tokens than a result may carry")
		tokens = tokens[:protocol.MaxTokens]
	}
	res, err := r.message(protocol.Result{Outcome: protocol.OutcomeSucceeded, Outputs: &protocol.Outputs{Tokens: tokens}})
	if err != nil {
		return err
	}
	return r.done(ctx, stepInventory, journal.Change{State: journal.StateDone, Result: res})
}
