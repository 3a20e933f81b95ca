//go:build cgo && linux

package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/fleetsim"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// The fault campaign: many jobs of six kinds a workstation runs, queued, approved,
// rejected, cancelled and retried as people do, on real agents (child processes, each on
// a SoftHSM2 store of its own) while coordinators and agents are killed with SIGKILL and
// the run's broker connections are closed at random moments. A checker then proves that
// nothing was lost or applied twice (campaign_check_test.go).
//
// TOKENFLEET_SOAK=long turns the short version `make test` runs into the long one
// `make soak` runs. Other settings:
//
//	TOKENFLEET_SOAK_SEED      the seed (default: new each run; printed, and in every failure)
//	TOKENFLEET_SOAK_JOBS      jobs per variant
//	TOKENFLEET_SOAK_FAULTS    faults per variant
//	TOKENFLEET_SOAK_VARIANTS  comma-separated: sqlite, postgres, broker-restart
//	TOKENFLEET_SOAK_AGENTS    real agents per variant (2-4)
//	TOKENFLEET_SOAK_SIMS      simulated agents per variant (fleetsim, simulated tokens)
//
// broker-restart restarts the broker's node (rabbitmqctl stop_app/start_app), which every
// run on the machine shares: only `make soak` asks for it, never the default.
const (
	soakEnv         = "TOKENFLEET_SOAK"
	soakSeedEnv     = "TOKENFLEET_SOAK_SEED"
	soakJobsEnv     = "TOKENFLEET_SOAK_JOBS"
	soakFaultsEnv   = "TOKENFLEET_SOAK_FAULTS"
	soakVariantsEnv = "TOKENFLEET_SOAK_VARIANTS"
	soakAgentsEnv   = "TOKENFLEET_SOAK_AGENTS"
	soakSimsEnv     = "TOKENFLEET_SOAK_SIMS"
)

// Variants of the campaign.
const (
	variantSQLite        = "sqlite"         // one coordinator on SQLite
	variantPostgres      = "postgres"       // two coordinators on one PostgreSQL database
	variantBrokerRestart = "broker-restart" // one coordinator on SQLite, and the broker's node restarted
)

var variantNames = []string{variantSQLite, variantPostgres, variantBrokerRestart}

// variantPlan is one variant's size.
type variantPlan struct {
	name          string
	jobs, faults  int
	agents, lanes int // real agents, and lanes (holders with a token each) per agent
	// sims is how many simulated agents (fleetsim, in this process, on simulated
	// tokens) run beside the real ones, one lane each.
	sims int
}

// campaignSettings is what a run does, from the environment.
type campaignSettings struct {
	seed     uint64
	long     bool
	variants []variantPlan
}

