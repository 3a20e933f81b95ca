package coordinator

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

// Defaults.
const (
	DefaultListen        = "127.0.0.1:8443"
	DefaultDataDir       = "/var/lib/tokenfleet" // the service's state directory
	DefaultSweepInterval = 30 * time.Second
	// DatabaseFile is the SQLite database's name inside the data directory.
	DatabaseFile = "coordinator.db"
	// AdminTokenFile holds the bootstrap administrator's API token (mode 0600).
	AdminTokenFile = "admin.token"
)

// Config is the coordinator's configuration: a YAML file (LoadConfig), overridden by
// command-line flags. Field names in YAML are the snake_case tags.
type Config struct {
	// Listen is the address of the HTTP API (host:port).
	Listen string `yaml:"listen"`
	// DataDir holds the SQLite database and the bootstrap admin token (created 0700).
	DataDir  string         `yaml:"data_dir"`
	Database DatabaseConfig `yaml:"database"`
	TLS      TLSConfig      `yaml:"tls"`
	// InsecureHTTP allows plain HTTP on a non-loopback address. Tokens then cross the
	// network in clear: only behind a TLS-terminating proxy on a trusted link.
	InsecureHTTP bool      `yaml:"insecure_http"`
	Log          LogConfig `yaml:"log"`
	// ExpirySweepInterval is how often jobs are checked for expiry.
	ExpirySweepInterval Duration `yaml:"expiry_sweep_interval"`
	// Broker is the AMQP broker jobs and events travel through.
	Broker BrokerConfig `yaml:"broker"`
	// CA is the built-in CA that signs the checked CSRs.
	CA CAConfig `yaml:"ca"`
	// Audit configures the signed checkpoints of the audit log.
	Audit AuditConfig `yaml:"audit"`
	// APITokens bounds the life of the API tokens the coordinator issues.
	APITokens APITokensConfig `yaml:"api_tokens"`
	// Rollouts tunes the rollout engine.
	Rollouts RolloutsConfig `yaml:"rollouts"`
	// Notifications sends e-mails and webhooks (config_notify.go).
	Notifications NotificationsConfig `yaml:"notifications"`
	// Console is the web console and how people sign in to it (config_console.go).
	Console ConsoleConfig `yaml:"console"`
	// Escrow governs the recovery of escrowed encryption keys.
	Escrow EscrowConfig `yaml:"escrow"`

	// src says where each setting came from, for errors; nil for a Config built in code.
	src *configSource
}

// DatabaseConfig chooses the store.
type DatabaseConfig struct {
	// Driver is "sqlite" (default; the file DataDir/coordinator.db) or "postgres".
	Driver string `yaml:"driver"`
	// DSN is the PostgreSQL connection string, or the SQLite file when it should not be
	// in the data directory.
	DSN string `yaml:"dsn"`
}

// TLSConfig names the server's certificate and key (PEM files).
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// APITokensConfig bounds API token lifetimes. Only the bootstrap token never expires.
type APITokensConfig struct {
	// DefaultTTL is the life of a token issued without one (default 90 days).
	DefaultTTL Duration `yaml:"default_ttl"`
	// MaxTTL is the longest life a token may be issued with (default 1 year).
	MaxTTL Duration `yaml:"max_ttl"`
}

// RolloutsConfig tunes the rollout engine.
type RolloutsConfig struct {
	// Interval is how often the engine looks at every running rollout without being told
	// of news (a rollout approved, resumed or promoted, one of its jobs ended, on this
	// coordinator); default 1s. Coordinators sharing a database learn of each other's news
	// this way.
	Interval Duration `yaml:"interval"`
}

// EscrowConfig governs the recovery of escrowed encryption keys.
type EscrowConfig struct {
	// RecoveryApprovals is how many key-recovery officers approve each recovery, never the
	// requester or the holder; at least 1, default 2.
	RecoveryApprovals int `yaml:"recovery_approvals"`
	// TrustedIssuers are PEM files of CA certificates (one or more each) whose
	// certificates a register_certificate job may record as a holder's encryption key,
	// besides the coordinator's own CA. The certificate must be issued directly by one.
	TrustedIssuers []string `yaml:"trusted_issuers"`
}

