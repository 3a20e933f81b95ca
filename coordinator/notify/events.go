package notify

import (
	"slices"
	"time"
)

// Event names what happened; webhooks subscribe to events by these names.
type Event string

// Events.
const (
	// EventApprovalRequested: a request awaits the recipient's approval (to the approvers
	// in scope).
	EventApprovalRequested Event = "job.approval_requested"
	// EventCAApprovalRequested: a job waits at the CA-operator gate, its CSR accepted, for
	// the recipient's decision before its certificate is signed (to the CA operators in
	// scope).
	EventCAApprovalRequested Event = "job.ca_approval_requested"
	// EventJobDecided: a request was approved or rejected (to its requester).
	EventJobDecided Event = "job.decided"
	// EventJobSucceeded and EventJobFailed: a job ended (to its requester).
	EventJobSucceeded Event = "job.succeeded"
	EventJobFailed    Event = "job.failed"
	// EventTokenInsert: a job waits for the holder's token at a workstation (to the
	// holder).
	EventTokenInsert Event = "token.insert"
	// EventRolloutBrakeTripped and EventRolloutCompleted: a rollout paused on its failure
	// brake, or finished (to its creator).
	EventRolloutBrakeTripped Event = "rollout.brake_tripped"
	EventRolloutCompleted    Event = "rollout.completed"
	// EventRolloutEnded: a rollout ended without completing: rejected, or not approved in
	// time, or aborted (to its creator, unless they did it).
	EventRolloutEnded Event = "rollout.ended"
	// EventCertificateExpiring: a certificate is within its profile's warning period (to
	// its holder and the help desk).
	EventCertificateExpiring Event = "certificate.expiring"
	// EventCRLExpiring: the built-in CA's CRL is close to its next update and no newer one
	// could be made (to the administrators).
	EventCRLExpiring Event = "crl.expiring"
)

var events = []Event{EventApprovalRequested, EventCAApprovalRequested, EventJobDecided, EventJobSucceeded, EventJobFailed, EventTokenInsert,
	EventRolloutBrakeTripped, EventRolloutCompleted, EventRolloutEnded, EventCertificateExpiring, EventCRLExpiring}

// Events lists every event.
func Events() []Event { return slices.Clone(events) }

// Known reports whether e is an event.
func Known(e Event) bool { return slices.Contains(events, e) }

// Languages the templates are written in.
const (
	French  = "fr"
	English = "en"
)

// DefaultLanguage is the language of a recipient who chose none, unless the
// configuration says otherwise.
const DefaultLanguage = French

// Languages lists the languages notifications are written in.
func Languages() []string { return []string{French, English} }

// KnownLanguage reports whether notifications are written in lang.
func KnownLanguage(lang string) bool { return slices.Contains(Languages(), lang) }

// Recipient is a person a notice is for.
type Recipient struct {
	UserID   string
	Username string
	Name     string // display name; the username when empty
	Email    string // "" for none: the person gets no e-mail
	Language string // "" for the default
}

// Notice is what one change tells, to whom. Templates see Data only: a typed set of
// fields chosen to be safe to send, never a store record, so that no PIN, activation code
// or token secret can reach a notification by a template's mistake.
type Notice struct {
	Event Event
	// Key names the occurrence, unique for the event (a job and its attempt, a rollout and
	// its brake round): with the channel and the recipient it makes the notification's
	// dedupe key, so that a transaction run again or a second coordinator noticing the
	// same thing sends nothing twice.
	Key  string
	Data Data
	To   []Recipient
}

// Data is what templates and webhook receivers see. Each part is set for the events it
// concerns.
type Data struct {
	Job         *Job         `json:"job,omitempty"`
	Decision    *Decision    `json:"decision,omitempty"`
	Failure     *Failure     `json:"failure,omitempty"`
	Token       *Token       `json:"token,omitempty"`
	Rollout     *Rollout     `json:"rollout,omitempty"`
	Certificate *Certificate `json:"certificate,omitempty"`
	CRL         *CRL         `json:"crl,omitempty"`
}

// Job describes a job.
type Job struct {
	ID           string    `json:"id"`
	Kind         string    `json:"kind"`
	State        string    `json:"state"`
	Attempt      int       `json:"attempt"`
	Holder       string    `json:"holder,omitempty"`      // username
	HolderName   string    `json:"holder_name,omitempty"` // display name
	Requester    string    `json:"requester,omitempty"`   // username
	Organization string    `json:"organization,omitempty"`
	Profile      string    `json:"profile"`
	Agent        string    `json:"agent"`
	Hostname     string    `json:"hostname,omitempty"` // the agent's host, as it said
	TokenSerial  string    `json:"token_serial,omitempty"`
	Deadline     time.Time `json:"deadline,omitzero"`
	Rollout      string    `json:"rollout,omitempty"` // the rollout that made it
	// Subject is the certificate's subject as the profile renders it for the holder: what
	// a CA operator is asked to have signed.
	Subject string `json:"subject,omitempty"`
	// DecideBy is when the gate the job waits at lapses (approval notices only).
	DecideBy time.Time `json:"decide_by,omitzero"`
}

// Decision is an approval or rejection at a gate.
type Decision struct {
	Verdict   string `json:"verdict"` // approve or reject
	Gate      string `json:"gate"`    // request or ca_operator
	Reason    string `json:"reason,omitempty"`
	DecidedBy string `json:"decided_by,omitempty"` // username
}

// Failure is why a job failed.
type Failure struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// Token is the token a job waits for.
type Token struct {
	Serial string `json:"serial,omitempty"`
	Model  string `json:"model,omitempty"`
	Blank  bool   `json:"blank,omitempty"` // any blank token will do
	Reason string `json:"reason,omitempty"`
}

// Rollout describes a rollout and where it stands.
type Rollout struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	State     string `json:"state"`
	Summary   string `json:"summary,omitempty"` // the brake trip, or why it ended, in words
	By        string `json:"by,omitempty"`      // who ended it (username), "" for the coordinator
	Round     int    `json:"round,omitempty"`   // brake trips so far
	Targets   int    `json:"targets"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
	Cancelled int    `json:"cancelled"`
}

// Certificate describes a certificate close to its expiry.
type Certificate struct {
	Serial      string    `json:"serial"`
	Subject     string    `json:"subject"`
	Profile     string    `json:"profile"`
	Holder      string    `json:"holder,omitempty"`
	HolderName  string    `json:"holder_name,omitempty"`
	TokenSerial string    `json:"token_serial,omitempty"`
	Agent       string    `json:"agent,omitempty"`
	NotAfter    time.Time `json:"not_after"`
	Warning     string    `json:"warning"` // the profile's expiry_warning
}

// CRL describes the built-in CA's CRL.
type CRL struct {
	Issuer     string    `json:"issuer"`
	NextUpdate time.Time `json:"next_update,omitzero"` // zero when no CRL could be read
	Margin     string    `json:"margin"`
	Error      string    `json:"error,omitempty"` // why no new CRL could be made
}
