package protocol

import (
	"fmt"
	"strings"
	"time"
)

// JobRef names an attempt of a job. The attempt number is the fencing
// token: it starts at 1 and grows with each dispatch of the job, and a
// message for an older attempt than the current one is ignored
// (stale_attempt).
type JobRef struct {
	JobID   string `json:"job_id"`
	Attempt uint32 `json:"attempt"`
}

// Validate checks both parts are set.
func (r JobRef) Validate() error {
	if err := ValidateJobID(r.JobID); err != nil {
		return err
	}
	if r.Attempt == 0 {
		return invalid("attempt", "required (attempts start at 1)")
	}
	return nil
}

// JobDispatch hands one attempt of a job to an agent. The job ID and
// attempt are the envelope's, not repeated here: one copy cannot disagree
// with another.
//
// Which sections a kind needs (anything else is refused, so a dispatch
// cannot carry material its job does not use):
//
//	kind                        key       certificates  private_key  pins (sealed to agent)   pin_policy, result_key
//	issue, csr                  type, id  -             -            user PIN, or SO PIN (a)  when initialise
//	renew                       type, id  -             -            user PIN                 -
//	install_certificate         id        required      -            user PIN                 -
//	server_keygen, recover_key  type, id  required      required     user PIN                 -
//	register_certificate        id        -             -            -                        -
//	unblock_pin                 -         -             -            SO PIN                   required
//	wipe                        -         -             -            SO PIN                   -
//	inventory                   -         -             -            -                        -
//
// (a) without initialise the agent logs in with the user PIN; with
// initialise a blank token needs no PIN, and re-initialising a chosen
// token needs its SO PIN.
//
// factory_pins (issue, csr) says the token still has its vendor's factory
// PINs, which the agent knows per token model: it then needs no sealed PIN
// (the factory SO PIN also authorises an initialise), and since it replaces
// them with PINs of its own, pin_policy and result_key are required.
//
// token_label goes with initialise and wipe. The token selector needs a
// criterion except for inventory, where an empty one means every token.
// key.replaces goes with renew only.
type JobDispatch struct {
	Kind JobKind `json:"kind"`
	// Deadline is when the agent stops this attempt and reports
	// deadline_exceeded, e.g. if no token was inserted in time.
	Deadline time.Time `json:"deadline"`
	// Profile names the profile the job comes from, for the agent's logs.
	Profile string `json:"profile,omitempty"`
	// Token says which token to act on.
	Token TokenSelector `json:"token"`
	// Initialise (issue, csr) wipes and initialises the token first, with
	// fresh SO and user PINs the agent generates per PINPolicy.
	Initialise bool `json:"initialise,omitempty"`
	// FactoryPINs (issue, csr) says the token is initialised with its
	// vendor's factory PINs: the agent looks them up for the token's model
	// and replaces them with fresh PINs per PINPolicy, so that an issued
	// token never keeps a factory PIN. Not for blank tokens, which have none.
	FactoryPINs bool `json:"factory_pins,omitempty"`
	// TokenLabel is the label set when the token is initialised or wiped.
	TokenLabel string `json:"token_label,omitempty"`
	// PINPolicy governs the PINs the agent generates (initialise,
	// unblock_pin).
	PINPolicy *PINPolicy `json:"pin_policy,omitempty"`
	// Key is the key to generate or import, or the key a certificate goes
	// with.
	Key *KeyParams `json:"key,omitempty"`
	// Certificates is what install_certificate, server_keygen and
	// recover_key write.
	Certificates *CertificateChain `json:"certificates,omitempty"`
	// PrivateKey (server_keygen, recover_key) is the key to import, PKCS#8
	// DER, sealed to the agent's key with PurposePrivateKey. The agent
	// imports it with CKA_ID key.id after checking it is the key of
	// certificates.certificate; key.type says what it must be.
	PrivateKey *Sealed `json:"private_key,omitempty"`
	// PINs are the token's current PINs the agent needs, sealed to the
	// agent's key (the one in its hello).
	PINs *SealedPINs `json:"pins,omitempty"`
	// ResultKey is the coordinator's X25519 public key (PKIX DER) that the
	// agent seals the PINs it generates to. Sent with each job that makes
	// PINs so that the coordinator can rotate it without re-enrolling
	// agents.
	ResultKey []byte `json:"result_key,omitempty"`
}

// MessageType implements Body.
func (JobDispatch) MessageType() MessageType { return TypeDispatch }

