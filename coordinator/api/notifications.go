package api

import "time"

// Notification is one notice in the notifications outbox, to one recipient over one
// channel: never its body.
type Notification struct {
	ID        string `json:"id"` // a webhook's Tokenfleet-Delivery
	Event     string `json:"event"`
	Channel   string `json:"channel"`   // email or webhook
	Recipient string `json:"recipient"` // an e-mail address, or the webhook's name
	Username  string `json:"username,omitempty"`
	Language  string `json:"language"`
	Subject   string `json:"subject"`
	State     string `json:"state"` // pending, sent or failed
	Attempts  int    `json:"attempts"`
	// NextAttempt is when a pending notice is tried (again).
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// Held: the recipient's rate limit held it back; it goes out in a digest.
	Held    bool      `json:"held,omitempty"`
	Created time.Time `json:"created"`
	SentAt  time.Time `json:"sent_at,omitzero"`
}

// NotificationList is a page of notifications, newest first.
type NotificationList = List[Notification]
