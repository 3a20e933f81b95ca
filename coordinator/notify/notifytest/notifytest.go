// Package notifytest gives tests the other ends of notifications: a real SMTP server on
// loopback (github.com/emersion/go-smtp, with STARTTLS or implicit TLS and AUTH PLAIN)
// that keeps what it accepts, and a webhook receiver that checks every signature.
package notifytest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/tokenfleet/tokenfleet/coordinator/notify"
)

// Message is an e-mail the server accepted.
type Message struct {
	From     string
	To       []string
	AuthUser string // "" when the client did not authenticate
	TLS      bool   // the session was encrypted when the message was sent
	Raw      []byte
	Header   mail.Header
	Subject  string // decoded
	Body     string // the text, decoded (quoted-printable), with LF line ends
	HTML     string // the HTML part of a multipart/alternative message, decoded; "" for none
	// Parts are the parts of a multipart message as sent; nil when it is not one.
	Parts []Part
	// ParseError says why the message could not be read as MIME; nil when it could.
	ParseError error
}

// Part is one part of a multipart message.
type Part struct {
	Header  textproto.MIMEHeader // as sent, Content-Transfer-Encoding included
	Raw     []byte               // as sent (encoded)
	Decoded string               // decoded, with LF line ends
}

// SMTPOptions configure a test SMTP server.
type SMTPOptions struct {
	// Addr is where to listen; "" for a free port on 127.0.0.1.
	Addr string
	// ImplicitTLS speaks TLS from the first byte; otherwise STARTTLS is offered (and
	// required before AUTH), unless NoTLS.
	ImplicitTLS bool
	NoTLS       bool
	// User and Password are required with AUTH PLAIN when User is set.
	User, Password string
	// Accept decides on each message once it is read: nil or a nil result accepts it (it
	// is kept), an error refuses it (a 5xx *smtp.SMTPError is a permanent refusal). It
	// may block, to hold a client in the middle of its DATA.
	Accept func(Message) error
}

// SMTPServer is a running test SMTP server.
type SMTPServer struct {
	Addr   string
	Host   string
	Port   int
	CAFile string         // PEM of the server's self-signed certificate
	CAs    *x509.CertPool // the same, as a pool
	opts   SMTPOptions
	srv    *smtp.Server

	mu   sync.Mutex // guards msgs
	msgs []Message
}

// StartSMTP starts a server that stops when t ends.
func StartSMTP(t testing.TB, o SMTPOptions) *SMTPServer {
	t.Helper()
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("notifytest: SMTP listen: %v", err)
	}
	cert, pool, pemBytes := selfSigned(t)
	caFile := filepath.Join(t.TempDir(), "smtp-ca.pem")
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &SMTPServer{Addr: l.Addr().String(), CAFile: caFile, CAs: pool, opts: o}
	s.Host, s.Port = splitAddr(t, s.Addr)
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &session{s: s, c: c}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	srv.MaxMessageBytes = 1 << 20
	srv.ErrorLog = log.New(io.Discard, "", 0) // clients the tests cut off are expected
	if !o.NoTLS {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if o.ImplicitTLS {
		l = tls.NewListener(l, srv.TLSConfig)
	}
	s.srv = srv
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l) // ends when closed
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return s
}

// Close stops the server now.
func (s *SMTPServer) Close() { _ = s.srv.Close() }

// Messages returns what the server accepted so far.
func (s *SMTPServer) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// session is one SMTP connection.
type session struct {
	s    *SMTPServer
	c    *smtp.Conn
	from string
	to   []string
	user string
}

func (ss *session) AuthMechanisms() []string {
	if ss.s.opts.User == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.s.opts.User || password != ss.s.opts.Password {
			return errors.New("invalid credentials")
		}
		ss.user = username
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.opts.User != "" && ss.user == "" {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := ss.c.TLSConnectionState()
	m := Message{From: ss.from, To: append([]string(nil), ss.to...), AuthUser: ss.user, TLS: isTLS, Raw: raw}
	m.ParseError = parse(&m)
	if ss.s.opts.Accept != nil {
		if err := ss.s.opts.Accept(m); err != nil {
			return err
		}
	}
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, m)
	ss.s.mu.Unlock()
	return nil
}

