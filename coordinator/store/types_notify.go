package store

import "time"

// Notification states.
const (
	NotificationPending = "pending"
	NotificationSent    = "sent"
	NotificationFailed  = "failed"
)

// Notification channels.
const (
	ChannelEmail   = "email"
	ChannelWebhook = "webhook"
)

// Notification is one notice to one recipient over one channel, rendered when it was
// written: the outbox row the sender delivers.
type Notification struct {
	ID string
	// DedupeKey is unique: a second notification with the key is not added.
	DedupeKey string
	Event     string
	Channel   string // ChannelEmail or ChannelWebhook
	Recipient string // an e-mail address, or a webhook's name
	UserID    string // the person an e-mail is for; "" for a webhook
	Language  string
	Subject   string
	Body      []byte // the e-mail's text, or the webhook's JSON
	// HTML is an e-mail's HTML part: the notice's own content, which the sender puts in a
	// page; "" for a webhook call (and an e-mail that goes out as text alone).
	HTML     string
	State    string // NotificationPending, NotificationSent or NotificationFailed
	Attempts int
	// NextAttempt is when the sender may try it (again).
	NextAttempt time.Time
	// LeaseUntil and LeaseOwner: the sender that claimed it and until when; zero and ""
	// when unclaimed.
	LeaseUntil time.Time
	LeaseOwner string
	// Held: the recipient's rate limit held it back; it goes out in a digest.
	Held      bool
	LastError string
	// DeliveryID is the message it went out in: its own ID, or the digest's.
	DeliveryID string
	Created    time.Time
	SentAt     time.Time
}

// NotificationFilter selects notifications; empty fields match everything. They are
// listed newest first.
type NotificationFilter struct {
	State   string
	Event   string
	Channel string
}

// NotificationClaim asks for the due notifications a sender may send now.
type NotificationClaim struct {
	Now        time.Time // due at or before now, and not leased at now
	LeaseUntil time.Time // the lease the claimed rows get
	Owner      string    // the claiming sender
	Limit      int
}
