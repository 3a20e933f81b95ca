package store

import "time"

// RecoveryCertificate is one of the organisation's backup keys: escrowed private keys are
// sealed to its public key, whose private half is held outside the coordinator.
type RecoveryCertificate struct {
	ID         string
	KeyID      string // protocol.KeyFingerprint of the certificate's public key
	CommonName string
	NotBefore  time.Time
	NotAfter   time.Time
	DER        []byte
	Added      time.Time
	AddedBy    string // user ID
	// Retired is zero while the certificate is in use; a retired one is kept, since
	// archives sealed to it name it, but nothing new is sealed to it.
	Retired      time.Time
	RetiredBy    string
	RetireReason string
}
