package fleetsim_test

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/fleetsim"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestPresence: 50 simulated agents on 2 shared broker connections against a real
// coordinator, enrolled through its API: all shown online, and one stopped shown offline
// once the coordinator's (short) presence timeout has passed.
func TestPresence(t *testing.T) {
	const agents, perConn = 50, 25
	ctx := testenv.Context(t)
	broker := testenv.NewBroker(t)
	timeout := 3 * time.Second
	const heartbeat = 500 * time.Millisecond
	c := coordinatortest.Start(t, coordinatortest.Options{BrokerURL: broker.URL, AgentUsers: "shared", HeartbeatTimeout: timeout})
	api, err := client.New(c.URL, c.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	fleet, err := fleetsim.NewFleet(fleetsim.FleetConfig{
		BrokerURL: broker.URL, Prefix: "sim-", Count: agents, DataDir: t.TempDir(),
		Heartbeat: heartbeat, PerConnection: perConn, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := fleetsim.Run(ctx, fleetsim.RunConfig{
		Agents: agents, Prefix: "sim-", Heartbeat: heartbeat, API: api, Enrol: true,
		StopAgents: 1, PresenceTimeout: timeout, OnlineTimeout: time.Minute, Log: log,
	}, fleet)
	if err != nil {
		t.Fatalf("run: %v (report %+v)", err, rep)
	}
	if rep.Online != agents || !rep.AllOffline || rep.Enrol == nil || rep.Enrol.Agents != agents {
		t.Errorf("online %d of %d, the stopped agent shown offline: %v, enrolment %+v", rep.Online, agents, rep.AllOffline, rep.Enrol)
	}
	// Offline once its last heartbeat is older than the timeout: that heartbeat came up to
	// an interval (jittered) before the agent stopped, so no sooner than the timeout less
	// two intervals after the stop.
	if earliest := timeout - 2*heartbeat; float64(rep.OfflineAfter) < earliest.Seconds() {
		t.Errorf("the stopped agent was shown offline after %s, before its last heartbeat could be %s old", rep.OfflineAfter, timeout)
	}
	// Enrolling again finds every agent enrolled: a run can be repeated.
	again, err := fleetsim.Enrol(ctx, api, "sim-", agents, log)
	if err != nil || again.Existing != agents {
		t.Errorf("enrolling again: %v; %d of %d found enrolled", err, again.Existing, agents)
	}
	if rep.Fleet.Connections != agents/perConn || rep.Fleet.Started != agents || rep.Fleet.Failed != 0 ||
		rep.Fleet.Hellos < agents || rep.Fleet.Heartbeats == 0 {
		t.Errorf("fleet: %+v; want %d connections, %d agents started, a hello each and heartbeats", rep.Fleet, agents/perConn, agents)
	}
}

// TestIssueJob: an issue job through a simulated agent with a simulated token (the
// instant profile) succeeds, its timeline gives every phase, and `openssl verify` accepts
// its certificate against the coordinator's CA.
func TestIssueJob(t *testing.T) {
	ctx := testenv.Context(t)
	broker := testenv.NewBroker(t)
	c := coordinatortest.Start(t, coordinatortest.Options{BrokerURL: broker.URL, AgentUsers: "shared"})
	api, err := client.New(c.URL, c.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fleetsim.Enrol(ctx, api, "job-", 2, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	toks, err := fleetsim.NewSimTokens(fleetsim.SimTokensConfig{Profile: "instant", PerAgent: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	fleet, err := fleetsim.NewFleet(fleetsim.FleetConfig{
		BrokerURL: broker.URL, Prefix: "job-", Count: 2, DataDir: t.TempDir(), Tokens: toks, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	fleet.Start(ctx)
	t.Cleanup(fleet.Close)
	rep, err := fleetsim.RunJobs(ctx, fleetsim.JobLoadConfig{API: api, Agents: []string{fleetsim.AgentID("job-", 0)},
		Tokens: toks, Verify: 1, Timeout: 2 * time.Minute, Log: log})
	if err != nil {
		t.Fatalf("jobs: %v (report %+v)", err, rep)
	}
	if rep.Succeeded != 1 || rep.Verified != 1 {
		t.Errorf("%d of 1 job succeeded (%s), %d certificates verified", rep.Succeeded, rep.FirstFailure, rep.Verified)
	}
	for _, phase := range fleetsim.Phases {
		if rep.Phases[phase].N != 1 {
			t.Errorf("phase %s: %d jobs timed, want 1", phase, rep.Phases[phase].N)
		}
	}
	if rep.EndToEnd.N != 1 || rep.Overhead.P50 > rep.EndToEnd.P50 {
		t.Errorf("end to end %+v, overhead %+v", rep.EndToEnd, rep.Overhead)
	}
}

// TestStopAgents: the agents named are stopped, whichever they are, and those not
// running are passed over; the others run on.
func TestStopAgents(t *testing.T) {
	ctx := testenv.Context(t)
	broker := testenv.NewBroker(t)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	fleet, err := fleetsim.NewFleet(fleetsim.FleetConfig{BrokerURL: broker.URL, Prefix: "stop-", Count: 3, DataDir: t.TempDir(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	fleet.Start(ctx)
	t.Cleanup(fleet.Close)
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for fleet.Started() < 3 {
		if time.Now().After(deadline) || fleet.Failed() > 0 {
			t.Fatalf("%d of 3 agents started: %v", fleet.Started(), fleet.Errors())
		}
		<-tick.C
	}
	if got := fleet.StopAgents([]string{"stop-00001", "stop-00009"}); !slices.Equal(got, []string{"stop-00001"}) {
		t.Fatalf("stopped %v, want stop-00001", got)
	}
	got := fleet.Stop(3)
	slices.Sort(got)
	if !slices.Equal(got, []string{"stop-00000", "stop-00002"}) {
		t.Errorf("still running after StopAgents: %v, want stop-00000 and stop-00002", got)
	}
}

// TestWorkersStopAndFaults: a fleet over two worker processes stops the agents named,
// whichever worker runs them, and sets its tokens' faults in every worker.
func TestWorkersStopAndFaults(t *testing.T) {
	ctx := testenv.Context(t)
	broker := testenv.NewBroker(t)
	sim := testenv.Binary(t, "./fleetsim/cmd/tokenfleet-fleetsim")
	w, err := fleetsim.NewWorkers(fleetsim.WorkersConfig{Command: []string{sim, "worker", "--log-level", "warn"},
		Fleet:     fleetsim.FleetConfig{BrokerURL: broker.URL, Prefix: "work-", Count: 4, DataDir: t.TempDir()},
		Processes: 2, Stderr: zerolog.NewTestWriter(t)}, "instant", 1)
	if err != nil {
		t.Fatal(err)
	}
	w.Start(ctx)
	t.Cleanup(w.Close)
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for st := w.Stats(); st.Started < 4; st = w.Stats() {
		if time.Now().After(deadline) || st.Failed > 0 {
			t.Fatalf("%d of 4 agents started: %s", st.Started, st.FirstError)
		}
		<-tick.C
	}
	got := w.StopAgents([]string{"work-00000", "work-00003", "work-00009"})
	slices.Sort(got)
	if !slices.Equal(got, []string{"work-00000", "work-00003"}) {
		t.Errorf("stopped %v, want work-00000 (first worker) and work-00003 (second)", got)
	}
	fault := fleetsim.TokenFault{Op: simtoken.OpKeygenEC, Rate: 0.5, Code: pkcs11.CodeDeviceError}
	if err := w.SetTokenFaults([]fleetsim.TokenFault{fault}); err != nil {
		t.Fatal(err)
	}
	for st := w.Stats(); len(st.TokenFaults) != 1 || st.TokenFaults[0].Rate != 0.5; st = w.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("the workers report the faults %+v, want %s", st.TokenFaults, fault)
		}
		<-tick.C
	}
	if err := w.SetTokenFaults([]fleetsim.TokenFault{{Op: "keygen", Rate: 1, Code: pkcs11.CodeDeviceError}}); err == nil {
		t.Error("the workers took an unknown operation")
	}
}