// DefaultRolloutInterval is the rollout engine's default pass interval.
const DefaultRolloutInterval = time.Second

// LogConfig sets the log level and format.
type LogConfig struct {
	// Level is debug, info, warn or error (default info).
	Level string `yaml:"level"`
	// Format is json, console, or auto (default: console when stderr is a terminal).
	Format string `yaml:"format"`
}

// Duration is a Go duration in YAML ("30s", "5m").
type Duration time.Duration

// UnmarshalYAML refuses a bare number: its unit would be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := yamlstrict.Duration(n)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// DefaultConfig returns the configuration used when neither file nor flag says otherwise.
func DefaultConfig() Config {
	return Config{Listen: DefaultListen, DataDir: DefaultDataDir, Database: DatabaseConfig{Driver: store.DriverSQLite},
		Log: LogConfig{Level: "info", Format: "auto"}, ExpirySweepInterval: Duration(DefaultSweepInterval),
		Broker:    BrokerConfig{URL: DefaultBrokerURL},
		APITokens: APITokensConfig{DefaultTTL: Duration(service.DefaultAPITokenTTL), MaxTTL: Duration(service.MaxAPITokenTTL)},
		Rollouts:  RolloutsConfig{Interval: Duration(DefaultRolloutInterval)}, Notifications: defaultNotifications(),
		Console: defaultConsole(), Escrow: EscrowConfig{RecoveryApprovals: service.DefaultRecoveryApprovals}}
}

// maxConfigSize bounds the configuration file.
const maxConfigSize = 1 << 20

// LoadConfig reads a configuration file over the defaults, strictly: unknown fields, keys
// given twice and wrong types are refused, each a *FieldError naming the file, line,
// column and field. It does not validate; call Validate once flags are applied (SetBy),
// and its errors point into the file too.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return Config{}, fmt.Errorf("config %s: larger than %d bytes", path, maxConfigSize)
	}
	doc, err := yamlstrict.Decode(path, data, &cfg)
	if err != nil {
		return Config{}, fieldErrors(err)
	}
	cfg.src = &configSource{doc: doc, flags: map[string]string{}}
	return cfg, nil
}

// configSource says where the settings of a Config came from.
type configSource struct {
	doc   *yamlstrict.Doc   // the file
	flags map[string]string // field path → the flag that overrode the file
}

// SetBy records that a flag (e.g. "--listen") set the field (a path such as
// "database.driver"), so that errors about it name the flag rather than the file.
func (c *Config) SetBy(field, flag string) {
	if c.src == nil {
		c.src = &configSource{flags: map[string]string{}}
	}
	c.src.flags[field] = flag
}

// fieldError is a problem with a setting, placed where the setting came from.
func (c Config) fieldError(field, msg string) *FieldError {
	e := &FieldError{Field: field, Msg: msg}
	switch {
	case c.src == nil:
	case c.src.flags[field] != "":
		e.Flag = c.src.flags[field]
	case c.src.doc != nil:
		pos := c.src.doc.Locate(field)
		e.File, e.Line, e.Col = c.src.doc.File, pos.Line, pos.Col
	}
	return e
}

// fieldErrors turns the decoder's errors into FieldErrors.
func fieldErrors(err error) error {
	return yamlstrict.Convert(err, func(ye *yamlstrict.Error) error {
		return &FieldError{Field: ye.Path, Msg: ye.Msg, File: ye.File, Line: ye.Line, Col: ye.Col}
	}, func(e error) error { return fmt.Errorf("config: %w", e) })
}

// FieldError is a configuration problem with the field it concerns and, when known,
// where its value came from: a position in the file, or a flag.
type FieldError struct {
	Field string // path, e.g. "database.driver"; "" for the file as a whole
	Msg   string
	File  string // the configuration file, when the value came from it
	Line  int
	Col   int
	Flag  string // the flag that set the value, e.g. "--listen"
}

// Error reads FILE:LINE:COL: field: problem for a value from the file, "config: field
// (--flag): problem" for one from a flag, "config: field: problem" otherwise.
func (e *FieldError) Error() string {
	field := e.Field
	if e.Flag != "" {
		field += " (" + e.Flag + ")"
	}
	if e.File == "" {
		return "config: " + field + ": " + e.Msg
	}
	return (&yamlstrict.Error{File: e.File, Line: e.Line, Col: e.Col, Path: field, Msg: e.Msg}).Error()
}

