package config_test

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/agent/config"
)

func TestExampleLoads(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "broker-password")
	if err := os.WriteFile(pw, []byte("s3cret-Pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load("agent.example.yaml")
	if err != nil {
		t.Fatalf("the example configuration: %v", err)
	}
	c.Broker.PasswordFile = pw // the example's path is for a real host
	c.SetBy("broker.password_file", "--broker-password-file")
	r, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	a := r.Agent
	if a.ID != "ws-0042" || a.DataDir != "/var/lib/tokenfleet-agent" || a.PollInterval != time.Second ||
		a.HeartbeatInterval != 15*time.Second || a.Broker.Queue != agent.QueueCheck || len(a.Broker.CoordinatorUsers) != 1 {
		t.Errorf("resolved %+v", a)
	}
	u, err := url.Parse(a.Broker.URL)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := u.User.Password(); p != "s3cret-Pw" || u.User.Username() != "agent-ws-0042" {
		t.Errorf("the password file's password is not in the URL")
	}
	if r.LogFormat != "json" || r.LogLevel.String() != "info" {
		t.Errorf("log %s %s", r.LogFormat, r.LogLevel)
	}
}

func TestDefaults(t *testing.T) {
	c := config.Default()
	c.ID = "ws-01"
	r, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if r.Agent.Broker.URL != config.DefaultBrokerURL || r.Agent.DataDir != config.DefaultDataDir() || r.Agent.NoUSB || r.Agent.Broker.Queue != agent.QueueAuto {
		t.Errorf("defaults: %+v", r.Agent)
	}
}

// Strict decoding: the error names the file, line, column and field, in the file's terms.
func TestLoadNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string // every error, in order
	}{
		{"testdata/unknown-field.yaml", []string{
			`testdata/unknown-field.yaml:4:3: broker.urll: unknown field "urll"; did you mean "url"? (known fields: url, password_file, ca_file, cert_file, key_file, queue, heartbeat, coordinator_users)`,
		}},
		{"testdata/wrong-type.yaml", []string{
			`testdata/wrong-type.yaml:2:16: poll_interval: 15 has no unit: write a duration like 15s or 15m`,
			`testdata/wrong-type.yaml:3:10: modules: want a list, got text "/usr/lib/softhsm/libsofthsm2.so" (write [a, b], or one "- item" a line)`,
		}},
		{"testdata/key-twice.yaml", []string{
			`testdata/key-twice.yaml:7:3: log.level: given twice (first on line 6): keep one`,
		}},
	} {
		_, err := config.Load(tc.file)
		if err == nil {
			t.Errorf("%s loaded", tc.file)
			continue
		}
		if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("%s: error\n%s\nwant\n%s", tc.file, err, strings.Join(tc.want, "\n"))
		}
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.File != tc.file || fe.Line == 0 || fe.Col == 0 {
			t.Errorf("%s: %#v is not a placed FieldError", tc.file, fe)
		}
		if strings.Contains(err.Error(), "config.Config") || strings.Contains(err.Error(), "time.Duration") {
			t.Errorf("%s: error %q speaks Go", tc.file, err)
		}
	}
}

// Every invalid value is reported at once, each with its field and where it came from.
func TestResolveReportsEveryField(t *testing.T) {
	c, err := config.Load("testdata/invalid-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Resolve()
	if err == nil {
		t.Fatal("invalid values resolved")
	}
	src := "testdata/invalid-values.yaml:"
	for _, w := range []string{
		src + `1:5: id: "WS 01" contains upper case 'W'`,
		src + `3:8: broker.url: scheme "http": want amqp or amqps`,
		src + `4:10: broker.queue: "sometimes": want auto, declare or check`,
		src + `6:10: log.level: "loud"`,
		src + "7:21: heartbeat_interval: -5s is negative",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	var fe *config.FieldError
	if !errors.As(err, &fe) {
		t.Errorf("%T is not a FieldError", err)
	}

	// A list item is placed at its own line; when a flag replaced the list, the flag is
	// blamed instead.
	c, err = config.Load("testdata/empty-module.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := `testdata/empty-module.yaml:4:5: modules[1]: empty: give a module path or remove the entry`
	if _, err := c.Resolve(); err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
	c.SetBy("modules", "--module")
	want = `modules[1] (--module): empty: give a module path or remove the entry`
	if _, err := c.Resolve(); err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}

	// A flag's value is blamed on the flag.
	c = config.Default()
	c.ID = "-ws"
	c.SetBy("id", "--id")
	if _, err := c.Resolve(); err == nil || !strings.Contains(err.Error(), "id (--id): ") {
		t.Errorf("error %v does not name --id", err)
	}
}

func TestDefaultID(t *testing.T) {
	for host, want := range map[string]string{
		"WS-01":                   "ws-01",
		"ws-01.corp.example.org":  "ws-01-corp-example-org",
		"Alice's PC":              "alice-s-pc",
		"-lead":                   "lead",
		strings.Repeat("a", 300):  strings.Repeat("a", 128),
		"TERMINAL_SERVER@SITE-02": "terminal_server@site-02",
	} {
		got, err := config.DefaultID(host)
		if err != nil || got != want {
			t.Errorf("DefaultID(%q) = %q, %v; want %q", host, got, err, want)
		}
	}
	for _, host := range []string{"", "---", "ÄÖ"} {
		if id, err := config.DefaultID(host); err == nil {
			t.Errorf("DefaultID(%q) = %q, want an error", host, id)
		}
	}
}

func TestPasswordFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask
			t.Fatal(err)
		}
		return p
	}
	resolve := func(c config.Config) (string, error) {
		c.ID = "ws-01"
		r, err := c.Resolve()
		if err != nil {
			return "", err
		}
		return r.Agent.Broker.URL, nil
	}

	c := config.Default()
	c.Broker.URL = "amqp://agent-ws-01@broker.example.org/"
	c.Broker.PasswordFile = write("open", "pw\n", 0o644)
	if _, err := resolve(c); err == nil || !strings.Contains(err.Error(), "broker.password_file") || !strings.Contains(err.Error(), "mode 0644") {
		t.Errorf("a password file others may read: %v", err)
	}
	c.Broker.PasswordFile = write("group", "pw\n", 0o640)
	if u, err := resolve(c); err != nil || u != "amqp://agent-ws-01:pw@broker.example.org/" {
		t.Errorf("a password file of mode 0640: %q, %v", u, err)
	}
	c.Broker.URL = "amqp://agent-ws-01:other@broker.example.org/"
	if _, err := resolve(c); err == nil || !strings.Contains(err.Error(), "in one place") {
		t.Errorf("two passwords: %v", err)
	}

	// A configuration file holding the password must be private too.
	cfg := write("agent.yaml", "broker:\n  url: amqp://u:secret@broker.example.org/\n", 0o644)
	if _, err := config.Load(cfg); err == nil || !strings.Contains(err.Error(), "holds the broker password") {
		t.Errorf("a world-readable configuration with a password: %v", err)
	}
	if err := os.Chmod(cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(cfg); err != nil {
		t.Errorf("a private configuration with a password: %v", err)
	}

	// Under systemd, the credential broker-password is used when nothing else gives one.
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, config.CredentialName), []byte("from-systemd"), 0o400); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	c = config.Default()
	c.Broker.URL = "amqp://agent-ws-01@broker.example.org/"
	if u, err := resolve(c); err != nil || u != "amqp://agent-ws-01:from-systemd@broker.example.org/" {
		t.Errorf("the systemd credential: %q, %v", u, err)
	}
}

