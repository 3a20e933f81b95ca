package protocol

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"slices"
)

// JobKind is what a job does. The names are the ones DESIGN.md fixes.
type JobKind string

const (
	// KindIssue initialises the token if the profile says so, sets PINs,
	// generates a key on the token, sends a CSR, writes the certificate
	// and verifies it.
	KindIssue JobKind = "issue"
	// KindCSR generates a key and sends a CSR; the certificate is installed
	// later by an install_certificate job.
	KindCSR JobKind = "csr"
	// KindInstallCertificate writes a certificate (and chain) next to an
	// existing key.
	KindInstallCertificate JobKind = "install_certificate"
	// KindRenew generates a new key on an initialised token, sends a CSR and
	// writes the new certificate.
	KindRenew JobKind = "renew"
	// KindUnblockPIN resets a locked user PIN with the SO PIN.
	KindUnblockPIN JobKind = "unblock_pin"
	// KindWipe re-initialises a token, destroying its objects.
	KindWipe JobKind = "wipe"
	// KindInventory reports the tokens an agent sees.
	KindInventory JobKind = "inventory"
	// KindRevoke is carried out by the coordinator (CRL); it is never
	// dispatched to an agent, though it may cause a wipe job.
	KindRevoke JobKind = "revoke"
	// KindServerKeygen imports an escrowed encryption key: the coordinator
	// made the key pair, archived the private key and had its certificate
	// issued; the agent imports the key (sealed to it, PurposePrivateKey)
	// and writes the certificate onto the token.
	KindServerKeygen JobKind = "server_keygen"
	// KindRecoverKey imports an archived key that a key-recovery officer
	// opened, with its certificate, onto a token. On the agent it is
	// server_keygen; only the coordinator's side (who approves, where the
	// key comes from) differs.
	KindRecoverKey JobKind = "recover_key"
	// KindRegisterCertificate reads the certificate with a given CKA_ID
	// from the token and reports it (DER) in the result: the coordinator
	// records its public key as the holder's encryption key.
	KindRegisterCertificate JobKind = "register_certificate"
)

var jobKinds = []JobKind{
	KindIssue, KindCSR, KindInstallCertificate, KindRenew, KindUnblockPIN, KindWipe, KindInventory, KindRevoke,
	KindServerKeygen, KindRecoverKey, KindRegisterCertificate,
}

// JobKinds lists every job kind.
func JobKinds() []JobKind { return slices.Clone(jobKinds) }

// Valid reports whether k is a known job kind.
func (k JobKind) Valid() bool { return slices.Contains(jobKinds, k) }

// Dispatchable reports whether jobs of kind k are sent to agents.
func (k JobKind) Dispatchable() bool { return k.Valid() && k != KindRevoke }

// JobState is where a job is in its lifecycle. The coordinator owns the
// transition table; the states are here because messages and UIs name them.
type JobState string

const (
	StatePendingApproval     JobState = "pending_approval"
	StateApproved            JobState = "approved"
	StateDispatched          JobState = "dispatched"
	StateRunning             JobState = "running"
	StateAwaitingCertificate JobState = "awaiting_certificate"
	StateInstalling          JobState = "installing"
	StateSucceeded           JobState = "succeeded"
	StateFailed              JobState = "failed"
	StateRejected            JobState = "rejected"
	StateCancelled           JobState = "cancelled"
	StateSuperseded          JobState = "superseded"
	StateExpired             JobState = "expired"
)

var jobStates = []JobState{
	StatePendingApproval, StateApproved, StateDispatched, StateRunning,
	StateAwaitingCertificate, StateInstalling, StateSucceeded,
	StateFailed, StateRejected, StateCancelled, StateSuperseded, StateExpired,
}

// JobStates lists every job state, in lifecycle order, terminal ones last.
func JobStates() []JobState { return slices.Clone(jobStates) }

// Valid reports whether s is a known job state.
func (s JobState) Valid() bool { return slices.Contains(jobStates, s) }

// IsTerminal reports whether s is final: no transition leaves it.
func (s JobState) IsTerminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateRejected, StateCancelled, StateSuperseded, StateExpired:
		return true
	}
	return false
}

// Step is progress inside the running state, reported by the agent.
type Step string

const (
	StepWaitingForToken Step = "waiting_for_token"
	StepTokenFound      Step = "token_found"
	StepInitialising    Step = "initialising"
	StepKeyGenerated    Step = "key_generated"
	// StepKeyImported takes key_generated's place in server_keygen and
	// recover_key: the key the coordinator made is on the token.
	StepKeyImported        Step = "key_imported"
	StepCSRSent            Step = "csr_sent"
	StepCertificateWritten Step = "certificate_written"
	StepVerified           Step = "verified"
)

var steps = []Step{
	StepWaitingForToken, StepTokenFound, StepInitialising, StepKeyGenerated, StepKeyImported,
	StepCSRSent, StepCertificateWritten, StepVerified,
}

