//go:build cgo && linux

package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// A lane is one holder with one token on one agent (real or simulated), and the jobs of that token one
// after the other, as a help desk runs them: the first issue on a blank token, then
// renewals, PIN unblocks, wipes, re-issues and csr + install_certificate pairs. The lane
// knows what the token must hold after each job that succeeded: the checker holds the
// token to it. A job that reached the agent and did not succeed (failed after the help
// desk's last retry, or expired) leaves the token as far as it got, by design (nothing is
// undone, see agent/executor): an issue may have initialised it, a renewal left its key
// beside the current one, an unblock set a new user PIN. The lane then no longer knows
// what the token holds, and wipes it, as a help desk does, before going on. A real
// lane's token whose SoftHSM2 file a kill emptied is replaced, its job cancelled, and the
// lane starts again from a blank token (campaign_lost_test.go).
type lane struct {
	c       *campaign
	n       int
	agentID string
	agent   *agentProc // nil for a simulated agent's lane
	holder  string
	profile string
	rng     *rand.Rand
	quota   int

	// The token as the lane's jobs left it.
	serial string
	state  tokenState
	keyJob string   // the job whose key (and certificate, when hasCert) the token holds
	pinJob string   // the job that set the user PIN now on the token
	broken string   // why the lane stopped: a job ended in a way it cannot account for
	lost   []string // serials of the lane's tokens a kill emptied, replaced since
}

type tokenState string

const (
	tokenBlank  tokenState = "blank"  // no token yet
	tokenIssued tokenState = "issued" // key and certificate
	tokenCSR    tokenState = "csr"    // key, certificate signed but not installed
	tokenWiped  tokenState = "wiped"  // initialised, nothing on it, no user PIN
	// tokenUnknown: a job that did not succeed left the token as far as it got; the
	// lane's next job wipes it.
	tokenUnknown tokenState = "unknown"
)

// run does the lane's jobs. Every lane's first issue ends before any lane goes on, so
// that a token another lane wiped is never taken for a blank one.
func (l *lane) run(firstIssues *sync.WaitGroup) {
	first := true
	defer func() {
		if first {
			firstIssues.Done()
		}
	}()
	for done := 0; done < l.quota && l.broken == "" && l.c.ctx.Err() == nil; done++ {
		kind, serial := l.next()
		if serial == "" && l.agent != nil {
			l.agent.blankMu.Lock()
			l.do(kind, serial)
			l.agent.blankMu.Unlock()
		} else {
			l.do(kind, serial)
		}
		if first {
			first = false
			firstIssues.Done()
			firstIssues.Wait()
		}
	}
}

// next draws the lane's next job from what the token holds.
func (l *lane) next() (jobs.Kind, string) {
	r := l.rng.IntN(100)
	switch l.state {
	case tokenBlank:
		return jobs.KindIssue, ""
	case tokenWiped:
		if r < 70 {
			return jobs.KindIssue, l.serial
		}
		return jobs.KindCSR, l.serial
	case tokenCSR:
		return jobs.KindInstallCertificate, l.serial
	case tokenUnknown:
		return jobs.KindWipe, l.serial
	default:
		switch {
		case r < 45:
			return jobs.KindRenew, l.serial
		case r < 70:
			return jobs.KindUnblockPIN, l.serial
		default:
			return jobs.KindWipe, l.serial
		}
	}
}

