package fleetsim_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/fleetsim"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// jobsEnv sizes BenchmarkFleetJobs: how many busy agents, one issue job each (default
// 1,000); jobRateEnv is how many jobs are created a second (default 10; 0: all at once).
const (
	jobsEnv    = "TOKENFLEET_FLEET_JOBS"
	jobRateEnv = "TOKENFLEET_FLEET_JOB_RATE"
)

// BenchmarkFleetJobs: the coordinator binary on SQLite, a fleet of simulated agents with
// one simulated token each (the instant profile: no token time), every agent online, then
// one issue job each, created through the API at 10 a second (TOKENFLEET_FLEET_JOB_RATE)
// on a profile without approval: 1,000 agents busy over about 100 s.
// From each job's timeline: the latency of every phase, and the overhead, approval →
// succeeded minus the token's simulated time. Reported beside the goal (p50 ≤ 20 ms,
// p99 ≤ 100 ms with 1,000 busy agents): overhead-p50-ms, overhead-p99-ms, and jobs/s,
// the p50 of each phase, and how many of five certificates `openssl verify` accepts.
func BenchmarkFleetJobs(b *testing.B) {
	agents := envInt(b, jobsEnv, 1000)
	rate := 10.0
	if v := os.Getenv(jobRateEnv); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 {
			b.Fatalf("%s=%q: want jobs a second (0: all at once)", jobRateEnv, v)
		}
		rate = r
	}
	bin := testenv.Binary(b, "./coordinator/cmd/tokenfleet-coordinator")
	ctx := testenv.Context(b)
	broker := testenv.NewBroker(b)
	co := startCoordinator(b, bin, broker.URL, "")
	api, err := client.New(co.url, co.token)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := fleetsim.RaiseFileLimit(); err != nil {
		b.Fatal(err)
	}
	toks, err := fleetsim.NewSimTokens(fleetsim.SimTokensConfig{Profile: "instant", PerAgent: 1, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(b)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	fleet, err := fleetsim.NewFleet(fleetsim.FleetConfig{BrokerURL: broker.URL, Prefix: "busy-", Count: agents,
		DataDir: b.TempDir(), Ramp: 500, Tokens: toks, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	rep, err := fleetsim.Run(ctx, fleetsim.RunConfig{Agents: agents, Prefix: "busy-", API: api, Enrol: true,
		Jobs: agents, JobRate: rate, Tokens: toks, Log: log}, fleet)
	b.StopTimer()
	if rep != nil && rep.Jobs != nil {
		// The job load's report alone: a benchmark's log keeps ten lines.
		var sb strings.Builder
		rep.Jobs.WriteText(&sb)
		b.Logf("%d busy agents:\n%s", agents, sb.String())
	}
	if err != nil {
		b.Fatal(err)
	}
	j := rep.Jobs
	if j.Failed > 0 {
		b.Fatalf("%d of %d jobs failed; the first: %s", j.Failed, j.Jobs, j.FirstFailure)
	}
	b.ReportMetric(j.Overhead.P50, "overhead-p50-ms")
	b.ReportMetric(20, "overhead-p50-ms-goal")
	b.ReportMetric(j.Overhead.P99, "overhead-p99-ms")
	b.ReportMetric(100, "overhead-p99-ms-goal")
	b.ReportMetric(j.PerSecond, "jobs/s")
	for i, name := range fleetsim.Phases {
		b.ReportMetric(j.Phases[name].P50, []string{"dispatch", "start", "csr", "finish"}[i]+"-p50-ms")
	}
	b.ReportMetric(float64(j.Verified), "verified")
	b.ReportMetric(0, "ns/op")
}