func TestTLSFiles(t *testing.T) {
	c := config.Default()
	c.ID = "ws-01"
	c.Broker.CAFile = "agent.example.yaml"
	if _, err := c.Resolve(); err == nil || !strings.Contains(err.Error(), "broker.ca_file: set, but the broker URL is not amqps://") {
		t.Errorf("a CA file with amqp://: %v", err)
	}
	c.Broker.URL = "amqps://broker.example.org/"
	if _, err := c.Resolve(); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("a CA file without certificates: %v", err)
	}
	c.Broker.CAFile, c.Broker.CertFile = "", "x.pem"
	if _, err := c.Resolve(); err == nil || !strings.Contains(err.Error(), "needs both cert_file and key_file") {
		t.Errorf("a certificate without its key: %v", err)
	}
}

// metrics_listen is off by default, taken as host:port, and a wrong one names the field
// and where it came from.
func TestMetricsListen(t *testing.T) {
	c := config.Default()
	c.ID = "ws-01"
	r, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if r.Agent.MetricsListen != "" {
		t.Errorf("metrics on by default at %q", r.Agent.MetricsListen)
	}
	c.MetricsListen = "127.0.0.1:9310"
	if r, err = c.Resolve(); err != nil || r.Agent.MetricsListen != "127.0.0.1:9310" {
		t.Errorf("resolved %+v, %v", r, err)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte("id: ws-01\nmetrics_listen: 9310\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = config.Load(path); err != nil {
		t.Fatal(err)
	}
	want := path + `:2:17: metrics_listen: "9310": want HOST:PORT, e.g. 127.0.0.1:9310`
	if _, err := c.Resolve(); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want it to start with %s", err, want)
	}
	c.MetricsListen = "127.0.0.1:http"
	c.SetBy("metrics_listen", "--metrics-listen")
	want = `metrics_listen (--metrics-listen): "127.0.0.1:http": port "http": want a number from 1 to 65535`
	if _, err := c.Resolve(); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want it to start with %s", err, want)
	}
}

// The enrol section: a coordinator and the code in exactly one place; the code file is
// read, and a bad combination names its field.
func TestEnrolSection(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte("tfe_abc_secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const url = "https://coordinator.example.org:8443"
	for _, tc := range []struct {
		name string
		e    config.Enrol
		want string // error; "" resolves
	}{
		{"none", config.Enrol{}, ""},
		{"code", config.Enrol{Coordinator: url, Code: " tfe_abc_secret "}, ""},
		{"code file", config.Enrol{Coordinator: url, CodeFile: keyFile, CAFingerprint: "sha256:ab"}, ""},
		{"no coordinator", config.Enrol{Code: "tfe_x_y"}, "enrol.coordinator: is required with the enrol section"},
		{"no code", config.Enrol{Coordinator: url}, "enrol.code: is required with enrol.coordinator"},
		{"both", config.Enrol{Coordinator: url, Code: "tfe_x_y", CodeFile: keyFile}, "enrol.code_file: set with enrol.code"},
		{"empty file", config.Enrol{Coordinator: url, CodeFile: empty}, "is empty: write the enrolment key or code"},
		{"missing file", config.Enrol{Coordinator: url, CodeFile: filepath.Join(dir, "nope")}, "enrol.code_file:"},
		{"two pins", config.Enrol{Coordinator: url, Code: "tfe_x_y", CAFingerprint: "ab", CAFile: keyFile}, "enrol.ca_file: set with enrol.ca_fingerprint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			c.ID = "ws-01"
			c.Enrol = tc.e
			r, err := c.Resolve()
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.e == (config.Enrol{}) {
				if r.Enrol != nil {
					t.Fatalf("enrol settings %+v without an enrol section", r.Enrol)
				}
				return
			}
			if r.Enrol == nil || r.Enrol.Code != "tfe_abc_secret" || r.Enrol.Coordinator != url {
				t.Fatalf("enrol settings %+v", r.Enrol)
			}
		})
	}
}
