package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// rolloutSpec is a spec as a client might send it: odd spacing, keys in no order, a
// non-ASCII name. The store keeps it byte for byte.
const rolloutSpec = `{"name":  "renew Zürich",
  "template": {"kind": "renew", "profile": "signing"},
  "plan": {"waves": [25, 100], "canary": {"count": 5}}, "brake": {"threshold_percent": 20}}`

// rollout returns a rollout of f ready to create.
func (f fixture) rollout() store.Rollout {
	return store.Rollout{Name: "renew Zürich", State: "pending_approval", Spec: []byte(rolloutSpec),
		ProfileName: "signing", BindingHash: strings.Repeat("ef", 32), CreatedBy: f.requester.ID}
}

// target returns a target of f on token serial.
func (f fixture) target(wave int, serial string) store.RolloutTarget {
	return store.RolloutTarget{Wave: wave, AgentID: f.agent.ID, TokenSerial: serial, HolderID: f.holder.ID,
		TokenModel: "SoftHSM v2", OrganizationID: f.org.ID}
}

// targets returns n targets of f on tokens tok-00001..., the first canary in wave 0 and
// the rest in wave 1 + i%waves.
func (f fixture) targets(n, canary, waves int) []store.RolloutTarget {
	ts := make([]store.RolloutTarget, n)
	for i := range ts {
		wave := 0
		if i >= canary {
			wave = 1 + i%waves
		}
		ts[i] = f.target(wave, fmt.Sprintf("tok-%05d", i+1))
	}
	return ts
}

func (f fixture) createRollout(t *testing.T, h *harness, mod func(r *store.Rollout), ts []store.RolloutTarget) store.Rollout {
	t.Helper()
	r := f.rollout()
	if mod != nil {
		mod(&r)
	}
	return do(t, h, func(tx store.Tx) (store.Rollout, error) { return tx.CreateRollout(h.ctx, r, ts) })
}

// allTargets lists every target of a rollout that matches filter, a few pages at a time.
func allTargets(t *testing.T, h *harness, id string, filter store.RolloutTargetFilter, limit int) []store.RolloutTarget {
	t.Helper()
	return listAll(t, limit, func(p store.Page) ([]store.RolloutTarget, string, error) {
		return h.s.ListRolloutTargets(h.ctx, id, filter, p)
	})
}