func loadCampaignSettings(t *testing.T) campaignSettings {
	t.Helper()
	var s campaignSettings
	switch v := os.Getenv(soakEnv); v {
	case "":
	case "long":
		s.long = true
	default:
		t.Fatalf("%s=%q: want empty (the short campaign) or long", soakEnv, v)
	}
	s.seed = uint64(time.Now().UnixNano()) //nolint:gosec // a seed, printed: not a secret
	if v := os.Getenv(soakSeedEnv); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want a decimal number (the seed a run printed)", soakSeedEnv, v)
		}
		s.seed = n
	}
	// The short campaign stays within a minute on a busy 2-core machine: 40 jobs and 15
	// faults over both stores, on real agents only. Simulated agents (one token each,
	// which locks its PINs as hardware does) run in the long one, where their jobs are
	// many enough to matter; see README.md, Fault campaign, for what they found and what
	// is still open.
	plans := map[string]variantPlan{
		variantSQLite:   {name: variantSQLite, jobs: 24, faults: 9, agents: 2, lanes: 3},
		variantPostgres: {name: variantPostgres, jobs: 16, faults: 6, agents: 2, lanes: 2},
	}
	order := []string{variantSQLite, variantPostgres}
	if s.long {
		plans = map[string]variantPlan{
			variantSQLite:        {name: variantSQLite, jobs: 10000, faults: 500, agents: 4, lanes: 4, sims: 300},
			variantPostgres:      {name: variantPostgres, jobs: 2000, faults: 100, agents: 3, lanes: 4, sims: 100},
			variantBrokerRestart: {name: variantBrokerRestart, jobs: 600, faults: 30, agents: 2, lanes: 4},
		}
		order = []string{variantSQLite, variantPostgres, variantBrokerRestart}
	}
	if v := os.Getenv(soakVariantsEnv); v != "" {
		order = nil
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			p, ok := plans[name]
			if !ok && name == variantBrokerRestart {
				p, ok = variantPlan{name: name, jobs: 40, faults: 10, agents: 2, lanes: 2}, true
			}
			if !ok {
				t.Fatalf("%s: unknown variant %q (sqlite, postgres, broker-restart)", soakVariantsEnv, name)
			}
			plans[name] = p
			order = append(order, name)
		}
	}
	for _, name := range order {
		p := plans[name]
		p.jobs = envInt(t, soakJobsEnv, p.jobs, 1)
		p.faults = envInt(t, soakFaultsEnv, p.faults, 0)
		p.agents = envInt(t, soakAgentsEnv, p.agents, 1)
		p.sims = envInt(t, soakSimsEnv, p.sims, 0)
		if p.agents > 4 {
			t.Fatalf("%s=%d: at most 4 real agents", soakAgentsEnv, p.agents)
		}
		s.variants = append(s.variants, p)
	}
	return s
}

func envInt(t *testing.T, name string, def, minimum int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < minimum {
		t.Fatalf("%s=%q: want a whole number of at least %d", name, v, minimum)
	}
	return n
}

// TestFaultCampaign runs the campaign's variants one after the other, each on a
// coordinator, broker vhost and token stores of its own, and checks each (see the
// checker). The seed is printed first and named in every failure: TOKENFLEET_SOAK_SEED
// replays the run's plan (which jobs, which faults, after which job); the moments faults
// land at inside a job depend on timing.
func TestFaultCampaign(t *testing.T) {
	set := loadCampaignSettings(t)
	t.Logf("fault campaign: seed %d (replay: %s=%d %s), long %t", set.seed, soakSeedEnv, set.seed, soakReplayHint(set.long), set.long)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the fault campaign failed with seed %d; replay it with %s=%d %s", set.seed, soakSeedEnv, set.seed, soakReplayHint(set.long))
		}
	})
	for _, p := range set.variants {
		t.Run(p.name, func(t *testing.T) {
			// Each variant's plan has a seed of its own, the same whichever variants run.
			c := newCampaign(t, set, p, set.seed+uint64(slices.Index(variantNames, p.name))*7919)
			c.run()
			c.check()
			c.summary()
		})
	}
}

func soakReplayHint(long bool) string {
	if long {
		return "make soak"
	}
	return "go test -run TestFaultCampaign ./e2e/"
}

// Campaign profiles: P-256 keys (the token is not what the campaign measures), a token the
// agent initialises; one needs an approver, the other none.
const (
	profileGated = "campaign-gated"
	profileOpen  = "campaign-open"
)

const campaignProfiles = `name: campaign-gated
description: Fault campaign, behind an approval.
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}", organization: "{{.Organization}}"}
sans: {upn: true}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
token: {initialize: true, label: "{{.Name}}", any_blank: true}
pin_policy: {min_length: 12, max_length: 16, so_pin_length: 16}
approval: {required: 1, roles: [approver], scope: organization, expires_after: 72h}
---
name: campaign-open
description: Fault campaign, without approval.
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}", organization: "{{.Organization}}"}
sans: {upn: true}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
token: {initialize: true, label: "{{.Name}}", any_blank: true}
pin_policy: {min_length: 12, max_length: 16, so_pin_length: 16}
`

// jobWait bounds how long the campaign waits for one job to end; several faults may land
// on it.
const jobWait = 4 * time.Minute

