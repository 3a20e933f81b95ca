package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/drivers/usb"
	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// Resolved is a validated configuration.
type Resolved struct {
	Agent     agent.Config
	LogLevel  zerolog.Level
	LogFormat string // "json", "console" or "" (choose by the output)
	// ClientCert is the broker TLS client certificate Agent.TLS presents; nil without one.
	ClientCert *ClientCert
	// Warnings are for the operator: the configuration works, but not as it should.
	Warnings []string
	// IDSet and BrokerSet say the agent ID and the broker URL were given (file or flag),
	// not defaults: an enrolled agent otherwise takes both from its enrolment.
	IDSet, BrokerSet bool
	// Enrol is self-enrolment on first start (enrol.coordinator set); nil: none.
	Enrol *EnrolSettings
}

// EnrolSettings are the checked enrol section, the code read from its file.
type EnrolSettings struct {
	Coordinator, Code, CAFingerprint, CAFile, Session string
}

// Resolve validates the configuration and makes the agent's. Every problem is reported,
// each naming its field.
func (c *Config) Resolve() (*Resolved, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, c.fieldError(field, fmt.Sprintf(format, args...)))
	}
	r := &Resolved{}
	a := &r.Agent

	a.ID = c.ID
	r.IDSet = c.Source("id") != "default"
	r.BrokerSet = c.Source("broker.url") != "default"
	r.Enrol = c.resolveEnrol(bad)
	if a.ID == "" {
		host, err := os.Hostname()
		if err != nil {
			bad("id", "not set, and the host name is unknown (%v): set it", err)
		} else if a.ID, err = DefaultID(host); err != nil {
			bad("id", "not set, and %v: set it", err)
		}
	} else if err := protocol.ValidateAgentID(a.ID); err != nil {
		bad("id", "%s", idMessage(err))
	}

	if c.DataDir == "" {
		bad("data_dir", "required")
	} else if abs, err := filepath.Abs(c.DataDir); err != nil {
		bad("data_dir", "%v", err)
	} else {
		a.DataDir = abs
	}

	for i, m := range c.Modules {
		if strings.TrimSpace(m) == "" {
			bad(yamlstrict.Index("modules", i), "empty: give a module path or remove the entry")
		}
	}
	a.Modules = c.Modules
	a.NoUSB = c.USB != nil && !*c.USB
	if c.Registry != "" {
		reg, err := usb.LoadRegistryFile(c.Registry)
		if err != nil {
			bad("registry", "%v", err)
		}
		a.Registry = reg
	}

	duration := func(field string, d time.Duration, least time.Duration, dst *time.Duration) {
		switch {
		case d < 0:
			bad(field, "%v is negative", d)
		case d > 0 && d < least:
			bad(field, "%v is too short (at least %v)", d, least)
		default:
			*dst = d
		}
	}
	duration("poll_interval", c.PollInterval, 50*time.Millisecond, &a.PollInterval)
	duration("heartbeat_interval", c.HeartbeatInterval, 100*time.Millisecond, &a.HeartbeatInterval)
	duration("shutdown_grace", c.ShutdownGrace, time.Millisecond, &a.ShutdownGrace)
	duration("broker.heartbeat", c.Broker.Heartbeat, time.Second, &a.Broker.Heartbeat)

	r.LogLevel = zerolog.InfoLevel
	if c.Log.Level != "" {
		lvl, err := zerolog.ParseLevel(strings.ToLower(c.Log.Level))
		if err != nil {
			bad("log.level", "%q: want trace, debug, info, warn or error", c.Log.Level)
		}
		r.LogLevel = lvl
	}
	switch c.Log.Format {
	case "", "json", "console":
		r.LogFormat = c.Log.Format
	default:
		bad("log.format", "%q: want json or console", c.Log.Format)
	}

	if c.MetricsListen != "" {
		if err := checkListen(c.MetricsListen); err != nil {
			bad("metrics_listen", "%q: %v", c.MetricsListen, err)
		}
		a.MetricsListen = c.MetricsListen
	}

	c.resolveBroker(r, bad)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

