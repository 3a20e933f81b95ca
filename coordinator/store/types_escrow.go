package store

import "time"

// EscrowedKeyState is the state of an escrowed key.
type EscrowedKeyState string

// States of an escrowed key.
const (
	// EscrowPending: archived with its attempt's dispatch; not known to be on the token yet.
	EscrowPending EscrowedKeyState = "pending"
	// EscrowActive: its job succeeded: the key is the holder's.
	EscrowActive EscrowedKeyState = "active"
	// EscrowSuperseded: a new attempt of the job made a new key, or the job ended without
	// it; its certificate, if one was issued, is revoked.
	EscrowSuperseded EscrowedKeyState = "superseded"
)

// RecoveredToOfficer is EscrowedKey.RecoveredTo for a key handed to an officer as a
// PKCS#12 file.
const RecoveredToOfficer = "officer"

// EscrowedKey is the archive of a server-generated encryption key: one per attempt of a
// server_keygen job. Archive is the escrow package's JSON form, sealed to the recovery
// certificates in use when it was made; the coordinator cannot open it.
type EscrowedKey struct {
	ID                string
	JobID             string
	Attempt           int
	HolderID          string
	TokenSerial       string // the token it was made for, or re-installed on ("" until known)
	KeyID             string // protocol.KeyFingerprint of the public key
	CertificateSerial string
	Archive           []byte
	State             EscrowedKeyState
	StateReason       string
	Created           time.Time
	StateSince        time.Time
	// RecoveredTo is where the last recovery put the key: a token serial or
	// RecoveredToOfficer; "" when it was never recovered. RecoveredJobID is that recovery's
	// job.
	RecoveredTo    string
	RecoveredJobID string
	Recovered      time.Time
}

// EscrowedKeyFilter selects escrowed keys; empty fields select all.
type EscrowedKeyFilter struct {
	HolderID    string
	TokenSerial string
	States      []EscrowedKeyState
}

// EncryptionKeySource says how a holder's encryption key became known.
type EncryptionKeySource string

// Sources of a holder's encryption key.
const (
	SourceEscrowed   EncryptionKeySource = "escrowed"
	SourceRegistered EncryptionKeySource = "registered"
)

// HolderEncryptionKey is a public key others may encrypt to for a holder: made by the
// coordinator and escrowed, or registered from a certificate on the holder's token.
type HolderEncryptionKey struct {
	ID                string
	HolderID          string
	KeyID             string // protocol.KeyFingerprint of PublicKey
	PublicKey         []byte // PKIX DER
	Certificate       []byte // DER
	CertificateSerial string
	TokenSerial       string
	Source            EncryptionKeySource
	JobID             string // the job that made or registered it
	EscrowedKeyID     string // SourceEscrowed only
	Created           time.Time
}

// Targets of a key recovery.
const (
	RecoveryToToken   = "token"   // the job's token, on the job's agent
	RecoveryToOfficer = "officer" // a PKCS#12 file the officer writes on their machine
)

// KeyRequest is what a recover_key or register_certificate job is about beyond its row:
// the escrowed key to recover and where to, or the CKA_ID of the certificate to register.
type KeyRequest struct {
	JobID         string
	EscrowedKeyID string // recover_key
	Target        string // recover_key: RecoveryToToken or RecoveryToOfficer
	CKAID         string // register_certificate: the certificate's CKA_ID, lower-case hex
	// DeliveredKey is the recovered key sealed by the officer's tool to the target agent
	// for DeliveredAttempt (protocol.Sealed as JSON); nil until delivered, and for an
	// officer's PKCS#12, which never reaches the coordinator.
	DeliveredKey     []byte
	DeliveredAttempt int
	DeliveredBy      string // user ID
	Delivered        time.Time
}
