package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/fleetsim/cli"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestBadFlags: each bad flag is refused with exit status 2 and an error naming the flag
// and what is valid.
func TestBadFlags(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"run", "--broker", "amqp://guest:guest@127.0.0.1:5672/x", "--coordinator", "http://127.0.0.1:1", "--api-token-file", tokenFile}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no broker", []string{"run", "--coordinator", "http://127.0.0.1:1", "--api-token-file", tokenFile}, []string{"--broker is required", "amqp://"}},
		{"broker not amqp", []string{"run", "--broker", "http://u:secret@h/", "--coordinator", "http://x", "--api-token-file", tokenFile}, []string{"--broker", "amqp://"}},
		{"no coordinator", []string{"run", "--broker", "amqp://h/"}, []string{"--coordinator is required"}},
		{"no token file", []string{"run", "--broker", "amqp://h/", "--coordinator", "http://x"}, []string{"--api-token-file is required"}},
		{"agents", append(base, "--agents", "0"), []string{"--agents 0", "1 or more"}},
		{"ramp", append(base, "--ramp", "fast"), []string{"--ramp", "500/s"}},
		{"job rate", append(base, "--job-rate", "lots"), []string{"--job-rate", "a second"}},
		{"jobs without tokens", append(base, "--jobs", "5", "--tokens-per-agent", "0"), []string{"--jobs 5", "--tokens-per-agent"}},
		{"profile", append(base, "--profile", "floppy"), []string{"--profile", "instant", "smartcard"}},
		{"report", append(base, "--report", "xml"), []string{"--report", "text or json"}},
		{"prefix", append(base, "--prefix", "Sim."), []string{"--prefix", "lower-case"}},
		{"heartbeat", append(base, "--heartbeat", "1ms"), []string{"--heartbeat", "100ms"}},
		{"stop", append(base, "--stop", "5000"), []string{"--stop 5000", "--agents"}},
		{"unknown flag", append(base, "--agnets", "5"), []string{"unknown flag: --agnets"}},
		{"per connection", append(base, "--per-connection", "5000"), []string{"--per-connection", "1 to 2000"}},
		{"fault operation", append(base, "--fault", "keygen=0.1:token.device_error"), []string{"--fault", `unknown operation "keygen"`, "keygen_ec", "sign_rsa"}},
		{"fault rate", append(base, "--fault", "keygen_ec=2:token.device_error"), []string{"--fault", "rate 2", "0 to 1"}},
		{"fault code", append(base, "--fault", "keygen_ec=0.1:token.on_fire"), []string{"--fault", `"token.on_fire"`, "token.device_error", "token.device_removed"}},
		{"fault form", append(base, "--fault", "keygen_ec:0.1"), []string{"--fault", "OP=RATE:CODE"}},
		{"fault twice", append(base, "--fault", "login=0.1:device_error", "--fault", "login=0.2:not_present"), []string{"--fault", "one fault per operation"}},
		{"fault without tokens", append(base, "--fault", "login=0.1:device_error", "--tokens-per-agent", "0"), []string{"--fault", "--tokens-per-agent 1"}},
		{"faults for without a fault", append(base, "--faults-for", "1m"), []string{"--faults-for 1m0s", "--fault"}},
		{"faults for negative", append(base, "--fault", "login=0.1:device_error", "--faults-for", "-1s"), []string{"--faults-for -1s", "0"}},
		{"reinsert", append(base, "--reinsert", "soon"), []string{"--reinsert", "5s/15s"}},
		{"crash every", append(base, "--crash-every", "1ms"), []string{"--crash-every 1ms", "100ms or more"}},
		{"restart after", append(base, "--restart-after", "-1s"), []string{"--restart-after -1s", "0"}},
		{"restart after the timeout", append(base, "--crash-every", "10s", "--restart-after", "1m"), []string{"--restart-after 1m0s", "--presence-timeout"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := cli.Main(context.Background(), tc.args, strings.NewReader(""), &out, &errOut)
			if code != cli.ExitUsage {
				t.Errorf("exit status %d, want %d; stderr: %s", code, cli.ExitUsage, errOut.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr %q lacks %q", errOut.String(), w)
				}
			}
			if strings.Contains(errOut.String(), "secret") {
				t.Errorf("stderr shows the broker password: %s", errOut.String())
			}
		})
	}
}

