package fleetsim_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/fleetsim"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// rolloutTargetsEnv sizes BenchmarkRolloutDispatch: how many targets (default 1,000;
// `make bench-fleet` runs 10,000).
const rolloutTargetsEnv = "TOKENFLEET_ROLLOUT_TARGETS"

// refInFlight is how many confirms the reference publisher keeps in flight, as
// BenchmarkDispatch's (coordinator/dispatch) does.
const refInFlight = 200

// BenchmarkRolloutDispatch: the coordinator binary (on SQLite, then on PostgreSQL), with
// 1,000 agents (TOKENFLEET_ROLLOUT_TARGETS; 10,000 in make bench-fleet) enrolled through
// the batch API and not running, and a rollout of one issue job per agent, all in one
// wave (a canary of 100%: no wave waits for agents that do not run), created by a
// rollout owner and approved by an approver through the API. Timed: from the approval
// to the last job dispatched (its dispatch confirmed by the broker into the agent's
// queue, the job marked dispatched), from the jobs' own times. Then, in the same run, on
// the same broker and queues, a plain confirmed publisher (amqp091-go, 200 confirms in
// flight) sends as many messages of the same size.
// Reported: approval-to-dispatched-s, jobs/s (targets ÷ that time), ref_msg/s of the
// reference, and ratio = jobs/s ÷ ref_msg/s; create-s is how long the creation (the
// target list resolved, frozen and hashed) took. Whether the API stalls meanwhile: the
// rollout read through the API as a watcher does, read-idle-ms before the approval
// (median of 20) against read-busy-ms (median) and read-slowest-ms while dispatching.
func BenchmarkRolloutDispatch(b *testing.B) {
	targets := envInt(b, rolloutTargetsEnv, 1000)
	bin := testenv.Binary(b, "./coordinator/cmd/tokenfleet-coordinator")
	b.Run("sqlite", func(b *testing.B) { benchRolloutDispatch(b, bin, targets, "") })
	b.Run("postgres", func(b *testing.B) {
		benchRolloutDispatch(b, bin, targets, testenv.PostgresDatabase(b))
	})
}

