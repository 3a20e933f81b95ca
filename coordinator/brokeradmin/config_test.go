package brokeradmin

import (
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestNewConfig: configurations that cannot work, or would send the password in clear
// over a network, are refused, saying what to fix; good ones keep the path prefix.
func TestNewConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := Config{URL: "https://mq.example.org:15671", User: "tokenfleet-admin", Password: "pw", VHost: "tokenfleet"}
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"no URL":           {func(c *Config) { c.URL = "" }, "rabbitmq-plugins enable rabbitmq_management"},
		"AMQP URL":         {func(c *Config) { c.URL = "amqp://mq.example.org:5672/" }, "scheme must be http or https"},
		"no host":          {func(c *Config) { c.URL = "https:///x" }, "has no host"},
		"credentials":      {func(c *Config) { c.URL = "https://u:p@mq.example.org" }, "must not carry credentials"},
		"query":            {func(c *Config) { c.URL = "https://mq.example.org/?x=1" }, "query or fragment"},
		"http remote":      {func(c *Config) { c.URL = "http://mq.example.org:15672" }, "plain http to a host that is not loopback"},
		"http all ifaces":  {func(c *Config) { c.URL = "http://0.0.0.0:15672" }, "plain http"},
		"no user":          {func(c *Config) { c.User = "" }, "administrator tag"},
		"no password":      {func(c *Config) { c.Password = "" }, `password: is required for management user "tokenfleet-admin"`},
		"no vhost":         {func(c *Config) { c.VHost = "" }, `"/" for RabbitMQ's default vhost`},
		"negative timeout": {func(c *Config) { c.Timeout = -1 }, "negative"},
		"CA over http":     {func(c *Config) { c.URL, c.CAFile = "http://127.0.0.1:15672", notPEM }, "not https"},
		"CA missing":       {func(c *Config) { c.CAFile = filepath.Join(dir, "missing.pem") }, "missing.pem"},
		"CA not PEM":       {func(c *Config) { c.CAFile = notPEM }, "holds no PEM certificate"},
		"CA and client":    {func(c *Config) { c.CAFile, c.HTTPClient = notPEM, http.DefaultClient }, "both set"},
	} {
		cfg := good
		tc.mod(&cfg)
		if _, err := New(cfg, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}

	for url, base := range map[string]string{
		"https://mq.example.org:15671":           "https://mq.example.org:15671",
		"https://mq.example.org/rabbitmq/":       "https://mq.example.org/rabbitmq",
		"https://mq.example.org/rabbitmq/api":    "https://mq.example.org/rabbitmq",
		"http://127.0.0.1:15672/api/":            "http://127.0.0.1:15672",
		"http://localhost:15672":                 "http://localhost:15672",
		"http://[::1]:15672":                     "http://[::1]:15672",
		"https://mq.example.org/rabbit%20mq/api": "https://mq.example.org/rabbit%20mq",
	} {
		cfg := good
		cfg.URL = url
		c, err := New(cfg, zerolog.Nop())
		if err != nil {
			t.Errorf("%s: %v", url, err)
			continue
		}
		if c.base != base || c.timeout != DefaultTimeout {
			t.Errorf("%s: base %q timeout %v, want %q %v", url, c.base, c.timeout, base, DefaultTimeout)
		}
	}
	insecure := good
	insecure.URL, insecure.AllowInsecure = "http://mq.internal:15672", true
	if _, err := New(insecure, zerolog.Nop()); err != nil {
		t.Errorf("http with AllowInsecure: %v", err)
	}
}

// TestCheck: a working setup passes; wrong credentials, a user without the administrator
// tag, a missing vhost and an API that does not answer each fail saying what to fix, and
// the 401 is ErrUnauthorized for the other calls too.
func TestCheck(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	ctx := testenv.Context(t)
	if err := newClient(t, b.VHost).Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}

	wrong := newClient(t, b.VHost, func(c *Config) { c.Password = "not-the-password" })
	err := wrong.Check(ctx)
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), `refused the login of "guest"`) || !strings.Contains(err.Error(), "Login failed") {
		t.Errorf("Check with a wrong password: %v", err)
	}
	u := newAgent(t)
	err = wrong.PutAgent(ctx, u)
	var ae *APIError
	if !errors.Is(err, ErrUnauthorized) || !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), u.AgentID) {
		t.Errorf("PutAgent with a wrong password: %v, want a 401 naming the agent", err)
	}

	monitor := testenv.UniqueUser("monitor-")
	deleteUsersAtEnd(t, monitor)
	pw := newPassword(t)
	if err := admin(t).do(ctx, http.MethodPut, apiPath("users", monitor), map[string]string{"password": pw, "tags": "management,monitoring"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	err = newClient(t, b.VHost, func(c *Config) { c.User, c.Password = monitor, pw }).Check(ctx)
	if err == nil || !strings.Contains(err.Error(), "rabbitmqctl set_user_tags "+monitor+" administrator") {
		t.Errorf("Check as a monitoring user: %v", err)
	}

	err = newClient(t, b.VHost+"-missing").Check(ctx)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "rabbitmqctl add_vhost "+b.VHost+"-missing") {
		t.Errorf("Check of a missing vhost: %v", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now
	err = newClient(t, b.VHost, func(c *Config) { c.URL = "http://" + addr }).Check(ctx)
	if err == nil || !strings.Contains(err.Error(), "does not answer") || !strings.Contains(err.Error(), "rabbitmq-plugins enable rabbitmq_management") {
		t.Errorf("Check with nothing listening: %v", err)
	}
	err = newClient(t, b.VHost, func(c *Config) { c.URL = managementBase + "/wrong-prefix" }).Check(ctx)
	if err == nil || !strings.Contains(err.Error(), "check the URL") {
		t.Errorf("Check with a wrong prefix: %v", err)
	}
}

// TestHTTPSPrefix: behind a TLS reverse proxy under /rabbitmq the client trusts the CA
// of CAFile and keeps the prefix, escaped names intact; without the CA it refuses the
// server's certificate.
func TestHTTPSPrefix(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	ctx := testenv.Context(t)
	target, _ := url.Parse(managementBase)
	proxy := httputil.NewSingleHostReverseProxy(target)
	mux := http.NewServeMux()
	mux.Handle("/rabbitmq/", http.StripPrefix("/rabbitmq", proxy))
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// Self-signed: the certificate is its own CA.
	testenv.WriteSelfSigned(t, certFile, keyFile, "mq.test", x509.ExtKeyUsageServerAuth)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0)} // the refused handshake is expected
	go func() { _ = hs.ServeTLS(l, certFile, keyFile) }()
	t.Cleanup(func() { _ = hs.Close() })
	base := "https://" + l.Addr().String() + "/rabbitmq"

	c := newClient(t, b.VHost, func(c *Config) { c.URL, c.CAFile = base, certFile })
	if err := c.Check(ctx); err != nil {
		t.Fatalf("Check through the proxy: %v", err)
	}
	u := newAgent(t)
	u.User += "/through proxy"
	deleteUsersAtEnd(t, u.User)
	if err := c.PutAgent(ctx, u); err != nil {
		t.Fatal(err)
	}
	mustDial(t, b.VHost, u.User, u.Password)

	untrusting := newClient(t, b.VHost, func(c *Config) { c.URL = base })
	var unknown x509.UnknownAuthorityError
	if err := untrusting.Check(ctx); !errors.As(err, &unknown) {
		t.Errorf("Check without the CA: %v, want an unknown authority", err)
	}
}