// Validate checks the configuration; every problem is reported, each naming its field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, c.fieldError(field, fmt.Sprintf(format, args...)))
	}
	if host, port, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port (e.g. %s): %v", c.Listen, DefaultListen, err)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		bad("listen", "port %q of %q is not a number from 0 to 65535", port, c.Listen)
	} else if strings.ContainsAny(host, " /") {
		bad("listen", "host %q of %q is not a host name or address", host, c.Listen)
	}
	if c.DataDir == "" {
		bad("data_dir", "is required")
	}
	switch c.Database.Driver {
	case store.DriverSQLite:
	case store.DriverPostgres:
		if c.Database.DSN == "" {
			bad("database.dsn", "is required with driver postgres (e.g. postgres://user@host:5432/tokenfleet)")
		}
	default:
		bad("database.driver", "%q is neither %s nor %s", c.Database.Driver, store.DriverSQLite, store.DriverPostgres)
	}
	switch {
	case c.TLS.CertFile != "" && c.TLS.KeyFile == "":
		bad("tls.key_file", "is required when tls.cert_file is set")
	case c.TLS.CertFile == "" && c.TLS.KeyFile != "":
		bad("tls.cert_file", "is required when tls.key_file is set")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "json", "console":
	default:
		bad("log.format", "%q is not one of auto, json, console", c.Log.Format)
	}
	if d := time.Duration(c.ExpirySweepInterval); d < time.Second || d > time.Hour {
		bad("expiry_sweep_interval", "%s is outside 1s..1h", d)
	}
	if d := time.Duration(c.Rollouts.Interval); d < 100*time.Millisecond || d > time.Minute {
		bad("rollouts.interval", "%s is outside 100ms..1m", d)
	}
	if n := c.Escrow.RecoveryApprovals; n < 1 || n > jobs.MaxRequired {
		bad("escrow.recovery_approvals", "%d: want 1 to %d key-recovery officers", n, jobs.MaxRequired)
	}
	c.validateDispatch(bad)
	c.validateManagement(bad)
	c.validateAudit(bad)
	c.validateNotifications(bad)
	c.validateConsole(bad)
	switch def, maxTTL := time.Duration(c.APITokens.DefaultTTL), time.Duration(c.APITokens.MaxTTL); {
	case def <= 0:
		bad("api_tokens.default_ttl", "%s is not positive (e.g. 2160h for 90 days)", def)
	case maxTTL <= 0:
		bad("api_tokens.max_ttl", "%s is not positive (e.g. 8760h for a year)", maxTTL)
	case def > maxTTL:
		bad("api_tokens.default_ttl", "%s is longer than api_tokens.max_ttl %s; shorten it or raise the maximum", def, maxTTL)
	}
	return errors.Join(errs...)
}

// TLSEnabled reports whether the API is served over TLS.
func (c Config) TLSEnabled() bool { return c.TLS.CertFile != "" }

// storeConfig locates the database.
func (c Config) storeConfig() store.Config {
	if c.Database.Driver == store.DriverSQLite && c.Database.DSN == "" {
		return store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(c.DataDir, DatabaseFile)}
	}
	return store.Config{Driver: c.Database.Driver, DSN: c.Database.DSN}
}

// IsLoopback reports whether a listen address only accepts local connections:
// 127.0.0.0/8, ::1 or localhost. An empty host (every interface) is not loopback.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkTransport refuses plain HTTP on a non-loopback address unless forced.
func (c Config) checkTransport() error {
	if c.TLSEnabled() || IsLoopback(c.Listen) || c.InsecureHTTP {
		return nil
	}
	return c.fieldError("listen", fmt.Sprintf("%s is not a loopback address and no TLS certificate is configured: "+
		"API tokens would cross the network in clear; set tls.cert_file and tls.key_file (--tls-cert, --tls-key), "+
		"or --insecure-http when a TLS proxy on a trusted link fronts the coordinator", c.Listen))
}