// campaign is one variant's run.
type campaign struct {
	t      *testing.T
	set    campaignSettings
	plan   variantPlan
	seed   uint64
	broker *testenv.Broker
	dead   *deadTap
	coords []*coordProc
	agents []*agentProc
	lanes  []*lane

	admin, operator, approver string // API tokens

	created   atomic.Int64 // jobs created so far
	faultsAt  []int64      // a fault fires once this many jobs were created
	faultsRun atomic.Int64 // faults injected so far
	ctx       context.Context
	cancel    context.CancelFunc
	started   time.Time
	duration  time.Duration

	mu       sync.Mutex // guards the fields below
	jobs     map[string]*jobRecord
	faults   map[string]int // injected, by kind
	problems []string       // what went wrong while running, for the verdicts

	verdicts   []verdict
	deadByCode map[string]int

	// replaced are the lanes' tokens a kill emptied, replaced as an operator does
	// (campaign_lost_test.go).
	replaced []*replacement
	// restarts carries agent restarts the lanes ask for to the test's goroutine.
	restarts chan agentRestart
	// beforeJob, when set, runs in a lane's goroutine before each of its jobs: a focused
	// test's way to act between two jobs.
	beforeJob func(l *lane)

	sims      *fleetsim.Fleet // nil without simulated agents
	simTokens *fleetsim.SimTokens
	simLog    *tailBuffer
}

// jobRecord is a job the campaign created, and what it decided for it.
type jobRecord struct {
	id      string
	kind    jobs.Kind
	lane    int
	profile string
	// decision is approve, reject or cancel for a gated job, none for an open one.
	decision string
	retries  int
	final    client.JobDetail
	ended    bool
	// lost is set when the job waited for a token a kill emptied: the campaign cancelled
	// it, as decided then, and replaced the token.
	lost *replacement
}

