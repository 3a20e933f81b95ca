package fleetsim_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/fleetsim"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// Sizes of BenchmarkFleetPresence, from the environment: `make bench` runs the small
// fleet, `make bench-fleet` the production one (TOKENFLEET_FLEET_AGENTS=10000).
const (
	agentsEnv = "TOKENFLEET_FLEET_AGENTS" // default 1,000
	windowEnv = "TOKENFLEET_FLEET_WINDOW" // the steady window; default 20s, 2m at 10,000 agents
)

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a number of 1 or more", name, v)
	}
	return n
}

// BenchmarkFleetPresence: the real coordinator binary, started as a process of its own
// on SQLite and then on PostgreSQL (a database and a vhost of its own per run), a fleet
// of simulated agents enrolled through its API and heartbeating at the production rate
// (every 15 s), measured over a steady window once every agent is online; then ten agents
// stop and the coordinator's detection of them is timed. One run per store whatever b.N.
// Reported beside their goals (DESIGN.md, Scale; at 10,000 agents):
//   - core-%: the coordinator's CPU over the window, in % of one core (goal < 10);
//   - queue-ratio: the heartbeat queue's maximum ÷ one second of heartbeat traffic
//     (goal ≤ 1);
//   - online-ratio: agents shown online after the window ÷ the fleet (goal 1);
//   - offline-ratio: time until the stopped agents are shown offline ÷ the presence
//     timeout (goal 1 to 1.4: the offline sweep runs every third of the timeout);
//   - coord-MB: the coordinator's maximum RSS (goal ≤ 200);
//
// and, for sizing, enrol/s, online-s (after the last agent started), the simulator's
// sim-kB/agent and sim-core-% over the window.
func BenchmarkFleetPresence(b *testing.B) {
	agents := envInt(b, agentsEnv, 1000)
	defWindow := 20 * time.Second
	if agents >= 5000 {
		defWindow = 2 * time.Minute
	}
	window := defWindow
	if v := os.Getenv(windowEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			b.Fatalf("%s=%q: want a duration like 30s", windowEnv, v)
		}
		window = d
	}
	coordinatorBin := testenv.Binary(b, "./coordinator/cmd/tokenfleet-coordinator")
	b.Run("sqlite", func(b *testing.B) { benchPresence(b, coordinatorBin, agents, window, "") })
	b.Run("postgres", func(b *testing.B) {
		benchPresence(b, coordinatorBin, agents, window, testenv.PostgresDatabase(b))
	})
}

