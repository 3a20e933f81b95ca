//go:build cgo && linux

package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/fleetsim"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// rolloutAgentsEnv sizes TestRolloutFleet: how many simulated agents (default 300, which
// keeps make test short; `make rollout-fleet` runs the issue's 5,000).
const rolloutAgentsEnv = "TOKENFLEET_ROLLOUT_AGENTS"

// rolloutPrefix begins the simulated agents' IDs, and their host names.
const rolloutPrefix = "roll-"

// brakeFault is the failure the brake's rollout meets: one EC key generation in five fails
// with a device error, as a bad batch of tokens would.
var brakeFault = fleetsim.TokenFault{Op: simtoken.OpKeygenEC, Rate: 0.2, Code: pkcs11.CodeDeviceError}

// TestRolloutFleet: rollouts over a fleet of simulated agents (the fleet simulator's real
// agents, in this process, each with a simulated blank token), on two coordinators (child
// processes) sharing one PostgreSQL database, each running the rollout engine:
//
//   - brake: every agent gets its token issued, a canary first. One key generation in five
//     fails: the brake trips in the canary and pauses the rollout; no job is created while
//     it is paused, over several engine passes; resuming without an approval is refused;
//     the tokens are fixed, an approver approves the resumption and the rollout completes.
//   - coordinator killed: a renewal of those certificates, the coordinators killed with
//     SIGKILL mid-wave (one, then both) and started again: the rollout completes and
//     every target has exactly one job, ended.
//   - abort: a renewal of the newest certificates, aborted in its second wave while the
//     agents of that wave's first jobs are away: no job is created after, and every job
//     not started yet (theirs among them) is cancelled.
//
// Each rollout then holds every target to exactly one job, as the database says.
func TestRolloutFleet(t *testing.T) {
	n := envInt(t, rolloutAgentsEnv, 300, 20)
	f := newRolloutFleet(t, n)
	t.Run("brake", f.testBrake)
	t.Run("coordinator killed", f.testKilled)
	t.Run("abort", f.testAbort) // last: it holds some agents away for good
}

// simFleet is the simulated fleet, in this process (*fleetsim.Fleet) or in worker
// processes (*fleetsim.Workers).
type simFleet interface {
	fleetsim.Runner
	StopAgents(ids []string) []string
}

// rolloutFleet is the system of TestRolloutFleet.
type rolloutFleet struct {
	t      *testing.T
	n      int
	ctx    context.Context
	broker *testenv.Broker
	coords []*coordProc
	st     store.Store // the coordinators' database, read directly for the checks
	fleet  simFleet

	admin, owner, approver string // API tokens
}

