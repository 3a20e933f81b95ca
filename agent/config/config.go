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
	"fmt"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

// DefaultBrokerURL is the development broker on the loopback interface.
const DefaultBrokerURL = "amqp://guest:guest@127.0.0.1:5672/"

// CredentialName is the systemd credential (LoadCredential=broker-password:FILE) read
// for the broker password when the configuration gives none.
const CredentialName = "broker-password"

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
	// MetricsListen is where Prometheus metrics are served (host:port); empty: nowhere.
	MetricsListen string `yaml:"metrics_listen"`
	// Enrol lets run enrol the agent itself on its first start, as tokenfleet-agent enrol
	// does: what a software-distribution package carries.
	Enrol Enrol `yaml:"enrol"`

	// origin names where each setting that is not a default came from, by field path.
	origin map[string]string
	// doc is the configuration file as read, for the position of its settings.
	doc *yamlstrict.Doc
}

// Enrol is self-enrolment on first start. Once enrolled (DATA/enrolment.json), it is
// not used again.
type Enrol struct {
	Coordinator   string `yaml:"coordinator"`    // https://coordinator.example.org:8443
	Code          string `yaml:"code"`           // the enrolment key or code (tfe_...); keep the file 0600
	CodeFile      string `yaml:"code_file"`      // or a file holding it
	CAFingerprint string `yaml:"ca_fingerprint"` // SHA-256 of the coordinator's TLS CA
	CAFile        string `yaml:"ca_file"`        // or the CA itself (PEM); neither: the system roots
	Session       string `yaml:"session"`        // a user session on a shared terminal server
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
