package coordinator

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"regexp"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/notify"
)

// NotificationsConfig configures e-mail and webhook notifications. They are on when
// smtp.host is set or a webhook is configured.
type NotificationsConfig struct {
	// Language is the language of people who chose none: fr (default) or en.
	Language string `yaml:"language"`
	// ConsoleURL is the coordinator's address as people's browsers reach it
	// (https://pki.example.org): e-mails and webhook calls link to the console page of
	// their job (/ui/jobs/ID) or rollout (/ui/rollouts/ID). Empty: no link.
	ConsoleURL string          `yaml:"console_url"`
	SMTP       SMTPConfig      `yaml:"smtp"`
	Webhooks   []WebhookConfig `yaml:"webhooks"`
	// MaxAttempts: a notification that failed this many times is given up (failed).
	MaxAttempts int `yaml:"max_attempts"`
	// RetryInitial is the wait after the first failure, doubled after each one up to
	// RetryMax (a random part of up to half is taken off each wait).
	RetryInitial Duration `yaml:"retry_initial"`
	RetryMax     Duration `yaml:"retry_max"`
	// RateLimit bounds the e-mails one address gets; beyond it notices are held and sent
	// later as one digest.
	RateLimit RateLimitConfig `yaml:"rate_limit"`
	// Interval is how often the sender looks for due notifications without being told.
	Interval Duration `yaml:"interval"`
	// Timeout bounds one delivery (an SMTP exchange, a webhook request).
	Timeout Duration `yaml:"timeout"`
	// SweepInterval is how often certificates are checked against their profile's
	// expiry_warning and the CRL against crl_margin (and once at start).
	SweepInterval Duration `yaml:"sweep_interval"`
	// CRLMargin: the administrators are told when the built-in CA's CRL is this close to
	// its next update (it is normally made again long before) or cannot be made.
	CRLMargin Duration `yaml:"crl_margin"`
}

// SMTPConfig is the mail server notifications go through.
type SMTPConfig struct {
	Host string `yaml:"host"`
	// Port defaults to 587 with starttls, 465 with tls, 25 with none.
	Port int `yaml:"port"`
	// Security is starttls (default), tls (implicit, port 465) or none (loopback only).
	Security string `yaml:"security"`
	// Username and PasswordFile authenticate (AUTH PLAIN, over TLS only).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// From is the sender address, "tokenfleet <pki@example.org>" or a bare address.
	From string `yaml:"from"`
	// CAFile verifies the server's certificate; empty: the system roots.
	CAFile string `yaml:"ca_file"`
}

// WebhookConfig is one webhook receiver.
type WebhookConfig struct {
	Name string `yaml:"name"`
	// URL must be https, except to a loopback address.
	URL string `yaml:"url"`
	// SecretFile holds the HMAC secret (first line, at least 16 characters).
	SecretFile string `yaml:"secret_file"`
	// Events it receives; empty: all.
	Events []string `yaml:"events"`
	// Language of the subject and text in its JSON; empty: notifications.language.
	Language string `yaml:"language"`
	// CAFile verifies an https receiver's certificate; empty: the system roots.
	CAFile string `yaml:"ca_file"`
}

// RateLimitConfig is at most Count e-mails per address in any window of Per; Count 0
// turns the limit off.
type RateLimitConfig struct {
	Count int      `yaml:"count"`
	Per   Duration `yaml:"per"`
}

// Notification defaults.
const (
	DefaultNotifySweepInterval = 24 * time.Hour
	DefaultCRLMargin           = 72 * time.Hour
	DefaultRateLimitCount      = 30
	DefaultRateLimitPer        = time.Hour
	minWebhookSecret           = 16
)

func defaultNotifications() NotificationsConfig {
	return NotificationsConfig{Language: notify.DefaultLanguage, MaxAttempts: notify.DefaultMaxAttempts,
		RetryInitial: Duration(notify.DefaultRetryInitial), RetryMax: Duration(notify.DefaultRetryMax),
		RateLimit: RateLimitConfig{Count: DefaultRateLimitCount, Per: Duration(DefaultRateLimitPer)},
		Interval:  Duration(notify.DefaultInterval), Timeout: Duration(notify.DefaultTimeout),
		SweepInterval: Duration(DefaultNotifySweepInterval), CRLMargin: Duration(DefaultCRLMargin)}
}

// notificationsEnabled says whether anything is to be notified.
func (c Config) notificationsEnabled() bool {
	return c.Notifications.SMTP.Host != "" || len(c.Notifications.Webhooks) > 0
}

var webhookNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// smtpPort is notifications.smtp.port, or the security's usual port.
func (s SMTPConfig) port() int {
	switch {
	case s.Port != 0:
		return s.Port
	case s.security() == notify.SecurityTLS:
		return 465
	case s.security() == notify.SecurityNone:
		return 25
	}
	return 587
}

func (s SMTPConfig) security() string {
	if s.Security == "" {
		return notify.SecurityStartTLS
	}
	return s.Security
}