func newRolloutFleet(t *testing.T, n int) *rolloutFleet {
	t.Helper()
	ctx := testenv.Context(t)
	f := &rolloutFleet{t: t, n: n, ctx: ctx}
	begin := time.Now()
	f.broker = testenv.NewBroker(t)
	dsn := testenv.PostgresDatabase(t)
	root := t.TempDir()
	first := newCoordProc(t, "coordinator-1", filepath.Join(root, "coordinator-1"), "postgres", dsn, f.broker.URL)
	f.coords = append(f.coords, first)
	t.Cleanup(func() {
		for _, c := range f.coords {
			c.kill()
		}
		if t.Failed() {
			for _, c := range f.coords {
				t.Logf("log of %s (its end):\n%s", c.name, tail(withoutDebug(c.log.String()), 4000))
			}
		}
	})
	if err := first.startAndWait(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	second := newCoordProc(t, "coordinator-2", filepath.Join(root, "coordinator-2"), "postgres", dsn, f.broker.URL)
	copyDataDir(t, first.data, second.data)
	f.coords = append(f.coords, second)
	if err := second.startAndWait(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	f.admin = first.adminToken(t)
	// The simulated agents' warnings (a failed job is one) are shown only if the test fails.
	simLog := newTailBuffer(256 << 10)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the simulated agents' log (its end):\n%s", tail(simLog.String(), 4000))
		}
	})
	log := zerolog.New(simLog).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	st, err := store.Open(ctx, store.Config{Driver: store.DriverPostgres, DSN: dsn}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	f.st = st

	// The people: the job load's organisation, holder and profile (no approval for a
	// single job; a rollout needs one all the same), a rollout owner and an approver.
	adm := f.client(f.admin)
	if err := fleetsim.SetUpJobs(ctx, adm); err != nil {
		t.Fatal(err)
	}
	f.owner = f.person(adm, rolloutOwner, jobs.RoleRolloutOwner)
	f.approver = f.person(adm, approver, jobs.RoleApprover)

	// The fleet: enrolled through the API, started, every agent online. It runs in this
	// process when the open files limit allows (an agent holds about four files), else in
	// worker processes of the simulator, as its presence benchmark does.
	limit, err := fleetsim.RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fleetsim.Enrol(ctx, adm, rolloutPrefix, n, log); err != nil {
		t.Fatal(err)
	}
	fc := fleetsim.FleetConfig{BrokerURL: f.broker.URL, Prefix: rolloutPrefix, Count: n, DataDir: filepath.Join(root, "fleet"),
		Seed: 1, Log: log} // heartbeats at the production rate
	where := "in this process"
	if per := fleetsim.AgentsPerProcess(limit); per >= n {
		if fc.Tokens, err = fleetsim.NewSimTokens(fleetsim.SimTokensConfig{Profile: "instant", PerAgent: 1, Seed: fc.Seed}); err != nil {
			t.Fatal(err)
		}
		if f.fleet, err = fleetsim.NewFleet(fc); err != nil {
			t.Fatal(err)
		}
	} else {
		procs := (n + per - 1) / per
		where = fmt.Sprintf("in %d worker processes (open files limit %d)", procs, limit)
		sim := testenv.Binary(t, "./fleetsim/cmd/tokenfleet-fleetsim")
		fc.Log = zerolog.Nop()
		if f.fleet, err = fleetsim.NewWorkers(fleetsim.WorkersConfig{Command: []string{sim, "worker", "--log-level", "warn"},
			Fleet: fc, Processes: procs, Stderr: simLog}, "instant", 1); err != nil {
			t.Fatal(err)
		}
	}
	f.fleet.Start(ctx)
	t.Cleanup(f.fleet.Close)
	f.waitFor("every simulated agent online", 2*time.Minute+time.Duration(n)*time.Second/20, func() (bool, string) {
		st := f.fleet.Stats()
		if st.Failed > 0 {
			t.Fatalf("%d simulated agents failed; the first: %s", st.Failed, st.FirstError)
		}
		online := 0
		for a, err := range adm.AllAgents(ctx, 500) {
			if err != nil {
				return false, err.Error()
			}
			if a.Online && strings.HasPrefix(a.ID, rolloutPrefix) {
				online++
			}
		}
		return online == n, fmt.Sprintf("%d of %d started, %d online", st.Started, n, online)
	})
	t.Logf("%d simulated agents (%s) online on two coordinators in %s", n, where, time.Since(begin).Round(time.Second))
	return f
}

// person creates a user of the job load's organisation with a role, and returns an API
// token of theirs.
func (f *rolloutFleet) person(adm *client.Client, username string, role jobs.Role) string {
	f.t.Helper()
	if _, err := adm.CreateUser(f.ctx, client.UserCreate{Username: username, DisplayName: username,
		Email: username + "@fleetsim.example", Organization: fleetsim.JobOrganization, Roles: []jobs.Role{role}}); err != nil {
		f.t.Fatal(err)
	}
	tok, err := adm.CreateAPIToken(f.ctx, username, client.APITokenCreate{Name: "e2e"})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok.Token
}

// client is an API client of a running coordinator (the first that runs), as the holder
// of token.
func (f *rolloutFleet) client(token string) *client.Client {
	f.t.Helper()
	co := f.coords[0]
	for _, c := range f.coords {
		if c.running() {
			co = c
			break
		}
	}
	cl, err := client.New(co.url, token)
	if err != nil {
		f.t.Fatal(err)
	}
	return cl
}

// call runs fn against a running coordinator, again while the failure is a coordinator
// going away (see transient), for up to a minute.
func (f *rolloutFleet) call(token string, fn func(cl *client.Client) error) error {
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn(f.client(token))
		if err == nil || !transient(err) || time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}

