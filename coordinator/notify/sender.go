package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Defaults of the sender.
const (
	DefaultMaxAttempts  = 10
	DefaultRetryInitial = 30 * time.Second
	DefaultRetryMax     = time.Hour
	DefaultInterval     = 5 * time.Second
	DefaultTimeout      = 30 * time.Second
	// claimBatch is how many due notifications one pass claims.
	claimBatch = 50
	// leaseSends is how many sends at the timeout a claim's lease covers. The sender
	// stops sending a batch when less than one timeout is left of it, so a row is never
	// sent under a lease that ran out; the rest are released at once.
	leaseSends = 5
)

// Mailer sends an e-mail.
type Mailer interface {
	Send(ctx context.Context, m Mail) error
}

// WebhookTarget is where a webhook's notices go and the secret they are signed with.
type WebhookTarget struct {
	URL    string
	Secret []byte
	// RootCAs verify an https receiver's certificate; nil for the system's.
	RootCAs *x509.CertPool
}

// RateLimit bounds how many messages one e-mail address gets per window: beyond it,
// notices are held and go out later as one digest, never dropped.
type RateLimit struct {
	Count int // 0: no limit
	Per   time.Duration
}

// SenderStore is what the sender needs of the store.
type SenderStore interface {
	InTx(ctx context.Context, fn func(tx store.Tx) error) error
	NotificationDeliveries(ctx context.Context, channel, recipient string, since time.Time) (int, time.Time, error)
}

// SenderOptions configure a Sender.
type SenderOptions struct {
	Store     SenderStore // required
	Templates *Templates  // required: digests are rendered when sent
	Mailer    Mailer      // nil: e-mails fail, naming the missing configuration
	Webhooks  map[string]WebhookTarget
	// Owner names this sender in the leases it takes (unique per process).
	Owner        string
	MaxAttempts  int           // 0: DefaultMaxAttempts
	RetryInitial time.Duration // 0: DefaultRetryInitial; doubled after each failure
	RetryMax     time.Duration // 0: DefaultRetryMax
	Interval     time.Duration // how often Run looks for due notices without being woken; 0: DefaultInterval
	Timeout      time.Duration // one send; 0: DefaultTimeout
	RateLimit    RateLimit
	Logger       zerolog.Logger
	Now          func() time.Time
	// Jitter returns a number in [0, 1); nil: math/rand/v2.
	Jitter func() float64
}

// Sender delivers the notifications outbox: it claims due rows under a lease, sends
// them, and marks them sent, or retried with exponential back-off and jitter, or failed
// after MaxAttempts. Run owns its goroutine; Wake makes it look at once.
type Sender struct {
	o    SenderOptions
	hc   map[string]*http.Client
	wake chan struct{}
}