// Validate implements Body.
func (d JobDispatch) Validate() error {
	if err := d.Kind.check("kind"); err != nil {
		return err
	}
	if !d.Kind.Dispatchable() {
		return invalid("kind", "%s is carried out by the coordinator and never dispatched", d.Kind)
	}
	if err := checkTime("deadline", d.Deadline, true); err != nil {
		return err
	}
	if err := checkText("profile", d.Profile, MaxShortLen, false); err != nil {
		return err
	}
	if err := within("token", d.Token.Validate(d.Kind != KindInventory)); err != nil {
		return err
	}
	if err := checkText("token_label", d.TokenLabel, MaxTokenLabelLen, false); err != nil {
		return err
	}
	if d.PINPolicy != nil {
		if err := within("pin_policy", d.PINPolicy.Validate()); err != nil {
			return err
		}
	}
	if d.Key != nil {
		typeRequired := d.Kind != KindInstallCertificate && d.Kind != KindRegisterCertificate
		if err := within("key", d.Key.Validate(typeRequired)); err != nil {
			return err
		}
		if d.Key.Replaces != "" && d.Kind != KindRenew {
			return invalid("key.replaces", "only used by renew jobs")
		}
	}
	if d.Certificates != nil {
		if err := within("certificates", d.Certificates.Validate()); err != nil {
			return err
		}
	}
	if d.PrivateKey != nil {
		if err := within("private_key", d.PrivateKey.ValidateFor(PurposePrivateKey)); err != nil {
			return err
		}
	}
	if d.PINs != nil {
		if err := within("pins", d.PINs.Validate()); err != nil {
			return err
		}
	}
	if err := checkSealKey("result_key", d.ResultKey, false); err != nil {
		return err
	}
	return d.checkSections()
}

// need is what one kind requires and allows; see the table on JobDispatch.
type need struct {
	initialise, factoryPINs, tokenLabel, key, certificates, privateKey bool
	userPIN, soPIN, pinPolicy, resultKey                               bool // required
	anyPINs                                                            bool // allowed
}

func (d JobDispatch) needs() need {
	switch d.Kind {
	case KindIssue, KindCSR:
		n := need{initialise: true, factoryPINs: true, key: true, anyPINs: true}
		switch {
		case d.Initialise:
			n.tokenLabel, n.pinPolicy, n.resultKey = true, true, true
			n.soPIN = !d.Token.Blank && !d.FactoryPINs
		case d.FactoryPINs:
			n.pinPolicy, n.resultKey = true, true
		default:
			n.userPIN = true
		}
		return n
	case KindRenew:
		return need{key: true, userPIN: true, anyPINs: true}
	case KindInstallCertificate:
		return need{key: true, certificates: true, userPIN: true, anyPINs: true}
	case KindServerKeygen, KindRecoverKey:
		return need{key: true, certificates: true, privateKey: true, userPIN: true, anyPINs: true}
	case KindRegisterCertificate:
		return need{key: true}
	case KindUnblockPIN:
		return need{soPIN: true, pinPolicy: true, resultKey: true, anyPINs: true}
	case KindWipe:
		return need{tokenLabel: true, soPIN: true, anyPINs: true}
	}
	return need{} // inventory
}

