package storetest

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

var urlSafe = regexp.MustCompile(`^[A-Za-z0-9_-]{16,}$`)

func testJobs(t *testing.T, h *harness) {
	f := newFixture(t, h)
	in := f.job()
	in.TokenSerial = "tok-1"
	in.Document = store.Document{Number: "Ordre n° 12/2025", Date: "2025-03-01"}
	in.Deadline = base.Add(24 * time.Hour)
	in.Created = base
	j := do(t, h, func(tx store.Tx) (store.Job, error) { return tx.CreateJob(h.ctx, in) })
	if !urlSafe.MatchString(j.ID) {
		t.Fatalf("job ID %q is not random and URL-safe", j.ID)
	}
	want := in
	want.ID, want.Attempt, want.Version = j.ID, 1, 1
	want.Deadline, want.Created, want.Updated, want.StateSince = stored(in.Deadline), stored(base), stored(base), stored(base)
	equal(t, "created", j, want)
	equal(t, "get", must(h.s.GetJob(h.ctx, j.ID))(t), want)

	events := must(h.s.ListJobEvents(h.ctx, j.ID))(t)
	if len(events) != 1 || events[0].From != "" || events[0].To != jobs.StatePendingApproval || events[0].Actor != f.requester.ID ||
		events[0].Attempt != 1 || !events[0].At.Equal(stored(base)) {
		t.Fatalf("creation event: %+v", events)
	}
	attempts := must(h.s.ListJobAttempts(h.ctx, j.ID))(t)
	equal(t, "attempts", attempts, []store.JobAttempt{{JobID: j.ID, Attempt: 1, Started: stored(base)}})

	other := f.createJob(t, h, nil)
	if other.ID == j.ID {
		t.Fatal("two jobs got the same ID")
	}

	// A caller-chosen ID is kept; taking it twice is a conflict.
	named := f.createJob(t, h, func(j *store.Job) { j.ID = "job-import-1" })
	if named.ID != "job-import-1" {
		t.Fatalf("ID %q", named.ID)
	}
	for _, tc := range []struct {
		name string
		mod  func(j *store.Job)
		want error
	}{
		{"ID taken", func(j *store.Job) { j.ID = "job-import-1" }, store.ErrConflict},
		{"no kind", func(j *store.Job) { j.Kind = "" }, store.ErrInvalid},
		{"no state", func(j *store.Job) { j.State = "" }, store.ErrInvalid},
		{"no requester", func(j *store.Job) { j.RequesterID = "" }, store.ErrInvalid},
		{"unknown requester", func(j *store.Job) { j.RequesterID = "nope" }, store.ErrInvalid},
		{"unknown agent", func(j *store.Job) { j.AgentID = "nope" }, store.ErrInvalid},
		{"unknown organisation", func(j *store.Job) { j.OrganizationID = "nope" }, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := f.job()
			tc.mod(&in)
			wantErr(t, try(h, func(tx store.Tx) (store.Job, error) { return tx.CreateJob(h.ctx, in) }), tc.want)
		})
	}

	// A coordinator-side job: no holder, agent or organisation.
	bare := do(t, h, func(tx store.Tx) (store.Job, error) {
		return tx.CreateJob(h.ctx, store.Job{Kind: jobs.KindRevoke, State: jobs.StateApproved, RequesterID: f.requester.ID})
	})
	if bare.HolderID != "" || bare.AgentID != "" || bare.OrganizationID != "" || bare.TokenSerial != "" || !bare.Deadline.IsZero() {
		t.Fatalf("bare job: %+v", bare)
	}
}