// do queues one job, decides it as the approver does, retries it as the help desk does
// while it fails, and updates the token's model when it succeeded.
func (l *lane) do(kind jobs.Kind, serial string) {
	c := l.c
	if c.beforeJob != nil {
		c.beforeJob(l)
	}
	n := c.created.Add(1)
	if n%500 == 0 {
		c.t.Logf("progress: job %d of %d created, %d faults injected, %v in", n, c.plan.jobs, c.faultsRun.Load(), time.Since(c.started).Round(time.Second))
	}
	c.waitFaults(n)
	rec := &jobRecord{kind: kind, lane: l.n, profile: l.profile, decision: "none"}
	if l.profile == profileGated {
		switch r := l.rng.IntN(100); {
		case r < 5:
			rec.decision = "reject"
		case r < 10:
			rec.decision = "cancel"
		default:
			rec.decision = "approve"
		}
	}
	id, err := l.create(kind, serial)
	if err != nil {
		l.broken = fmt.Sprintf("queueing a %s job: %v", kind, err)
		c.problem("lane %d (%s): %s", l.n, l.holder, l.broken)
		return
	}
	rec.id = id
	c.mu.Lock()
	c.jobs[id] = rec
	c.mu.Unlock()

	d, err := l.drive(rec)
	c.mu.Lock()
	rec.final, rec.ended = d, err == nil
	c.mu.Unlock()
	if err != nil {
		l.broken = fmt.Sprintf("job %s (%s): %v", id, kind, err)
		c.problem("lane %d (%s): %s", l.n, l.holder, l.broken)
		return
	}
	if rec.lost != nil {
		// Cancelled and its token replaced: the lane starts again from a blank token,
		// which its next issue initialises under a new serial.
		l.lost = append(l.lost, rec.lost.serial)
		l.serial, l.state, l.keyJob, l.pinJob = "", tokenBlank, "", ""
		return
	}
	if d.State != jobs.StateSucceeded {
		l.leftBehind(rec, d)
		return
	}
	if l.agent != nil {
		// Which directory holds the token, for when a kill empties its file. A look that
		// falls while the agent rewrites a token file sees it damaged: it is not noted.
		_, _, _ = l.agent.noteTokens()
	}
	switch kind {
	case jobs.KindIssue:
		l.serial, l.state, l.keyJob, l.pinJob = d.TokenSerial, tokenIssued, id, id
	case jobs.KindRenew:
		l.keyJob = id
	case jobs.KindUnblockPIN:
		l.pinJob = id
	case jobs.KindWipe:
		l.state, l.keyJob, l.pinJob = tokenWiped, "", ""
	case jobs.KindCSR:
		l.state, l.keyJob, l.pinJob = tokenCSR, id, id
	case jobs.KindInstallCertificate:
		l.state = tokenIssued
	}
}

// leftBehind updates the token's model after a job that did not succeed. Rejected or
// cancelled at its gate as decided, it never reached the agent: the token is as it was.
// Otherwise the token is as far as the job got: the lane takes the token an issue found
// (a blank token it initialised is the lane's now: no other job accounts for it) and
// wipes it next. A job that never found a token leaves a blank one blank.
func (l *lane) leftBehind(rec *jobRecord, d client.JobDetail) {
	if (rec.decision == "reject" && d.State == jobs.StateRejected) || (rec.decision == "cancel" && d.State == jobs.StateCancelled) {
		return
	}
	if l.serial == "" {
		l.serial = d.TokenSerial
	}
	if l.serial == "" {
		return
	}
	l.state, l.keyJob, l.pinJob = tokenUnknown, "", ""
}

// create queues the job as the help-desk operator. When the answer is lost (the
// coordinator killed meanwhile), the operator looks at the holder's jobs before asking
// again: a job of the holder the campaign does not know yet is the one asked for. Asking
// again sends the same idempotency key, as a script run again does: a coordinator that
// created the job before it died answers with that job, even when it came back too late
// for the client's own resends and the holder's jobs could not be listed.
func (l *lane) create(kind jobs.Kind, serial string) (string, error) {
	c := l.c
	req := client.JobCreate{Kind: kind, Holder: l.holder, Agent: l.agentID, Profile: l.profile, TokenSerial: serial}
	key := client.NewIdempotencyKey()
	deadline := time.Now().Add(jobWait)
	for {
		var j client.Job
		err := c.call(c.operator, func(ctx context.Context, cl *client.Client) error {
			var err error
			j, _, err = cl.CreateJobWithKey(ctx, req, key)
			return err
		})
		if err == nil {
			return j.ID, nil
		}
		if !transient(err) || time.Now().After(deadline) || c.ctx.Err() != nil {
			return "", err
		}
		if id, ok := l.adopt(kind); ok {
			return id, nil
		}
	}
}

// adopt finds a job of the lane's holder the campaign has not recorded.
func (l *lane) adopt(kind jobs.Kind) (string, bool) {
	c := l.c
	var found string
	_ = c.call(c.operator, func(ctx context.Context, cl *client.Client) error {
		found = ""
		for j, err := range cl.AllJobs(ctx, client.JobFilter{Holder: l.holder}, 100) {
			if err != nil {
				return err
			}
			c.mu.Lock()
			_, known := c.jobs[j.ID]
			c.mu.Unlock()
			if !known && j.Kind == kind {
				found = j.ID
			}
		}
		return nil
	})
	return found, found != ""
}