func newCampaign(t *testing.T, set campaignSettings, p variantPlan, seed uint64) *campaign {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := &campaign{t: t, set: set, plan: p, seed: seed, ctx: ctx, cancel: cancel,
		jobs: map[string]*jobRecord{}, faults: map[string]int{}, restarts: make(chan agentRestart)}
	t.Logf("variant %s: seed %d, %d jobs, %d faults, %d real agents with %d lanes each, %d simulated agents", p.name, seed, p.jobs, p.faults, p.agents, p.lanes, p.sims)
	c.broker = testenv.NewBroker(t)
	c.dead = newDeadTap(t, c.broker)

	root := t.TempDir()
	driver, dsn := "sqlite", ""
	if p.name == variantPostgres {
		driver, dsn = "postgres", testenv.PostgresDatabase(t)
	}
	first := newCoordProc(t, "coordinator-1", filepath.Join(root, "coordinator-1"), driver, dsn, c.broker.URL)
	c.coords = append(c.coords, first)
	t.Cleanup(func() { c.stopAll() })
	if err := first.startAndWait(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	if p.name == variantPostgres {
		second := newCoordProc(t, "coordinator-2", filepath.Join(root, "coordinator-2"), driver, dsn, c.broker.URL)
		copyDataDir(t, first.data, second.data)
		c.coords = append(c.coords, second)
		if err := second.startAndWait(3 * time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	c.admin = first.adminToken(t)
	for _, co := range c.coords {
		t.Logf("%s at %s, data in %s", co.name, co.url, co.data)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.keepLogs()
		}
	})

	c.ctl(c.admin, "org", "create", org)
	c.ctl(c.admin, "user", "create", operator, "--name", "Olga Operator", "--org", org, "--role", "helpdesk")
	c.ctl(c.admin, "user", "create", approver, "--name", "Arne Approver", "--org", org, "--role", "approver")
	c.operator = strings.TrimSpace(c.ctl(c.admin, "user", "token", operator, "--name", "campaign"))
	c.approver = strings.TrimSpace(c.ctl(c.admin, "user", "token", approver, "--name", "campaign"))
	profiles := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(profiles, []byte(campaignProfiles), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ctl(c.admin, "profile", "apply", profiles)

	rng := rand.New(rand.NewPCG(seed, 1)) //nolint:gosec // a replayable plan, not a secret
	for i := range p.agents {
		id := fmt.Sprintf("ws-campaign-%d", i)
		c.ctl(c.admin, "agent", "add", id, "--hostname", id+".acme.example")
		a := &agentProc{id: id, dir: filepath.Join(root, id), store: newSoftStore(t)}
		if err := os.Mkdir(a.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		a.proc = newProc("agent "+id, "agent", childConfig{DataDir: a.dir, BrokerURL: c.broker.URL, AgentID: id}, "SOFTHSM2_CONF="+a.store.conf)
		c.agents = append(c.agents, a)
		if err := a.start(); err != nil {
			t.Fatal(err)
		}
		for range p.lanes {
			n := len(c.lanes)
			l := &lane{c: c, n: n, agentID: id, agent: a, holder: fmt.Sprintf("holder%03d", n), profile: profileOpen, state: tokenBlank,
				rng: rand.New(rand.NewPCG(seed, uint64(100+n)))} //nolint:gosec // a replayable plan
			if (n+int(rng.Uint64()%2))%2 == 0 {
				l.profile = profileGated
			}
			c.ctl(c.admin, "user", "create", l.holder, "--name", fmt.Sprintf("Holder %03d", n), "--org", org,
				"--email", l.holder+"@acme.example", "--upn", l.holder+"@acme.example")
			c.lanes = append(c.lanes, l)
		}
	}
	if p.sims > 0 {
		c.startSims(root, rng)
	}
	// The lanes share the jobs; each fault fires once a drawn number of jobs were created.
	realLanes, simLanes := c.lanes[:p.agents*p.lanes], c.lanes[p.agents*p.lanes:]
	simJobs := 0
	if len(simLanes) > 0 {
		simJobs = int(float64(p.jobs) * simShare)
	}
	share(realLanes, p.jobs-simJobs)
	share(simLanes, simJobs)
	for range p.faults {
		c.faultsAt = append(c.faultsAt, 1+int64(rng.Uint64()%uint64(max(p.jobs-1, 1))))
	}
	slices.Sort(c.faultsAt)
	return c
}

// share shares n jobs between the lanes.
func share(lanes []*lane, n int) {
	for i, l := range lanes {
		l.quota = n / len(lanes)
		if i < n%len(lanes) {
			l.quota++
		}
	}
}

// procs lists every child of the campaign.
func (c *campaign) procs() []*proc {
	var out []*proc
	for _, co := range c.coords {
		out = append(out, co.proc)
	}
	for _, a := range c.agents {
		out = append(out, a.proc)
	}
	return out
}

func (c *campaign) stopAll() {
	for _, p := range c.procs() {
		p.kill()
	}
}

// ctl runs tokenfleetctl against a coordinator that answers, and fails the test unless it
// succeeds.
func (c *campaign) ctl(token string, args ...string) string {
	c.t.Helper()
	var last string
	for attempt := 0; attempt < 5; attempt++ {
		co := c.liveCoordinator()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		var stdout, stderr strings.Builder
		vars := map[string]string{"TOKENFLEET_URL": co.url, "TOKENFLEET_TOKEN": token, "HOME": c.t.TempDir()}
		code := ctl.Main(ctx, args, ctl.Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return vars[k] }})
		cancel()
		if code == ctl.ExitOK {
			return stdout.String()
		}
		last = fmt.Sprintf("exit status %d\n%s%s", code, stdout.String(), stderr.String())
		if !strings.Contains(stderr.String(), "connection refused") && !strings.Contains(stderr.String(), "EOF") {
			break
		}
	}
	c.t.Fatalf("tokenfleetctl %s: %s (seed %d)", strings.Join(args, " "), last, c.seed)
	return ""
}

// liveCoordinator is a coordinator that is running, at random when there are two.
func (c *campaign) liveCoordinator() *coordProc {
	alive := c.coords[:0:0]
	for _, co := range c.coords {
		co.mu.Lock()
		running := co.done != nil
		if running {
			select {
			case <-co.done:
				running = false
			default:
			}
		}
		co.mu.Unlock()
		if running {
			alive = append(alive, co)
		}
	}
	if len(alive) == 0 {
		return c.coords[0]
	}
	return alive[int(time.Now().UnixNano())%len(alive)]
}

// call runs fn against a coordinator as the holder of token, again while the failure is
// one a coordinator being killed or restarted causes (connection refused or reset, a
// timeout, a 5xx), until jobWait passes.
func (c *campaign) call(token string, fn func(ctx context.Context, cl *client.Client) error) error {
	deadline := time.Now().Add(jobWait)
	for {
		co := c.liveCoordinator()
		cl, err := client.New(co.url, token)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
		err = fn(ctx, cl)
		cancel()
		if err == nil || !transient(err) || c.ctx.Err() != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the coordinators did not answer for %v: %w", jobWait, err)
		}
		select {
		case <-c.ctx.Done():
			return c.ctx.Err()
		case <-time.After(100 * time.Millisecond): // pause before asking again
		}
	}
}