func testRollouts(t *testing.T, h *harness) {
	f := newFixture(t, h)
	in := f.rollout()
	in.Created = base
	ts := []store.RolloutTarget{f.target(0, "tok-1"), f.target(1, "tok-2"), f.target(1, "tok-3")}
	ts[1].CertificateSerial = "00AB12" // normalised like certificate serials
	ts[2].HolderID, ts[2].OrganizationID = "", ""
	r := do(t, h, func(tx store.Tx) (store.Rollout, error) { return tx.CreateRollout(h.ctx, in, ts) })
	if !urlSafe.MatchString(r.ID) {
		t.Fatalf("rollout ID %q is not random and URL-safe", r.ID)
	}
	want := in
	want.ID, want.Version, want.TargetCount = r.ID, 1, 3
	want.Created, want.Updated = stored(base), stored(base)
	equal(t, "created", r, want)
	got := must(h.s.GetRollout(h.ctx, r.ID))(t)
	equal(t, "get", got, want)
	if string(got.Spec) != rolloutSpec {
		t.Fatalf("spec not kept byte for byte:\n got  %s\n want %s", got.Spec, rolloutSpec)
	}

	targets := allTargets(t, h, r.ID, store.RolloutTargetFilter{}, 10)
	wantTargets := []store.RolloutTarget{
		{RolloutID: r.ID, Seq: 1, Wave: 0, AgentID: f.agent.ID, TokenSerial: "tok-1", HolderID: f.holder.ID,
			TokenModel: "SoftHSM v2", OrganizationID: f.org.ID, Added: stored(base)},
		{RolloutID: r.ID, Seq: 2, Wave: 1, AgentID: f.agent.ID, TokenSerial: "tok-2", HolderID: f.holder.ID,
			CertificateSerial: "ab12", TokenModel: "SoftHSM v2", OrganizationID: f.org.ID, Added: stored(base)},
		{RolloutID: r.ID, Seq: 3, Wave: 1, AgentID: f.agent.ID, TokenSerial: "tok-3", TokenModel: "SoftHSM v2",
			Added: stored(base)},
	}
	equal(t, "targets", targets, wantTargets)
	if !must(h.s.HasRolloutTarget(h.ctx, r.ID, "AB12"))(t) {
		t.Fatal("HasRolloutTarget does not find certificate ab12")
	}
	if must(h.s.HasRolloutTarget(h.ctx, r.ID, "ab13"))(t) {
		t.Fatal("HasRolloutTarget finds certificate ab13, which no target has")
	}
	_, err := h.s.HasRolloutTarget(h.ctx, r.ID, "not-hex")
	wantErr(t, err, store.ErrInvalid)

	// Caller-chosen ID and seqs are kept; the brake trip is kept as JSON.
	named := f.createRollout(t, h, func(r *store.Rollout) {
		r.ID, r.State, r.Trip = "rollout-import-1", "paused", []byte(`{"scope": "overall"}`)
	}, []store.RolloutTarget{func() store.RolloutTarget { t := f.target(2, "x"); t.Seq = 7; return t }()})
	if named.ID != "rollout-import-1" || named.TargetCount != 1 || string(named.Trip) != `{"scope": "overall"}` {
		t.Fatalf("named rollout: %+v", named)
	}
	if seqs := allTargets(t, h, named.ID, store.RolloutTargetFilter{}, 10); len(seqs) != 1 || seqs[0].Seq != 7 {
		t.Fatalf("targets of the named rollout: %+v", seqs)
	}
	empty := f.createRollout(t, h, nil, nil)
	if empty.TargetCount != 0 || len(allTargets(t, h, empty.ID, store.RolloutTargetFilter{}, 10)) != 0 {
		t.Fatalf("rollout without targets: %+v", empty)
	}

	withSeq := func(seq int, tk store.RolloutTarget) store.RolloutTarget { tk.Seq = seq; return tk }
	for _, tc := range []struct {
		name string
		mod  func(r *store.Rollout)
		ts   []store.RolloutTarget
		want error
	}{
		{"ID taken", func(r *store.Rollout) { r.ID = "rollout-import-1" }, nil, store.ErrConflict},
		{"bad ID", func(r *store.Rollout) { r.ID = "a b" }, nil, store.ErrInvalid},
		{"no name", func(r *store.Rollout) { r.Name = "" }, nil, store.ErrInvalid},
		{"no state", func(r *store.Rollout) { r.State = "" }, nil, store.ErrInvalid},
		{"no creator", func(r *store.Rollout) { r.CreatedBy = "" }, nil, store.ErrInvalid},
		{"unknown creator", func(r *store.Rollout) { r.CreatedBy = "nope" }, nil, store.ErrInvalid},
		{"no spec", func(r *store.Rollout) { r.Spec = nil }, nil, store.ErrInvalid},
		{"spec not JSON", func(r *store.Rollout) { r.Spec = []byte(`{"name":`) }, nil, store.ErrInvalid},
		{"trip not JSON", func(r *store.Rollout) { r.Trip = []byte(`nope`) }, nil, store.ErrInvalid},
		{"negative wave", func(r *store.Rollout) { r.CurrentWave = -1 }, nil, store.ErrInvalid},
		{"target without agent", nil, []store.RolloutTarget{{TokenSerial: "t"}}, store.ErrInvalid},
		{"target twice", nil, []store.RolloutTarget{f.target(0, "t"), f.target(1, "t")}, store.ErrInvalid},
		{"seq twice", nil, []store.RolloutTarget{withSeq(2, f.target(0, "t1")), f.target(0, "t2")}, store.ErrInvalid},
		{"negative target wave", nil, []store.RolloutTarget{f.target(-1, "t")}, store.ErrInvalid},
		{"target's certificate not hex", nil, []store.RolloutTarget{func() store.RolloutTarget {
			tk := f.target(0, "t")
			tk.CertificateSerial = "xyz"
			return tk
		}()}, store.ErrInvalid},
		{"unknown agent", nil, []store.RolloutTarget{func() store.RolloutTarget {
			tk := f.target(0, "t")
			tk.AgentID = "nope"
			return tk
		}()}, store.ErrInvalid},
		{"unknown holder", nil, []store.RolloutTarget{func() store.RolloutTarget {
			tk := f.target(0, "t")
			tk.HolderID = "nope"
			return tk
		}()}, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := f.rollout()
			in.ID = "rollout-bad"
			if tc.mod != nil {
				tc.mod(&in)
			}
			wantErr(t, try(h, func(tx store.Tx) (store.Rollout, error) { return tx.CreateRollout(h.ctx, in, tc.ts) }), tc.want)
			if in.ID == "rollout-bad" {
				_, err := h.s.GetRollout(h.ctx, in.ID)
				wantErr(t, err, store.ErrNotFound)
			}
		})
	}

	// Approvals: one decision per approver, bound hash and round.
	approve := func(approver store.User, hash string, round int) error {
		return try(h, func(tx store.Tx) (store.RolloutApproval, error) {
			return tx.AddRolloutApproval(h.ctx, store.RolloutApproval{RolloutID: r.ID, ApproverID: approver.ID,
				Verdict: jobs.VerdictApprove, BoundHash: hash, Round: round, Reason: "ok", At: base})
		})
	}
	if err := approve(f.approver, r.BindingHash, 0); err != nil {
		t.Fatal(err)
	}
	wantErr(t, approve(f.approver, r.BindingHash, 0), store.ErrConflict)
	for _, tc := range []struct {
		approver store.User
		hash     string
		round    int
	}{{f.approver, r.BindingHash, 1}, {f.approver, "other", 0}, {f.holder, r.BindingHash, 0}} {
		if err := approve(tc.approver, tc.hash, tc.round); err != nil {
			t.Fatalf("approval by %s of %s in round %d: %v", tc.approver.Username, tc.hash, tc.round, err)
		}
	}
	wantErr(t, approve(f.approver, "", 2), store.ErrInvalid)
	wantErr(t, approve(f.approver, r.BindingHash, -1), store.ErrInvalid)
	wantErr(t, try(h, func(tx store.Tx) (store.RolloutApproval, error) {
		return tx.AddRolloutApproval(h.ctx, store.RolloutApproval{RolloutID: r.ID, ApproverID: f.approver.ID,
			Verdict: "maybe", BoundHash: "h"})
	}), store.ErrInvalid)
	wantErr(t, try(h, func(tx store.Tx) (store.RolloutApproval, error) {
		return tx.AddRolloutApproval(h.ctx, store.RolloutApproval{RolloutID: "nope", ApproverID: f.approver.ID,
			Verdict: jobs.VerdictApprove, BoundHash: "h"})
	}), store.ErrInvalid)
	approvals := must(h.s.ListRolloutApprovals(h.ctx, r.ID))(t)
	if len(approvals) != 4 {
		t.Fatalf("%d approvals, want 4: %+v", len(approvals), approvals)
	}
	first := approvals[0]
	equal(t, "first approval", first, store.RolloutApproval{ID: first.ID, RolloutID: r.ID, ApproverID: f.approver.ID,
		Verdict: jobs.VerdictApprove, BoundHash: r.BindingHash, Round: 0, Reason: "ok", At: stored(base)})
	if approvals[1].Round != 1 || approvals[2].BoundHash != "other" || approvals[3].ApproverID != f.holder.ID {
		t.Fatalf("approvals not in the order they were made: %+v", approvals)
	}
	if len(must(h.s.ListRolloutApprovals(h.ctx, named.ID))(t)) != 0 {
		t.Fatal("another rollout's approvals listed")
	}

	_, err = h.s.GetRollout(h.ctx, "nope")
	wantErr(t, err, store.ErrNotFound)
}