func testJobCAS(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, nil)

	moved := do(t, h, func(tx store.Tx) (store.Job, error) {
		return tx.UpdateJobState(h.ctx, j.ID, jobs.StatePendingApproval, jobs.StateApproved, 1,
			store.JobChange{Actor: f.approver.ID, Reason: "looks right", At: base})
	})
	if moved.State != jobs.StateApproved || moved.Version != 2 || !moved.Updated.Equal(stored(base)) || moved.Attempt != 1 {
		t.Fatalf("after approval: %+v", moved)
	}

	for _, tc := range []struct {
		name          string
		id            string
		from, to      jobs.State
		version       int64
		change        store.JobChange
		want          error
		wantInMessage string
	}{
		{"stale version", j.ID, jobs.StatePendingApproval, jobs.StateRejected, 1, store.JobChange{Actor: "x"}, store.ErrConflict, "approved at version 2"},
		{"right version, wrong state", j.ID, jobs.StatePendingApproval, jobs.StateRejected, 2, store.JobChange{Actor: "x"}, store.ErrConflict, ""},
		{"future version", j.ID, jobs.StateApproved, jobs.StateDispatched, 3, store.JobChange{Actor: "x"}, store.ErrConflict, ""},
		{"missing job", "nope", jobs.StateApproved, jobs.StateDispatched, 1, store.JobChange{Actor: "x"}, store.ErrNotFound, ""},
		{"no actor", j.ID, jobs.StateApproved, jobs.StateDispatched, 2, store.JobChange{}, store.ErrInvalid, ""},
		{"version zero", j.ID, jobs.StateApproved, jobs.StateDispatched, 0, store.JobChange{Actor: "x"}, store.ErrInvalid, ""},
		{"unknown superseding job", j.ID, jobs.StateApproved, jobs.StateSuperseded, 2, store.JobChange{Actor: "x", SupersededBy: "nope"}, store.ErrInvalid, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := try(h, func(tx store.Tx) (store.Job, error) {
				return tx.UpdateJobState(h.ctx, tc.id, tc.from, tc.to, tc.version, tc.change)
			})
			wantErr(t, err, tc.want)
			if !strings.Contains(err.Error(), tc.wantInMessage) {
				t.Fatalf("error %q does not say %q", err, tc.wantInMessage)
			}
		})
	}
	equal(t, "unchanged by refused updates", must(h.s.GetJob(h.ctx, j.ID))(t), moved)

	// Failure records the error; a later change with a zero error clears it; nil keeps it.
	failed := do(t, h, func(tx store.Tx) (store.Job, error) {
		return tx.UpdateJobState(h.ctx, j.ID, jobs.StateApproved, jobs.StateFailed, 2, store.JobChange{Actor: "system",
			Error: &store.JobError{Code: "token_removed", Message: "token removed during key generation"}})
	})
	if failed.ErrorCode != "token_removed" || failed.ErrorMessage == "" || failed.Version != 3 {
		t.Fatalf("after failure: %+v", failed)
	}
	kept := do(t, h, func(tx store.Tx) (store.Job, error) {
		return tx.UpdateJobState(h.ctx, j.ID, jobs.StateFailed, jobs.StateApproved, 3, store.JobChange{Actor: "helpdesk1", Reason: "retry"})
	})
	if kept.ErrorCode != "token_removed" {
		t.Fatalf("nil Error cleared the last error: %+v", kept)
	}
	cleared := do(t, h, func(tx store.Tx) (store.Job, error) {
		return tx.UpdateJobState(h.ctx, j.ID, jobs.StateApproved, jobs.StateDispatched, 4, store.JobChange{Actor: "system", Error: &store.JobError{},
			TokenSerial: "tok-9", Deadline: base.Add(time.Hour)})
	})
	if cleared.ErrorCode != "" || cleared.ErrorMessage != "" || cleared.TokenSerial != "tok-9" || !cleared.Deadline.Equal(stored(base.Add(time.Hour))) {
		t.Fatalf("after dispatch: %+v", cleared)
	}

	// Supersede by a newer job.
	newer := f.createJob(t, h, nil)
	sup := do(t, h, func(tx store.Tx) (store.Job, error) {
		return tx.UpdateJobState(h.ctx, j.ID, jobs.StateDispatched, jobs.StateSuperseded, 5, store.JobChange{Actor: "system", SupersededBy: newer.ID})
	})
	if sup.SupersededBy != newer.ID || sup.State != jobs.StateSuperseded || sup.Version != 6 {
		t.Fatalf("after supersede: %+v", sup)
	}

	var path []string
	for _, e := range must(h.s.ListJobEvents(h.ctx, j.ID))(t) {
		path = append(path, fmt.Sprintf("%s>%s@%s", e.From, e.To, e.Actor))
	}
	equal(t, "timeline", path, []string{
		">pending_approval@" + f.requester.ID,
		"pending_approval>approved@" + f.approver.ID,
		"approved>failed@system",
		"failed>approved@helpdesk1",
		"approved>dispatched@system",
		"dispatched>superseded@system",
	})
}

