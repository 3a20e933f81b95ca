package protocol

import (
	"fmt"
)

// Hello introduces an agent: sent when it starts and after each
// reconnection to the broker, so the coordinator's view of presence, keys
// and tokens is rebuilt from scratch every time.
type Hello struct {
	// InstanceID is a random ID (message-ID form) the agent picks at each
	// start. Two instances claiming one agent ID show up as two instance
	// IDs with their host names.
	InstanceID string `json:"instance_id"`
	Hostname   string `json:"hostname"`
	// OS and Arch are Go's GOOS and GOARCH.
	OS           string `json:"os"`
	Arch         string `json:"arch"`
	AgentVersion string `json:"agent_version"`
	// Protocol is the range of versions the agent speaks; the coordinator
	// sends it the highest version both know.
	Protocol VersionRange `json:"protocol"`
	// SealKey is the agent's X25519 public key, PKIX DER: the coordinator
	// seals the PINs it sends this agent to it.
	SealKey []byte `json:"seal_key"`
	// Tokens is the agent's inventory at the time of the hello.
	Tokens []Token `json:"tokens"`
}

// MessageType implements Body.
func (Hello) MessageType() MessageType { return TypeHello }

// Validate implements Body.
func (h Hello) Validate() error {
	if err := checkUUID("instance_id", h.InstanceID); err != nil {
		return err
	}
	if err := checkText("hostname", h.Hostname, MaxHostnameLen, true); err != nil {
		return err
	}
	if err := checkText("os", h.OS, MaxShortLen, true); err != nil {
		return err
	}
	if err := checkText("arch", h.Arch, MaxShortLen, true); err != nil {
		return err
	}
	if err := checkText("agent_version", h.AgentVersion, MaxShortLen, true); err != nil {
		return err
	}
	if err := within("protocol", h.Protocol.Validate()); err != nil {
		return err
	}
	if err := checkSealKey("seal_key", h.SealKey, true); err != nil {
		return err
	}
	return checkTokens("tokens", h.Tokens)
}

// Heartbeat says an agent is alive. Sent every HeartbeatInterval (with
// jitter) to a queue of its own, non-persistent: presence, not history.
type Heartbeat struct {
	// InstanceID is the one of the agent's hello.
	InstanceID string `json:"instance_id"`
	// Seq counts heartbeats of this instance from 1, so gaps and reordering
	// are visible.
	Seq           uint64 `json:"seq"`
	UptimeSeconds uint64 `json:"uptime_s"`
	// CurrentJob is the attempt the agent is working on, if any, and Step
	// the last step it reported.
	CurrentJob *JobRef `json:"current_job,omitempty"`
	Step       Step    `json:"step,omitempty"`
}

// MessageType implements Body.
func (Heartbeat) MessageType() MessageType { return TypeHeartbeat }

// Validate implements Body.
func (h Heartbeat) Validate() error {
	if err := checkUUID("instance_id", h.InstanceID); err != nil {
		return err
	}
	if h.Seq == 0 {
		return invalid("seq", "required (sequence numbers start at 1)")
	}
	if h.CurrentJob == nil {
		if h.Step != "" {
			return invalid("step", "set without current_job")
		}
		return nil
	}
	if err := within("current_job", h.CurrentJob.Validate()); err != nil {
		return err
	}
	if h.Step != "" {
		return h.Step.check("step")
	}
	return nil
}

// Progress reports a step of a running attempt. At key_generated it carries
// the public key: the coordinator holds the CSR and the certificate to it.
type Progress struct {
	Step Step `json:"step"`
	// Detail is for the operator watching the job ("insert token 1234").
	Detail      string `json:"detail,omitempty"`
	TokenSerial string `json:"token_serial,omitempty"`
	// KeyID and PublicKey (PKIX DER) are set at key_generated, and only
	// there.
	KeyID     string `json:"key_id,omitempty"`
	PublicKey []byte `json:"public_key,omitempty"`
	// KeyExisted says the key was found on the token, made by an earlier
	// attempt, rather than generated now.
	KeyExisted bool `json:"key_existed,omitempty"`
}

// MessageType implements Body.
func (Progress) MessageType() MessageType { return TypeProgress }

// Validate implements Body.
func (p Progress) Validate() error {
	if err := p.Step.check("step"); err != nil {
		return err
	}
	if err := checkText("detail", p.Detail, MaxTextLen, false); err != nil {
		return err
	}
	if err := checkText("token_serial", p.TokenSerial, MaxTokenSerialLen, false); err != nil {
		return err
	}
	atKey := p.Step == StepKeyGenerated
	if !atKey {
		switch {
		case p.KeyID != "":
			return invalid("key_id", "only sent at step %s", StepKeyGenerated)
		case len(p.PublicKey) != 0:
			return invalid("public_key", "only sent at step %s", StepKeyGenerated)
		case p.KeyExisted:
			return invalid("key_existed", "only sent at step %s", StepKeyGenerated)
		}
		return nil
	}
	if err := checkHex("key_id", p.KeyID, MaxKeyIDBytes, true); err != nil {
		return err
	}
	return checkPublicKey("public_key", p.PublicKey, true)
}