// parse reads m.Raw as an e-mail: its headers, subject, and text (and HTML) body,
// decoding quoted-printable; a multipart/alternative message's parts are kept as sent.
func parse(m *Message) error {
	pm, err := mail.ReadMessage(bytes.NewReader(m.Raw))
	if err != nil {
		return err
	}
	m.Header = pm.Header
	dec := new(mime.WordDecoder)
	if m.Subject, err = dec.DecodeHeader(pm.Header.Get("Subject")); err != nil {
		return fmt.Errorf("subject: %w", err)
	}
	mt, params, err := mime.ParseMediaType(pm.Header.Get("Content-Type"))
	if err != nil {
		return fmt.Errorf("content type: %w", err)
	}
	if !strings.HasPrefix(mt, "multipart/") {
		m.Body, err = decode(pm.Header.Get("Content-Transfer-Encoding"), pm.Body)
		return err
	}
	mr := multipart.NewReader(pm.Body, params["boundary"])
	for {
		// NextRawPart: the part as sent, its transfer encoding left for decode to undo.
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("multipart: %w", err)
		}
		raw, err := io.ReadAll(p)
		if err != nil {
			return fmt.Errorf("multipart: %w", err)
		}
		part := Part{Header: p.Header, Raw: raw}
		if part.Decoded, err = decode(p.Header.Get("Content-Transfer-Encoding"), bytes.NewReader(raw)); err != nil {
			return err
		}
		m.Parts = append(m.Parts, part)
		switch pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); pt {
		case "text/plain":
			m.Body = part.Decoded
		case "text/html":
			m.HTML = part.Decoded
		}
	}
}

// decode undoes a transfer encoding (quoted-printable, or none) and makes line ends LF.
func decode(cte string, r io.Reader) (string, error) {
	if strings.EqualFold(cte, "quoted-printable") {
		r = quotedprintable.NewReader(r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return "", fmt.Errorf("decoding %s: %w", cte, err)
	}
	return strings.ReplaceAll(string(b), "\r\n", "\n"), nil
}

func (ss *session) Reset()        { ss.from, ss.to = "", nil }
func (ss *session) Logout() error { return nil }

// messageIDRE is the form of a Message-ID (RFC 5322): <left@right>.
var messageIDRE = regexp.MustCompile(`^<[^<>@\s]+@[^<>@\s]+>$`)

// urlRE finds every URL a message holds, with a scheme or scheme-relative.
var urlRE = regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*:)?//[^\s"'<>]*`)

// CheckMail reads an e-mail back as a mail client does and says what is wrong with its
// form (nil when nothing): the headers (MIME-Version, a multipart/alternative
// Content-Type with its boundary, Date, Message-ID, Auto-Submitted, Content-Language
// lang), a text part then an HTML part (the richest last), each UTF-8 and
// quoted-printable, so that the message is 7-bit; French accents that decode in both
// parts; the console link in both (when link is not ""); an HTML page that fetches
// nothing (no image, style sheet, script or frame, and no URL but the link).
func CheckMail(m Message, lang, link string) error {
	if m.ParseError != nil {
		return fmt.Errorf("the message does not read as MIME: %w", m.ParseError)
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	h := m.Header
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" || params["boundary"] == "" {
		bad("Content-Type %q is not multipart/alternative with a boundary (%v)", h.Get("Content-Type"), err)
	}
	if h.Get("MIME-Version") != "1.0" {
		bad("MIME-Version %q", h.Get("MIME-Version"))
	}
	if cte := h.Get("Content-Transfer-Encoding"); cte != "" {
		bad("a multipart message with Content-Transfer-Encoding %q (its parts are encoded, not it)", cte)
	}
	if h.Get("Auto-Submitted") != "auto-generated" {
		bad("Auto-Submitted %q", h.Get("Auto-Submitted"))
	}
	if h.Get("Content-Language") != lang {
		bad("Content-Language %q, want %q", h.Get("Content-Language"), lang)
	}
	if d, err := mail.ParseDate(h.Get("Date")); err != nil || time.Since(d).Abs() > 24*time.Hour {
		bad("Date %q: %v", h.Get("Date"), err)
	}
	if !messageIDRE.MatchString(h.Get("Message-ID")) {
		bad("Message-ID %q is not <id@domain>", h.Get("Message-ID"))
	}
	var types []string
	for _, p := range m.Parts {
		types = append(types, p.Header.Get("Content-Type"))
		if cte := p.Header.Get("Content-Transfer-Encoding"); cte != "quoted-printable" {
			bad("part %s is %q, not quoted-printable", p.Header.Get("Content-Type"), cte)
		}
	}
	if strings.Join(types, ", ") != "text/plain; charset=utf-8, text/html; charset=utf-8" {
		bad("parts %q, want text/plain then text/html, in UTF-8", types)
	}
	for i, c := range m.Raw {
		if c > 127 {
			bad("byte %d of the message is not 7-bit: %q", i, m.Raw[max(0, i-20):min(len(m.Raw), i+20)])
			break
		}
	}
	for _, line := range strings.Split(string(m.Raw), "\r\n") {
		if len(line) > 998 {
			bad("a line of %d characters (at most 998)", len(line))
			break
		}
	}
	if lang == "fr" && (!strings.Contains(m.Body, "é") || !strings.Contains(m.HTML, "é") || !bytes.Contains(m.Raw, []byte("=C3=A9"))) {
		bad("French accents do not come through, quoted-printable, in both parts")
	}
	if !strings.Contains(m.HTML, "<!DOCTYPE html>") || !strings.Contains(m.HTML, `<html lang="`+lang+`">`) {
		bad("the HTML part is not a page in %s", lang)
	}
	if link != "" && (!strings.Contains(m.Body, link) || !strings.Contains(m.HTML, `href="`+link+`"`)) {
		bad("the link %s is missing from a part", link)
	}
	lower := strings.ToLower(m.HTML)
	for _, remote := range []string{"<img", "src=", "url(", "@import", "<link", "<script", "<iframe", "<object", "<embed"} {
		if strings.Contains(lower, remote) {
			bad("the HTML part holds %q", remote)
		}
	}
	for _, u := range urlRE.FindAllString(m.HTML, -1) {
		if link == "" || u != link {
			bad("the HTML part points to %q", u)
		}
	}
	if len(errs) > 0 {
		errs = append(errs, fmt.Errorf("the message:\n%s", m.Raw))
	}
	return errors.Join(errs...)
}