func (d JobDispatch) checkSections() error {
	if d.Token.Blank && (d.Kind == KindIssue || d.Kind == KindCSR) && !d.Initialise {
		return invalid("token.blank", "a blank token must be initialised first: set initialise")
	}
	n := d.needs()
	notFor := func(field string) error {
		return invalid(field, "not used by %s jobs", d.Kind)
	}
	neededBy := func(field string) error {
		switch {
		case d.Initialise:
			return invalid(field, "required by %s jobs that initialise the token", d.Kind)
		case d.FactoryPINs:
			return invalid(field, "required by %s jobs that replace factory PINs", d.Kind)
		}
		return invalid(field, "required by %s jobs", d.Kind)
	}
	switch {
	case d.Initialise && !n.initialise:
		return notFor("initialise")
	case d.FactoryPINs && !n.factoryPINs:
		return notFor("factory_pins")
	case d.FactoryPINs && d.Token.Blank:
		return invalid("factory_pins", "a blank token has no PINs, factory or other")
	case d.TokenLabel != "" && !n.tokenLabel:
		if n.initialise {
			return invalid("token_label", "only used when initialise is set")
		}
		return notFor("token_label")
	case d.Key == nil && n.key:
		return neededBy("key")
	case d.Key != nil && !n.key:
		return notFor("key")
	case d.Certificates == nil && n.certificates:
		return neededBy("certificates")
	case d.Certificates != nil && !n.certificates:
		return notFor("certificates")
	case d.PrivateKey == nil && n.privateKey:
		return neededBy("private_key")
	case d.PrivateKey != nil && !n.privateKey:
		return notFor("private_key")
	case d.PINPolicy == nil && n.pinPolicy:
		return neededBy("pin_policy")
	case d.PINPolicy != nil && !n.pinPolicy:
		return notFor("pin_policy")
	case len(d.ResultKey) == 0 && n.resultKey:
		return neededBy("result_key")
	case len(d.ResultKey) != 0 && !n.resultKey:
		return notFor("result_key")
	case d.PINs != nil && !n.anyPINs:
		return notFor("pins")
	case n.userPIN && (d.PINs == nil || d.PINs.UserPIN == nil):
		return neededBy("pins.user_pin")
	case n.soPIN && (d.PINs == nil || d.PINs.SOPIN == nil):
		if d.Initialise {
			return invalid("pins.so_pin", "required to re-initialise a token that was not selected as blank")
		}
		return neededBy("pins.so_pin")
	}
	return nil
}

// TokenSelector picks a token among those an agent sees. All set criteria
// must match. The agent refuses to guess: several matches is
// token.ambiguous, none is no_matching_token.
type TokenSelector struct {
	// Serial is the PKCS#11 token serial number.
	Serial string `json:"serial,omitempty"`
	// Model is the PKCS#11 token model.
	Model string `json:"model,omitempty"`
	// Blank matches only tokens that are not initialised.
	Blank bool `json:"blank,omitempty"`
	// URI is a PKCS#11 URI (RFC 7512), e.g. "pkcs11:token=alice;serial=42".
	// The agent parses it; here it is only checked to be one.
	URI string `json:"uri,omitempty"`
}

// Validate checks the criteria; required says at least one must be set
// (only inventory jobs may select every token).
func (s TokenSelector) Validate(required bool) error {
	if err := checkText("serial", s.Serial, MaxTokenSerialLen, false); err != nil {
		return err
	}
	if err := checkText("model", s.Model, MaxTokenModelLen, false); err != nil {
		return err
	}
	if s.URI != "" {
		if err := checkText("uri", s.URI, MaxURILen, false); err != nil {
			return err
		}
		if !strings.HasPrefix(s.URI, "pkcs11:") {
			return invalid("uri", "does not start with \"pkcs11:\"")
		}
		if strings.ContainsAny(s.URI, " \t") {
			return invalid("uri", "contains white space; RFC 7512 percent-encodes it")
		}
	}
	if required && s.Serial == "" && s.Model == "" && !s.Blank && s.URI == "" {
		return invalid("", "no criterion: set serial, model, blank or uri")
	}
	return nil
}

// PINPolicy says what PINs the agent generates. The agent also honours the
// token's own limits and fails with token.pin_len_range if they do not
// overlap with the policy.
type PINPolicy struct {
	MinLength  int  `json:"min_length"`
	MaxLength  int  `json:"max_length"`
	DigitsOnly bool `json:"digits_only,omitempty"`
	// SOLength is the length of the SO PIN the agent sets when it initialises
	// the token or replaces its factory PINs (the profile's so_pin_length), at
	// least, if the token demands more; 0: the user PIN's length. DigitsOnly
	// applies to it too.
	SOLength int `json:"so_length,omitempty"`
}

// Validate checks MinPINLength <= min <= max <= MaxPINLength, and so_length
// 0 or within MinPINLength..MaxPINLength.
func (p PINPolicy) Validate() error {
	if p.MinLength < MinPINLength || p.MinLength > MaxPINLength {
		return invalid("min_length", "%d, want %d to %d", p.MinLength, MinPINLength, MaxPINLength)
	}
	if p.MaxLength < p.MinLength || p.MaxLength > MaxPINLength {
		return invalid("max_length", "%d, want %d (min_length) to %d", p.MaxLength, p.MinLength, MaxPINLength)
	}
	if p.SOLength != 0 && (p.SOLength < MinPINLength || p.SOLength > MaxPINLength) {
		return invalid("so_length", "%d, want 0 (as the user PIN) or %d to %d", p.SOLength, MinPINLength, MaxPINLength)
	}
	return nil
}

