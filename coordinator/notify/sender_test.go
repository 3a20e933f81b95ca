package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/notify"
	"github.com/tokenfleet/tokenfleet/coordinator/notify/notifytest"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(t.TempDir(), "n.db")}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func templates(t *testing.T) *notify.Templates {
	t.Helper()
	tm, err := notify.LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func write(t *testing.T, st store.Store, o *notify.Outbox, ns ...notify.Notice) {
	t.Helper()
	if err := st.InTx(t.Context(), func(tx store.Tx) error {
		for _, n := range ns {
			if err := o.Write(t.Context(), tx, n); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func list(t *testing.T, st store.Store, state string) []store.Notification {
	t.Helper()
	ns, _, err := st.ListNotifications(t.Context(), store.NotificationFilter{State: state}, store.Page{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

var (
	alice  = notify.Recipient{UserID: "u1", Username: "alice", Name: "Alice Martin", Email: "alice@acme.test", Language: "fr"}
	bob    = notify.Recipient{UserID: "u2", Username: "bob", Email: "bob@acme.test", Language: "en"}
	carl   = notify.Recipient{UserID: "u3", Username: "carl", Email: "carl@acme.test"} // the default language
	nomail = notify.Recipient{UserID: "u4", Username: "dan"}                           // no address: no e-mail
)

func decided(key string, to ...notify.Recipient) notify.Notice {
	d := sample()
	d.Decision.Verdict = "approve"
	return notify.Notice{Event: notify.EventJobDecided, Key: key, Data: notify.Data{Job: d.Job, Decision: d.Decision}, To: to}
}

// TestEmailsOverSMTP sends through a real SMTP server with each kind of security, and
// reads back what it accepted: recipients, language, subject, body, headers.
func TestEmailsOverSMTP(t *testing.T) {
	for _, tc := range []struct {
		name     string
		security string
		server   notifytest.SMTPOptions
		user     string
	}{
		{"starttls and auth", notify.SecurityStartTLS, notifytest.SMTPOptions{User: "tokenfleet", Password: "pa55"}, "tokenfleet"},
		{"implicit tls and auth", notify.SecurityTLS, notifytest.SMTPOptions{ImplicitTLS: true, User: "tokenfleet", Password: "pa55"}, "tokenfleet"},
		{"none on loopback", notify.SecurityNone, notifytest.SMTPOptions{NoTLS: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := notifytest.StartSMTP(t, tc.server)
			st := openStore(t)
			tm := templates(t)
			o, err := notify.NewOutbox(notify.OutboxConfig{Email: true, ConsoleURL: "https://pki.acme.test/"}, tm, nil)
			if err != nil {
				t.Fatal(err)
			}
			mailer, err := notify.NewSMTP(notify.SMTPConfig{Host: srv.Host, Port: srv.Port, Security: tc.security, Username: tc.user,
				Password: "pa55", From: "tokenfleet PKI <pki@acme.test>", RootCAs: srv.CAs, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			s, err := notify.NewSender(notify.SenderOptions{Store: st, Templates: tm, Mailer: mailer})
			if err != nil {
				t.Fatal(err)
			}
			write(t, st, o, decided("job123", alice, bob, carl, nomail, alice))
			if n, err := s.SendDue(t.Context()); err != nil || n != 3 {
				t.Fatalf("sent %d, %v; want 3 (alice once, bob, carl; dan has no address)", n, err)
			}
			msgs := srv.Messages()
			if len(msgs) != 3 {
				t.Fatalf("server has %d messages", len(msgs))
			}
			byTo := map[string]notifytest.Message{}
			for _, m := range msgs {
				if len(m.To) != 1 || m.From != "pki@acme.test" || m.AuthUser != tc.user || m.TLS != (tc.security != notify.SecurityNone) {
					t.Errorf("envelope %v from %s, auth %q, TLS %v", m.To, m.From, m.AuthUser, m.TLS)
				}
				byTo[m.To[0]] = m
			}
			fr, en, def := byTo["alice@acme.test"], byTo["bob@acme.test"], byTo["carl@acme.test"]
			if fr.Subject != "[tokenfleet] Demande approuvée : issue pour Alice Martin" || !strings.Contains(fr.Body, "a été approuvée par arne") ||
				fr.Header.Get("Content-Language") != "fr" {
				t.Errorf("French mail: %q\n%s", fr.Subject, fr.Body)
			}
			if en.Subject != "[tokenfleet] Request approved: issue for Alice Martin" || !strings.Contains(en.Body, "was approved by arne") {
				t.Errorf("English mail: %q\n%s", en.Subject, en.Body)
			}
			if def.Subject != fr.Subject {
				t.Errorf("a person without a language gets the default (French): %q", def.Subject)
			}
			if fr.Header.Get("Auto-Submitted") != "auto-generated" || !strings.HasSuffix(fr.Header.Get("Message-ID"), "@acme.test>") ||
				fr.Header.Get("From") != `"tokenfleet PKI" <pki@acme.test>` {
				t.Errorf("headers: %v", fr.Header)
			}
			// Each is text and HTML, both carrying the French (or English) words and the link.
			link := "https://pki.acme.test/ui/jobs/job123"
			for lang, m := range map[string]notifytest.Message{"fr": fr, "en": en} {
				if err := notifytest.CheckMail(m, lang, link); err != nil {
					t.Errorf("%s e-mail: %v", lang, err)
				}
				if !strings.HasSuffix(m.Header.Get("Message-ID"), "@acme.test>") {
					t.Errorf("Message-ID %q", m.Header.Get("Message-ID"))
				}
			}
			if !strings.Contains(fr.HTML, "approuvée</strong> par arne") || !strings.Contains(fr.HTML, "Motif : mauvais poste") ||
				!strings.Contains(en.HTML, "approved</strong> by arne") {
				t.Errorf("HTML parts:\n%s\n%s", fr.HTML, en.HTML)
			}
			if sent := list(t, st, store.NotificationSent); len(sent) != 3 {
				t.Fatalf("%d rows sent", len(sent))
			}
			// Written again (a transaction run again, another coordinator): nothing new.
			write(t, st, o, decided("job123", alice, bob, carl))
			if n, _ := s.SendDue(t.Context()); n != 0 || len(srv.Messages()) != 3 {
				t.Fatalf("a repeated notice was sent again")
			}
		})
	}
}

// TestTextAloneWithoutHTML: an e-mail with no HTML (a row kept before there was any) goes
// as a single text part.
func TestTextAloneWithoutHTML(t *testing.T) {
	t.Parallel()
	srv := notifytest.StartSMTP(t, notifytest.SMTPOptions{NoTLS: true})
	mailer, err := notify.NewSMTP(notify.SMTPConfig{Host: srv.Host, Port: srv.Port, Security: notify.SecurityNone, From: "pki@acme.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := mailer.Send(t.Context(), notify.Mail{To: "x@acme.test", Subject: "Échéance", Body: "Votre demande a été approuvée.\n",
		MessageID: "id1", Date: time.Now()}); err != nil {
		t.Fatal(err)
	}
	m := srv.Messages()[0]
	if m.ParseError != nil || m.Parts != nil || m.Header.Get("Content-Type") != "text/plain; charset=utf-8" ||
		m.Header.Get("Content-Transfer-Encoding") != "quoted-printable" || m.Body != "Votre demande a été approuvée.\n" ||
		m.Subject != "Échéance" || m.HTML != "" {
		t.Fatalf("text alone: %v %+v %q %q", m.ParseError, m.Header, m.Subject, m.Body)
	}
}

func TestSMTPRefusals(t *testing.T) {
	for name, cfg := range map[string]notify.SMTPConfig{
		"none off loopback": {Host: "mail.example.org", Port: 25, Security: notify.SecurityNone, From: "a@b.c"},
		"auth without tls":  {Host: "127.0.0.1", Port: 25, Security: notify.SecurityNone, Username: "u", From: "a@b.c"},
		"unknown security":  {Host: "127.0.0.1", Port: 25, Security: "ssl", From: "a@b.c"},
		"bad from":          {Host: "127.0.0.1", Port: 25, Security: notify.SecurityTLS, From: "not an address"},
		"no port":           {Host: "127.0.0.1", Security: notify.SecurityTLS, From: "a@b.c"},
	} {
		if _, err := notify.NewSMTP(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ctx := t.Context()
	m := notify.Mail{To: "x@acme.test", Subject: "s", Body: "b", MessageID: "id1", Date: time.Now()}
	// STARTTLS required but not offered: nothing is sent in clear.
	plain := notifytest.StartSMTP(t, notifytest.SMTPOptions{NoTLS: true})
	mailer, err := notify.NewSMTP(notify.SMTPConfig{Host: plain.Host, Port: plain.Port, Security: notify.SecurityStartTLS, From: "a@acme.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := mailer.Send(ctx, m); err == nil || !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Fatalf("no STARTTLS: %v", err)
	}
	// A certificate nobody vouches for is refused.
	tlsSrv := notifytest.StartSMTP(t, notifytest.SMTPOptions{})
	mailer, _ = notify.NewSMTP(notify.SMTPConfig{Host: tlsSrv.Host, Port: tlsSrv.Port, Security: notify.SecurityStartTLS, From: "a@acme.test"})
	if err := mailer.Send(ctx, m); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate: %v", err)
	}
	// Wrong password, and a 5xx refusal: permanent.
	refusing := notifytest.StartSMTP(t, notifytest.SMTPOptions{User: "u", Password: "right", Accept: func(notifytest.Message) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}})
	mailer, _ = notify.NewSMTP(notify.SMTPConfig{Host: refusing.Host, Port: refusing.Port, Security: notify.SecurityStartTLS,
		Username: "u", Password: "wrong", From: "a@acme.test", RootCAs: refusing.CAs})
	if err := mailer.Send(ctx, m); err == nil || !strings.Contains(err.Error(), "AUTH") {
		t.Fatalf("wrong password: %v", err)
	}
	mailer, _ = notify.NewSMTP(notify.SMTPConfig{Host: refusing.Host, Port: refusing.Port, Security: notify.SecurityStartTLS,
		Username: "u", Password: "right", From: "a@acme.test", RootCAs: refusing.CAs})
	var pe *notify.PermanentError
	if err := mailer.Send(ctx, m); !errors.As(err, &pe) || !strings.Contains(err.Error(), "no such user") {
		t.Fatalf("550: %v", err)
	}
}

// TestWebhooksSignedRetriedAndGivenUp posts to receivers that check signatures: one that
// answers, one that keeps failing until the sender gives up, with growing waits between
// attempts.
func TestWebhooksSignedRetriedAndGivenUp(t *testing.T) {
	st := openStore(t)
	tm := templates(t)
	secret, otherSecret := []byte("hook-secret"), []byte("chat-secret")
	good := notifytest.StartWebhook(t, secret, notifytest.WebhookOptions{})
	failing := notifytest.StartWebhook(t, otherSecret, notifytest.WebhookOptions{Respond: func(notifytest.Delivery) int { return http.StatusServiceUnavailable }})
	o, err := notify.NewOutbox(notify.OutboxConfig{Webhooks: []notify.Webhook{
		{Name: "siem", URL: good.URL},
		{Name: "chat", URL: failing.URL, Events: []notify.Event{notify.EventJobFailed, notify.EventJobDecided}, Language: notify.English},
	}}, tm, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2027, 1, 15, 9, 0, 0, 0, time.UTC)}
	s, err := notify.NewSender(notify.SenderOptions{Store: st, Templates: tm, Webhooks: map[string]notify.WebhookTarget{
		"siem": {URL: good.URL, Secret: secret}, "chat": {URL: failing.URL, Secret: otherSecret}},
		MaxAttempts: 4, RetryInitial: 10 * time.Second, RetryMax: 30 * time.Second, Now: clk.now, Jitter: func() float64 { return 1 }})
	if err != nil {
		t.Fatal(err)
	}
	d := sample()
	write(t, st, o, decided("job123", alice),
		notify.Notice{Event: notify.EventRolloutCompleted, Key: "ro1", Data: notify.Data{Rollout: d.Rollout}, To: []notify.Recipient{alice}})
	// The signature's time is the sender's clock: the receivers check it against theirs.
	clk.set(time.Now().UTC().Truncate(time.Microsecond))
	start := clk.now()
	if n, err := s.SendDue(t.Context()); err != nil || n != 3 {
		t.Fatalf("first pass: %d, %v; want 3 (siem both, chat the decision only)", n, err)
	}
	got := good.Deliveries()
	if len(got) != 2 {
		t.Fatalf("siem got %d", len(got))
	}
	for _, dl := range got {
		if dl.Verified != nil {
			t.Fatalf("signature: %v", dl.Verified)
		}
		var body struct {
			ID, Event, Language, Subject, Text string
			Time                               time.Time
			Data                               notify.Data
		}
		if err := json.Unmarshal(dl.Body, &body); err != nil {
			t.Fatal(err)
		}
		if body.ID != dl.ID || body.Event != dl.Event || body.Language != "fr" || body.Time.IsZero() || body.Subject == "" {
			t.Errorf("body %+v, headers %s %s", body, dl.ID, dl.Event)
		}
		if dl.Event == string(notify.EventJobDecided) && (body.Data.Job == nil || body.Data.Job.ID != "job123" || body.Data.Decision.Verdict != "approve") {
			t.Errorf("decision data %+v", body.Data)
		}
	}
	// chat fails: retried after 10, 20, 30 (capped) seconds, then given up after 4 attempts
	// (the fake clock stays within the receiver's signature tolerance of the real one).
	var chat store.Notification
	for _, n := range list(t, st, store.NotificationPending) {
		if n.Recipient == "chat" {
			chat = n
		}
	}
	wantWaits := []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second}
	for i, wait := range wantWaits {
		n, err := st.GetNotification(t.Context(), chat.ID)
		if err != nil {
			t.Fatal(err)
		}
		if n.State != store.NotificationPending || n.Attempts != i+1 || !strings.Contains(n.LastError, "HTTP 503") {
			t.Fatalf("after attempt %d: %+v", i+1, n)
		}
		if got := n.NextAttempt.Sub(clk.now()); got != wait {
			t.Fatalf("wait after attempt %d: %v, want %v", i+1, got, wait)
		}
		// Not due a moment before; due at its time.
		clk.set(n.NextAttempt.Add(-time.Second))
		if k, _ := s.SendDue(t.Context()); k != 0 {
			t.Fatalf("sent before its time")
		}
		clk.set(n.NextAttempt)
		if k, err := s.SendDue(t.Context()); k != 1 || err != nil {
			t.Fatalf("retry %d: %d, %v", i+1, k, err)
		}
	}
	failed := list(t, st, store.NotificationFailed)
	if len(failed) != 1 || failed[0].ID != chat.ID || failed[0].Attempts != 4 || !strings.Contains(failed[0].LastError, "HTTP 503") {
		t.Fatalf("given up: %+v", failed)
	}
	deliveries := failing.Deliveries()
	if len(deliveries) != 4 {
		t.Fatalf("chat was tried %d times, want 4", len(deliveries))
	}
	for _, dl := range deliveries {
		if dl.ID != chat.ID || dl.Verified != nil {
			t.Fatalf("every retry carries the same delivery ID and a good signature: %s %v", dl.ID, dl.Verified)
		}
	}
	if clk.now().Sub(start) != time.Minute {
		t.Fatalf("retries spread over %v", clk.now().Sub(start))
	}
	// A receiver with the wrong secret refuses the request.
	wrong := notifytest.StartWebhook(t, []byte("not the secret"), notifytest.WebhookOptions{})
	s2, _ := notify.NewSender(notify.SenderOptions{Store: st, Templates: tm, Webhooks: map[string]notify.WebhookTarget{
		"siem": {URL: wrong.URL, Secret: secret}}, Now: clk.now})
	write(t, st, o, decided("job456"))
	clk.set(time.Now().UTC().Truncate(time.Microsecond))
	if _, err := s2.SendDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ds := wrong.Deliveries(); len(ds) != 1 || !errors.Is(ds[0].Verified, notify.ErrBadSignature) {
		t.Fatalf("wrong secret: %+v", ds)
	}
}

// TestRateLimitDigest sends more than the limit to one address: the excess is held, not
// dropped, and goes out as one digest once the window has room; another address is not
// held back.
func TestRateLimitDigest(t *testing.T) {
	srv := notifytest.StartSMTP(t, notifytest.SMTPOptions{NoTLS: true})
	st := openStore(t)
	tm := templates(t)
	o, _ := notify.NewOutbox(notify.OutboxConfig{Email: true}, tm, nil)
	mailer, err := notify.NewSMTP(notify.SMTPConfig{Host: srv.Host, Port: srv.Port, Security: notify.SecurityNone, From: "pki@acme.test"})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2027, 1, 15, 9, 0, 0, 0, time.UTC)}
	s, _ := notify.NewSender(notify.SenderOptions{Store: st, Templates: tm, Mailer: mailer, Now: clk.now,
		RateLimit: notify.RateLimit{Count: 3, Per: time.Hour}})
	for i := range 5 {
		write(t, st, o, decided("job"+string(rune('a'+i)), alice))
	}
	write(t, st, o, decided("jobz", bob))
	if _, err := s.SendDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	count := func(to string) int {
		n := 0
		for _, m := range srv.Messages() {
			if m.To[0] == to {
				n++
			}
		}
		return n
	}
	if count("alice@acme.test") != 3 || count("bob@acme.test") != 1 {
		t.Fatalf("first window: alice %d, bob %d", count("alice@acme.test"), count("bob@acme.test"))
	}
	held := list(t, st, store.NotificationPending)
	if len(held) != 2 || !held[0].Held || !held[0].NextAttempt.Equal(clk.now().Add(time.Hour)) || held[0].Attempts != 0 {
		t.Fatalf("held: %+v", held)
	}
	// Within the window nothing more goes; a new notice waits with the held ones.
	clk.set(clk.now().Add(30 * time.Minute))
	write(t, st, o, decided("jobf", alice))
	if _, err := s.SendDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	if count("alice@acme.test") != 3 {
		t.Fatalf("sent within the full window")
	}
	clk.set(clk.now().Add(30 * time.Minute))
	if _, err := s.SendDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	if count("alice@acme.test") != 4 {
		t.Fatalf("after the window: %d messages to alice, want 4 (3 and one digest)", count("alice@acme.test"))
	}
	digest := srv.Messages()[len(srv.Messages())-1]
	if digest.Subject != "[tokenfleet] 3 notifications" || strings.Count(digest.Body, "Demande approuvée") != 3 {
		t.Fatalf("digest: %q\n%s", digest.Subject, digest.Body)
	}
	// Its HTML gathers the three notices' own, each under its subject, in one page.
	if digest.ParseError != nil || strings.Count(digest.HTML, "<h2") != 3 || strings.Count(digest.HTML, "approuvée</strong> par arne") != 3 ||
		strings.Count(digest.HTML, "<html") != 1 || !strings.Contains(digest.HTML, "les 3 suivantes sont regroupées") {
		t.Fatalf("digest HTML (%v):\n%s", digest.ParseError, digest.HTML)
	}
	sent := list(t, st, store.NotificationSent)
	if len(sent) != 7 || len(list(t, st, store.NotificationPending)) != 0 {
		t.Fatalf("%d sent", len(sent))
	}
	n, _, err := st.NotificationDeliveries(t.Context(), store.ChannelEmail, "alice@acme.test", clk.now().Add(-2*time.Hour))
	if err != nil || n != 4 {
		t.Fatalf("deliveries counted %d, %v; want 4", n, err)
	}
}

// TestRunSendsWhenWoken runs the sender's loop: a notice committed and woken for goes out
// without waiting for the interval; Run stops with its context.
func TestRunSendsWhenWoken(t *testing.T) {
	srv := notifytest.StartSMTP(t, notifytest.SMTPOptions{NoTLS: true})
	st := openStore(t)
	tm := templates(t)
	o, _ := notify.NewOutbox(notify.OutboxConfig{Email: true}, tm, nil)
	mailer, _ := notify.NewSMTP(notify.SMTPConfig{Host: srv.Host, Port: srv.Port, Security: notify.SecurityNone, From: "pki@acme.test"})
	s, _ := notify.NewSender(notify.SenderOptions{Store: st, Templates: tm, Mailer: mailer, Interval: time.Hour})
	o.OnWritten(s.Wake)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	write(t, st, o, decided("job1", alice))
	o.Wake()
	notifytest.Eventually(t, 10*time.Second, "the woken sender sends", func() bool { return len(srv.Messages()) == 1 })
	cancel()
	<-done
}

// slowMailer takes two seconds of the test clock per e-mail.
type slowMailer struct {
	clk  *clock
	mu   sync.Mutex // guards sent
	sent []string
}

func (m *slowMailer) Send(_ context.Context, mail notify.Mail) error {
	m.clk.set(m.clk.now().Add(2 * time.Second))
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent = append(m.sent, mail.To)
	return nil
}

// TestLeaseNeverOutlived: a sender stops sending a claim once less than one timeout is
// left of its lease, and gives the rest back at once, unsent and with no attempt counted.
func TestLeaseNeverOutlived(t *testing.T) {
	st := openStore(t)
	tm := templates(t)
	clk := &clock{t: time.Now().UTC().Truncate(time.Microsecond).Add(time.Minute)}
	o, _ := notify.NewOutbox(notify.OutboxConfig{Email: true}, tm, nil)
	mailer := &slowMailer{clk: clk}
	s, _ := notify.NewSender(notify.SenderOptions{Store: st, Templates: tm, Mailer: mailer, Now: clk.now, Timeout: time.Second})
	var to []notify.Recipient
	for i := range 8 {
		r := alice
		r.UserID, r.Email = "u"+string(rune('a'+i)), string(rune('a'+i))+"@acme.test"
		to = append(to, r)
	}
	write(t, st, o, decided("job1", to...))
	// The lease is 5 timeouts (5 s) and each e-mail takes 2 s: the third starts with one
	// timeout left, the fourth would start after the lease ended.
	if n, err := s.SendDue(t.Context()); err != nil || n != 8 {
		t.Fatalf("claimed %d, %v", n, err)
	}
	if len(mailer.sent) != 3 {
		t.Fatalf("sent %d under one lease, want 3", len(mailer.sent))
	}
	pending := list(t, st, store.NotificationPending)
	if len(pending) != 5 {
		t.Fatalf("%d left pending", len(pending))
	}
	for _, n := range pending {
		if n.LeaseOwner != "" || n.Attempts != 0 {
			t.Fatalf("given back %+v", n)
		}
	}
	for range 3 {
		if _, err := s.SendDue(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if len(mailer.sent) != 8 || len(list(t, st, store.NotificationSent)) != 8 {
		t.Fatalf("sent %d in all", len(mailer.sent))
	}
}

// TestLeaseNeverOutlivedByOneAddress: many notices to one address are sent one by one
// under the same lease check as notices to many addresses, with or without a rate limit:
// a lease never runs out while its rows are being sent (another coordinator could claim
// and send them again).
func TestLeaseNeverOutlivedByOneAddress(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit notify.RateLimit
	}{
		{"no rate limit", notify.RateLimit{}},
		{"rate limit with room", notify.RateLimit{Count: 100, Per: time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := openStore(t)
			tm := templates(t)
			clk := &clock{t: time.Now().UTC().Truncate(time.Microsecond).Add(time.Minute)}
			o, _ := notify.NewOutbox(notify.OutboxConfig{Email: true}, tm, nil)
			mailer := &slowMailer{clk: clk}
			s, _ := notify.NewSender(notify.SenderOptions{Store: st, Templates: tm, Mailer: mailer, Now: clk.now,
				Timeout: time.Second, RateLimit: tc.limit})
			for i := range 8 {
				write(t, st, o, decided("job"+string(rune('a'+i)), alice))
			}
			if n, err := s.SendDue(t.Context()); err != nil || n != 8 {
				t.Fatalf("claimed %d, %v", n, err)
			}
			if len(mailer.sent) != 3 {
				t.Fatalf("sent %d under one lease, want 3", len(mailer.sent))
			}
			pending := list(t, st, store.NotificationPending)
			if len(pending) != 5 {
				t.Fatalf("%d left pending", len(pending))
			}
			for _, n := range pending {
				if n.LeaseOwner != "" || n.Attempts != 0 || n.Held {
					t.Fatalf("given back %+v", n)
				}
			}
			for range 3 {
				if _, err := s.SendDue(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			if len(mailer.sent) != 8 || len(list(t, st, store.NotificationSent)) != 8 {
				t.Fatalf("sent %d in all", len(mailer.sent))
			}
		})
	}
}