// testJobCASConcurrent races several writers (on separate stores, as separate coordinators
// would be) to move the same job from the same version: exactly one may win.
func testJobCASConcurrent(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, nil)
	stores := []store.Store{h.s, h.open(t), h.open(t)}
	const racers = 9
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			s := stores[i%len(stores)]
			errs[i] = s.InTx(h.ctx, func(tx store.Tx) error {
				_, err := tx.UpdateJobState(h.ctx, j.ID, jobs.StatePendingApproval, jobs.StateApproved, 1,
					store.JobChange{Actor: fmt.Sprintf("racer-%d", i)})
				return err
			})
		})
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, store.ErrConflict):
		default:
			t.Errorf("racer %d: %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d racers won, want exactly 1", wins)
	}
	got := must(h.s.GetJob(h.ctx, j.ID))(t)
	if got.Version != 2 || got.State != jobs.StateApproved {
		t.Fatalf("job after race: %+v", got)
	}
	if n := len(must(h.s.ListJobEvents(h.ctx, j.ID))(t)); n != 2 {
		t.Fatalf("%d timeline events after the race, want 2", n)
	}
}

func testJobAttempts(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, func(j *store.Job) { j.State = jobs.StateRunning })

	// step reports a step the way the coordinator would: progress from package jobs,
	// compare-and-set on the job as last read.
	step := func(attempt int, s jobs.Step) error {
		return try(h, func(tx store.Tx) (store.Job, error) {
			cur, err := tx.GetJob(h.ctx, j.ID)
			if err != nil {
				return store.Job{}, err
			}
			p, err := jobs.AdvanceStep(cur.Kind, cur.State, cur.Progress, s)
			if err != nil {
				return store.Job{}, err
			}
			return tx.AddJobStep(h.ctx, store.JobStep{JobID: j.ID, Attempt: attempt, Step: s, Detail: "d-" + string(s), At: base}, p, cur.Version)
		})
	}
	if err := step(1, jobs.StepWaitingForToken); err != nil {
		t.Fatal(err)
	}
	if err := step(1, jobs.StepTokenFound); err != nil {
		t.Fatal(err)
	}
	got := must(h.s.GetJob(h.ctx, j.ID))(t)
	equal(t, "progress", got.Progress, jobs.Progress{Current: jobs.StepTokenFound, Highest: jobs.StepTokenFound})
	if got.Version != 3 {
		t.Fatalf("version %d after two steps, want 3", got.Version)
	}

	retried := do(t, h, func(tx store.Tx) (store.Job, error) {
		return tx.UpdateJobState(h.ctx, j.ID, jobs.StateRunning, jobs.StateDispatched, got.Version,
			store.JobChange{Actor: "helpdesk1", Reason: "retry", NewAttempt: true, At: base.Add(time.Minute)})
	})
	if retried.Attempt != 2 || retried.Version != 4 || retried.Progress != (jobs.Progress{}) {
		t.Fatalf("after retry: %+v", retried)
	}
	retried = do(t, h, func(tx store.Tx) (store.Job, error) {
		return tx.UpdateJobState(h.ctx, j.ID, jobs.StateDispatched, jobs.StateRunning, retried.Version, store.JobChange{Actor: "ws-0001"})
	})

	// A late result of attempt 1 is fenced off, whatever version it was computed from.
	lateStep := func(attempt int, version int64) error {
		return try(h, func(tx store.Tx) (store.Job, error) {
			return tx.AddJobStep(h.ctx, store.JobStep{JobID: j.ID, Attempt: attempt, Step: jobs.StepKeyGenerated}, jobs.Progress{}, version)
		})
	}
	wantErr(t, lateStep(1, retried.Version), store.ErrConflict)
	wantErr(t, lateStep(3, retried.Version), store.ErrConflict)
	// Progress computed from an old read of the job is refused too.
	wantErr(t, lateStep(2, retried.Version-1), store.ErrConflict)
	wantErr(t, lateStep(2, 0), store.ErrInvalid)
	wantErr(t, try(h, func(tx store.Tx) (store.Job, error) {
		return tx.AddJobStep(h.ctx, store.JobStep{JobID: j.ID, Attempt: 2}, jobs.Progress{}, retried.Version)
	}), store.ErrInvalid)
	wantErr(t, try(h, func(tx store.Tx) (store.Job, error) {
		return tx.AddJobStep(h.ctx, store.JobStep{JobID: "nope", Attempt: 1, Step: jobs.StepTokenFound}, jobs.Progress{}, 1)
	}), store.ErrNotFound)
	if err := step(2, jobs.StepWaitingForToken); err != nil {
		t.Fatal(err)
	}

	var steps []string
	for _, s := range must(h.s.ListJobSteps(h.ctx, j.ID))(t) {
		if s.ID == 0 || s.JobID != j.ID || !s.At.Equal(stored(base)) || s.Detail != "d-"+string(s.Step) {
			t.Fatalf("step %+v", s)
		}
		steps = append(steps, fmt.Sprintf("%d:%s", s.Attempt, s.Step))
	}
	equal(t, "steps", steps, []string{"1:waiting_for_token", "1:token_found", "2:waiting_for_token"})

	attempts := must(h.s.ListJobAttempts(h.ctx, j.ID))(t)
	if len(attempts) != 2 || attempts[1].Attempt != 2 || !attempts[1].Started.Equal(stored(base.Add(time.Minute))) {
		t.Fatalf("attempts: %+v", attempts)
	}
	events := must(h.s.ListJobEvents(h.ctx, j.ID))(t)
	if retry := events[len(events)-2]; retry.Attempt != 2 || retry.Reason != "retry" || retry.To != jobs.StateDispatched {
		t.Fatalf("retry event: %+v", retry)
	}
}