// testRolloutTenThousand creates a rollout of 10,000 targets in one call: inserted a few
// hundred to a statement, all there, in order, with their waves.
func testRolloutTenThousand(t *testing.T, h *harness) {
	f := newFixture(t, h)
	const n = 10_000
	ts := f.targets(n, 50, 3)
	r := f.createRollout(t, h, nil, ts)
	if r.TargetCount != n {
		t.Fatalf("target count %d, want %d", r.TargetCount, n)
	}
	got := allTargets(t, h, r.ID, store.RolloutTargetFilter{}, store.MaxPageLimit)
	if len(got) != n {
		t.Fatalf("%d targets stored, want %d", len(got), n)
	}
	for i, tk := range got {
		if tk.Seq != i+1 || tk.Wave != ts[i].Wave || tk.TokenSerial != ts[i].TokenSerial || tk.JobID != "" {
			t.Fatalf("target %d: %+v, want seq %d wave %d token %s", i, tk, i+1, ts[i].Wave, ts[i].TokenSerial)
		}
	}
	counts := must(h.s.RolloutCounts(h.ctx, r.ID))(t)
	equal(t, "counts", counts, []store.RolloutCount{
		{Wave: 0, N: 50}, {Wave: 1, N: 3317}, {Wave: 2, N: 3316}, {Wave: 3, N: 3317},
	})
	canary := allTargets(t, h, r.ID, store.RolloutTargetFilter{Wave: ptr(0), WithoutJob: true}, store.MaxPageLimit)
	if len(canary) != 50 || canary[49].Seq != 50 {
		t.Fatalf("canary: %d targets", len(canary))
	}
}

