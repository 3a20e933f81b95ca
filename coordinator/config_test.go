package coordinator_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "coordinator.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig(t *testing.T) {
	p := writeConfig(t, `# every field
listen: 0.0.0.0:9443
data_dir: /srv/tokenfleet
database:
  driver: postgres
  dsn: postgres://tf@db.example:5432/tokenfleet
tls:
  cert_file: /etc/tokenfleet/cert.pem
  key_file: /etc/tokenfleet/key.pem
insecure_http: false
log:
  level: debug
  format: json
expiry_sweep_interval: 2m
broker:
  url: amqps://tf:secret@mq.example:5671/tokenfleet
  agent_users: per_agent
ca:
  dir: /srv/tokenfleet/pki
  cert_file: /etc/tokenfleet/ca.pem
  key_file: /etc/tokenfleet/ca-key.pem
  name: Example CA
  organization: Example
  crl_url: http://pki.example/tokenfleet.crl
api_tokens:
  default_ttl: 720h
rollouts:
  interval: 2s
escrow:
  recovery_approvals: 3
`)
	cfg, err := coordinator.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	want := coordinator.Config{Listen: "0.0.0.0:9443", DataDir: "/srv/tokenfleet",
		Database: coordinator.DatabaseConfig{Driver: "postgres", DSN: "postgres://tf@db.example:5432/tokenfleet"},
		TLS:      coordinator.TLSConfig{CertFile: "/etc/tokenfleet/cert.pem", KeyFile: "/etc/tokenfleet/key.pem"},
		Log:      coordinator.LogConfig{Level: "debug", Format: "json"}, ExpirySweepInterval: coordinator.Duration(2 * time.Minute),
		Broker: coordinator.BrokerConfig{URL: "amqps://tf:secret@mq.example:5671/tokenfleet", AgentUsers: "per_agent"},
		CA: coordinator.CAConfig{Dir: "/srv/tokenfleet/pki", CertFile: "/etc/tokenfleet/ca.pem", KeyFile: "/etc/tokenfleet/ca-key.pem",
			Name: "Example CA", Organization: "Example", CRLURL: "http://pki.example/tokenfleet.crl"},
		// The maximum not given keeps its default.
		APITokens: coordinator.APITokensConfig{DefaultTTL: coordinator.Duration(30 * 24 * time.Hour), MaxTTL: coordinator.Duration(365 * 24 * time.Hour)},
		Rollouts:  coordinator.RolloutsConfig{Interval: coordinator.Duration(2 * time.Second)}}
	want.Notifications = coordinator.DefaultConfig().Notifications
	want.Console = coordinator.DefaultConfig().Console
	want.Escrow = coordinator.EscrowConfig{RecoveryApprovals: 3}
	if !reflect.DeepEqual(coordinator.WithoutSource(cfg), want) {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	// Fields left out keep their defaults; an empty file is all defaults.
	cfg, err = coordinator.LoadConfig(writeConfig(t, "listen: 127.0.0.1:1234\n"))
	if err != nil || cfg.Listen != "127.0.0.1:1234" || cfg.DataDir != coordinator.DefaultDataDir || cfg.Database.Driver != "sqlite" {
		t.Fatalf("partial file: %+v, %v", cfg, err)
	}
	cfg, err = coordinator.LoadConfig(writeConfig(t, "# nothing\n"))
	if err != nil || !reflect.DeepEqual(coordinator.WithoutSource(cfg), coordinator.DefaultConfig()) {
		t.Fatalf("empty file: %+v, %v", cfg, err)
	}
	if _, err := coordinator.LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // all must appear
	}{
		{"unknown field", "listen: 127.0.0.1:1\nport: 80\n", []string{`:2:1: port: unknown field "port" (known fields: listen, data_dir, database, tls, insecure_http, log, expiry_sweep_interval, broker, ca, audit, api_tokens, rollouts, notifications, console, escrow)`}},
		{"misspelt field", "listen: 127.0.0.1:1\ndata-dir: /srv\n", []string{`:2:1: data-dir: unknown field "data-dir"; did you mean "data_dir"?`}},
		{"unknown nested field", "database:\n  driver: sqlite\n  user: x\n", []string{`:3:3: database.user: unknown field "user" (known fields: driver, dsn)`}},
		{"wrong type", "listen: [1, 2]\n", []string{":1:9: listen: want text, got a list"}},
		{"bool as string", "insecure_http: perhaps\n", []string{`:1:16: insecure_http: want true or false, got text "perhaps"`}},
		{"duration without unit", "expiry_sweep_interval: 30\n", []string{":1:24: expiry_sweep_interval: 30 has no unit: write a duration like 30s or 30m"}},
		{"bad duration", "expiry_sweep_interval: soon\n", []string{`:1:24: expiry_sweep_interval: "soon" is not a duration like 15m`}},
		{"key twice", "listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n", []string{":2:1: listen: given twice (first on line 1): keep one"}},
		{"two documents", "listen: 127.0.0.1:1\n---\nlisten: 127.0.0.1:2\n", []string{":2:1: a second YAML document"}},
		{"not YAML", "listen: [\n", []string{":1:1: not valid YAML: "}},
		{"tab", "log:\n\tlevel: debug\n", []string{":2:1: a tab in the indentation"}},
		{"bad listen", "listen: nowhere\n", []string{":1:9: listen: ", "host:port"}},
		{"bad port", "listen: 127.0.0.1:http\n", []string{"listen:", "port"}},
		{"unknown driver", "database: {driver: mysql}\n", []string{`:1:20: database.driver: "mysql" is neither sqlite nor postgres`}},
		{"postgres without DSN", "database: {driver: postgres}\n", []string{":1:1: database.dsn: is required"}},
		{"certificate without key", "tls: {cert_file: /c.pem}\n", []string{"tls.key_file:"}},
		{"key without certificate", "tls: {key_file: /k.pem}\n", []string{"tls.cert_file:"}},
		{"log level", "log:\n  level: loud\n", []string{`:2:10: log.level: "loud" is not one of`}},
		{"log format", "log: {format: xml}\n", []string{"log.format:", "xml"}},
		{"sweep too often", "expiry_sweep_interval: 10ms\n", []string{"expiry_sweep_interval:"}},
		{"empty data dir", "data_dir: \"\"\n", []string{"data_dir:"}},
		{"API token default over the maximum", "api_tokens: {default_ttl: 9000h, max_ttl: 8760h}\n", []string{"api_tokens.default_ttl:", "max_ttl"}},
		{"API token maximum not positive", "api_tokens: {max_ttl: 0s}\n", []string{"api_tokens.max_ttl:"}},
		{"empty broker URL", "broker: {url: \"\"}\n", []string{"broker.url:", "required"}},
		{"broker URL not AMQP", "broker: {url: \"http://u:pw@mq:15672/\"}\n", []string{"broker.url:", "amqp://"}},
		{"broker password kept out", "broker: {url: \"https://u:hunter2@mq/\"}\n", []string{"broker.url:", "xxxxx"}},
		{"agent users", "broker: {agent_users: everyone}\n", []string{"broker.agent_users:", "everyone"}},
		{"CA certificate without key", "ca: {cert_file: /ca.pem}\n", []string{"ca.key_file:"}},
		{"CA key without certificate", "ca: {key_file: /k.pem}\n", []string{"ca.cert_file:"}},
		{"CRL URL relative", "ca: {crl_url: /crl}\n", []string{"ca.crl_url:"}},
		{"CRL URL without path", "ca: {crl_url: \"http://pki.example\"}\n", []string{"ca.crl_url:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			writtenPath := writeConfig(t, tc.yaml)
			cfg, err := coordinator.LoadConfig(writtenPath)
			if err == nil {
				err = cfg.Validate()
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if strings.HasPrefix(w, ":") {
					w = writtenPath + w // a position in the file
				}
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	// Every problem at once.
	cfg := coordinator.DefaultConfig()
	cfg.Listen, cfg.Log.Level = "x", "loud"
	err := cfg.Validate()
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *coordinator.FieldError
		if errors.As(e, &fe) {
			fields = append(fields, fe.Field)
		}
	}
	if strings.Join(fields, ",") != "listen,log.level" {
		t.Fatalf("fields %v", fields)
	}

	// A flag's value is blamed on the flag, the file's on its line.
	p := writeConfig(t, "listen: 127.0.0.1:1\nlog: {level: loud}\n")
	cfg, err = coordinator.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = "x"
	cfg.SetBy("listen", "--listen")
	err = cfg.Validate()
	for _, w := range []string{`config: listen (--listen): "x" is not host:port`, p + `:2:14: log.level: "loud" is not one of debug, info, warn, error`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v lacks %q", err, w)
		}
	}
}

func TestConfigRecoveryApprovals(t *testing.T) {
	cfg := coordinator.DefaultConfig()
	if cfg.Escrow.RecoveryApprovals != 2 {
		t.Fatalf("default recovery approvals %d, want 2", cfg.Escrow.RecoveryApprovals)
	}
	for _, n := range []int{0, -1, 11} {
		cfg.Escrow.RecoveryApprovals = n
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "escrow.recovery_approvals") {
			t.Errorf("%d approvals: %v, want a refusal naming escrow.recovery_approvals", n, err)
		}
	}
}