// testJobEdit changes a pending request: new binding, expiry clock restarted, refused on a
// stale version.
func testJobEdit(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, func(j *store.Job) { j.Created = base })
	if j.StateSince != stored(base) {
		t.Fatalf("state since %v, want the creation time", j.StateSince)
	}
	edit := store.JobEdit{HolderID: f.approver.ID, ProfileName: "auth", ProfileHash: "ph2", AgentID: f.agent.ID,
		TokenSerial: "tok-7", BindingHash: "bh2", At: base.Add(time.Hour)}
	edited := do(t, h, func(tx store.Tx) (store.Job, error) { return tx.EditJob(h.ctx, j.ID, j.Version, edit) })
	want := j
	want.HolderID, want.ProfileName, want.ProfileHash, want.TokenSerial, want.BindingHash = f.approver.ID, "auth", "ph2", "tok-7", "bh2"
	want.StateSince, want.Updated, want.Version = stored(base.Add(time.Hour)), stored(base.Add(time.Hour)), 2
	equal(t, "edited", edited, want)

	wantErr(t, try(h, func(tx store.Tx) (store.Job, error) { return tx.EditJob(h.ctx, j.ID, 1, edit) }), store.ErrConflict)
	wantErr(t, try(h, func(tx store.Tx) (store.Job, error) { return tx.EditJob(h.ctx, "nope", 1, edit) }), store.ErrNotFound)
	wantErr(t, try(h, func(tx store.Tx) (store.Job, error) {
		return tx.EditJob(h.ctx, j.ID, 2, store.JobEdit{HolderID: f.holder.ID})
	}), store.ErrInvalid)
	wantErr(t, try(h, func(tx store.Tx) (store.Job, error) {
		e := edit
		e.HolderID = "nobody"
		return tx.EditJob(h.ctx, j.ID, 2, e)
	}), store.ErrInvalid)

	// A state change moves StateSince too.
	moved := do(t, h, func(tx store.Tx) (store.Job, error) {
		return tx.UpdateJobState(h.ctx, j.ID, jobs.StatePendingApproval, jobs.StateApproved, 2, store.JobChange{Actor: "boss", At: base.Add(2 * time.Hour)})
	})
	if moved.StateSince != stored(base.Add(2*time.Hour)) {
		t.Fatalf("state since %v after a transition", moved.StateSince)
	}
}

