package coordinator

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/notify"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// notifications are the outbox the service writes notices into and the sender that
// delivers them; nil when notifications are off.
type notifications struct {
	outbox *notify.Outbox
	sender *notify.Sender
}

// setupNotifications makes the outbox and the sender from the configuration, reading
// the SMTP password and the webhook secrets; nil, nil when notifications are off.
func (s *Server) setupNotifications() (*notifications, error) {
	if !s.cfg.notificationsEnabled() {
		s.log.Info().Msg("notifications off: neither notifications.smtp.host nor notifications.webhooks is set")
		return nil, nil
	}
	n := s.cfg.Notifications
	tm, err := notify.LoadTemplates()
	if err != nil {
		return nil, err
	}
	oc := notify.OutboxConfig{Email: n.SMTP.Host != "", Language: n.Language, ConsoleURL: n.ConsoleURL}
	targets := map[string]notify.WebhookTarget{}
	for i, w := range n.Webhooks {
		field := fmt.Sprintf("notifications.webhooks[%d]", i)
		events := make([]notify.Event, len(w.Events))
		for j, e := range w.Events {
			events[j] = notify.Event(e)
		}
		oc.Webhooks = append(oc.Webhooks, notify.Webhook{Name: w.Name, URL: w.URL, Events: events, Language: w.Language})
		secret, err := readSecretFile(w.SecretFile)
		if err != nil {
			return nil, s.cfg.fieldError(field+".secret_file", err.Error())
		}
		t := notify.WebhookTarget{URL: w.URL, Secret: []byte(secret)}
		if w.CAFile != "" {
			if t.RootCAs, err = readCAFile(w.CAFile); err != nil {
				return nil, s.cfg.fieldError(field+".ca_file", err.Error())
			}
		}
		targets[w.Name] = t
	}
	outbox, err := notify.NewOutbox(oc, tm, nil)
	if err != nil {
		return nil, err
	}
	var mailer notify.Mailer
	if n.SMTP.Host != "" {
		sc := notify.SMTPConfig{Host: n.SMTP.Host, Port: n.SMTP.port(), Security: n.SMTP.security(), Username: n.SMTP.Username,
			From: n.SMTP.From, Timeout: time.Duration(n.Timeout)}
		if n.SMTP.PasswordFile != "" {
			if sc.Password, err = readSecretFile(n.SMTP.PasswordFile); err != nil {
				return nil, s.cfg.fieldError("notifications.smtp.password_file", err.Error())
			}
		}
		if n.SMTP.CAFile != "" {
			if sc.RootCAs, err = readCAFile(n.SMTP.CAFile); err != nil {
				return nil, s.cfg.fieldError("notifications.smtp.ca_file", err.Error())
			}
		}
		if sc.LocalName, err = os.Hostname(); err != nil {
			sc.LocalName = ""
		}
		m, err := notify.NewSMTP(sc)
		if err != nil {
			return nil, s.cfg.fieldError("notifications.smtp", err.Error())
		}
		mailer = m
	}
	host, _ := os.Hostname()
	sender, err := notify.NewSender(notify.SenderOptions{Store: s.st, Templates: tm, Mailer: mailer, Webhooks: targets,
		Owner:       host + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		MaxAttempts: n.MaxAttempts, RetryInitial: time.Duration(n.RetryInitial), RetryMax: time.Duration(n.RetryMax),
		Interval: time.Duration(n.Interval), Timeout: time.Duration(n.Timeout),
		RateLimit: notify.RateLimit{Count: n.RateLimit.Count, Per: time.Duration(n.RateLimit.Per)},
		Logger:    s.base.With().Str("component", "notify").Logger()})
	if err != nil {
		return nil, err
	}
	outbox.OnWritten(sender.Wake)
	s.log.Info().Bool("email", mailer != nil).Int("webhooks", len(targets)).Str("language", n.Language).Str("console_url", n.ConsoleURL).Msg("notifications on")
	return &notifications{outbox: outbox, sender: sender}, nil
}

// notifier is what the service writes notices with: nil when notifications are off.
func (n *notifications) notifier() service.Notifier {
	if n == nil {
		return nil
	}
	return n.outbox
}

// runNotifications runs the sender and, every notifications.sweep_interval (and at once),
// the expiry warnings and the CRL check, until ctx is done.
func (s *Server) runNotifications(ctx context.Context) {
	if s.notify == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.notify.sender.Run(ctx)
	}()
	defer func() { <-done }()
	tick := time.NewTicker(time.Duration(s.cfg.Notifications.SweepInterval))
	defer tick.Stop()
	for {
		if n, err := s.svc.NotifyExpiringCertificates(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("expiry warnings incomplete")
		} else if n > 0 {
			s.log.Info().Int("certificates", n).Msg("expiry warnings written")
		}
		if err := s.checkCRL(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("checking the CRL")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// checkCRL tells the administrators when the built-in CA's CRL cannot be made, or its
// next update is within notifications.crl_margin: relying parties would then soon refuse
// every certificate it issued. Asking for the CRL makes a new one when the cached one is
// old, as a relying party's fetch does.
func (s *Server) checkCRL(ctx context.Context) error {
	if _, ok := s.caSwap.current().(ca.CRLSource); !ok {
		return nil
	}
	margin := time.Duration(s.cfg.Notifications.CRLMargin)
	d := notify.CRL{Margin: margin.String()}
	if certs := s.ca.CACertificates(); len(certs) > 0 {
		d.Issuer = certs[0].Subject.String()
	}
	now := time.Now().UTC()
	der, err := s.caSwap.CRL(ctx)
	if err != nil {
		d.Error = err.Error()
		return s.svc.NotifyCRL(ctx, d, "unavailable:"+now.Format(time.DateOnly))
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		d.Error = "the CA made an unreadable CRL: " + err.Error()
		return s.svc.NotifyCRL(ctx, d, "unreadable:"+now.Format(time.DateOnly))
	}
	if crl.NextUpdate.Sub(now) > margin {
		return nil
	}
	d.NextUpdate = crl.NextUpdate.UTC()
	s.log.Warn().Time("next_update", d.NextUpdate).Str("margin", d.Margin).Msg("the CRL is close to its next update")
	return s.svc.NotifyCRL(ctx, d, "next:"+d.NextUpdate.Format(time.RFC3339))
}