// Steps lists every step in the order a run passes them. No kind passes
// all: a key is either generated on the token (issue: initialising,
// key_generated, csr_sent) or imported onto it (server_keygen,
// recover_key: key_imported), at the same point of the run.
func Steps() []Step { return slices.Clone(steps) }

// Valid reports whether s is a known step.
func (s Step) Valid() bool { return slices.Contains(steps, s) }

// KeyType is a key algorithm and size a profile may ask for.
type KeyType string

const (
	KeyRSA2048 KeyType = "rsa2048"
	KeyRSA3072 KeyType = "rsa3072"
	KeyRSA4096 KeyType = "rsa4096"
	KeyP256    KeyType = "p256"
	KeyP384    KeyType = "p384"
)

var keyTypes = []KeyType{KeyRSA2048, KeyRSA3072, KeyRSA4096, KeyP256, KeyP384}

// KeyTypes lists every key type.
func KeyTypes() []KeyType { return slices.Clone(keyTypes) }

// Valid reports whether t is a known key type.
func (t KeyType) Valid() bool { return slices.Contains(keyTypes, t) }

// KeyTypeOf names the type of a public key, or fails for a key no profile
// can ask for (another size or curve, another algorithm): the coordinator
// answers such a key with weak_key.
func KeyTypeOf(pub crypto.PublicKey) (KeyType, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return KeyRSA2048, nil
		case 3072:
			return KeyRSA3072, nil
		case 4096:
			return KeyRSA4096, nil
		}
		return "", NewError(CodeWeakKey, "RSA key of %d bits; profiles allow 2048, 3072 or 4096", k.N.BitLen())
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return KeyP256, nil
		case elliptic.P384():
			return KeyP384, nil
		}
		return "", NewError(CodeWeakKey, "EC key on curve %s; profiles allow P-256 or P-384", k.Curve.Params().Name)
	}
	return "", NewError(CodeWeakKey, "key of type %T; profiles allow RSA or ECDSA keys", pub)
}

// SealPurpose names the field a sealed secret belongs in. It is bound into
// the sealed value, so a sealed SO PIN cannot be replayed as a user PIN.
type SealPurpose string

const (
	PurposeUserPIN SealPurpose = "user_pin"
	PurposeSOPIN   SealPurpose = "so_pin"
	// PurposeAgentResume never travels: it binds the secrets an agent keeps
	// in its own journal, sealed to its own key, to resume a job after a
	// restart (PINs it set but has not reported yet). Its own purpose keeps
	// such a value from ever opening as a PIN of a dispatch.
	PurposeAgentResume SealPurpose = "agent_resume"
	// PurposeBrokerCredentials binds an agent's broker user and password,
	// sealed to the agent's key by the coordinator, to that agent rather
	// than to a job: they are kept sealed until the agent fetches them.
	PurposeBrokerCredentials SealPurpose = "broker_credentials"
	// PurposePrivateKey is a PKCS#8 DER private key the coordinator made
	// (server_keygen, recover_key), sealed to the agent that imports it.
	// It is the one purpose whose secrets may exceed MaxSealedPlaintext.
	PurposePrivateKey SealPurpose = "private_key"
)

// Valid reports whether p is a known purpose.
func (p SealPurpose) Valid() bool {
	switch p {
	case PurposeUserPIN, PurposeSOPIN, PurposeAgentResume, PurposeBrokerCredentials, PurposePrivateKey:
		return true
	}
	return false
}

// MaxPlaintext is the largest secret a value sealed for p may hold:
// MaxSealedKey for a private key, MaxSealedPlaintext for everything else,
// so a PIN field still refuses a kilobyte-sized value.
func (p SealPurpose) MaxPlaintext() int {
	if p == PurposePrivateKey {
		return MaxSealedKey
	}
	return MaxSealedPlaintext
}

// Outcome is how an attempt ended, as the agent reports it.
type Outcome string

const (
	OutcomeSucceeded Outcome = "succeeded"
	OutcomeFailed    Outcome = "failed"
)

// Valid reports whether o is a known outcome.
func (o Outcome) Valid() bool { return o == OutcomeSucceeded || o == OutcomeFailed }

// checkEnum is the shared error for a typed string outside its set.
func checkEnum[T ~string](field string, v T, valid bool, all []T) error {
	if v == "" {
		return invalid(field, "required")
	}
	if !valid {
		return invalid(field, "unknown value %q; known: %v", string(v), all)
	}
	return nil
}

func (k JobKind) check(field string) error  { return checkEnum(field, k, k.Valid(), jobKinds) }
func (s JobState) check(field string) error { return checkEnum(field, s, s.Valid(), jobStates) }
func (s Step) check(field string) error     { return checkEnum(field, s, s.Valid(), steps) }
func (t KeyType) check(field string) error  { return checkEnum(field, t, t.Valid(), keyTypes) }
func (o Outcome) check(field string) error {
	return checkEnum(field, o, o.Valid(), []Outcome{OutcomeSucceeded, OutcomeFailed})
}
