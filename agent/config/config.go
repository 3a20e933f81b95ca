// Package config reads tokenfleet-agent's configuration: a YAML file, decoded strictly
// (an unknown field or a wrong type is an error FILE:LINE:COL: field: problem), with
// command-line flags over it, validated into an agent.Config. Every error names the
// setting at fault and where its value came from (the file, or a flag).
//
// The broker password never needs to be on a command line, where every local user can read
// it: it goes in the broker URL inside the configuration file, or in a file of its own
// (broker.password_file, --broker-password-file), or, under systemd, in the credential
// "broker-password" (LoadCredential=), which is used when neither gives one. A file that
// holds the password must not be readable by other users: mode 0600, or 0640 with the
// agent's group.
//
// Agent IDs: by default the host name, lower-cased, with every character an agent ID may
// not hold replaced by '-'. On a shared host (a terminal server) run one agent per user
// session, each with its own ID ("alice@ts-01") and its own data directory: the broker
// refuses a second agent with a taken ID.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/drivers/usb"
	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// DefaultBrokerURL is the development broker on the loopback interface.
const DefaultBrokerURL = "amqp://guest:guest@127.0.0.1:5672/"

// CredentialName is the systemd credential (LoadCredential=broker-password:FILE) read
// for the broker password when the configuration gives none.
const CredentialName = "broker-password"

// maxFileSize bounds the configuration and password files.
const maxFileSize = 1 << 20