// NewSender makes a sender.
func NewSender(o SenderOptions) (*Sender, error) {
	if o.Store == nil || o.Templates == nil {
		return nil, errors.New("notify: sender needs a store and templates")
	}
	if o.Owner == "" {
		o.Owner = "sender-" + newID()
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.RetryInitial <= 0 {
		o.RetryInitial = DefaultRetryInitial
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.RetryMax < o.RetryInitial {
		o.RetryMax = o.RetryInitial
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Jitter == nil {
		o.Jitter = rand.Float64
	}
	s := &Sender{o: o, hc: map[string]*http.Client{}, wake: make(chan struct{}, 1)}
	for name, w := range o.Webhooks {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: w.RootCAs, MinVersion: tls.VersionTLS12}
		s.hc[name] = &http.Client{Transport: tr, Timeout: o.Timeout,
			// A redirect is the receiver's mistake: following it would send the signed
			// notice somewhere nobody configured.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return s, nil
}

// Wake makes Run look for due notifications at once.
func (s *Sender) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run sends due notifications until ctx is done: at once, when woken, and every
// Interval.
func (s *Sender) Run(ctx context.Context) {
	tick := time.NewTicker(s.o.Interval)
	defer tick.Stop()
	for {
		for {
			n, err := s.SendDue(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				s.o.Logger.Warn().Err(err).Msg("sending notifications")
			}
			if err != nil || n < claimBatch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.wake:
		}
	}
}

func (s *Sender) now() time.Time { return s.o.Now().UTC().Truncate(time.Microsecond) }

// SendDue claims the notifications due now and sends them; it returns how many it
// claimed.
func (s *Sender) SendDue(ctx context.Context) (int, error) {
	now := s.now()
	lease := now.Add(leaseSends * s.o.Timeout)
	var claimed []store.Notification
	err := s.o.Store.InTx(ctx, func(tx store.Tx) error {
		var err error
		claimed, err = tx.ClaimNotifications(ctx, store.NotificationClaim{Now: now, LeaseUntil: lease, Owner: s.o.Owner, Limit: claimBatch})
		return err
	})
	if err != nil || len(claimed) == 0 {
		return 0, err
	}
	// Rows go out in the order claimed, e-mails gathered by address for the rate limit.
	var order []string
	groups := map[string][]store.Notification{}
	for _, n := range claimed {
		k := n.Channel + "\x00" + n.Recipient
		if n.Channel == store.ChannelWebhook {
			k += "\x00" + n.ID // webhooks: one by one
		}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], n)
	}
	var release []string
	giveBack := func(ns []store.Notification) {
		for _, n := range ns {
			release = append(release, n.ID)
		}
	}
	giveBackGroups := func(keys []string) {
		for _, k := range keys {
			giveBack(groups[k])
		}
	}
	// canSend: enough of the lease is left to send one more message.
	canSend := func() bool { return lease.Sub(s.o.Now()) >= s.o.Timeout && ctx.Err() == nil }
	for i, k := range order {
		g := groups[k]
		if !canSend() {
			// Not enough of the lease left to send safely: leave the rest to the next pass.
			giveBackGroups(order[i:])
			break
		}
		if g[0].Channel == store.ChannelWebhook {
			s.deliver(ctx, g, s.postWebhook(ctx, g[0]), g[0].ID)
			continue
		}
		var unsent []store.Notification
		if unsent, err = s.sendEmails(ctx, g, canSend); err != nil {
			// The store failed: give the rest back rather than leave it leased.
			unsent = g
		}
		if len(unsent) > 0 {
			// The store failed, or the lease ran short within this address's e-mails.
			giveBack(unsent)
			giveBackGroups(order[i+1:])
			break
		}
	}
	if len(release) > 0 {
		rctx := context.WithoutCancel(ctx)
		if rerr := s.o.Store.InTx(rctx, func(tx store.Tx) error {
			return tx.ReleaseNotifications(rctx, s.o.Owner, release)
		}); err == nil {
			err = rerr
		}
	}
	return len(claimed), err
}

// sendEmails sends one address's claimed e-mails under its rate limit: held ones (and any
// others due with them) as one digest when the window has room, the others one by one
// while it has room; what is left is held until the window frees. Before each message it
// asks canSend, and returns the rows it did not get to when the lease ran short.
func (s *Sender) sendEmails(ctx context.Context, g []store.Notification, canSend func() bool) ([]store.Notification, error) {
	if s.o.RateLimit.Count <= 0 {
		for i, n := range g {
			if i > 0 && !canSend() {
				return g[i:], nil
			}
			s.deliver(ctx, []store.Notification{n}, s.mail(ctx, n.Recipient, n.Language, s.page(n), n.ID, n.Event), n.ID)
		}
		return nil, nil
	}
	now := s.now()
	used, oldest, err := s.o.Store.NotificationDeliveries(ctx, store.ChannelEmail, g[0].Recipient, now.Add(-s.o.RateLimit.Per))
	if err != nil {
		return nil, err
	}
	room := s.o.RateLimit.Count - used
	anyHeld := false
	for _, n := range g {
		anyHeld = anyHeld || n.Held
	}
	var rest []store.Notification
	switch {
	case room <= 0:
		rest = g
	case anyHeld || (len(g) > room && room == 1):
		s.digest(ctx, g)
		return nil, nil
	default:
		for i, n := range g {
			if i >= room {
				rest = g[i:]
				break
			}
			if i > 0 && !canSend() {
				return g[i:], nil
			}
			s.deliver(ctx, []store.Notification{n}, s.mail(ctx, n.Recipient, n.Language, s.page(n), n.ID, n.Event), n.ID)
			if oldest.IsZero() {
				oldest = now
			}
		}
	}
	if len(rest) == 0 {
		return nil, nil
	}
	if oldest.IsZero() {
		oldest = now
	}
	until := oldest.Add(s.o.RateLimit.Per)
	ids := make([]string, len(rest))
	for i, n := range rest {
		ids[i] = n.ID
	}
	s.o.Logger.Info().Str("recipient", g[0].Recipient).Int("held", len(ids)).Time("until", until).
		Msg("rate limit reached: notifications held, to go out as one digest")
	return nil, s.o.Store.InTx(context.WithoutCancel(ctx), func(tx store.Tx) error { return tx.HoldNotifications(ctx, ids, until) })
}

// digest sends g as one e-mail.
func (s *Sender) digest(ctx context.Context, g []store.Notification) {
	items := make([]Message, len(g))
	for i, n := range g {
		items[i] = Message{Subject: n.Subject, Body: string(n.Body), HTML: n.HTML}
	}
	lang := g[0].Language
	id := "digest-" + newID()
	m, err := s.o.Templates.RenderDigest(lang, items)
	if err == nil {
		err = s.mail(ctx, g[0].Recipient, lang, m, id, "digest")
	}
	s.deliver(ctx, g, err, id)
}

// page is the message of one notification, its HTML content in its page: text alone for
// a row kept without HTML, or when the page cannot be made (a template's bug, logged:
// the text still tells the person).
func (s *Sender) page(n store.Notification) Message {
	m := Message{Subject: n.Subject, Body: string(n.Body)}
	if n.HTML == "" {
		return m
	}
	page, err := s.o.Templates.Page(n.Language, Message{Subject: n.Subject, Body: string(n.Body), HTML: n.HTML})
	if err != nil {
		s.o.Logger.Error().Err(err).Str("notification", n.ID).Msg("HTML part left out")
		return m
	}
	m.HTML = page
	return m
}

// mail sends m, whose HTML (if any) is a whole page.
func (s *Sender) mail(ctx context.Context, to, lang string, m Message, id, event string) error {
	if s.o.Mailer == nil {
		return &PermanentError{Err: errors.New("no SMTP server is configured (notifications.smtp.host)")}
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	return s.o.Mailer.Send(ctx, Mail{To: to, Subject: m.Subject, Body: m.Body, HTML: m.HTML, Language: lang, MessageID: id, Event: event, Date: s.o.Now()})
}

// postWebhook posts a webhook notification, signed.
func (s *Sender) postWebhook(ctx context.Context, n store.Notification) error {
	w, ok := s.o.Webhooks[n.Recipient]
	if !ok {
		return &PermanentError{Err: fmt.Errorf("webhook %q is no longer configured (notifications.webhooks)", n.Recipient)}
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(n.Body))
	if err != nil {
		return &PermanentError{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tokenfleet-coordinator")
	req.Header.Set(HeaderSignature, Sign(w.Secret, s.o.Now(), n.Body))
	req.Header.Set(HeaderEvent, n.Event)
	req.Header.Set(HeaderDelivery, n.ID)
	resp, err := s.hc[n.Recipient].Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", n.Recipient, err)
	}
	defer func() { _ = resp.Body.Close() }()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16)) // so that the connection is reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook %s: HTTP %d: %s", n.Recipient, resp.StatusCode, strings.TrimSpace(string(snippet)))
	}
	return nil
}

// deliver records the outcome of sending g as the message deliveryID: sent, or each row
// retried after its back-off, or failed once out of attempts (at once for a permanent
// refusal).
func (s *Sender) deliver(ctx context.Context, g []store.Notification, sendErr error, deliveryID string) {
	ctx = context.WithoutCancel(ctx) // what was sent must be recorded even at shutdown
	now := s.now()
	ids := make([]string, len(g))
	for i, n := range g {
		ids[i] = n.ID
	}
	err := s.o.Store.InTx(ctx, func(tx store.Tx) error {
		if sendErr == nil {
			return tx.MarkNotificationsSent(ctx, ids, deliveryID, now)
		}
		var pe *PermanentError
		permanent := errors.As(sendErr, &pe)
		msg := sendErr.Error()
		for _, n := range g {
			if permanent || n.Attempts+1 >= s.o.MaxAttempts {
				if err := tx.FailNotification(ctx, n.ID, msg); err != nil {
					return err
				}
				continue
			}
			if err := tx.RetryNotification(ctx, n.ID, now.Add(s.backoff(n.Attempts+1)), msg); err != nil {
				return err
			}
		}
		return nil
	})
	lvl := zerolog.InfoLevel
	if sendErr != nil {
		lvl = zerolog.WarnLevel
	}
	s.o.Logger.WithLevel(lvl).Err(sendErr).Str("channel", g[0].Channel).Str("recipient", g[0].Recipient).Str("event", g[0].Event).Str("delivery", deliveryID).
		Int("notifications", len(g)).Int("attempt", g[0].Attempts+1).Bool("sent", sendErr == nil).Msg("notification delivery")
	if err != nil {
		s.o.Logger.Error().Err(err).Str("delivery", deliveryID).Msg("recording a notification delivery")
	}
}

// backoff is the wait after the n-th failed attempt: RetryInitial doubled each time up to
// RetryMax, of which a random half is taken off (so that many notices failing together do
// not come back together).
func (s *Sender) backoff(n int) time.Duration {
	d := s.o.RetryInitial
	for i := 1; i < n && d < s.o.RetryMax; i++ {
		d *= 2
	}
	d = min(d, s.o.RetryMax)
	return d/2 + time.Duration(s.o.Jitter()*float64(d/2))
}