// rollout reads a rollout through the API.
func (f *rolloutFleet) rollout(id string) api.Rollout {
	f.t.Helper()
	var r api.Rollout
	if err := f.call(f.owner, func(cl *client.Client) error {
		var err error
		r, err = cl.GetRollout(f.ctx, id)
		return err
	}); err != nil {
		f.t.Fatalf("rollout %s: %v", id, err)
	}
	return r
}

// waitFor polls cond on a ticker until it holds, failing the test after limit.
func (f *rolloutFleet) waitFor(what string, limit time.Duration, cond func() (bool, string)) {
	f.t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, status := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out after %v waiting for %s: %s", limit, what, status)
		}
		<-tick.C
	}
}

// jobsLimit bounds the wait for a rollout's jobs: the fleet's whole size at ten jobs a
// second (a busy machine, the race detector), and more.
func (f *rolloutFleet) jobsLimit() time.Duration {
	return 3*time.Minute + time.Duration(f.n)*time.Second/10
}

// create creates a rollout as its owner and approves it as the approver; it returns the
// rollout as created.
func (f *rolloutFleet) create(spec rollout.Spec) api.Rollout {
	f.t.Helper()
	r := f.createOnly(spec)
	f.approve(r)
	return r
}

// createOnly creates a rollout as its owner, with one idempotency key whatever
// coordinator answers: asking again never makes a second rollout.
func (f *rolloutFleet) createOnly(spec rollout.Spec) api.Rollout {
	f.t.Helper()
	t := f.t
	var r api.Rollout
	key := client.NewIdempotencyKey()
	if err := f.call(f.owner, func(cl *client.Client) error {
		var err error
		r, _, err = cl.CreateRolloutWithKey(f.ctx, spec, key)
		return err
	}); err != nil {
		t.Fatalf("creating rollout %q: %v", spec.Name, err)
	}
	if r.State != rollout.StatePendingApproval || r.TargetCount == 0 {
		t.Fatalf("rollout %q: %s with %d targets; want pending_approval with targets", spec.Name, r.State, r.TargetCount)
	}
	return r
}

// approve approves a rollout as the approver.
func (f *rolloutFleet) approve(r api.Rollout) {
	f.t.Helper()
	if err := f.call(f.approver, func(cl *client.Client) error {
		_, err := cl.ApproveRollout(f.ctx, r.ID, r.BindingHash, "checked the dry run")
		return err
	}); err != nil {
		f.t.Fatalf("approving rollout %q: %v", r.Name, err)
	}
}

// spec is a rollout of the job load's profile. An issue rollout targets every agent (the
// simulated ones are all there are), one target each: the agent initialises its blank
// token for the job load's holder. A renewal targets the newest valid certificate of each
// token.
func spec(name string, kind jobs.Kind, canary int, waves []float64, maxConcurrent int) rollout.Spec {
	s := rollout.Spec{
		Name:     name,
		Template: rollout.Template{Kind: kind, Profile: fleetsim.JobProfile},
		Plan:     rollout.Plan{Canary: rollout.Canary{Count: canary}, Waves: waves, MaxConcurrent: maxConcurrent},
		Brake:    rollout.Brake{ThresholdPercent: 10, MinExecuted: 10},
	}
	if kind == jobs.KindIssue {
		s.Template.Holder = fleetsim.JobHolder
	}
	return s
}

// rolloutJobs is what the database holds of a rollout: its targets and its jobs.
type rolloutJobs struct {
	targets []store.RolloutTarget
	jobs    []store.Job
}

func (f *rolloutFleet) read(id string) rolloutJobs {
	f.t.Helper()
	var out rolloutJobs
	for p := (store.Page{Limit: store.MaxPageLimit}); ; {
		ts, next, err := f.st.ListRolloutTargets(f.ctx, id, store.RolloutTargetFilter{}, p)
		if err != nil {
			f.t.Fatal(err)
		}
		out.targets = append(out.targets, ts...)
		if next == "" {
			break
		}
		p.Cursor = next
	}
	for p := (store.Page{Limit: store.MaxPageLimit}); ; {
		js, next, err := f.st.ListJobs(f.ctx, store.JobFilter{RolloutID: id}, p)
		if err != nil {
			f.t.Fatal(err)
		}
		out.jobs = append(out.jobs, js...)
		if next == "" {
			break
		}
		p.Cursor = next
	}
	return out
}