// TestHelp: --help explains the commands with examples.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"enrol", "--help"}} {
		var out, errOut bytes.Buffer
		if code := cli.Main(context.Background(), args, strings.NewReader(""), &out, &errOut); code != cli.ExitOK {
			t.Fatalf("%v: exit status %d: %s", args, code, errOut.String())
		}
		if len(args) == 2 && !strings.Contains(out.String(), "Examples:") {
			t.Errorf("%v: no examples:\n%s", args, out.String())
		}
		if args[0] == "--help" && !strings.Contains(out.String(), "agent_users: shared") {
			t.Errorf("--help does not say the coordinator must run with shared agent users:\n%s", out.String())
		}
	}
}

// TestRunCommand: the built command against a real coordinator, its fleet spread over two
// worker processes that crash and restart agents and give their tokens a fault: every
// agent shown online, the stopped ones shown offline, the report in JSON with the crashes
// and the fault.
func TestRunCommand(t *testing.T) {
	bin := testenv.Binary(t, "./fleetsim/cmd/tokenfleet-fleetsim")
	broker := testenv.NewBroker(t)
	c := coordinatortest.Start(t, coordinatortest.Options{BrokerURL: broker.URL, AgentUsers: "shared", HeartbeatTimeout: 3 * time.Second})
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte(c.AdminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(testenv.Context(t), bin, "run", "--broker", broker.URL, "--coordinator", c.URL,
		"--api-token-file", tokenFile, "--agents", "20", "--processes", "2", "--per-connection", "5",
		"--heartbeat", "500ms", "--duration", "1s", "--stop", "2", "--presence-timeout", "3s", "--report", "json",
		"--management", "http://guest:guest@127.0.0.1:15672", "--coordinator-pid", strconv.Itoa(os.Getpid()),
		"--crash-every", "500ms", "--restart-after", "300ms", "--fault", "sign_rsa=0.5:token.device_removed", "--reinsert", "1s/2s",
		"--faults-for", "1s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("run: %v\nstdout: %s\nstderr: %s", err, out, stderr.String())
	}
	var rep struct {
		Agents  int  `json:"agents"`
		Online  int  `json:"online"`
		Stopped int  `json:"stopped"`
		Offline bool `json:"all_offline"`
		Fleet   struct {
			Started, Connections int
			Hellos, Heartbeats   int64
			Crashes, Restarts    int
			TokenFaults          []struct {
				Op, Code string
				Rate     float64
			} `json:"token_faults"`
		} `json:"fleet"`
		QueueSamples int     `json:"queue_samples"`
		CPU          float64 `json:"coordinator_cpu_percent"`
		RSS          float64 `json:"coordinator_rss_max_mb"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("the report does not parse: %v\n%s", err, out)
	}
	if rep.Agents != 20 || rep.Online != 20 || rep.Stopped != 2 || !rep.Offline {
		t.Errorf("report: %d agents, %d online, %d stopped, shown offline %v; want 20, 20, 2, true\n%s", rep.Agents, rep.Online, rep.Stopped, rep.Offline, out)
	}
	if rep.Fleet.Started != 20 || rep.Fleet.Connections != 4 || rep.Fleet.Hellos < 20 || rep.Fleet.Heartbeats == 0 {
		t.Errorf("fleet: %+v; want 20 agents on 4 connections (2 workers × 10 agents ÷ 5)", rep.Fleet)
	}
	if rep.Fleet.Crashes == 0 || rep.Fleet.Restarts == 0 {
		t.Errorf("fleet: %d crashes, %d restarts; want some of each", rep.Fleet.Crashes, rep.Fleet.Restarts)
	}
	// Each worker reports the fault configured; the sum merges them. --faults-for stopped
	// it in both workers a second in, long before the run's offline detection (3 s) ends:
	// its rate is 0 now.
	if f := rep.Fleet.TokenFaults; len(f) != 1 || f[0].Op != "sign_rsa" || f[0].Code != "token.device_removed" || f[0].Rate != 0 {
		t.Errorf("token faults %+v; want sign_rsa token.device_removed, stopped (rate 0) by --faults-for", f)
	}
	if !strings.Contains(stderr.String(), "injected token failures stopped") {
		t.Errorf("the run does not say the failures stopped:\n%s", stderr.String())
	}
	if rep.QueueSamples == 0 || rep.RSS == 0 {
		t.Errorf("nothing sampled: %d queue samples, RSS %.1f MB", rep.QueueSamples, rep.RSS)
	}
}
