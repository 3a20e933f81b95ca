package api

import (
	"time"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// EscrowedKey is a server-made encryption key whose private half is archived, sealed to
// the recovery certificates (never its contents).
type EscrowedKey struct {
	ID                string    `json:"id"`
	JobID             string    `json:"job_id"`
	Attempt           int       `json:"attempt"`
	Holder            string    `json:"holder"`
	TokenSerial       string    `json:"token_serial,omitempty"`
	KeyID             string    `json:"key_id"`
	CertificateSerial string    `json:"certificate_serial,omitempty"`
	State             string    `json:"state"` // pending, active, superseded
	StateReason       string    `json:"state_reason,omitempty"`
	Created           time.Time `json:"created"`
	RecoveredTo       string    `json:"recovered_to,omitempty"` // a token serial, or "officer"
	RecoveredJob      string    `json:"recovered_job,omitempty"`
	Recovered         time.Time `json:"recovered,omitzero"`
}

// EscrowedKeyList is the escrowed keys of a holder or a token, oldest first.
type EscrowedKeyList struct {
	Items []EscrowedKey `json:"items"`
}

// RecoveryCreate asks for an escrowed key to be recovered: onto a token (target "token",
// with agent and token_serial), or as a PKCS#12 for an officer (target "officer").
type RecoveryCreate struct {
	Target      string `json:"target"`
	Agent       string `json:"agent,omitempty"`
	TokenSerial string `json:"token_serial,omitempty"`
	Reason      string `json:"reason"`
}

// RecoveryArchive is what an officer's tool needs to open an approved recovery: the archive
// (the escrow package's JSON form), and for a token target the agent's seal key and the
// binding to seal the key with (job_id, attempt, purpose).
type RecoveryArchive struct {
	JobID        string               `json:"job_id"`
	Attempt      int                  `json:"attempt"`
	Target       string               `json:"target"`
	Holder       string               `json:"holder"`
	EscrowedKey  string               `json:"escrowed_key"`
	KeyID        string               `json:"key_id"`
	Archive      []byte               `json:"archive"`
	Agent        string               `json:"agent,omitempty"`
	TokenSerial  string               `json:"token_serial,omitempty"`
	AgentSealKey []byte               `json:"agent_seal_key,omitempty"`
	Purpose      protocol.SealPurpose `json:"purpose"`
	Approvals    int                  `json:"approvals"`
	Required     int                  `json:"required"`
}

// RecoveryDelivery is an officer's delivery: the key sealed to the target agent, or
// pkcs12 true once the officer wrote the PKCS#12 file.
type RecoveryDelivery struct {
	PrivateKey *protocol.Sealed `json:"private_key,omitempty"`
	PKCS12     bool             `json:"pkcs12,omitempty"`
}

// EncryptionKey is a holder's encryption key: a certificate others may encrypt to, made by
// the coordinator and escrowed (source escrowed) or read from the holder's token (source
// registered). Current marks the one to encrypt to now; NotCurrent says why another is
// not (revoked, expired, superseded, a later key).
type EncryptionKey struct {
	ID                string    `json:"id"`
	Holder            string    `json:"holder"`
	Source            string    `json:"source"` // escrowed, registered
	KeyID             string    `json:"key_id"`
	Certificate       string    `json:"certificate"` // PEM
	CertificateSerial string    `json:"certificate_serial"`
	Subject           string    `json:"subject,omitempty"`
	NotBefore         time.Time `json:"not_before,omitzero"`
	NotAfter          time.Time `json:"not_after,omitzero"`
	Revoked           time.Time `json:"revoked,omitzero"`
	TokenSerial       string    `json:"token_serial,omitempty"`
	JobID             string    `json:"job_id"`
	EscrowedKey       string    `json:"escrowed_key,omitempty"`
	Created           time.Time `json:"created"`
	Current           bool      `json:"current"`
	NotCurrent        string    `json:"not_current,omitempty"`
}

// EncryptionKeyList is a holder's encryption keys, oldest first.
type EncryptionKeyList struct {
	Items []EncryptionKey `json:"items"`
}
