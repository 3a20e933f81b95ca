package coordinator_test

import (
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/systemd"
)

// unitValues returns the values of a directive in a unit file.
func unitValues(unit, key string) []string {
	var out []string
	for _, l := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), key+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// The unit and the coordinator agree: the state directory is the default data directory
// (under ProtectSystem=strict it is the only place the coordinator may write), SIGHUP
// reloads, and a configuration error (exit status 2) is not restarted.
func TestUnitAgreesWithDefaults(t *testing.T) {
	unit := systemd.CoordinatorUnit
	state := unitValues(unit, "StateDirectory")
	if len(state) != 1 || "/var/lib/"+state[0] != coordinator.DefaultDataDir {
		t.Errorf("StateDirectory=%q, but the default data directory is %s", state, coordinator.DefaultDataDir)
	}
	if !strings.Contains(unit, "ProtectSystem=strict") {
		t.Error("the unit is no longer ProtectSystem=strict: review this test")
	}
	for key, want := range map[string]string{
		"ExecReload":               "/bin/kill -HUP $MAINPID",
		"RestartPreventExitStatus": "2",
		"ExecStart":                "/usr/bin/tokenfleet-coordinator serve --config /etc/tokenfleet/coordinator.yaml",
		"ConfigurationDirectory":   "tokenfleet",
	} {
		if got := unitValues(unit, key); len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
}

// The example configuration loads and validates, and is what the unit expects.
func TestExampleConfiguration(t *testing.T) {
	cfg, err := coordinator.LoadConfig("../examples/coordinator.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("examples/coordinator.yaml does not validate:\n%v", err)
	}
	if cfg.DataDir != coordinator.DefaultDataDir {
		t.Errorf("data_dir %s, the unit's state directory is %s", cfg.DataDir, coordinator.DefaultDataDir)
	}
	if !cfg.TLSEnabled() || cfg.CA.CRLURL == "" {
		t.Error("the example should serve TLS and name a public CRL URL")
	}
}

// The README's broker commands create each vhost and user before granting on them, and
// give the coordinator's user of the example configuration its permissions on the vhost
// of its URL.
func TestReadmeBrokerCommands(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(b)
	start := strings.Index(section, "## Deploying the coordinator")
	if start < 0 {
		t.Fatal(`README.md has no "## Deploying the coordinator" section`)
	}
	section = section[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	// One command a line: continuation lines joined.
	var cmds [][]string
	var cur string
	for _, l := range strings.Split(section, "\n") {
		l = strings.TrimSpace(l)
		if cur != "" {
			l = cur + " " + l
			cur = ""
		}
		if strings.HasSuffix(l, "\\") {
			cur = strings.TrimSuffix(l, "\\")
			continue
		}
		if strings.HasPrefix(l, "rabbitmqctl ") {
			cmds = append(cmds, strings.Fields(l))
		}
	}
	if len(cmds) == 0 {
		t.Fatal("no rabbitmqctl command in the README's coordinator section")
	}
	vhosts, users := map[string]bool{}, map[string]bool{}
	granted := map[string]bool{}   // user@vhost
	perms := map[string][]string{} // user@vhost: configure, write, read as the README quotes them
	for _, c := range cmds {
		switch c[1] {
		case "add_vhost":
			vhosts[c[2]] = true
			continue
		case "add_user":
			users[c[2]] = true
			continue
		}
		vhost := "/"
		var rest []string
		for i := 2; i < len(c); i++ {
			if c[i] == "-p" && i+1 < len(c) {
				vhost = c[i+1]
				i++
				continue
			}
			rest = append(rest, c[i])
		}
		if vhost != "/" && !vhosts[vhost] {
			t.Errorf("%q uses vhost %q before any add_vhost creates it", strings.Join(c, " "), vhost)
		}
		if len(rest) > 0 && !users[rest[0]] {
			t.Errorf("%q grants to user %q before any add_user creates it", strings.Join(c, " "), rest[0])
		}
		if c[1] == "set_permissions" && len(rest) > 0 {
			granted[rest[0]+"@"+vhost] = true
			perms[rest[0]+"@"+vhost] = rest[1:]
		}
	}
	cfg, err := coordinator.LoadConfig("../examples/coordinator.yaml")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(cfg.Broker.URL)
	if err != nil {
		t.Fatal(err)
	}
	who := u.User.Username() + "@" + path.Base(u.Path)
	if !granted[who] {
		t.Errorf("the README never gives the coordinator's broker user of examples/coordinator.yaml (%s) its permissions; granted: %v", who, granted)
	}
	// What it grants is what the coordinator needs (write to the default exchange included).
	p := protocol.CoordinatorPermissions()
	if got, want := perms[who], []string{"'" + p.Configure + "'", "'" + p.Write + "'", "'" + p.Read + "'"}; !slices.Equal(got, want) {
		t.Errorf("the README gives %s the permissions %q, want protocol.CoordinatorPermissions %q", who, got, want)
	}
}