func testJobList(t *testing.T, h *harness) {
	f := newFixture(t, h)
	org2 := do(t, h, func(tx store.Tx) (store.Organization, error) {
		return tx.CreateOrganization(h.ctx, store.Organization{Name: "Other Org"})
	})
	agent2 := do(t, h, func(tx store.Tx) (store.Agent, error) {
		return tx.CreateAgent(h.ctx, store.Agent{ID: "ws-0002", Hostname: "ws-0002.test"})
	})
	type spec struct {
		kind     jobs.Kind
		state    jobs.State
		org      string
		holder   string
		agent    string
		deadline time.Duration
	}
	specs := []spec{
		{jobs.KindIssue, jobs.StatePendingApproval, f.org.ID, f.holder.ID, f.agent.ID, time.Hour},
		{jobs.KindIssue, jobs.StateRunning, f.org.ID, f.approver.ID, f.agent.ID, 0},
		{jobs.KindRenew, jobs.StatePendingApproval, org2.ID, f.holder.ID, agent2.ID, 3 * time.Hour},
		{jobs.KindWipe, jobs.StateSucceeded, f.org.ID, f.holder.ID, agent2.ID, 0},
		{jobs.KindIssue, jobs.StateFailed, org2.ID, f.approver.ID, f.agent.ID, 30 * time.Minute},
		{jobs.KindRenew, jobs.StateRunning, f.org.ID, f.holder.ID, f.agent.ID, 0},
		{jobs.KindCSR, jobs.StatePendingApproval, f.org.ID, f.holder.ID, f.agent.ID, 0},
	}
	ids := make([]string, len(specs))
	h.tx(t, func(tx store.Tx) error {
		for i, s := range specs {
			j := store.Job{Kind: s.kind, State: s.state, OrganizationID: s.org, HolderID: s.holder, AgentID: s.agent,
				RequesterID: f.requester.ID, ProfileName: "p" + itoa(i%2)}
			// Two pairs share a creation time, so the ID must break the tie.
			j.Created = base.Add(time.Duration(i/2) * time.Second)
			if s.deadline > 0 {
				j.Deadline = base.Add(s.deadline)
			}
			got, err := tx.CreateJob(h.ctx, j)
			ids[i] = got.ID
			if err != nil {
				return err
			}
		}
		return nil
	})
	// Expected order: newest first, then ID descending within a creation time.
	order := func(idx ...int) []string {
		type e struct {
			created int
			id      string
		}
		var es []e
		for _, i := range idx {
			es = append(es, e{i / 2, ids[i]})
		}
		for a := range es {
			for b := a + 1; b < len(es); b++ {
				if es[b].created > es[a].created || es[b].created == es[a].created && es[b].id > es[a].id {
					es[a], es[b] = es[b], es[a]
				}
			}
		}
		out := []string{}
		for _, x := range es {
			out = append(out, x.id)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		filter store.JobFilter
		want   []string
	}{
		{"all", store.JobFilter{}, order(0, 1, 2, 3, 4, 5, 6)},
		{"state", store.JobFilter{States: []jobs.State{jobs.StatePendingApproval}}, order(0, 2, 6)},
		{"open states", store.JobFilter{States: []jobs.State{jobs.StatePendingApproval, jobs.StateRunning}}, order(0, 1, 2, 5, 6)},
		{"kind", store.JobFilter{Kinds: []jobs.Kind{jobs.KindRenew}}, order(2, 5)},
		{"organisation", store.JobFilter{OrganizationID: org2.ID}, order(2, 4)},
		{"holder", store.JobFilter{HolderID: f.approver.ID}, order(1, 4)},
		{"agent", store.JobFilter{AgentID: agent2.ID}, order(2, 3)},
		{"requester and profile", store.JobFilter{RequesterID: f.requester.ID, ProfileName: "p1"}, order(1, 3, 5)},
		{"deadline before", store.JobFilter{DeadlineBefore: base.Add(2 * time.Hour)}, order(0, 4)},
		{"combined", store.JobFilter{States: []jobs.State{jobs.StatePendingApproval}, Kinds: []jobs.Kind{jobs.KindIssue, jobs.KindCSR}, HolderID: f.holder.ID}, order(0, 6)},
		{"none", store.JobFilter{States: []jobs.State{jobs.StateExpired}}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, limit := range []int{1, 2, 3, 100} {
				got := []string{}
				for _, j := range listAll(t, limit, func(p store.Page) ([]store.Job, string, error) { return h.s.ListJobs(h.ctx, tc.filter, p) }) {
					got = append(got, j.ID)
				}
				equal(t, fmt.Sprintf("limit %d", limit), got, tc.want)
			}
		})
	}
	// A job created after a page was read does not disturb the following pages.
	first, next, err := h.s.ListJobs(h.ctx, store.JobFilter{}, store.Page{Limit: 3})
	if err != nil || len(first) != 3 || next == "" {
		t.Fatalf("first page: %d jobs, next %q, %v", len(first), next, err)
	}
	f.createJob(t, h, nil)
	rest := listAll(t, 100, func(p store.Page) ([]store.Job, string, error) {
		if p.Cursor == "" {
			p.Cursor = next
		}
		return h.s.ListJobs(h.ctx, store.JobFilter{}, p)
	})
	got := []string{}
	for _, j := range append(first, rest...) {
		got = append(got, j.ID)
	}
	equal(t, "pages around an insert", got, order(0, 1, 2, 3, 4, 5, 6))
}