// testRolloutJobs attaches jobs to targets: once each, all or none, and counts the
// targets by their job's state.
func testRolloutJobs(t *testing.T, h *harness) {
	f := newFixture(t, h)
	r := f.createRollout(t, h, nil, f.targets(6, 2, 2)) // waves 0 0 1 2 1 2
	other := f.createRollout(t, h, nil, f.targets(1, 1, 1))
	job := func(rolloutID string, mod func(j *store.Job)) store.Job {
		return f.createJob(t, h, func(j *store.Job) {
			j.RolloutID, j.State, j.Created = rolloutID, jobs.StateApproved, base
			if mod != nil {
				mod(j)
			}
		})
	}
	j1, j2, j3 := job(r.ID, nil), job(r.ID, nil), job(r.ID, nil)
	if j1.RolloutID != r.ID || must(h.s.GetJob(h.ctx, j1.ID))(t).RolloutID != r.ID {
		t.Fatalf("job's rollout not kept: %+v", j1)
	}
	if rules := j1.Rules("", nil); rules.Rollout != r.ID {
		t.Fatalf("rules of a rollout's job: Rollout %q, want %q", rules.Rollout, r.ID)
	}
	foreign := job(other.ID, nil)
	plain := f.createJob(t, h, nil)
	if plain.RolloutID != "" || plain.Rules("", nil).Rollout != "" {
		t.Fatalf("a job without a rollout names one: %+v", plain)
	}
	wantErr(t, try(h, func(tx store.Tx) (store.Job, error) {
		j := f.job()
		j.RolloutID = "nope"
		return tx.CreateJob(h.ctx, j)
	}), store.ErrInvalid)
	listed := listAll(t, 2, func(p store.Page) ([]store.Job, string, error) {
		return h.s.ListJobs(h.ctx, store.JobFilter{RolloutID: r.ID}, p)
	})
	if len(listed) != 3 {
		t.Fatalf("ListJobs by rollout: %d jobs, want 3", len(listed))
	}
	for _, j := range listed {
		if j.RolloutID != r.ID {
			t.Fatalf("ListJobs by rollout lists %+v", j)
		}
	}

	attach := func(links ...store.RolloutJobLink) error {
		return h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.AttachRolloutJobs(h.ctx, r.ID, links) })
	}
	if err := attach(store.RolloutJobLink{Seq: 3, JobID: j2.ID}, store.RolloutJobLink{Seq: 1, JobID: j1.ID}); err != nil {
		t.Fatal(err)
	}
	// A target that has its job (or does not exist) refuses the whole set; the refusal
	// leaves the transaction usable and nothing attached.
	for _, links := range [][]store.RolloutJobLink{
		{{Seq: 2, JobID: j3.ID}, {Seq: 1, JobID: j3.ID + "x"}},
		{{Seq: 2, JobID: j3.ID}, {Seq: 99, JobID: plain.ID}},
	} {
		h.tx(t, func(tx store.Tx) error {
			err := tx.AttachRolloutJobs(h.ctx, r.ID, links)
			if !errors.Is(err, store.ErrConflict) {
				t.Errorf("attach %+v: got %v, want a conflict", links, err)
			}
			tk, _, err := tx.ListRolloutTargets(h.ctx, r.ID, store.RolloutTargetFilter{WithoutJob: true}, store.Page{Limit: 1})
			if err != nil || len(tk) != 1 || tk[0].Seq != 2 {
				t.Errorf("after a refused attach, the first target without a job is %+v (%v), want seq 2", tk, err)
			}
			return nil
		})
	}
	wantErr(t, attach(store.RolloutJobLink{Seq: 2, JobID: j1.ID}), store.ErrConflict) // j1 is target 1's
	wantErr(t, attach(store.RolloutJobLink{Seq: 2, JobID: "nope"}), store.ErrInvalid)
	wantErr(t, attach(store.RolloutJobLink{Seq: 2, JobID: j3.ID}, store.RolloutJobLink{Seq: 2, JobID: plain.ID}), store.ErrInvalid)
	wantErr(t, attach(store.RolloutJobLink{Seq: 2, JobID: j3.ID}, store.RolloutJobLink{Seq: 4, JobID: j3.ID}), store.ErrInvalid)
	wantErr(t, attach(store.RolloutJobLink{Seq: 0, JobID: j3.ID}), store.ErrInvalid)
	if err := h.s.InTx(h.ctx, func(tx store.Tx) error {
		return tx.AttachRolloutJobs(h.ctx, other.ID, []store.RolloutJobLink{{Seq: 1, JobID: foreign.ID}})
	}); err != nil {
		t.Fatal(err)
	}
	if err := attach(store.RolloutJobLink{Seq: 2, JobID: j3.ID}); err != nil {
		t.Fatal(err)
	}
	if err := attach(); err != nil {
		t.Fatalf("attaching nothing: %v", err)
	}

	// Target filters.
	seqs := func(f store.RolloutTargetFilter) []int {
		var out []int
		for _, tk := range allTargets(t, h, r.ID, f, 2) {
			out = append(out, tk.Seq)
		}
		return out
	}
	equal(t, "with a job", seqs(store.RolloutTargetFilter{HasJob: true}), []int{1, 2, 3})
	equal(t, "without a job", seqs(store.RolloutTargetFilter{WithoutJob: true}), []int{4, 5, 6})
	equal(t, "wave 1", seqs(store.RolloutTargetFilter{Wave: ptr(1)}), []int{3, 5})
	equal(t, "wave 2 without a job", seqs(store.RolloutTargetFilter{Wave: ptr(2), WithoutJob: true}), []int{4, 6})
	equal(t, "wave 0 without a job", seqs(store.RolloutTargetFilter{Wave: ptr(0), WithoutJob: true}), []int(nil))
	tk := allTargets(t, h, r.ID, store.RolloutTargetFilter{Wave: ptr(1), HasJob: true}, 10)
	if len(tk) != 1 || tk[0].JobID != j2.ID {
		t.Fatalf("wave 1 with a job: %+v, want target 3 with job %s", tk, j2.ID)
	}
	_, _, err := h.s.ListRolloutTargets(h.ctx, r.ID, store.RolloutTargetFilter{HasJob: true, WithoutJob: true}, store.Page{})
	wantErr(t, err, store.ErrInvalid)
	_, _, err = h.s.ListRolloutTargets(h.ctx, r.ID, store.RolloutTargetFilter{}, store.Page{Cursor: "!!"})
	wantErr(t, err, store.ErrInvalid)

	// Counts: the jobs' states and error codes, by wave; targets without a job in "".
	move := func(j store.Job, to jobs.State, code string, at time.Time) store.Job {
		return do(t, h, func(tx store.Tx) (store.Job, error) {
			c := store.JobChange{Actor: "system", At: at}
			if code != "" {
				c.Error = &store.JobError{Code: code, Message: "it broke"}
			}
			return tx.UpdateJobState(h.ctx, j.ID, j.State, to, j.Version, c)
		})
	}
	move(j1, jobs.StateSucceeded, "", base.Add(time.Hour))
	move(j2, jobs.StateFailed, "token.device_error", base.Add(3*time.Hour))
	move(foreign, jobs.StateFailed, "csr_rejected", base.Add(3*time.Hour))
	j3 = move(j3, jobs.StateDispatched, "", base.Add(3*time.Hour))
	equal(t, "counts", must(h.s.RolloutCounts(h.ctx, r.ID))(t), []store.RolloutCount{
		{Wave: 0, State: jobs.StateDispatched, N: 1},
		{Wave: 0, State: jobs.StateSucceeded, N: 1},
		{Wave: 1, N: 1},
		{Wave: 1, State: jobs.StateFailed, ErrorCode: "token.device_error", N: 1},
		{Wave: 2, N: 2},
	})
	if c := must(h.s.RolloutCounts(h.ctx, "nope"))(t); len(c) != 0 {
		t.Fatalf("counts of no rollout: %+v", c)
	}

	// Done since: terminal jobs of this rollout only, last updated at or after the time.
	for _, tc := range []struct {
		since time.Time
		want  int
	}{{base, 2}, {base.Add(time.Hour), 2}, {base.Add(time.Hour + time.Microsecond), 1}, {base.Add(3 * time.Hour), 1},
		{base.Add(4 * time.Hour), 0}} {
		if n := must(h.s.RolloutDoneSince(h.ctx, r.ID, tc.since))(t); n != tc.want {
			t.Errorf("done since %s: %d, want %d", tc.since.Sub(base), n, tc.want)
		}
	}
	move(j3, jobs.StateCancelled, "", base.Add(5*time.Hour))
	if n := must(h.s.RolloutDoneSince(h.ctx, r.ID, base.Add(4*time.Hour)))(t); n != 1 {
		t.Errorf("done since 4h after a cancellation: %d, want 1", n)
	}
}

