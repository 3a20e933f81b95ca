package store

import "time"

// RegisterFilter narrows the crypto-device register.
type RegisterFilter struct {
	OrganizationID string // "" for every organisation
}

// RegisterEntry is one issued crypto device: an issue job that succeeded on a token, with
// the token as last reported and what ended the issuance, if anything did.
type RegisterEntry struct {
	JobID          string
	TokenSerial    string
	Manufacturer   string // "" when the token was never reported
	Model          string
	HolderID       string
	OrganizationID string
	ProfileName    string
	Document       Document
	Requested      time.Time // the job's creation
	Issued         time.Time // when the issue job succeeded
	// Returned is when the device came back: the first later issue or wipe of the same
	// token that succeeded (ReturnedByJob, of ReturnedByKind). Zero while it is out.
	Returned       time.Time
	ReturnedByJob  string
	ReturnedByKind string
}