// created is how many of the rollout's targets have a job.
func (r rolloutJobs) created() int {
	n := 0
	for _, tg := range r.targets {
		if tg.JobID != "" {
			n++
		}
	}
	return n
}

// wantOneJobEach checks that the rollout has its targets; that each has at most one job
// (exactly one when all is set), the one the database links it to, on the target's agent;
// and that the rollout has no other job. It returns the jobs by state.
func (f *rolloutFleet) wantOneJobEach(ro api.Rollout, r rolloutJobs, all bool) map[jobs.State]int {
	f.t.Helper()
	t := f.t
	id := ro.ID
	if len(r.targets) != ro.TargetCount {
		t.Errorf("rollout %s has %d targets, want %d", id, len(r.targets), ro.TargetCount)
	}
	byID := map[string]store.Job{}
	perAgent := map[string]int{}
	states := map[jobs.State]int{}
	for _, j := range r.jobs {
		byID[j.ID] = j
		perAgent[j.AgentID]++
		states[j.State]++
	}
	var problems []string
	linked := map[string]bool{}
	for _, tg := range r.targets {
		switch j, ok := byID[tg.JobID]; {
		case tg.JobID == "" && all:
			problems = append(problems, fmt.Sprintf("target %d (%s) has no job", tg.Seq, tg.AgentID))
		case tg.JobID == "":
		case !ok:
			problems = append(problems, fmt.Sprintf("target %d (%s) names job %s, which is not one of the rollout's", tg.Seq, tg.AgentID, tg.JobID))
		case j.AgentID != tg.AgentID:
			problems = append(problems, fmt.Sprintf("target %d (%s) names job %s of agent %s", tg.Seq, tg.AgentID, j.ID, j.AgentID))
		case linked[tg.JobID]:
			problems = append(problems, fmt.Sprintf("job %s is linked to two targets", tg.JobID))
		default:
			linked[tg.JobID] = true
		}
	}
	for _, j := range r.jobs {
		if !linked[j.ID] {
			problems = append(problems, fmt.Sprintf("job %s (%s, agent %s) of the rollout belongs to no target", j.ID, j.State, j.AgentID))
		}
	}
	for agent, k := range perAgent {
		if k > 1 {
			problems = append(problems, fmt.Sprintf("agent %s has %d jobs of the rollout", agent, k))
		}
	}
	if len(problems) > 0 {
		t.Errorf("rollout %s: %d problems; the first:\n%s", id, len(problems), strings.Join(problems[:min(len(problems), 20)], "\n"))
	}
	return states
}

// enginePassesMetric counts a coordinator's rollout engine passes.
const enginePassesMetric = "tokenfleet_coordinator_rollout_engine_passes_total"

// waitEnginePasses waits until every coordinator's rollout engine has made k more passes
// than when it was called, reading each one's metrics.
func (f *rolloutFleet) waitEnginePasses(k int) {
	f.t.Helper()
	start := make([]float64, len(f.coords))
	for i, c := range f.coords {
		v, err := metricValue(f.ctx, c.url, enginePassesMetric)
		if err != nil {
			f.t.Fatalf("%s: %v", c.name, err)
		}
		start[i] = v
	}
	f.waitFor(fmt.Sprintf("%d rollout engine passes on each coordinator", k), time.Minute, func() (bool, string) {
		var status []string
		done := true
		for i, c := range f.coords {
			v, err := metricValue(f.ctx, c.url, enginePassesMetric)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", c.name, err)
			}
			done = done && v >= start[i]+float64(k)
			status = append(status, fmt.Sprintf("%s %.0f passes since", c.name, v-start[i]))
		}
		return done, strings.Join(status, ", ")
	})
}

// metricValue reads a metric without labels from a coordinator's /metrics.
func metricValue(ctx context.Context, baseURL, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in its metrics", name)
}