// Config is the configuration file's content; flags are set over it.
type Config struct {
	// ID is the agent ID; empty means DefaultID of the host name.
	ID string `yaml:"id"`
	// DataDir holds the journal and the sealing key.
	DataDir string `yaml:"data_dir"`
	// Modules are PKCS#11 module paths; empty means agent.DefaultModules.
	Modules []string `yaml:"modules"`
	// USB turns USB enumeration on or off (default on).
	USB *bool `yaml:"usb"`
	// Registry is an administrator's token model registry, merged over the built-in one.
	Registry          string        `yaml:"registry"`
	PollInterval      time.Duration `yaml:"poll_interval"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	ShutdownGrace     time.Duration `yaml:"shutdown_grace"`
	Log               Log           `yaml:"log"`
	Broker            Broker        `yaml:"broker"`

	// origin names where each setting that is not a default came from, by field path.
	origin map[string]string
	// doc is the configuration file as read, for the position of its settings.
	doc *yamlstrict.Doc
}

// Log configures logging.
type Log struct {
	// Level: trace, debug, info, warn, error.
	Level string `yaml:"level"`
	// Format: json, or console (for people); empty means console on a terminal, JSON
	// otherwise (under a service manager).
	Format string `yaml:"format"`
}

// Broker configures the broker connection.
type Broker struct {
	URL          string `yaml:"url"`
	PasswordFile string `yaml:"password_file"`
	// CAFile, CertFile and KeyFile are PEM files for amqps://: the CA the broker's
	// certificate must chain to (default: the system's), and a client certificate.
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Queue: auto, declare or check (agent.QueueMode).
	Queue     string        `yaml:"queue"`
	Heartbeat time.Duration `yaml:"heartbeat"`
	// CoordinatorUsers, if set, are the broker users commands are accepted from.
	CoordinatorUsers []string `yaml:"coordinator_users"`
}

// Default returns the settings used when neither the file nor a flag says otherwise.
func Default() Config {
	on := true
	return Config{
		DataDir: DefaultDataDir(),
		USB:     &on,
		Log:     Log{Level: "info"},
		Broker:  Broker{URL: DefaultBrokerURL, Queue: string(agent.QueueAuto)},
		origin:  map[string]string{},
	}
}

// Load reads a configuration file over the defaults, strictly: an unknown field, a key
// given twice or a value of the wrong kind is a *FieldError at FILE:LINE:COL.
func Load(path string) (Config, error) {
	c := Default()
	data, err := readSmall(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	doc, err := yamlstrict.Decode(path, data, &c)
	if err != nil {
		return c, fieldErrors(err)
	}
	c.doc = doc
	src := "config " + path
	for _, p := range doc.Paths() {
		c.origin[p] = src
	}
	if doc.Has("broker.url") && password(c.Broker.URL) != "" {
		// The password is in this file (not the default URL's): it must be as private as
		// a password file.
		if err := checkPrivate(path); err != nil {
			return c, c.fieldError("broker.url", "holds the broker password, but "+err.Error())
		}
	}
	return c, nil
}

// fieldErrors turns the decoder's errors into FieldErrors.
func fieldErrors(err error) error {
	var errs []error
	for _, e := range unjoin(err) {
		var ye *yamlstrict.Error
		if !errors.As(e, &ye) {
			errs = append(errs, fmt.Errorf("config: %w", e))
			continue
		}
		errs = append(errs, &FieldError{Field: ye.Path, Source: "config " + ye.File, Msg: ye.Msg, File: ye.File, Line: ye.Line, Col: ye.Col})
	}
	return errors.Join(errs...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// SetBy records that a flag set the field (a dotted path such as "broker.url"), so that
// errors about it name the flag.
func (c *Config) SetBy(field, flag string) {
	if c.origin == nil {
		c.origin = map[string]string{}
	}
	// The flag replaces the whole setting: what the file said under it no longer counts.
	for p := range c.origin {
		if strings.HasPrefix(p, field+".") || strings.HasPrefix(p, field+"[") {
			delete(c.origin, p)
		}
	}
	c.origin[field] = flag
}

// Source says where the field's value came from: "config FILE", a flag, or "default".
// A list item (modules[2]) came from where its list did.
func (c *Config) Source(field string) string {
	if s := c.origin[field]; s != "" {
		return s
	}
	if i := strings.IndexByte(field, '['); i > 0 {
		return c.Source(field[:i])
	}
	return "default"
}

// fieldError is a problem with a setting, placed where its value came from: the line in
// the file, or the flag.
func (c *Config) fieldError(field, msg string) *FieldError {
	e := &FieldError{Field: field, Source: c.Source(field), Msg: msg}
	if c.doc != nil && strings.HasPrefix(e.Source, "config ") {
		pos := c.doc.Locate(field)
		e.File, e.Line, e.Col = c.doc.File, pos.Line, pos.Col
	}
	return e
}

// FieldError is a setting that cannot be used.
type FieldError struct {
	Field  string // dotted path, e.g. broker.url or modules[1]
	Source string // "config FILE", "--flag" or "default"
	Msg    string
	// File, Line and Col place a value that came from the configuration file.
	File      string
	Line, Col int
}

// Error reads FILE:LINE:COL: field: problem for a value from the file, "field (--flag):
// problem" for a flag's, "field: problem" for a default.
func (e *FieldError) Error() string {
	if e.Line > 0 {
		return (&yamlstrict.Error{File: e.File, Line: e.Line, Col: e.Col, Path: e.Field, Msg: e.Msg}).Error()
	}
	if e.Source == "" || e.Source == "default" {
		return e.Field + ": " + e.Msg
	}
	return fmt.Sprintf("%s (%s): %s", e.Field, e.Source, e.Msg)
}

// Resolved is a validated configuration.
type Resolved struct {
	Agent     agent.Config
	LogLevel  zerolog.Level
	LogFormat string // "json", "console" or "" (choose by the output)
	// Warnings are for the operator: the configuration works, but not as it should.
	Warnings []string
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
		cfg.Certificates = []tls.Certificate{pair}
	}
	a.TLS = cfg
}

// DefaultID derives an agent ID from a host name: lower-cased, with every character an
// agent ID may not hold replaced by '-', leading ones dropped, and at most
// protocol.MaxAgentIDLen bytes.
func DefaultID(hostname string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToLower(hostname) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '@', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	id := strings.TrimLeft(b.String(), "-_@")
	if len(id) > protocol.MaxAgentIDLen {
		id = id[:protocol.MaxAgentIDLen]
	}
	if err := protocol.ValidateAgentID(id); err != nil {
		return "", fmt.Errorf("no agent ID can be made of host name %q", hostname)
	}
	return id, nil
}

// idMessage is ValidateAgentID's explanation without its field prefix (the caller names
// the field).
func idMessage(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return strings.TrimPrefix(pe.Message, "agent_id: ")
	}
	return err.Error()
}

func password(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}

func readPassword(path string) (string, error) {
	if err := checkPrivate(path); err != nil {
		return "", err
	}
	data, err := readSmall(path)
	if err != nil {
		return "", err
	}
	pw := strings.TrimRight(string(data), "\r\n")
	if pw == "" || strings.ContainsAny(pw, "\r\n") {
		return "", fmt.Errorf("%s must hold the password on one line", path)
	}
	return pw, nil
}

// checkPrivate refuses a file other users may read, or anyone but its owner may write.
// Windows has ACLs instead of modes: the installer sets them.
func checkPrivate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if runtime.GOOS == "windows" {
		return nil
	}
	if m := st.Mode().Perm(); m&0o027 != 0 {
		return fmt.Errorf("%s is open to other users (mode %04o): chmod 600 it, or 640 with the agent's group", path, m)
	}
	return nil
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read-only
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}