// validateNotifications checks the notifications section.
func (c Config) validateNotifications(bad func(field, format string, args ...any)) {
	n := c.Notifications
	if !notify.KnownLanguage(n.Language) {
		bad("notifications.language", "%q: notifications are written in %v", n.Language, notify.Languages())
	}
	if _, err := notify.CheckConsoleURL(n.ConsoleURL); err != nil {
		bad("notifications.console_url", "%v", err)
	}
	c.validateSMTP(bad)
	names := map[string]bool{}
	for i, w := range n.Webhooks {
		field := fmt.Sprintf("notifications.webhooks[%d]", i)
		switch {
		case !webhookNameRE.MatchString(w.Name):
			bad(field+".name", "%q: give a name of lower-case letters, digits, - and _ (it names the webhook in lists)", w.Name)
		case names[w.Name]:
			bad(field+".name", "%q is the name of an earlier webhook; names are unique", w.Name)
		}
		names[w.Name] = true
		if u, err := url.Parse(w.URL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			bad(field+".url", "%q is not an absolute https URL (e.g. https://hooks.example.org/tokenfleet)", w.URL)
		} else if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
			bad(field+".url", "%q: http only to a loopback address; use https, the notices and their signatures would cross in clear", w.URL)
		}
		if w.SecretFile == "" {
			bad(field+".secret_file", "is required: a file holding the HMAC secret the receiver checks signatures with")
		} else if sec, err := readSecretFile(w.SecretFile); err != nil {
			bad(field+".secret_file", "%v", err)
		} else if len(sec) < minWebhookSecret {
			bad(field+".secret_file", "the secret in %s is %d characters long; give at least %d (e.g. openssl rand -hex 32)", w.SecretFile, len(sec), minWebhookSecret)
		}
		for j, e := range w.Events {
			if !notify.Known(notify.Event(e)) {
				bad(fmt.Sprintf("%s.events[%d]", field, j), "unknown event %q (known: %v)", e, notify.Events())
			}
		}
		if w.Language != "" && !notify.KnownLanguage(w.Language) {
			bad(field+".language", "%q: notifications are written in %v", w.Language, notify.Languages())
		}
		if w.CAFile != "" {
			if _, err := readCAFile(w.CAFile); err != nil {
				bad(field+".ca_file", "%v", err)
			}
		}
	}
	if n.MaxAttempts < 1 || n.MaxAttempts > 100 {
		bad("notifications.max_attempts", "%d is outside 1..100", n.MaxAttempts)
	}
	ri, rm := time.Duration(n.RetryInitial), time.Duration(n.RetryMax)
	if ri < 100*time.Millisecond || ri > time.Hour {
		bad("notifications.retry_initial", "%s is outside 100ms..1h", ri)
	}
	if rm < ri || rm > 24*time.Hour {
		bad("notifications.retry_max", "%s is outside notifications.retry_initial (%s)..24h", rm, ri)
	}
	if n.RateLimit.Count < 0 {
		bad("notifications.rate_limit.count", "%d is negative; 0 turns the limit off", n.RateLimit.Count)
	}
	if p := time.Duration(n.RateLimit.Per); n.RateLimit.Count > 0 && (p < time.Minute || p > 7*24*time.Hour) {
		bad("notifications.rate_limit.per", "%s is outside 1m..168h (e.g. 1h for %d an hour)", p, n.RateLimit.Count)
	}
	if d := time.Duration(n.Interval); d < 100*time.Millisecond || d > time.Minute {
		bad("notifications.interval", "%s is outside 100ms..1m", d)
	}
	if d := time.Duration(n.Timeout); d < time.Second || d > 5*time.Minute {
		bad("notifications.timeout", "%s is outside 1s..5m", d)
	}
	sw, margin := time.Duration(n.SweepInterval), time.Duration(n.CRLMargin)
	if sw < time.Second || sw > 7*24*time.Hour {
		bad("notifications.sweep_interval", "%s is outside 1s..168h", sw)
	}
	if margin <= sw {
		bad("notifications.crl_margin", "%s is not longer than notifications.sweep_interval %s: a CRL close to its end could be noticed too late; raise it (e.g. 72h)", margin, sw)
	}
}

func (c Config) validateSMTP(bad func(field, format string, args ...any)) {
	s := c.Notifications.SMTP
	if s.Host == "" {
		if s != (SMTPConfig{}) {
			bad("notifications.smtp.host", "is required when notifications.smtp is set: the mail server's name, e.g. smtp.example.org")
		}
		return
	}
	switch s.security() {
	case notify.SecurityStartTLS, notify.SecurityTLS:
	case notify.SecurityNone:
		if !loopbackHost(s.Host) {
			bad("notifications.smtp.security", "none sends mail in clear: only to a loopback address, not %s; use starttls or tls", s.Host)
		}
		if s.Username != "" {
			bad("notifications.smtp.username", "needs security starttls or tls: AUTH PLAIN would send the password in clear")
		}
	default:
		bad("notifications.smtp.security", "%q is not starttls, tls or none", s.Security)
	}
	if s.Port < 0 || s.Port > 65535 {
		bad("notifications.smtp.port", "%d is not from 1 to 65535", s.Port)
	}
	switch {
	case s.Username != "" && s.PasswordFile == "":
		bad("notifications.smtp.password_file", "is required with notifications.smtp.username: a file holding the password")
	case s.Username == "" && s.PasswordFile != "":
		bad("notifications.smtp.username", "is required with notifications.smtp.password_file")
	case s.PasswordFile != "":
		if _, err := readSecretFile(s.PasswordFile); err != nil {
			bad("notifications.smtp.password_file", "%v", err)
		}
	}
	if s.From == "" {
		bad("notifications.smtp.from", "is required: the sender address, e.g. \"tokenfleet <pki@example.org>\"")
	} else if _, err := mail.ParseAddress(s.From); err != nil {
		bad("notifications.smtp.from", "%q is not an address (e.g. \"tokenfleet <pki@example.org>\"): %v", s.From, err)
	}
	if s.CAFile != "" {
		if _, err := readCAFile(s.CAFile); err != nil {
			bad("notifications.smtp.ca_file", "%v", err)
		}
	}
}

func loopbackHost(host string) bool { return IsLoopback(net.JoinHostPort(host, "0")) }

// readCAFile reads PEM certificates into a pool.
func readCAFile(name string) (*x509.CertPool, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", name)
	}
	return pool, nil
}