func testApprovals(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, func(j *store.Job) { j.Created = base })
	a := do(t, h, func(tx store.Tx) (store.Approval, error) {
		return tx.AddApproval(h.ctx, store.Approval{JobID: j.ID, Gate: jobs.GateRequest, ApproverID: f.approver.ID,
			Verdict: jobs.VerdictApprove, BoundHash: j.BindingHash, Attempt: 1, Reason: "ok", At: base, Expires: base.Add(72 * time.Hour)})
	})
	want := store.Approval{ID: a.ID, JobID: j.ID, Gate: jobs.GateRequest, ApproverID: f.approver.ID, Verdict: jobs.VerdictApprove,
		BoundHash: j.BindingHash, Attempt: 1, Reason: "ok", At: stored(base), Expires: stored(base.Add(72 * time.Hour))}
	equal(t, "added", a, want)
	equal(t, "as package jobs reads it", a.Decision(), jobs.Decision{ActorID: f.approver.ID, Gate: jobs.GateRequest,
		Verdict: jobs.VerdictApprove, BindingHash: j.BindingHash, Attempt: 1, At: stored(base), Reason: "ok"})

	// After an edit (new hash) the same approver decides again; the CA-operator gate is
	// separate, and is passed again in a new attempt.
	edited := do(t, h, func(tx store.Tx) (store.Approval, error) {
		return tx.AddApproval(h.ctx, store.Approval{JobID: j.ID, Gate: jobs.GateRequest, ApproverID: f.approver.ID,
			Verdict: jobs.VerdictReject, BoundHash: "other-hash", Attempt: 1, Reason: "wrong profile", At: base.Add(time.Hour)})
	})
	var ca []store.Approval
	for attempt := 1; attempt <= 2; attempt++ {
		ca = append(ca, do(t, h, func(tx store.Tx) (store.Approval, error) {
			return tx.AddApproval(h.ctx, store.Approval{JobID: j.ID, Gate: jobs.GateCAOperator, ApproverID: f.approver.ID,
				Verdict: jobs.VerdictApprove, BoundHash: j.BindingHash, Attempt: attempt, At: base.Add(2 * time.Hour)})
		}))
	}
	got := must(h.s.ListApprovals(h.ctx, j.ID))(t)
	var ids []int64
	for _, a := range got {
		ids = append(ids, a.ID)
	}
	equal(t, "approvals in order", ids, []int64{a.ID, edited.ID, ca[0].ID, ca[1].ID})
	if !got[1].Expires.IsZero() || got[1].Verdict != jobs.VerdictReject || got[3].Attempt != 2 {
		t.Fatalf("approvals: %+v", got)
	}

	// What is stored is what package jobs decides on: one valid approval at the request
	// gate (the rejection was of other content, the CA-operator decisions are another gate).
	policy := jobs.Policy{Required: 1, Roles: []jobs.Role{jobs.RoleApprover}, Scope: jobs.ScopeOrganization, ExpiresAfter: 72 * time.Hour}
	out, err := jobs.Evaluate(policy, j.Rules(f.org.ID, got), base.Add(2*time.Hour))
	if err != nil || out.Status != jobs.StatusApproved || out.Approvals != 1 {
		t.Fatalf("request gate from stored approvals: %+v %v", out, err)
	}

	ok := store.Approval{JobID: j.ID, Gate: jobs.GateRequest, ApproverID: f.approver.ID, Verdict: jobs.VerdictApprove,
		BoundHash: j.BindingHash, Attempt: 1}
	for _, tc := range []struct {
		name string
		mod  func(a *store.Approval)
		want error
	}{
		{"same approver, gate, content and attempt", func(a *store.Approval) {}, store.ErrConflict},
		{"unknown gate", func(a *store.Approval) { a.Gate = "manager" }, store.ErrInvalid},
		{"unknown verdict", func(a *store.Approval) { a.Verdict = "maybe"; a.BoundHash = "h2" }, store.ErrInvalid},
		{"no bound hash", func(a *store.Approval) { a.BoundHash = "" }, store.ErrInvalid},
		{"no attempt", func(a *store.Approval) { a.Attempt = 0; a.BoundHash = "h4" }, store.ErrInvalid},
		{"unknown job", func(a *store.Approval) { a.JobID = "nope" }, store.ErrInvalid},
		{"unknown approver", func(a *store.Approval) { a.ApproverID = "nope"; a.BoundHash = "h3" }, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := ok
			tc.mod(&a)
			wantErr(t, try(h, func(tx store.Tx) (store.Approval, error) { return tx.AddApproval(h.ctx, a) }), tc.want)
		})
	}
}