func (c *Config) resolveBroker(r *Resolved, bad func(field, format string, args ...any)) {
	b, a := c.Broker, &r.Agent.Broker
	a.Queue = agent.QueueMode(b.Queue)
	if b.Queue == "" {
		a.Queue = agent.QueueAuto
	}
	if !a.Queue.Valid() {
		bad("broker.queue", "%q: want auto, declare or check", b.Queue)
	}
	for i, u := range b.CoordinatorUsers {
		if strings.TrimSpace(u) == "" {
			bad(yamlstrict.Index("broker.coordinator_users", i), "empty: give a broker user name or remove the entry")
		}
	}
	a.CoordinatorUsers = b.CoordinatorUsers

	u, err := url.Parse(b.URL)
	if err != nil {
		// The parser's message quotes the URL, password and all.
		bad("broker.url", "does not parse as a URL")
		return
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		bad("broker.url", "scheme %q: want amqp or amqps", u.Scheme)
		return
	}
	if u.Host == "" {
		bad("broker.url", "names no host")
		return
	}
	if password(b.URL) != "" && strings.HasPrefix(c.Source("broker.url"), "-") {
		r.Warnings = append(r.Warnings, "the broker password is on the command line, where local users can read it: use --broker-password-file or the configuration file")
	}
	pwFile, pwSource := b.PasswordFile, "broker.password_file"
	if pwFile == "" && password(b.URL) == "" {
		if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
			if p := filepath.Join(dir, CredentialName); fileExists(p) {
				pwFile, pwSource = p, "systemd credential "+CredentialName
			}
		}
	}
	if pwFile != "" {
		switch {
		case password(b.URL) != "":
			bad("broker.password_file", "the broker URL holds a password too: give it in one place")
		case u.User == nil || u.User.Username() == "":
			bad("broker.url", "names no user for the password of %s", pwSource)
		default:
			pw, err := readPassword(pwFile)
			if err != nil {
				if pwSource == "broker.password_file" {
					bad("broker.password_file", "%v", err)
				} else {
					bad("broker.url", "%s: %v", pwSource, err)
				}
				break
			}
			u.User = url.UserPassword(u.User.Username(), pw)
		}
	}
	a.URL = u.String()

	if b.CAFile == "" && b.CertFile == "" && b.KeyFile == "" {
		return
	}
	if u.Scheme != "amqps" {
		for _, f := range []string{"ca_file", "cert_file", "key_file"} {
			if (f == "ca_file" && b.CAFile != "") || (f == "cert_file" && b.CertFile != "") || (f == "key_file" && b.KeyFile != "") {
				bad("broker."+f, "set, but the broker URL is not amqps://")
			}
		}
		return
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if b.CAFile != "" {
		pem, err := readSmall(b.CAFile)
		if err != nil {
			bad("broker.ca_file", "%v", err)
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				bad("broker.ca_file", "%s holds no PEM certificate", b.CAFile)
			}
			cfg.RootCAs = pool
		}
	}
	switch {
	case (b.CertFile == "") != (b.KeyFile == ""):
		bad("broker.cert_file", "a client certificate needs both cert_file and key_file")
	case b.CertFile != "":
		if err := checkPrivate(b.KeyFile); err != nil {
			bad("broker.key_file", "%v", err)
		}
		pair, err := tls.LoadX509KeyPair(b.CertFile, b.KeyFile)
		if err != nil {
			bad("broker.cert_file", "%v", err)
		}
		// Read at each handshake: a reload swaps it (Resolved.Reload).
		r.ClientCert = NewClientCert(&pair)
		cfg.GetClientCertificate = r.ClientCert.Get
	}
	a.TLS = cfg
}

// checkListen checks a listen address: host:port, the port a number from 1 to 65535 (an
// empty host listens on every address).
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want HOST:PORT, e.g. 127.0.0.1:9310 (%w)", err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want a number from 1 to 65535, e.g. 127.0.0.1:9310", port)
	}
	return nil
}

// resolveEnrol checks the enrol section: a coordinator and exactly one of code and
// code_file, which must hold a code.
func (c *Config) resolveEnrol(bad func(field, format string, args ...any)) *EnrolSettings {
	e := c.Enrol
	if e == (Enrol{}) {
		return nil
	}
	if e.Coordinator == "" {
		bad("enrol.coordinator", "is required with the enrol section: the coordinator's https:// URL")
		return nil
	}
	code := strings.TrimSpace(e.Code)
	switch {
	case code != "" && e.CodeFile != "":
		bad("enrol.code_file", "set with enrol.code: give the code in one place")
		return nil
	case e.CodeFile != "":
		b, err := readSmall(e.CodeFile)
		if err != nil {
			bad("enrol.code_file", "%v", err)
			return nil
		}
		code = strings.TrimSpace(string(b))
		if code == "" {
			bad("enrol.code_file", "%s is empty: write the enrolment key or code (tfe_...) in it", e.CodeFile)
			return nil
		}
	case code == "":
		bad("enrol.code", "is required with enrol.coordinator: the enrolment key or code (tfe_...), or enrol.code_file")
		return nil
	}
	if e.CAFingerprint != "" && e.CAFile != "" {
		bad("enrol.ca_file", "set with enrol.ca_fingerprint: pin the CA one way")
		return nil
	}
	return &EnrolSettings{Coordinator: e.Coordinator, Code: code, CAFingerprint: e.CAFingerprint, CAFile: e.CAFile, Session: e.Session}
}