// testBrake: the canary meets failing tokens, the brake trips and pauses the rollout until
// an approver approves its resumption, once the tokens are fixed.
func (f *rolloutFleet) testBrake(t *testing.T) {
	f.t = t
	canary := max(20, f.n/20)
	if err := f.fleet.SetTokenFaults([]fleetsim.TokenFault{brakeFault}); err != nil {
		t.Fatal(err)
	}
	r := f.create(spec("brake", jobs.KindIssue, canary, []float64{50, 100}, 0))
	if r.TargetCount != f.n {
		t.Fatalf("the issue rollout has %d targets, want one per agent (%d)", r.TargetCount, f.n)
	}
	id := r.ID

	var v api.Rollout
	f.waitFor("the brake to trip", f.jobsLimit(), func() (bool, string) {
		v = f.rollout(id)
		if v.State.Final() {
			t.Fatalf("the rollout ended %s without the brake tripping: overall %+v", v.State, v.Overall)
		}
		return v.State == rollout.StatePaused, fmt.Sprintf("state %s, wave %d, overall %+v", v.State, v.CurrentWave, v.Overall)
	})
	if v.PauseKind != rollout.PauseKind("brake") || v.CurrentWave != 0 || v.Trip == nil || v.PauseRound != 1 {
		t.Fatalf("paused: kind %q in wave %d, round %d, trip %+v; want the brake in the canary (wave 0), round 1", v.PauseKind, v.CurrentWave, v.PauseRound, v.Trip)
	}
	trip := v.Trip
	if trip.Percent < 10 || len(trip.ByCode) == 0 || trip.ByCode[0].Code != string(pkcs11.CodeDeviceError) || len(trip.ByCode[0].Examples) == 0 {
		t.Fatalf("trip %+v: want at least 10%% failed, by %s, with examples", trip, pkcs11.CodeDeviceError)
	}
	for _, ex := range trip.ByCode[0].Examples {
		if ex.JobID == "" || !strings.HasPrefix(ex.AgentID, rolloutPrefix) || ex.Message == "" {
			t.Errorf("trip example %+v: want the job, its agent and what failed", ex)
		}
	}
	t.Logf("brake: %s", trip.Summary)

	// Paused: the canary's jobs running at the trip end, and nothing more is created over
	// several engine passes, on both coordinators.
	f.waitFor("the canary's running jobs to end", f.jobsLimit(), func() (bool, string) {
		v = f.rollout(id)
		return v.Waves[0].Tally.Open == 0, fmt.Sprintf("canary %+v", v.Waves[0].Tally)
	})
	before := f.read(id)
	f.waitEnginePasses(3)
	after := f.read(id)
	if before.created() != after.created() || len(before.jobs) != len(after.jobs) {
		t.Fatalf("while paused by the brake the rollout went from %d to %d jobs", len(before.jobs), len(after.jobs))
	}
	for _, tg := range after.targets {
		if tg.JobID != "" && tg.Wave != 0 {
			t.Fatalf("target %d of wave %d got job %s: the rollout went past its canary", tg.Seq, tg.Wave, tg.JobID)
		}
	}
	if v = f.rollout(id); v.State != rollout.StatePaused {
		t.Fatalf("the paused rollout is %s", v.State)
	}

	// Resuming a brake's pause needs an approval: the owner's resume is refused.
	err := f.call(f.owner, func(cl *client.Client) error {
		_, err := cl.ResumeRollout(f.ctx, id, "looks fine to me")
		return err
	})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "approval_required" || ce.Status != http.StatusConflict {
		t.Fatalf("resuming after the brake without an approval: %v; want 409 approval_required", err)
	}
	if v = f.rollout(id); v.State != rollout.StatePaused {
		t.Fatalf("after a refused resume the rollout is %s", v.State)
	}

	// The tokens are fixed; the approver approves the resumption, and it completes.
	if err := f.fleet.SetTokenFaults(nil); err != nil {
		t.Fatal(err)
	}
	if err := f.call(f.approver, func(cl *client.Client) error {
		_, err := cl.ApproveRollout(f.ctx, id, r.BindingHash, "the bad batch of tokens was replaced")
		return err
	}); err != nil {
		t.Fatalf("approving the resumption: %v", err)
	}
	f.waitFor("the rollout to complete", f.jobsLimit(), func() (bool, string) {
		v = f.rollout(id)
		if v.State.Final() && v.State != rollout.StateCompleted {
			t.Fatalf("the rollout ended %s: overall %+v, trip %+v", v.State, v.Overall, v.Trip)
		}
		return v.State == rollout.StateCompleted, fmt.Sprintf("state %s %s, wave %d, overall %+v", v.State, v.PauseKind, v.CurrentWave, v.Overall)
	})
	states := f.wantOneJobEach(r, f.read(id), true)
	failedCanary := v.Waves[0].Tally.Targets - v.Waves[0].Tally.Succeeded
	if states[jobs.StateSucceeded] != f.n-failedCanary || states[jobs.StateFailed] != failedCanary {
		t.Errorf("jobs by state %v: want %d failed (the canary's) and the rest succeeded", states, failedCanary)
	}
	for _, w := range v.Waves[1:] {
		if w.Tally.Succeeded != w.Size {
			t.Errorf("%s after the tokens were fixed: %+v; want every job succeeded", w.Name, w.Tally)
		}
	}
	t.Logf("brake: %d agents, canary %d (%d failed), completed after one approved resumption", f.n, canary, failedCanary)
}

