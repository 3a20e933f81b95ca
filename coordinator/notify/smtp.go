package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// SMTP security.
const (
	SecurityStartTLS = "starttls" // plain connection upgraded with STARTTLS, which is required
	SecurityTLS      = "tls"      // TLS from the first byte (port 465)
	SecurityNone     = "none"     // no TLS: only to a loopback address
)

// SMTPConfig configures the e-mail sender.
type SMTPConfig struct {
	Host     string
	Port     int
	Security string // SecurityStartTLS, SecurityTLS or SecurityNone
	// Username and Password authenticate with AUTH PLAIN, over TLS only; "" for no
	// authentication.
	Username, Password string
	// From is the sender, "tokenfleet <pki@example.org>" or a bare address.
	From string
	// RootCAs verify the server's certificate; nil for the system's.
	RootCAs *x509.CertPool
	// Timeout bounds one message's whole exchange.
	Timeout time.Duration
	// LocalName is the name given in EHLO; "" for "localhost".
	LocalName string
}

// SMTP sends e-mails through one SMTP server, a connection per message. It uses Go's
// net/smtp: STARTTLS, implicit TLS and AUTH PLAIN are all it needs, and net/smtp refuses
// to send a password over a connection that is not TLS.
type SMTP struct {
	cfg  SMTPConfig
	from *mail.Address
}

// NewSMTP checks cfg and makes the sender.
func NewSMTP(cfg SMTPConfig) (*SMTP, error) {
	if cfg.Host == "" {
		return nil, errors.New("notify: SMTP host is required")
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("notify: SMTP port %d is not from 1 to 65535", cfg.Port)
	}
	switch cfg.Security {
	case SecurityStartTLS, SecurityTLS:
	case SecurityNone:
		if !isLoopbackHost(cfg.Host) {
			return nil, fmt.Errorf("notify: SMTP without TLS only to a loopback address, not %s", cfg.Host)
		}
		if cfg.Username != "" {
			return nil, errors.New("notify: SMTP authentication needs TLS (starttls or tls): the password would cross in clear")
		}
	default:
		return nil, fmt.Errorf("notify: SMTP security %q is not starttls, tls or none", cfg.Security)
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("notify: SMTP from %q: %w", cfg.From, err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.LocalName == "" {
		cfg.LocalName = "localhost"
	}
	return &SMTP{cfg: cfg, from: from}, nil
}

// isLoopbackHost reports whether host is localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Mail is one e-mail to one recipient.
type Mail struct {
	To        string
	Subject   string
	Body      string // text
	HTML      string // an HTML document, sent as the alternative to Body; "" for text alone
	Language  string
	MessageID string // the delivery's ID: the same on every retry
	Event     string
	Date      time.Time
}

// PermanentError is a refusal that trying again will not change (an SMTP 5xx reply).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Send delivers m. A 5xx reply is a *PermanentError.
func (s *SMTP) Send(ctx context.Context, m Mail) (err error) {
	msg := s.compose(m)
	addr := net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port))
	tlsConf := &tls.Config{ServerName: s.cfg.Host, RootCAs: s.cfg.RootCAs, MinVersion: tls.VersionTLS12}
	d := net.Dialer{Timeout: s.cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("smtp %s: %w", addr, err)
	}
	defer func() { _ = conn.Close() }() // after QUIT, or to abandon the exchange
	if err := conn.SetDeadline(time.Now().Add(s.cfg.Timeout)); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if s.cfg.Security == SecurityTLS {
		tc := tls.Client(conn, tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("smtp %s: TLS: %w", addr, err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, s.cfg.Host)
	if err != nil {
		return smtpErr(addr, "greeting", err)
	}
	if err := c.Hello(s.cfg.LocalName); err != nil {
		return smtpErr(addr, "EHLO", err)
	}
	if s.cfg.Security == SecurityStartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return fmt.Errorf("smtp %s: the server does not offer STARTTLS, which notifications.smtp.security starttls requires", addr)
		}
		if err := c.StartTLS(tlsConf); err != nil {
			return smtpErr(addr, "STARTTLS", err)
		}
	}
	if s.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", s.cfg.Username, s.cfg.Password, s.cfg.Host)); err != nil {
			return smtpErr(addr, "AUTH", err)
		}
	}
	if err := c.Mail(s.from.Address); err != nil {
		return smtpErr(addr, "MAIL FROM", err)
	}
	if err := c.Rcpt(m.To); err != nil {
		return smtpErr(addr, "RCPT TO "+m.To, err)
	}
	w, err := c.Data()
	if err != nil {
		return smtpErr(addr, "DATA", err)
	}
	if _, err := w.Write(msg); err != nil {
		return smtpErr(addr, "DATA", err)
	}
	if err := w.Close(); err != nil {
		return smtpErr(addr, "end of DATA", err)
	}
	// The message is accepted; a failed QUIT changes nothing.
	_ = c.Quit()
	return nil
}

// smtpErr names the step that failed; a 5xx reply is permanent.
func smtpErr(addr, step string, err error) error {
	e := fmt.Errorf("smtp %s: %s: %w", addr, step, err)
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 {
		return &PermanentError{Err: e}
	}
	return e
}

// compose writes the message: CRLF line ends, headers encoded (RFC 2047), marked as
// automatically sent (RFC 3834); the text in UTF-8, quoted-printable, and the HTML page
// beside it as the richer alternative (multipart/alternative, RFC 2046: text first).
// Every part is quoted-printable, so the message is 7-bit whatever the language.
func (s *SMTP) compose(m Mail) []byte {
	var b bytes.Buffer
	h := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	h("From", s.from.String())
	h("To", (&mail.Address{Address: m.To}).String())
	h("Subject", mime.QEncoding.Encode("utf-8", strings.Join(strings.Fields(m.Subject), " ")))
	h("Date", m.Date.Format(time.RFC1123Z))
	domain := "tokenfleet"
	if _, d, ok := strings.Cut(s.from.Address, "@"); ok && d != "" {
		domain = d
	}
	h("Message-ID", "<"+m.MessageID+"@"+domain+">")
	h("MIME-Version", "1.0")
	var mw *multipart.Writer
	if m.HTML == "" {
		h("Content-Type", textPlain)
		h("Content-Transfer-Encoding", "quoted-printable")
	} else {
		mw = multipart.NewWriter(&b)
		h("Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": mw.Boundary()}))
	}
	if m.Language != "" {
		h("Content-Language", m.Language)
	}
	h("Auto-Submitted", "auto-generated")
	if m.Event != "" {
		h("X-Tokenfleet-Event", m.Event)
	}
	b.WriteString("\r\n")
	if mw == nil {
		writeQP(&b, m.Body)
		return b.Bytes()
	}
	for _, p := range []struct{ ctype, content string }{{textPlain, m.Body}, {textHTML, m.HTML}} {
		// Into a buffer: cannot fail.
		w, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {p.ctype}, "Content-Transfer-Encoding": {"quoted-printable"}})
		writeQP(w, p.content)
	}
	_ = mw.Close()
	return b.Bytes()
}

const (
	textPlain = "text/plain; charset=utf-8"
	textHTML  = "text/html; charset=utf-8"
)

// writeQP writes text quoted-printable, with CRLF line ends.
func writeQP(w io.Writer, text string) {
	qp := quotedprintable.NewWriter(w)
	text = strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\n", "\r\n")
	_, _ = qp.Write([]byte(text)) // into a buffer: cannot fail
	_ = qp.Close()
}