func benchRolloutDispatch(b *testing.B, bin string, targets int, postgresDSN string) {
	ctx := testenv.Context(b)
	broker := testenv.NewBroker(b)
	co := startCoordinator(b, bin, broker.URL, postgresDSN)
	adm, err := client.New(co.url, co.token)
	if err != nil {
		b.Fatal(err)
	}
	if err := fleetsim.SetUpJobs(ctx, adm); err != nil {
		b.Fatal(err)
	}
	owner := benchPerson(b, adm, "rolf", jobs.RoleRolloutOwner)
	approver := benchPerson(b, adm, "arne", jobs.RoleApprover)
	log := zerolog.New(zerolog.NewTestWriter(b)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	const prefix = "target-"
	if _, err := fleetsim.Enrol(ctx, adm, prefix, targets, log); err != nil {
		b.Fatal(err)
	}
	// Every agent of the coordinator: the benchmark's are all there are.
	spec := rollout.Spec{
		Name:     "dispatch benchmark",
		Template: rollout.Template{Kind: jobs.KindIssue, Profile: fleetsim.JobProfile, Holder: fleetsim.JobHolder},
		Plan:     rollout.Plan{Canary: rollout.Canary{Percent: 100}},
		Brake:    rollout.Brake{ThresholdPercent: 10},
	}

	var res rolloutDispatchResult
	for b.Loop() { // once: the fixture is made for one run
		res = runRolloutDispatch(b, co.url, owner, approver, spec, targets)
	}
	b.StopTimer()
	ref, size := referencePublish(b, broker.URL, prefix, targets)
	rate := float64(targets) / res.dispatch.Seconds()
	b.Logf("coordinator on %s: %d targets; created in %.1f s; approval → last job dispatched %.1f s (%.0f jobs/s); "+
		"a confirmed publisher: %.0f msg/s of %d bytes; ratio %.3f; reading the rollout: %.0f ms idle, %.0f ms (slowest %.0f ms) while dispatching",
		co.store, targets, res.create.Seconds(), res.dispatch.Seconds(), rate, ref, size, rate/ref,
		ms(res.idleRead), ms(res.busyRead), ms(res.slowestRead))
	b.ReportMetric(res.create.Seconds(), "create-s")
	b.ReportMetric(res.dispatch.Seconds(), "approval-to-dispatched-s")
	b.ReportMetric(rate, "jobs/s")
	b.ReportMetric(ref, "ref_msg/s")
	b.ReportMetric(rate/ref, "ratio")
	b.ReportMetric(ms(res.idleRead), "read-idle-ms")
	b.ReportMetric(ms(res.busyRead), "read-busy-ms")
	b.ReportMetric(ms(res.slowestRead), "read-slowest-ms")
	b.ReportMetric(0, "ns/op")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchPerson creates a user of the job load's organisation with a role and returns an
// API token of theirs.
func benchPerson(b *testing.B, adm *client.Client, username string, role jobs.Role) *client.Client {
	b.Helper()
	ctx := context.Background()
	if _, err := adm.CreateUser(ctx, client.UserCreate{Username: username, DisplayName: username,
		Email: username + "@fleetsim.example", Organization: fleetsim.JobOrganization, Roles: []jobs.Role{role}}); err != nil {
		b.Fatal(err)
	}
	tok, err := adm.CreateAPIToken(ctx, username, client.APITokenCreate{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	c, err := client.New(adm.BaseURL(), tok.Token)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

type rolloutDispatchResult struct {
	create, dispatch time.Duration
	// The rollout read through the API (GET /api/v1/rollouts/ID, as a watcher does):
	// idle, the median of reads before the approval; busy, the median and the slowest
	// of the reads while the jobs were created and dispatched.
	idleRead, busyRead, slowestRead time.Duration
}

// timedRead reads the rollout through the API and returns how long it took.
func timedRead(ctx context.Context, b *testing.B, c *client.Client, id string) time.Duration {
	b.Helper()
	start := time.Now()
	if _, err := c.GetRollout(ctx, id); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// runRolloutDispatch creates the rollout, approves it and waits until every job is
// dispatched, watching the coordinator's transition counter (one cheap request a poll,
// so that watching does not slow what it watches); the times then come from the rollout
// and its jobs as the coordinator recorded them.
func runRolloutDispatch(b *testing.B, url string, owner, approver *client.Client, spec rollout.Spec, targets int) rolloutDispatchResult {
	b.Helper()
	ctx := testenv.Context(b)
	var res rolloutDispatchResult
	begin := time.Now()
	r, err := owner.CreateRollout(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	res.create = time.Since(begin)
	if r.TargetCount != targets {
		b.Fatalf("the rollout has %d targets, want %d", r.TargetCount, targets)
	}
	var idle, busy []time.Duration
	for range 20 {
		idle = append(idle, timedRead(ctx, b, owner, r.ID))
	}
	res.idleRead = median(idle)
	if _, err := approver.ApproveRollout(ctx, r.ID, r.BindingHash, "benchmark"); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(10*time.Minute + time.Duration(targets)*10*time.Millisecond)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		n, err := dispatchedCount(ctx, url)
		if err != nil {
			b.Fatal(err)
		}
		if n >= targets {
			break
		}
		busy = append(busy, timedRead(ctx, b, owner, r.ID))
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d jobs dispatched after %s", n, targets, time.Since(begin).Round(time.Second))
		}
		<-tick.C
	}
	v, err := owner.GetRollout(ctx, r.ID)
	if err != nil {
		b.Fatal(err)
	}
	if v.ApprovedAt.IsZero() {
		b.Fatalf("the rollout %s shows no approval time", r.ID)
	}
	// The last dispatch: the newest update of the job load's dispatched jobs (nothing
	// else happens to them: no agent runs).
	var last time.Time
	n := 0
	for j, err := range owner.AllJobs(ctx, client.JobFilter{Holder: fleetsim.JobHolder, State: jobs.StateDispatched}, 500) {
		if err != nil {
			b.Fatal(err)
		}
		n++
		if j.Updated.After(last) {
			last = j.Updated
		}
	}
	if n != targets {
		b.Fatalf("%d of the rollout's %d jobs are dispatched", n, targets)
	}
	res.dispatch = last.Sub(v.ApprovedAt)
	if len(busy) > 0 {
		res.busyRead, res.slowestRead = median(busy), slices.Max(busy)
	}
	return res
}

// dispatchedCount reads how many jobs went from approved to dispatched, from the
// coordinator's metrics.
func dispatchedCount(ctx context.Context, baseURL string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	const metric = "tokenfleet_coordinator_job_transitions_total{"
	n := 0.0
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric) || !strings.Contains(line, `from="approved"`) || !strings.Contains(line, `to="dispatched"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		n += v
	}
	return int(n), sc.Err()
}

// referencePublish publishes n messages, one to each agent's queue, as large as the
// dispatch the first agent's queue holds, with a plain confirmed publisher (refInFlight
// confirms in flight), after emptying the queues so that it meets them as the
// coordinator did; it returns its rate and the messages' size.
func referencePublish(b *testing.B, brokerURL, prefix string, n int) (rate float64, size int) {
	b.Helper()
	conn, err := amqp091.Dial(brokerURL)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	first, err := protocol.AgentQueue(fleetsim.AgentID(prefix, 0))
	if err != nil {
		b.Fatal(err)
	}
	d, ok, err := ch.Get(first, true)
	if err != nil || !ok {
		b.Fatalf("reading a dispatch off queue %s: found %t, %v", first, ok, err)
	}
	size = len(d.Body)
	keys := make([]string, n)
	for i := range n {
		keys[i] = fleetsim.AgentID(prefix, i)
		q, err := protocol.AgentQueue(keys[i])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ch.QueuePurge(q, false); err != nil {
			b.Fatal(err)
		}
	}
	body := make([]byte, size)
	ctx := testenv.Context(b)
	begin := time.Now()
	for start := 0; start < n; start += refInFlight {
		var pending []*amqp091.DeferredConfirmation
		for i := start; i < min(start+refInFlight, n); i++ {
			// The route a command takes (protocol.CommandRoute): the agent's queue by name.
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, protocol.DefaultExchange, protocol.AgentQueuePrefix+keys[i], true, false, amqp091.Publishing{
				ContentType: protocol.ContentType, DeliveryMode: amqp091.Persistent, MessageId: fmt.Sprintf("ref-%d", i),
				Type: "reference", UserId: "guest", Timestamp: time.Now(), Body: body})
			if err != nil {
				b.Fatal(err)
			}
			pending = append(pending, dc)
		}
		for _, dc := range pending {
			if ok, err := dc.WaitContext(ctx); !ok || err != nil {
				b.Fatalf("reference publish not acked: %v", err)
			}
		}
	}
	return float64(n) / time.Since(begin).Seconds(), size
}