// maxRetries is how often the help desk retries a failed job before giving up on it.
const maxRetries = 3

// drive follows the job to its end: it approves, rejects or cancels it at its gate as
// decided, and retries it while it fails (up to maxRetries).
func (l *lane) drive(rec *jobRecord) (client.JobDetail, error) {
	c := l.c
	deadline := time.Now().Add(jobWait)
	var d client.JobDetail
	var watch lostWatch
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := c.call(c.operator, func(ctx context.Context, cl *client.Client) error {
			var err error
			d, err = cl.GetJob(ctx, rec.id)
			return err
		}); err != nil {
			return d, err
		}
		switch {
		case d.State == jobs.StatePendingApproval:
			if err := l.decide(rec, d); err != nil {
				return d, err
			}
			continue
		case d.State == jobs.StateFailed && rec.retries < maxRetries:
			if err := l.retry(rec, d); err != nil {
				return d, err
			}
			continue
		case jobs.Terminal(d.State):
			return d, nil
		}
		replaced, err := l.watchLost(&watch, rec, d)
		if err != nil {
			return d, err
		}
		if replaced {
			continue // the job is cancelled: see it end
		}
		if time.Now().After(deadline) {
			return d, fmt.Errorf("still %s (attempt %d, steps %v, waiting: %q) after %v", d.State, d.Attempt, stepNames(d), d.WaitingReason, jobWait)
		}
		select {
		case <-tick.C:
		case <-c.ctx.Done():
			return d, c.ctx.Err()
		}
	}
}

// decide takes the campaign's decision on a job waiting for approval. When the answer is
// lost, the next look at the job says whether it landed.
func (l *lane) decide(rec *jobRecord, d client.JobDetail) error {
	c := l.c
	token := c.approver
	var act func(ctx context.Context, cl *client.Client) error
	switch rec.decision {
	case "approve":
		act = func(ctx context.Context, cl *client.Client) error {
			_, err := cl.Approve(ctx, rec.id, "checked the request")
			return err
		}
	case "reject":
		act = func(ctx context.Context, cl *client.Client) error {
			_, err := cl.Reject(ctx, rec.id, "not for this holder")
			return err
		}
	case "cancel":
		token = c.operator
		act = func(ctx context.Context, cl *client.Client) error {
			_, err := cl.Cancel(ctx, rec.id, "asked by mistake")
			return err
		}
	default:
		return fmt.Errorf("waits for approval, but profile %s needs none", rec.profile)
	}
	err := c.call(token, act)
	if err == nil {
		return nil
	}
	// Refused because the decision landed in an answer that was lost: the job moved on.
	var now client.JobDetail
	if gerr := c.call(c.operator, func(ctx context.Context, cl *client.Client) error {
		var err error
		now, err = cl.GetJob(ctx, rec.id)
		return err
	}); gerr == nil && now.State != jobs.StatePendingApproval {
		return nil
	}
	return fmt.Errorf("%s at its gate: %w", rec.decision, err)
}

// retry starts a new attempt of a failed job, as the help desk does.
func (l *lane) retry(rec *jobRecord, d client.JobDetail) error {
	c := l.c
	rec.retries++
	err := c.call(c.operator, func(ctx context.Context, cl *client.Client) error {
		_, err := cl.Retry(ctx, rec.id, client.RetryRequest{Reason: "retried by the help desk: " + d.ErrorCode})
		return err
	})
	if err == nil {
		return nil
	}
	var now client.JobDetail
	if gerr := c.call(c.operator, func(ctx context.Context, cl *client.Client) error {
		var err error
		now, err = cl.GetJob(ctx, rec.id)
		return err
	}); gerr == nil && now.Attempt > d.Attempt {
		return nil // the retry landed; its answer was lost
	}
	return fmt.Errorf("retry after %s (%s): %w", d.ErrorCode, d.ErrorMessage, err)
}

// laneExpect is what a lane's token must hold, for the checker.
type laneExpect struct {
	serial  string
	state   tokenState
	keyJob  string
	pinJob  string
	hasCert bool
}

func (l *lane) expect() laneExpect {
	return laneExpect{serial: l.serial, state: l.state, keyJob: l.keyJob, pinJob: l.pinJob,
		hasCert: slices.Contains([]tokenState{tokenIssued}, l.state)}
}