// KeyParams names a key on the token: the one to generate (with Type), or
// the one a certificate belongs to.
type KeyParams struct {
	Type KeyType `json:"type,omitempty"`
	// ID is the CKA_ID in lowercase hex, normally DeriveKeyID of the job
	// that generated the key. The agent looks for it before generating, so
	// a retried attempt reuses the key instead of making another.
	ID string `json:"id"`
	// Label is the CKA_LABEL of the key pair.
	Label string `json:"label,omitempty"`
	// Replaces (renew only) is the CKA_ID of the key pair the renewal
	// replaces. The agent removes that key and its certificate once the new
	// certificate is written and verified, never before. When empty, the
	// agent removes nothing: it never guesses which key is the old one.
	Replaces string `json:"replaces,omitempty"`
}

// Validate checks the key parameters; typeRequired is set for jobs that
// generate the key.
func (k KeyParams) Validate(typeRequired bool) error {
	if typeRequired || k.Type != "" {
		if err := k.Type.check("type"); err != nil {
			return err
		}
	}
	if err := checkHex("id", k.ID, MaxKeyIDBytes, true); err != nil {
		return err
	}
	if err := checkHex("replaces", k.Replaces, MaxKeyIDBytes, false); err != nil {
		return err
	}
	if k.Replaces != "" && k.Replaces == k.ID {
		return invalid("replaces", "is the new key's own id")
	}
	return checkText("label", k.Label, MaxLabelLen, false)
}

// CertificateChain is a certificate with its issuers, as DER (base64 in
// JSON). PEM is not accepted: one encoding, no armour to parse.
type CertificateChain struct {
	// Certificate is the leaf, written next to its key with the key's
	// CKA_ID.
	Certificate []byte `json:"certificate"`
	// Chain lists the issuers, the leaf's issuer first; the agent writes
	// them to the token too, so applications find the path.
	Chain [][]byte `json:"chain,omitempty"`
	// Label is the leaf's CKA_LABEL; the key's label if empty.
	Label string `json:"label,omitempty"`
}

// Validate checks each certificate is one DER SEQUENCE within the limits.
func (c CertificateChain) Validate() error {
	if err := checkDER("certificate", c.Certificate, MaxCertificateSize, true); err != nil {
		return err
	}
	if err := checkList("chain", len(c.Chain), MaxChainLength); err != nil {
		return err
	}
	for i, der := range c.Chain {
		if err := checkDER(fmt.Sprintf("chain[%d]", i), der, MaxCertificateSize, true); err != nil {
			return err
		}
	}
	return checkText("label", c.Label, MaxLabelLen, false)
}

// CertificateDelivery brings the certificate the CA signed for an attempt's
// CSR back to the agent, which writes it next to the key and verifies it.
type CertificateDelivery struct {
	// KeyID is the CKA_ID of the key the certificate belongs to.
	KeyID        string           `json:"key_id"`
	Certificates CertificateChain `json:"certificates"`
}

// MessageType implements Body.
func (CertificateDelivery) MessageType() MessageType { return TypeCertificate }

// Validate implements Body.
func (c CertificateDelivery) Validate() error {
	if err := checkHex("key_id", c.KeyID, MaxKeyIDBytes, true); err != nil {
		return err
	}
	return within("certificates", c.Certificates.Validate())
}

// Cancel stops an attempt. The agent abandons the job at the next safe
// point (never in the middle of a token write) and answers with a failed
// result carrying job_cancelled.
type Cancel struct {
	// State is the terminal state the coordinator moved the job to:
	// cancelled, superseded or expired; rejected when a CA operator refused
	// to sign while the agent waited for its certificate; or failed when the
	// coordinator failed the job itself (a CSR refused, signing failed)
	// while the agent was still at it: the agent must stop waiting all the
	// same.
	State  JobState `json:"state"`
	Reason string   `json:"reason,omitempty"`
}

// MessageType implements Body.
func (Cancel) MessageType() MessageType { return TypeCancel }

// Validate implements Body.
func (c Cancel) Validate() error {
	if err := c.State.check("state"); err != nil {
		return err
	}
	switch c.State {
	case StateCancelled, StateSuperseded, StateExpired, StateRejected, StateFailed:
	default:
		return invalid("state", "%s is not a reason to cancel; want cancelled, superseded, expired, rejected or failed", c.State)
	}
	return checkText("reason", c.Reason, MaxTextLen, false)
}
