package api

import "time"

// Register formats (the format query parameter of GET /api/v1/register).
const (
	RegisterJSON = "json"
	RegisterCSV  = "csv"
	RegisterPDF  = "pdf"
)

// Register is the crypto-device register: every device issued, oldest first.
type Register struct {
	Organization string          `json:"organization,omitempty"` // absent: every organisation
	Generated    time.Time       `json:"generated"`
	Items        []RegisterEntry `json:"items"`
}

// RegisterEntry is one issued device.
type RegisterEntry struct {
	TokenSerial  string    `json:"token_serial"`
	Manufacturer string    `json:"manufacturer,omitempty"`
	Model        string    `json:"model,omitempty"`
	Holder       string    `json:"holder"`
	HolderName   string    `json:"holder_name,omitempty"`
	Organization string    `json:"organization,omitempty"`
	Profile      string    `json:"profile"`
	Job          string    `json:"job"` // the issue job
	Document     *Document `json:"document,omitempty"`
	Issued       time.Time `json:"issued"`
	// Returned is when the device came back; absent while it is out.
	Returned     time.Time       `json:"returned,omitzero"`
	State        string          `json:"state"` // issued or returned
	ReturnReason string          `json:"return_reason,omitempty"`
	History      []RegisterEvent `json:"history"`
}

// RegisterEvent is one step of a device's history.
type RegisterEvent struct {
	At     time.Time `json:"at"`
	State  string    `json:"state"` // a job state, or returned
	Actor  string    `json:"actor,omitempty"`
	Reason string    `json:"reason,omitempty"`
}