// CSRSubmission sends the CSR of an attempt. The coordinator checks the
// CSR's signature and that its key is the one reported at key_generated;
// subject and SANs of the certificate come from the approved request, not
// from the CSR.
type CSRSubmission struct {
	// CSR is the PKCS#10 request, DER.
	CSR []byte `json:"csr"`
	// KeyID is the CKA_ID of the key that signed it.
	KeyID string `json:"key_id"`
	// PublicKey is the key's PKIX DER form.
	PublicKey   []byte `json:"public_key"`
	TokenSerial string `json:"token_serial,omitempty"`
}

// MessageType implements Body.
func (CSRSubmission) MessageType() MessageType { return TypeCSR }

// Validate implements Body.
func (c CSRSubmission) Validate() error {
	if err := checkDER("csr", c.CSR, MaxCSRSize, true); err != nil {
		return err
	}
	if err := checkHex("key_id", c.KeyID, MaxKeyIDBytes, true); err != nil {
		return err
	}
	if err := checkPublicKey("public_key", c.PublicKey, true); err != nil {
		return err
	}
	return checkText("token_serial", c.TokenSerial, MaxTokenSerialLen, false)
}

// Result ends an attempt.
type Result struct {
	Outcome Outcome `json:"outcome"`
	// Error says why the attempt failed; set if and only if it failed.
	Error *Error `json:"error,omitempty"`
	// Outputs may come with a failure too: a token initialised before a
	// later step failed has new PINs, and the coordinator must get them or
	// nobody can use the token again.
	Outputs *Outputs `json:"outputs,omitempty"`
}

// MessageType implements Body.
func (Result) MessageType() MessageType { return TypeResult }

// Validate implements Body.
func (r Result) Validate() error {
	if err := r.Outcome.check("outcome"); err != nil {
		return err
	}
	switch {
	case r.Outcome == OutcomeFailed && r.Error == nil:
		return invalid("error", "required when outcome is %s", OutcomeFailed)
	case r.Outcome == OutcomeSucceeded && r.Error != nil:
		return invalid("error", "set although outcome is %s", OutcomeSucceeded)
	}
	if r.Error != nil {
		if err := within("error", r.Error.Validate()); err != nil {
			return err
		}
	}
	if r.Outputs != nil {
		if err := within("outputs", r.Outputs.Validate()); err != nil {
			return err
		}
		// A certificate read from the token is what register_certificate
		// succeeds with; a failure has none to report.
		if r.Outcome == OutcomeFailed && len(r.Outputs.Certificate) != 0 {
			return invalid("outputs.certificate", "only sent in a %s result", OutcomeSucceeded)
		}
	}
	return nil
}

// Outputs is what an attempt left behind.
type Outputs struct {
	// TokenSerial is the token the job acted on (a blank-token selector
	// does not say which one in advance).
	TokenSerial string `json:"token_serial,omitempty"`
	// KeyID is the CKA_ID of the key generated or used.
	KeyID string `json:"key_id,omitempty"`
	// CertificateSerial is the serial (lowercase hex) of the certificate
	// written, or read (register_certificate).
	CertificateSerial string `json:"certificate_serial,omitempty"`
	// Certificate (register_certificate) is the DER certificate the agent
	// read from the token with the dispatch's key.id. Outputs does not know
	// its job's kind: the coordinator's event table requires it in a
	// register_certificate success and refuses it with any other kind.
	Certificate []byte `json:"certificate,omitempty"`
	// PINs are the PINs the agent set, sealed to the dispatch's result key.
	PINs *SealedPINs `json:"pins,omitempty"`
	// Tokens answers an inventory job.
	Tokens []Token `json:"tokens,omitempty"`
}

// Validate checks each output present.
func (o Outputs) Validate() error {
	if err := checkText("token_serial", o.TokenSerial, MaxTokenSerialLen, false); err != nil {
		return err
	}
	if err := checkHex("key_id", o.KeyID, MaxKeyIDBytes, false); err != nil {
		return err
	}
	if err := checkHex("certificate_serial", o.CertificateSerial, MaxSerialBytes, false); err != nil {
		return err
	}
	if err := checkDER("certificate", o.Certificate, MaxCertificateSize, false); err != nil {
		return err
	}
	if o.PINs != nil {
		if err := within("pins", o.PINs.Validate()); err != nil {
			return err
		}
	}
	return checkTokens("tokens", o.Tokens)
}

// Inventory reports the tokens an agent sees when that changes (a token
// inserted or removed, PIN flags changed); it replaces the previous report.
type Inventory struct {
	Tokens []Token `json:"tokens"`
}

// MessageType implements Body.
func (Inventory) MessageType() MessageType { return TypeInventory }

// Validate implements Body.
func (i Inventory) Validate() error {
	return checkTokens("tokens", i.Tokens)
}

func checkTokens(field string, tokens []Token) error {
	if err := checkList(field, len(tokens), MaxTokens); err != nil {
		return err
	}
	for i, t := range tokens {
		if err := within(fmt.Sprintf("%s[%d]", field, i), t.Validate()); err != nil {
			return err
		}
	}
	return nil
}