// testAbort: a renewal aborted in its second wave creates no job after, and its jobs not
// started are cancelled. The agents of the wave's first jobs (as many as its cap on jobs
// at once) are stopped first: their jobs are sent and wait, and the wave can go no
// further, when the abort comes.
func (f *rolloutFleet) testAbort(t *testing.T) {
	f.t = t
	held := max(10, f.n/20)
	r := f.createOnly(spec("abort", jobs.KindRenew, 10, []float64{100}, held))
	id := r.ID
	wave := 1
	var first client.RolloutTargetList
	if err := f.call(f.owner, func(cl *client.Client) error {
		var err error
		first, err = cl.ListRolloutTargets(f.ctx, id, client.RolloutTargetFilter{Wave: &wave}, client.Page{Limit: held})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	away := map[string]bool{}
	for _, tg := range first.Items {
		away[tg.AgentID] = true
	}
	if stopped := f.fleet.StopAgents(slices.Collect(maps.Keys(away))); len(stopped) != held || len(away) != held {
		t.Fatalf("stopped %d agents of wave 1's first %d targets, want %d", len(stopped), len(first.Items), held)
	}
	f.approve(r)
	f.waitFor("wave 1's first jobs sent to the agents away", f.jobsLimit(), func() (bool, string) {
		v := f.rollout(id)
		if v.State.Final() {
			t.Fatalf("the rollout ended %s before wave 1", v.State)
		}
		sent := 0
		for _, j := range f.read(id).jobs {
			if away[j.AgentID] && j.State == jobs.StateDispatched {
				sent++
			}
		}
		return v.CurrentWave == 1 && sent == held, fmt.Sprintf("state %s, wave %d, %d of %d sent to the agents away", v.State, v.CurrentWave, sent, held)
	})
	var aborted api.Rollout
	if err := f.call(f.owner, func(cl *client.Client) error {
		var err error
		aborted, err = cl.AbortRollout(f.ctx, id, "wrong holder for this batch")
		return err
	}); err != nil {
		t.Fatalf("aborting: %v", err)
	}
	abortedAt := time.Now()
	if aborted.State != rollout.StateAborted {
		t.Fatalf("aborted rollout is %s", aborted.State)
	}
	atAbort := f.read(id)
	// Its jobs end (the cancelled ones at once), and no job appears over several passes.
	f.waitFor("the aborted rollout's jobs to end", f.jobsLimit(), func() (bool, string) {
		r := f.read(id)
		open := 0
		for _, j := range r.jobs {
			if !jobs.Terminal(j.State) {
				open++
			}
		}
		return open == 0, fmt.Sprintf("%d of %d jobs not ended", open, len(r.jobs))
	})
	f.waitEnginePasses(3)
	end := f.read(id)
	if len(end.jobs) != len(atAbort.jobs) || end.created() != atAbort.created() {
		t.Fatalf("after the abort the rollout went from %d to %d jobs", len(atAbort.jobs), len(end.jobs))
	}
	states := f.wantOneJobEach(r, end, false)
	// Every job that had not started when the abort came was cancelled, before its agent
	// ran it; no job was created after the abort.
	cancelled := 0
	for _, j := range end.jobs {
		if j.Created.After(abortedAt) {
			t.Errorf("job %s was created at %s, after the abort (%s)", j.ID, j.Created, abortedAt)
		}
		var was jobs.State
		for _, a := range atAbort.jobs {
			if a.ID == j.ID {
				was = a.State
			}
		}
		if was == jobs.StateApproved || was == jobs.StateDispatched {
			if j.State != jobs.StateCancelled {
				t.Errorf("job %s was %s when the rollout was aborted, and ended %s; want cancelled", j.ID, was, j.State)
			}
		}
		if j.State == jobs.StateCancelled {
			cancelled++
		}
	}
	for _, j := range end.jobs {
		if away[j.AgentID] && j.State != jobs.StateCancelled {
			t.Errorf("job %s of agent %s, away, ended %s; want cancelled", j.ID, j.AgentID, j.State)
		}
	}
	if cancelled < held || end.created() >= len(end.targets) {
		t.Errorf("%d jobs cancelled, %d of %d targets with a job: want the %d jobs of the agents away cancelled, mid-wave", cancelled, end.created(), len(end.targets), held)
	}
	t.Logf("abort: %d of %d targets had a job, %d cancelled; jobs by state %v", end.created(), len(end.targets), cancelled, states)
}

// testKilled: the coordinators are killed with SIGKILL mid-wave, one while the other runs
// on, then both, and started again: the rollout completes, every target with exactly one
// job.
func (f *rolloutFleet) testKilled(t *testing.T) {
	f.t = t
	// A cap on jobs at once spreads each wave over many engine passes: kills land inside
	// a wave's creation.
	r := f.create(spec("killed", jobs.KindRenew, 20, []float64{30, 65, 100}, max(5, f.n/10)))
	id := r.ID
	midWave := func(wave int) func() (bool, string) {
		return func() (bool, string) {
			v := f.rollout(id)
			if v.State.Final() {
				t.Fatalf("the rollout ended %s before wave %d", v.State, wave)
			}
			if v.CurrentWave > wave {
				t.Fatalf("the rollout went past wave %d before the kill", wave)
			}
			w := v.Waves[wave].Tally
			return v.CurrentWave == wave && w.Pending < w.Targets && w.Pending > 0,
				fmt.Sprintf("state %s, wave %d, wave %d %+v", v.State, v.CurrentWave, wave, w)
		}
	}
	f.waitFor("wave 1 under way", f.jobsLimit(), midWave(1))
	f.coords[0].kill()
	t.Logf("coordinator-1 killed in wave 1 (%d jobs so far)", f.read(id).created())
	f.waitFor("coordinator-2 to create more", f.jobsLimit(), func() (bool, string) {
		v := f.rollout(id)
		return v.CurrentWave >= 2 || v.Waves[1].Tally.Pending == 0, fmt.Sprintf("wave %d %+v", v.CurrentWave, v.Waves[1].Tally)
	})
	if err := f.coords[0].startAndWait(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	f.waitFor("wave 2 under way", f.jobsLimit(), midWave(2))
	var wg sync.WaitGroup
	for _, c := range f.coords {
		wg.Go(func() { c.kill() })
	}
	wg.Wait()
	t.Logf("both coordinators killed in wave 2 (%d jobs so far)", f.read(id).created())
	for _, c := range f.coords {
		if err := c.startAndWait(3 * time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	var v api.Rollout
	f.waitFor("the rollout to complete", f.jobsLimit(), func() (bool, string) {
		v = f.rollout(id)
		if v.State.Final() && v.State != rollout.StateCompleted {
			t.Fatalf("the rollout ended %s: overall %+v, trip %+v", v.State, v.Overall, v.Trip)
		}
		return v.State == rollout.StateCompleted, fmt.Sprintf("state %s %s, wave %d, overall %+v", v.State, v.PauseKind, v.CurrentWave, v.Overall)
	})
	states := f.wantOneJobEach(r, f.read(id), true)
	if states[jobs.StateSucceeded] != r.TargetCount {
		t.Errorf("jobs by state %v: want all %d succeeded", states, r.TargetCount)
	}
	for _, c := range f.coords {
		if alarms := c.log.alarmsSeen(); len(alarms) > 0 {
			t.Errorf("%s: %v", c.name, alarms)
		}
	}
	t.Logf("coordinators killed: %d targets, one job each, %v", r.TargetCount, states)
}