// testRolloutAttachMany attaches more jobs than one statement takes, in one call.
func testRolloutAttachMany(t *testing.T, h *harness) {
	f := newFixture(t, h)
	const n = 700 // more than one statement's worth
	r := f.createRollout(t, h, nil, f.targets(n, n, 1))
	links := make([]store.RolloutJobLink, n) // the last target first: given out of order
	want := make(map[int]string, n)
	h.tx(t, func(tx store.Tx) error {
		for i := range links {
			j := f.job()
			j.RolloutID, j.State = r.ID, jobs.StateApproved
			created, err := tx.CreateJob(h.ctx, j)
			if err != nil {
				return err
			}
			links[i] = store.RolloutJobLink{Seq: n - i, JobID: created.ID}
			want[n-i] = created.ID
		}
		return nil
	})
	// The last target already has a job: the whole set is refused, even the targets
	// before it, in other statements.
	h.tx(t, func(tx store.Tx) error {
		return tx.AttachRolloutJobs(h.ctx, r.ID, links[:1])
	})
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.AttachRolloutJobs(h.ctx, r.ID, links) }), store.ErrConflict)
	if got := allTargets(t, h, r.ID, store.RolloutTargetFilter{HasJob: true}, store.MaxPageLimit); len(got) != 1 {
		t.Fatalf("%d targets have a job after a refused attach, want 1", len(got))
	}
	h.tx(t, func(tx store.Tx) error { return tx.AttachRolloutJobs(h.ctx, r.ID, links[1:]) })
	got := allTargets(t, h, r.ID, store.RolloutTargetFilter{}, store.MaxPageLimit)
	if len(got) != n {
		t.Fatalf("%d targets, want %d", len(got), n)
	}
	for _, tk := range got {
		if tk.JobID != want[tk.Seq] {
			t.Fatalf("target %d has job %q, want %q", tk.Seq, tk.JobID, want[tk.Seq])
		}
	}
	equal(t, "counts", must(h.s.RolloutCounts(h.ctx, r.ID))(t), []store.RolloutCount{{Wave: 0, State: jobs.StateApproved, N: n}})
}

