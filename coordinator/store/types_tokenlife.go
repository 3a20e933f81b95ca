package store

import (
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

// TokenLife is where a token is in its life cycle. A token without a record is active.
type TokenLife struct {
	Serial    string
	State     tokenlife.State
	HolderID  string // whose token it is, when known
	Reason    string // of the last change
	ChangedBy string // actor of the last change
	ChangedAt time.Time
	// TemporaryFor is the suspended token this one stands in for ("" for none).
	TemporaryFor string
	// ReplacedBy is the token that replaced this one ("" for none).
	ReplacedBy string
	Version    int64 // row version for compare-and-set; 1 on creation
}

// TokenLifeEvent is one change of a token's state, in its history.
type TokenLifeEvent struct {
	ID     int64
	Serial string
	From   tokenlife.State // "" for a token's first record
	To     tokenlife.State
	Actor  string
	Reason string
	JobID  string // the job whose success made the change ("" for the help desk's own)
	At     time.Time
}

// TokenPurpose is why a job issues a token beyond the job's own kind.
type TokenPurpose string

// Token purposes.
const (
	// PurposeTemporary: the job issues a temporary token for a suspended one.
	PurposeTemporary TokenPurpose = "temporary"
	// PurposeReplacement: the job issues a token that replaces another.
	PurposeReplacement TokenPurpose = "replacement"
)

// TokenRequest links a job to the token it is issued for: the suspended original of a
// temporary token, or the token a replacement replaces.
type TokenRequest struct {
	JobID       string
	Purpose     TokenPurpose
	TokenSerial string
}