// transient says whether err is what a coordinator going away causes, rather than an
// answer.
func transient(err error) bool {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Status >= http.StatusInternalServerError
	}
	return true // no answer at all: refused, reset, timed out
}

func (c *campaign) problem(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// run starts the lanes and injects the faults in this goroutine (the broker helpers fail
// the test, which only the test's goroutine may do), then waits for the lanes.
func (c *campaign) run() {
	c.started = time.Now()
	var wg sync.WaitGroup
	firstIssues := &sync.WaitGroup{}
	firstIssues.Add(len(c.lanes))
	for _, l := range c.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(firstIssues)
		}()
	}
	lanesDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(lanesDone)
	}()
	inj := newInjector(c)
	c.injectFaults(inj, lanesDone)
	<-lanesDone
	c.duration = time.Since(c.started)
	// Everything is up again for the checks: a fault may have been the last thing.
	c.restoreAll()
}

// faultsDue says how many faults should have fired by now.
func (c *campaign) faultsDue() int {
	n := c.created.Load()
	return sort.Search(len(c.faultsAt), func(i int) bool { return c.faultsAt[i] > n })
}

// waitFaults holds a lane about to create the n-th job until the faults drawn for the
// jobs before it have fired: faults land among the jobs, not after them.
func (c *campaign) waitFaults(n int64) {
	want := sort.Search(len(c.faultsAt), func(i int) bool { return c.faultsAt[i] > n-1 })
	tick := time.NewTicker(20 * time.Millisecond) // the fault loop runs its own pace: poll it
	defer tick.Stop()
	for int(c.faultsRun.Load()) < want {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// keepLogs writes what the children's logs still hold to a directory that outlives the
// test, and says where: a failed soak is read there.
func (c *campaign) keepLogs() {
	dir, err := os.MkdirTemp("", fmt.Sprintf("tokenfleet-campaign-%s-%d-", c.plan.name, c.seed))
	if err != nil {
		c.t.Logf("keeping the logs: %v", err)
		return
	}
	for _, p := range c.procs() {
		name := strings.ReplaceAll(p.name, " ", "-") + ".log"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(p.log.String()), 0o600); err != nil {
			c.t.Logf("keeping the log of %s: %v", p.name, err)
		}
		c.t.Logf("log of %s (its end; more in %s):\n%s", p.name, filepath.Join(dir, name), tail(withoutDebug(p.log.String()), 3000))
	}
	if c.simLog != nil {
		name := filepath.Join(dir, "simulated-agents.log")
		if err := os.WriteFile(name, []byte(c.simLog.String()), 0o600); err != nil {
			c.t.Logf("keeping the simulated agents' log: %v", err)
		}
		c.t.Logf("the simulated agents' warnings and errors are in %s", name)
	}
}