// testRolloutCAS updates a rollout with compare-and-set: every mutable field replaced,
// the others kept, a stale version refused.
func testRolloutCAS(t *testing.T, h *harness) {
	f := newFixture(t, h)
	r := f.createRollout(t, h, func(r *store.Rollout) { r.Created = base }, f.targets(3, 1, 1))
	if r.Version != 1 {
		t.Fatalf("created at version %d", r.Version)
	}
	ch := r
	ch.Name, ch.State, ch.BindingHash = "renamed", "paused", "new-hash"
	ch.ApprovedAt, ch.CurrentWave, ch.WaveFinishedAt, ch.Promoted = base.Add(time.Minute), 2, base.Add(2*time.Minute), true
	ch.PauseKind, ch.PauseReason, ch.PausedBy, ch.PausedAt, ch.PauseRound = "brake", "3 of 10 failed", "system", base.Add(3*time.Minute), 1
	ch.Trip, ch.FinishedAt = []byte(`{"scope":"wave 2","failed":3}`), base.Add(4*time.Minute)
	// Not the update's to change:
	ch.Spec, ch.Standing, ch.ProfileName, ch.CreatedBy, ch.Created, ch.TargetCount = []byte(`{}`), true, "other", f.approver.ID, base.Add(time.Hour), 99
	before := time.Now().Add(-time.Second)
	up := do(t, h, func(tx store.Tx) (store.Rollout, error) { return tx.UpdateRollout(h.ctx, ch, 1) })
	want := ch
	want.Spec, want.Standing, want.ProfileName, want.CreatedBy, want.Created, want.TargetCount = r.Spec, false, r.ProfileName, r.CreatedBy, r.Created, 3
	want.ApprovedAt, want.WaveFinishedAt = stored(ch.ApprovedAt), stored(ch.WaveFinishedAt)
	want.PausedAt, want.FinishedAt = stored(ch.PausedAt), stored(ch.FinishedAt)
	want.Version, want.Updated = 2, up.Updated
	equal(t, "updated", up, want)
	equal(t, "read back", must(h.s.GetRollout(h.ctx, r.ID))(t), want)
	if up.Updated.Before(before) || up.Updated.After(time.Now().Add(time.Second)) {
		t.Fatalf("updated at %s, want now", up.Updated)
	}

	// Clearing: zero times, no trip, not promoted.
	cl := up
	cl.State, cl.PauseKind, cl.PauseReason, cl.PausedBy, cl.PausedAt, cl.Trip, cl.Promoted, cl.FinishedAt = "running", "", "", "", time.Time{}, nil, false, time.Time{}
	cleared := do(t, h, func(tx store.Tx) (store.Rollout, error) { return tx.UpdateRollout(h.ctx, cl, 2) })
	if cleared.Version != 3 || !cleared.PausedAt.IsZero() || cleared.Trip != nil || cleared.Promoted || !cleared.FinishedAt.IsZero() || cleared.PauseKind != "" {
		t.Fatalf("cleared: %+v", cleared)
	}

	// A lost compare-and-set changes nothing.
	stale := cl
	stale.Name = "stale"
	err := try(h, func(tx store.Tx) (store.Rollout, error) { return tx.UpdateRollout(h.ctx, stale, 2) })
	wantErr(t, err, store.ErrConflict)
	if !strings.Contains(err.Error(), "version 3") {
		t.Fatalf("conflict does not say the current version: %v", err)
	}
	if got := must(h.s.GetRollout(h.ctx, r.ID))(t); got.Name != "renamed" || got.Version != 3 {
		t.Fatalf("after a lost update: %+v", got)
	}
	missing := cl
	missing.ID = "nope"
	wantErr(t, try(h, func(tx store.Tx) (store.Rollout, error) { return tx.UpdateRollout(h.ctx, missing, 1) }), store.ErrNotFound)
	wantErr(t, try(h, func(tx store.Tx) (store.Rollout, error) { return tx.UpdateRollout(h.ctx, cl, 0) }), store.ErrInvalid)
	bad := cl
	bad.State = ""
	wantErr(t, try(h, func(tx store.Tx) (store.Rollout, error) { return tx.UpdateRollout(h.ctx, bad, 3) }), store.ErrInvalid)

	// Coordinators racing from one read: exactly one wins.
	const racers = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, lost := 0, 0
	for i := range racers {
		wg.Go(func() {
			mine := cleared
			mine.CurrentWave = 3 + i
			err := h.s.InTx(h.ctx, func(tx store.Tx) error {
				_, err := tx.UpdateRollout(h.ctx, mine, cleared.Version)
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, store.ErrConflict):
				lost++
			default:
				t.Errorf("racer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if won != 1 || lost != racers-1 {
		t.Fatalf("%d won and %d lost, want 1 and %d", won, lost, racers-1)
	}
	if got := must(h.s.GetRollout(h.ctx, r.ID))(t); got.Version != 4 {
		t.Fatalf("after the race: version %d, want 4", got.Version)
	}
}

// testRolloutAddTargets adds targets to a standing rollout: seqs after the highest,
// those already there passed over, the count kept, the version not moved.
func testRolloutAddTargets(t *testing.T, h *harness) {
	f := newFixture(t, h)
	r := f.createRollout(t, h, func(r *store.Rollout) { r.Standing, r.State = true, "running" }, nil)
	cert := func(wave int, serial string) store.RolloutTarget {
		tk := f.target(wave, "tok-1")
		tk.CertificateSerial = serial
		return tk
	}
	add := func(ts ...store.RolloutTarget) int {
		return do(t, h, func(tx store.Tx) (int, error) { return tx.AddRolloutTargets(h.ctx, r.ID, ts) })
	}
	if n := add(cert(0, "a1"), cert(0, "a2"), cert(1, "a3")); n != 3 {
		t.Fatalf("added %d, want 3", n)
	}
	// a2 is there, "00A3" is a3, a4 twice in one call: one target added, seq 4.
	if n := add(cert(1, "a2"), cert(1, "00A3"), cert(1, "a4"), cert(1, "a4")); n != 1 {
		t.Fatalf("added %d, want 1", n)
	}
	if n := add(cert(1, "a1")); n != 0 {
		t.Fatalf("added %d, want 0", n)
	}
	if n := add(); n != 0 {
		t.Fatalf("added %d of nothing", n)
	}
	got := allTargets(t, h, r.ID, store.RolloutTargetFilter{}, 10)
	var keys []string
	for _, tk := range got {
		keys = append(keys, fmt.Sprintf("%d:%d:%s", tk.Seq, tk.Wave, tk.CertificateSerial))
	}
	equal(t, "targets", keys, []string{"1:0:a1", "2:0:a2", "3:1:a3", "4:1:a4"})
	after := must(h.s.GetRollout(h.ctx, r.ID))(t)
	if after.TargetCount != 4 || after.Version != r.Version {
		t.Fatalf("after adding: target count %d version %d, want 4 and %d", after.TargetCount, after.Version, r.Version)
	}
	for serial, want := range map[string]bool{"a4": true, "A4": true, "a5": false} {
		if has := must(h.s.HasRolloutTarget(h.ctx, r.ID, serial))(t); has != want {
			t.Errorf("HasRolloutTarget %s: %v, want %v", serial, has, want)
		}
	}
	// Seqs continue after the highest, gaps included.
	gappy := f.createRollout(t, h, nil, []store.RolloutTarget{func() store.RolloutTarget {
		tk := cert(0, "b1")
		tk.Seq = 10
		return tk
	}()})
	if n := do(t, h, func(tx store.Tx) (int, error) {
		return tx.AddRolloutTargets(h.ctx, gappy.ID, []store.RolloutTarget{cert(1, "b2")})
	}); n != 1 {
		t.Fatalf("added %d, want 1", n)
	}
	if got := allTargets(t, h, gappy.ID, store.RolloutTargetFilter{}, 10); len(got) != 2 || got[1].Seq != 11 {
		t.Fatalf("targets after a gap: %+v", got)
	}
	// Many at once, some already there.
	many := []store.RolloutTarget{cert(2, "a1")}
	for i := range 1_100 {
		many = append(many, cert(2, fmt.Sprintf("c%04x", i)))
	}
	if n := add(many...); n != 1_100 {
		t.Fatalf("added %d, want 1100", n)
	}
	if all := allTargets(t, h, r.ID, store.RolloutTargetFilter{Wave: ptr(2)}, store.MaxPageLimit); len(all) != 1_100 || all[0].Seq != 5 || all[1_099].Seq != 1_104 {
		t.Fatalf("wave 2: %d targets", len(all))
	}

	wantErr(t, try(h, func(tx store.Tx) (int, error) {
		return tx.AddRolloutTargets(h.ctx, "nope", []store.RolloutTarget{cert(0, "d1")})
	}), store.ErrNotFound)
	wantErr(t, try(h, func(tx store.Tx) (int, error) {
		return tx.AddRolloutTargets(h.ctx, r.ID, []store.RolloutTarget{{CertificateSerial: "d1"}})
	}), store.ErrInvalid)
	unknown := cert(0, "d1")
	unknown.AgentID = "nope"
	wantErr(t, try(h, func(tx store.Tx) (int, error) {
		return tx.AddRolloutTargets(h.ctx, r.ID, []store.RolloutTarget{unknown})
	}), store.ErrInvalid)
	if got := must(h.s.GetRollout(h.ctx, r.ID))(t); got.TargetCount != 1_104 {
		t.Fatalf("target count %d after refused additions, want 1104", got.TargetCount)
	}
}

// testRolloutStanding checks the one open standing rollout per profile.
func testRolloutStanding(t *testing.T, h *harness) {
	f := newFixture(t, h)
	standing := func(profile, state string) func(r *store.Rollout) {
		return func(r *store.Rollout) { r.Standing, r.ProfileName, r.State = true, profile, state }
	}
	create := func(mod func(r *store.Rollout)) (store.Rollout, error) {
		in := f.rollout()
		mod(&in)
		var out store.Rollout
		err := h.s.InTx(h.ctx, func(tx store.Tx) error {
			var err error
			out, err = tx.CreateRollout(h.ctx, in, nil)
			return err
		})
		return out, err
	}
	first := must(create(standing("signing", "running")))(t)
	_, err := create(standing("signing", "pending_approval"))
	wantErr(t, err, store.ErrConflict)
	if !strings.Contains(err.Error(), first.ID) {
		t.Fatalf("conflict does not name the standing rollout %s: %v", first.ID, err)
	}
	must(create(standing("auth", "pending_approval")))(t)
	must(create(func(r *store.Rollout) { r.ProfileName = "signing" }))(t) // not standing
	old := must(create(standing("signing", "aborted")))(t)                // finished ones do not count
	must(create(standing("signing", "rejected")))(t)                      // nor rejected ones

	// The index itself, where no earlier check looks: a finished one opened again.
	reopen := old
	reopen.State = "running"
	wantErr(t, try(h, func(tx store.Tx) (store.Rollout, error) { return tx.UpdateRollout(h.ctx, reopen, old.Version) }), store.ErrConflict)

	// Once the first is aborted, the profile may have another.
	ab := first
	ab.State = "aborted"
	do(t, h, func(tx store.Tx) (store.Rollout, error) { return tx.UpdateRollout(h.ctx, ab, first.Version) })
	must(create(standing("signing", "pending_approval")))(t)

	got, _, err := h.s.ListRollouts(h.ctx, store.RolloutFilter{Standing: ptr(true), ProfileName: "signing",
		States: []string{"pending_approval", "running", "paused", "approved"}}, store.Page{})
	if err != nil || len(got) != 1 || got[0].State != "pending_approval" {
		t.Fatalf("open standing rollouts of signing: %+v (%v)", got, err)
	}
}

// testRolloutList lists rollouts newest first, filtered and paged.
func testRolloutList(t *testing.T, h *harness) {
	f := newFixture(t, h)
	type spec struct {
		state, profile string
		standing       bool
	}
	specs := []spec{
		{"running", "signing", false}, {"completed", "signing", false}, {"running", "auth", true},
		{"paused", "signing", false}, {"aborted", "signing", true}, {"pending_approval", "auth", false},
		{"running", "signing", true},
	}
	ids := make([]string, len(specs))
	for i, s := range specs {
		ids[i] = f.createRollout(t, h, func(r *store.Rollout) {
			r.State, r.ProfileName, r.Standing, r.Created = s.state, s.profile, s.standing, base.Add(time.Duration(i)*time.Minute)
		}, nil).ID
	}
	// Two created at the same time are ordered by ID.
	var same []string
	for _, id := range []string{"same-a", "same-b"} {
		same = append(same, f.createRollout(t, h, func(r *store.Rollout) {
			r.ID, r.State, r.ProfileName, r.Created = id, "expired", "other", base.Add(time.Hour)
		}, nil).ID)
	}
	list := func(filter store.RolloutFilter) []string {
		var out []string
		for _, r := range listAll(t, 2, func(p store.Page) ([]store.Rollout, string, error) {
			return h.s.ListRollouts(h.ctx, filter, p)
		}) {
			out = append(out, r.ID)
		}
		return out
	}
	pick := func(idx ...int) []string {
		var out []string
		for _, i := range idx {
			out = append(out, ids[i])
		}
		return out
	}
	all := []string{same[1], same[0]}
	for i := range ids {
		all = append(all, ids[len(ids)-1-i])
	}
	equal(t, "all", list(store.RolloutFilter{}), all)
	equal(t, "running or paused", list(store.RolloutFilter{States: []string{"running", "paused"}}), pick(6, 3, 2, 0))
	equal(t, "standing", list(store.RolloutFilter{Standing: ptr(true)}), pick(6, 4, 2))
	equal(t, "not standing", list(store.RolloutFilter{Standing: ptr(false), ProfileName: "signing"}), pick(3, 1, 0))
	equal(t, "running standing auth", list(store.RolloutFilter{States: []string{"running"}, Standing: ptr(true), ProfileName: "auth"}), pick(2))
	equal(t, "none", list(store.RolloutFilter{States: []string{"rejected"}}), []string(nil))
	_, _, err := h.s.ListRollouts(h.ctx, store.RolloutFilter{}, store.Page{Cursor: "!!"})
	wantErr(t, err, store.ErrInvalid)
	_, _, err = h.s.ListRollouts(h.ctx, store.RolloutFilter{}, store.Page{Limit: -1})
	wantErr(t, err, store.ErrInvalid)
}