// Delivery is one request the webhook receiver got.
type Delivery struct {
	ID        string // Tokenfleet-Delivery
	Event     string // Tokenfleet-Event
	Signature string
	Body      []byte
	// Verified is nil when the signature checked out with the receiver's secret.
	Verified error
	At       time.Time
}

// WebhookOptions configure a receiver.
type WebhookOptions struct {
	Addr string // "" for a free port on 127.0.0.1
	// Respond gives the HTTP status to answer a delivery whose signature checked out;
	// nil answers 204. It may block, to hold the sender mid-request.
	Respond func(Delivery) int
}

// WebhookReceiver is a running webhook receiver: it verifies every request's signature
// as a real receiver does (notify.Verify, notify.DefaultTolerance) and keeps every
// request, answering 401 to one whose signature is wrong.
type WebhookReceiver struct {
	URL    string
	Secret []byte
	opts   WebhookOptions
	srv    *http.Server

	mu  sync.Mutex // guards got
	got []Delivery
}

// StartWebhook starts a receiver that stops when t ends.
func StartWebhook(t testing.TB, secret []byte, o WebhookOptions) *WebhookReceiver {
	t.Helper()
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("notifytest: webhook listen: %v", err)
	}
	w := &WebhookReceiver{URL: "http://" + l.Addr().String() + "/hook", Secret: secret, opts: o}
	w.srv = &http.Server{Handler: http.HandlerFunc(w.serve), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.srv.Serve(l) // ends when closed
	}()
	t.Cleanup(func() {
		_ = w.srv.Close()
		<-done
	})
	return w
}

// Close stops the receiver now.
func (w *WebhookReceiver) Close() { _ = w.srv.Close() }

func (w *WebhookReceiver) serve(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	d := Delivery{ID: r.Header.Get(notify.HeaderDelivery), Event: r.Header.Get(notify.HeaderEvent),
		Signature: r.Header.Get(notify.HeaderSignature), Body: body, At: time.Now()}
	d.Verified = notify.Verify(w.Secret, d.Signature, body, time.Now(), notify.DefaultTolerance)
	w.mu.Lock()
	w.got = append(w.got, d)
	w.mu.Unlock()
	if d.Verified != nil {
		http.Error(rw, d.Verified.Error(), http.StatusUnauthorized)
		return
	}
	status := http.StatusNoContent
	if w.opts.Respond != nil {
		status = w.opts.Respond(d)
	}
	rw.WriteHeader(status)
}

// Deliveries returns every request so far, answered or not.
func (w *WebhookReceiver) Deliveries() []Delivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Delivery(nil), w.got...)
}

// Eventually polls cond every 20 ms until it holds, failing t after limit.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		<-tick.C
	}
}

// selfSigned makes a certificate for 127.0.0.1, ::1 and localhost.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "notifytest SMTP"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func splitAddr(t testing.TB, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var p int
	for _, c := range port {
		p = p*10 + int(c-'0')
	}
	return host, p
}
