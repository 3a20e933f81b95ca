package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/systemd"
)

// install bakes the flags it was given into the service's arguments, paths absolute.
func TestServiceArguments(t *testing.T) {
	var o agentFlags
	cmd := &cobra.Command{Use: "install", RunE: func(*cobra.Command, []string) error { return nil }}
	o.register(cmd.Flags())
	cmd.Flags().String("log-level", "warn", "")
	cmd.SetArgs([]string{"--config", "agent.yaml", "--id", "alice@ts-01", "--module", "lib/a.so", "--module", "/usr/lib/b.so",
		"--no-usb", "--data", "state", "--poll-interval", "2s", "--log-level", "debug"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	args, err := o.serviceArguments(cmd)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	want := []string{"run", "--config", filepath.Join(wd, "agent.yaml"),
		"--data", filepath.Join(wd, "state"), "--id", "alice@ts-01", "--log-level", "debug",
		"--module", filepath.Join(wd, "lib/a.so"), "--module", "/usr/lib/b.so", "--no-usb=true", "--poll-interval", "2s"}
	if !slices.Equal(args, want) {
		t.Errorf("arguments\n%q\nwant\n%q", args, want)
	}
}

// The unit install writes is the shipped one with its own ExecStart; both pass
// systemd-analyze verify.
func TestSystemdUnits(t *testing.T) {
	tmpl, err := systemdUnitTemplate()
	if err != nil {
		t.Fatal(err)
	}
	shipped := strings.Split(systemd.AgentUnit, "\n")
	got := strings.Split(tmpl, "\n")
	if len(got) != len(shipped) {
		t.Fatalf("the template has %d lines, the unit %d", len(got), len(shipped))
	}
	for i := range got {
		if got[i] != shipped[i] && (!strings.HasPrefix(shipped[i], "ExecStart=") || got[i] != execStartTemplate) {
			t.Errorf("line %d: %q, shipped %q", i+1, got[i], shipped[i])
		}
	}
	for _, want := range []string{"Type=notify", "NotifyAccess=main", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"NoNewPrivileges=yes", "StateDirectory=tokenfleet-agent", "CapabilityBoundingSet=\n", "DevicePolicy=closed",
		"DeviceAllow=char-usb_device rw", "DeviceAllow=char-hidraw rw", "PrivateDevices=no", "ReadOnlyPaths=-/run/pcscd",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "SystemCallFilter=@system-service", "RestartPreventExitStatus=2",
		"ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(systemd.AgentUnit, want) {
			t.Errorf("the agent unit lacks %q", want)
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is needed to check the units (apt-get install systemd): %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The unit as install renders it: this program with quoted arguments.
	rendered := strings.Replace(tmpl, execStartTemplate, "ExecStart="+exe+` "run" "--config" "/etc/tokenfleet/agent.yaml" "--id" "alice@ts-01"`, 1)
	coordinator := strings.Replace(systemd.CoordinatorUnit, "ExecStart=/usr/bin/tokenfleet-coordinator", "ExecStart="+exe, 1)
	for name, unit := range map[string]string{"tokenfleet-agent.service": rendered, "tokenfleet-coordinator.service": coordinator} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", path).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
	}
}
