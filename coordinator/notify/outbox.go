package notify

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Webhook is a receiver of notices: every event it subscribes to (all when Events is
// empty) is posted to URL as JSON, with its texts in Language.
type Webhook struct {
	Name     string
	URL      string
	Events   []Event
	Language string // "" for the default
}

// wants reports whether the webhook subscribes to e.
func (w Webhook) wants(e Event) bool { return len(w.Events) == 0 || slices.Contains(w.Events, e) }

// OutboxConfig says what the outbox writes.
type OutboxConfig struct {
	// Email: an SMTP server is configured, so people with an e-mail address get e-mails.
	Email bool
	// Language is the language of people who chose none; "" for DefaultLanguage.
	Language string
	Webhooks []Webhook
	// ConsoleURL is the coordinator's address as people's browsers reach it
	// (https://pki.example.org): notices link to the console page of their job
	// (/ui/jobs/ID) or rollout (/ui/rollouts/ID). "" for no link.
	ConsoleURL string
}

// Outbox turns notices into rows of the notifications outbox, rendered, inside the
// caller's transaction: one per recipient with an e-mail address, and one per webhook that
// subscribes to the event.
type Outbox struct {
	cfg  OutboxConfig
	tmpl *Templates
	now  func() time.Time
	wake func()
}

// Tx is the part of a store transaction the outbox writes with.
type Tx interface {
	AddNotifications(ctx context.Context, ns []store.Notification) (int, error)
}

// NewOutbox makes an outbox. now may be nil (time.Now).
func NewOutbox(cfg OutboxConfig, tmpl *Templates, now func() time.Time) (*Outbox, error) {
	if tmpl == nil {
		return nil, fmt.Errorf("notify: outbox without templates")
	}
	if cfg.Language == "" {
		cfg.Language = DefaultLanguage
	}
	if !KnownLanguage(cfg.Language) {
		return nil, fmt.Errorf("notify: language %q has no templates (%v)", cfg.Language, Languages())
	}
	for _, w := range cfg.Webhooks {
		if w.Language != "" && !KnownLanguage(w.Language) {
			return nil, fmt.Errorf("notify: webhook %s: language %q has no templates (%v)", w.Name, w.Language, Languages())
		}
	}
	base, err := CheckConsoleURL(cfg.ConsoleURL)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	cfg.ConsoleURL = base
	if now == nil {
		now = time.Now
	}
	return &Outbox{cfg: cfg, tmpl: tmpl, now: now, wake: func() {}}, nil
}

// OnWritten sets what Wake calls: the sender's nudge.
func (o *Outbox) OnWritten(fn func()) { o.wake = fn }

// Wake tells the sender that notices were committed: it looks at once.
func (o *Outbox) Wake() { o.wake() }

// Enabled reports whether the outbox writes anything at all.
func (o *Outbox) Enabled() bool { return o != nil && (o.cfg.Email || len(o.cfg.Webhooks) > 0) }

// Channels says which channels notices of e travel on: e-mail, and the webhooks that
// subscribe to it.
func (o *Outbox) Channels(e Event) (email bool, webhooks int) {
	for _, w := range o.cfg.Webhooks {
		if w.wants(e) {
			webhooks++
		}
	}
	return o.cfg.Email, webhooks
}

// webhookBody is the JSON a webhook receives.
type webhookBody struct {
	ID       string    `json:"id"` // the notification's, as in the Tokenfleet-Delivery header
	Event    Event     `json:"event"`
	Time     time.Time `json:"time"`
	Language string    `json:"language"`
	Subject  string    `json:"subject"`
	Text     string    `json:"text"`
	Link     string    `json:"link,omitempty"` // the console page, when notifications.console_url is set
	Data     Data      `json:"data"`
}

// Write adds n's rows to the outbox in tx. A notice nobody is to receive adds nothing.
func (o *Outbox) Write(ctx context.Context, tx Tx, n Notice) error {
	if !o.Enabled() {
		return nil
	}
	if !Known(n.Event) || n.Key == "" {
		return fmt.Errorf("notify: notice of event %q with key %q", n.Event, n.Key)
	}
	now := o.now().UTC().Truncate(time.Microsecond)
	link := consoleLink(o.cfg.ConsoleURL, n.Data)
	var rows []store.Notification
	rendered := map[string]Message{}
	render := func(lang string) (Message, error) {
		if m, ok := rendered[lang]; ok {
			return m, nil
		}
		m, err := o.tmpl.Render(lang, n.Event, n.Data, link)
		if err == nil {
			rendered[lang] = m
		}
		return m, err
	}
	if o.cfg.Email {
		seen := map[string]bool{}
		for _, r := range n.To {
			if r.Email == "" || seen[r.UserID] {
				continue
			}
			seen[r.UserID] = true
			lang := r.Language
			if !KnownLanguage(lang) {
				lang = o.cfg.Language
			}
			m, err := render(lang)
			if err != nil {
				return err
			}
			rows = append(rows, store.Notification{ID: newID(), DedupeKey: dedupeKey(n, store.ChannelEmail, r.UserID),
				Event: string(n.Event), Channel: store.ChannelEmail, Recipient: r.Email, UserID: r.UserID, Language: lang,
				Subject: m.Subject, Body: []byte(m.Body), HTML: m.HTML, Created: now})
		}
	}
	for _, w := range o.cfg.Webhooks {
		if !w.wants(n.Event) {
			continue
		}
		lang := w.Language
		if lang == "" {
			lang = o.cfg.Language
		}
		m, err := render(lang)
		if err != nil {
			return err
		}
		id := newID()
		body, err := json.Marshal(webhookBody{ID: id, Event: n.Event, Time: now, Language: lang, Subject: m.Subject, Text: m.Body, Link: link, Data: n.Data})
		if err != nil {
			return fmt.Errorf("notify: webhook body: %w", err)
		}
		rows = append(rows, store.Notification{ID: id, DedupeKey: dedupeKey(n, store.ChannelWebhook, w.Name),
			Event: string(n.Event), Channel: store.ChannelWebhook, Recipient: w.Name, Language: lang,
			Subject: m.Subject, Body: body, Created: now})
	}
	if len(rows) == 0 {
		return nil
	}
	_, err := tx.AddNotifications(ctx, rows)
	return err
}

// CheckConsoleURL checks the coordinator's address for links (notifications.console_url)
// and returns it without a trailing slash; "" stays "".
func CheckConsoleURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", fmt.Errorf("console URL %q: %w", s, err)
	case (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		return "", fmt.Errorf("console URL %q is not an absolute https (or http) URL, e.g. https://pki.example.org", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "", fmt.Errorf("console URL %q: give the address alone, with no user, query or fragment (e.g. https://pki.example.org)", s)
	}
	base := strings.TrimRight(u.String(), "/")
	if strings.HasSuffix(base, "/ui") {
		return "", fmt.Errorf("console URL %q: give the coordinator's address without /ui; the links add /ui/jobs/ID", s)
	}
	return base, nil
}

// consoleLink is the console page of what a notice is about: its job's, else its
// rollout's; "" when no console URL is configured or the notice is about neither.
func consoleLink(base string, d Data) string {
	switch {
	case base == "":
		return ""
	case d.Job != nil && d.Job.ID != "":
		return base + "/ui/jobs/" + url.PathEscape(d.Job.ID)
	case d.Rollout != nil && d.Rollout.ID != "":
		return base + "/ui/rollouts/" + url.PathEscape(d.Rollout.ID)
	}
	return ""
}

// dedupeKey names one notice to one recipient over one channel.
func dedupeKey(n Notice, channel, recipient string) string {
	return string(n.Event) + ":" + n.Key + ":" + channel + ":" + recipient
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns a random ID of 128 bits, as the store's.
func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return idEncoding.EncodeToString(b)
}