func benchPresence(b *testing.B, bin string, agents int, window time.Duration, postgresDSN string) {
	ctx := testenv.Context(b)
	broker := testenv.NewBroker(b)
	co := startCoordinator(b, bin, broker.URL, postgresDSN)
	api, err := client.New(co.url, co.token)
	if err != nil {
		b.Fatal(err)
	}
	mgmt, err := fleetsim.NewManagement("http://guest:guest@127.0.0.1:15672", broker.VHost)
	if err != nil {
		b.Fatal(err)
	}
	limit, err := fleetsim.RaiseFileLimit()
	if err != nil {
		b.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(b)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	fc := fleetsim.FleetConfig{BrokerURL: broker.URL, Prefix: "sim-", Count: agents, DataDir: b.TempDir(), Ramp: 500}
	// Past the open files limit, the fleet runs in worker processes of the simulator.
	var runner fleetsim.Runner
	if per := fleetsim.AgentsPerProcess(limit); per >= agents {
		fc.Log = log
		if fc.Tokens, err = fleetsim.NewSimTokens(fleetsim.SimTokensConfig{Profile: "instant", PerAgent: 1, Seed: 1}); err != nil {
			b.Fatal(err)
		}
		if runner, err = fleetsim.NewFleet(fc); err != nil {
			b.Fatal(err)
		}
	} else {
		procs := (agents + per - 1) / per
		sim := testenv.Binary(b, "./fleetsim/cmd/tokenfleet-fleetsim")
		if runner, err = fleetsim.NewWorkers(fleetsim.WorkersConfig{Command: []string{sim, "worker", "--log-level", "warn"},
			Fleet: fc, Processes: procs, Stderr: os.Stderr}, "instant", 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	rep, err := fleetsim.Run(ctx, fleetsim.RunConfig{
		Agents: agents, Prefix: "sim-", API: api, Enrol: true, Management: mgmt, CoordinatorPID: co.pid,
		Window: window, StopAgents: 10, Log: log,
	}, runner)
	b.StopTimer()
	if rep != nil {
		var sb strings.Builder
		_ = rep.WriteText(&sb)
		b.Logf("coordinator %s, %d agents:\n%s", co.store, agents, sb.String())
	}
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rep.CoordinatorCPUPercent, "core-%")
	b.ReportMetric(fleetsim.GoalCoordinatorCorePercent, "core-%-goal")
	b.ReportMetric(rep.QueueRatio(), "queue-ratio")
	b.ReportMetric(fleetsim.GoalQueueSeconds, "queue-ratio-goal")
	b.ReportMetric(rep.OnlineRatio(), "online-ratio")
	b.ReportMetric(1, "online-ratio-goal")
	b.ReportMetric(rep.OfflineRatio(), "offline-ratio")
	b.ReportMetric(1.4, "offline-ratio-goal")
	b.ReportMetric(rep.CoordinatorRSSMaxMB, "coord-MB")
	b.ReportMetric(fleetsim.GoalCoordinatorRSSMB, "coord-MB-goal")
	if rep.Enrol != nil {
		b.ReportMetric(rep.Enrol.PerSecond, "enrol/s")
	}
	b.ReportMetric(float64(rep.OnlineAfterLastStart), "online-s")
	b.ReportMetric(rep.SimKBPerAgent, "sim-kB/agent")
	b.ReportMetric(rep.SimCPUPercent, "sim-core-%")
	b.ReportMetric(0, "ns/op")
}

// runningCoordinator is the coordinator binary running as a process of its own.
type runningCoordinator struct {
	url, token, store string
	pid               int
}

// startCoordinator starts the coordinator binary on SQLite (postgresDSN empty) or
// PostgreSQL, against the broker, with agents sharing the broker user as the simulator's
// do; it stops when b ends.
func startCoordinator(b *testing.B, bin, brokerURL, postgresDSN string) runningCoordinator {
	b.Helper()
	dir := b.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	db, store := "", "sqlite"
	if postgresDSN != "" {
		db, store = fmt.Sprintf("database: {driver: postgres, dsn: %q}\n", postgresDSN), "postgres"
	}
	cfg := fmt.Sprintf("listen: %s\ndata_dir: %s\n%sbroker: {url: %q, agent_users: shared}\nlog: {level: warn, format: json}\n",
		addr, filepath.Join(dir, "data"), db, brokerURL)
	cfgFile := filepath.Join(dir, "coordinator.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.CommandContext(context.Background(), bin, "serve", "--config", cfgFile)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				b.Errorf("the coordinator stopped with %v", err)
			}
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			b.Errorf("the coordinator did not stop within a minute of SIGTERM: %v", <-exited)
		}
	})
	url := "http://" + addr
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		tok, err := os.ReadFile(filepath.Join(dir, "data", "admin.token"))
		if err == nil {
			c, cerr := client.New(url, strings.TrimSpace(string(tok)))
			if cerr == nil {
				if _, herr := c.WhoAmI(context.Background()); herr == nil {
					return runningCoordinator{url: url, token: strings.TrimSpace(string(tok)), store: store, pid: cmd.Process.Pid}
				}
			}
		}
		select {
		case err := <-exited:
			b.Fatalf("the coordinator exited before it answered: %v", err)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			b.Fatal("the coordinator did not answer within 2 minutes")
		}
	}
}
