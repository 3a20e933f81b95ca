package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// clock is a settable time for the service under test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// fleetProfile needs one approver, of any organisation. Its jobs (inventory) take no PIN.
const fleetProfile = `name: fleet
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], scope: any, expires_after: 48h}
`

// rig is a coordinator's service over a store with a small fleet: agents ws-000.. of
// organisation Acme (active), tokens of two models, a holder and the people a rollout
// needs.
type rig struct {
	t                                *testing.T
	ctx                              context.Context
	s                                *service.Service
	st                               store.Store
	clock                            *clock
	admin, owner, ap1, ap2, helpdesk service.Actor
	holder                           store.User
}

func newRig(t *testing.T, cfg store.Config) *rig {
	t.Helper()
	ctx := context.Background()
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	s, st := openWith(t, cfg, service.Options{Now: clk.now})
	r := &rig{t: t, ctx: ctx, s: s, st: st, clock: clk}
	r.admin = bootstrapAdmin(t, s, st)
	for _, o := range []string{"Acme", "Globex"} {
		if _, err := s.CreateOrganization(ctx, r.admin, o); err != nil {
			t.Fatal(err)
		}
	}
	r.owner = r.user("olga", "Acme", jobs.RoleRolloutOwner)
	r.ap1 = r.user("arne", "Acme", jobs.RoleApprover)
	r.ap2 = r.user("gina", "Globex", jobs.RoleApprover)
	r.helpdesk = r.user("hank", "Acme", jobs.RoleHelpdesk)
	r.user("alice", "Acme")
	var err error
	if r.holder, err = st.GetUserByUsername(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyProfiles(ctx, r.admin, []byte(fleetProfile)); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) user(name, org string, roles ...jobs.Role) service.Actor {
	r.t.Helper()
	u, err := r.s.CreateUser(r.ctx, r.admin, service.UserRequest{Username: name, DisplayName: name, Organization: org, Roles: roles})
	if err != nil {
		r.t.Fatal(err)
	}
	return service.ActorFor(u.User)
}

// agents enrols n agents of Acme, each with one token: model "alpha" for even ones,
// "beta" for odd ones.
func (r *rig) agents(n int) {
	r.t.Helper()
	acme, err := r.st.GetOrganizationByName(r.ctx, "Acme")
	if err != nil {
		r.t.Fatal(err)
	}
	as := make([]store.Agent, n)
	for i := range as {
		id := fmt.Sprintf("ws-%03d", i)
		as[i] = store.Agent{ID: id, Hostname: id + ".acme.example", OrganizationID: acme.ID, Tags: []string{"floor-1"}}
	}
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		if _, err := tx.CreateAgents(r.ctx, as); err != nil {
			return err
		}
		for i, a := range as {
			model := "alpha"
			if i%2 == 1 {
				model = "beta"
			}
			if _, err := tx.UpsertToken(r.ctx, store.Token{Serial: "tok-" + a.ID, AgentID: a.ID, Model: model, Firmware: "5.4", LastSeen: r.clock.now()}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		r.t.Fatal(err)
	}
}

// inventorySpec is a rollout of inventory jobs on every alpha and beta token, held by alice.
func inventorySpec(name string) rollout.Spec {
	return rollout.Spec{Name: name,
		Template: rollout.Template{Kind: jobs.KindInventory, Profile: "fleet", Holder: "alice"},
		Selector: rollout.Selector{Tokens: rollout.TokenSelector{Models: []string{"alpha", "beta"}}},
		Plan:     rollout.Plan{Canary: rollout.Canary{Count: 2}, Waves: []float64{50, 100}},
		Brake:    rollout.Brake{ThresholdPercent: 20, MinExecuted: 2}}
}

func (r *rig) create(spec rollout.Spec) service.RolloutView {
	r.t.Helper()
	v, err := r.s.CreateRollout(r.ctx, r.owner, service.RolloutRequest{Spec: spec})
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

func (r *rig) approve(by service.Actor, v service.RolloutView) service.RolloutView {
	r.t.Helper()
	out, err := r.s.DecideRollout(r.ctx, by, v.ID, service.RolloutVote{Verdict: jobs.VerdictApprove, BindingHash: v.BindingHash})
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// pass runs engine passes until one creates nothing and changes nothing more.
func (r *rig) pass() int {
	r.t.Helper()
	total := 0
	for range 20 {
		n, err := r.s.AdvanceRollouts(r.ctx)
		if err != nil {
			r.t.Fatal(err)
		}
		total += n
		if n == 0 {
			return total
		}
	}
	return total
}

func (r *rig) get(id string) service.RolloutView {
	r.t.Helper()
	v, err := r.s.GetRollout(r.ctx, r.admin, id)
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

// rolloutJobs returns the rollout's jobs, newest first.
func (r *rig) rolloutJobs(id string, states ...jobs.State) []store.Job {
	r.t.Helper()
	var out []store.Job
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		js, next, err := r.st.ListJobs(r.ctx, store.JobFilter{RolloutID: id, States: states}, p)
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, js...)
		if next == "" {
			return out
		}
		p.Cursor = next
	}
}

// finish drives an approved inventory job as its agent would: dispatched, running, then
// succeeded (code "") or failed with code.
func (r *rig) finish(j store.Job, code string) {
	r.t.Helper()
	err := r.s.UpdateJobs(r.ctx, func(jt *service.JobTx) error {
		cur, err := jt.GetJob(r.ctx, j.ID)
		if err != nil {
			return err
		}
		agent := store.JobChange{Actor: service.AgentActor(cur.AgentID)}
		for _, to := range []jobs.State{jobs.StateDispatched, jobs.StateRunning} {
			if cur.State == jobs.StateApproved || (cur.State == jobs.StateDispatched && to == jobs.StateRunning) {
				if cur, err = jt.Transition(r.ctx, cur, to, agent); err != nil {
					return err
				}
			}
		}
		if code == "" {
			if jobs.NeedsCertificate(cur.Kind) {
				for _, to := range []jobs.State{jobs.StateAwaitingCertificate, jobs.StateInstalling} {
					if cur, err = jt.Transition(r.ctx, cur, to, agent); err != nil {
						return err
					}
				}
			}
			_, err = jt.Transition(r.ctx, cur, jobs.StateSucceeded, agent)
			return err
		}
		agent.Error = &store.JobError{Code: code, Message: "the token said " + code}
		_, err = jt.Transition(r.ctx, cur, jobs.StateFailed, agent)
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

func wantCode(t *testing.T, err error, code service.Code) {
	t.Helper()
	if !errors.Is(err, &service.Error{Code: code}) {
		t.Fatalf("got %v, want %s", err, code)
	}
}

func TestRolloutCreatePreview(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(10)
	// A disabled agent is found but skipped, with its reason.
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		_, err := tx.SetAgentState(r.ctx, "ws-009", store.AgentStateChange{State: store.AgentDisabled, Reason: "stolen", By: "x"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	spec := inventorySpec("inventory")
	dry, err := r.s.CreateRollout(r.ctx, r.owner, service.RolloutRequest{Spec: spec, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	pv := dry.Preview
	if dry.ID != "" || pv == nil || pv.Targets != 9 || pv.SkippedCount != 1 || !strings.Contains(pv.Skipped[0].Reason, "disabled") {
		t.Fatalf("dry run: %+v preview %+v", dry, pv)
	}
	if fmt.Sprint(pv.ByTokenModel) != "[{alpha 5} {beta 4}]" || fmt.Sprint(pv.ByOrganization) != "[{Acme 9}]" || fmt.Sprint(pv.ByAgentState) != "[{active 9}]" {
		t.Fatalf("groups %v %v %v", pv.ByTokenModel, pv.ByOrganization, pv.ByAgentState)
	}
	// canary 2, then 50% and 100% of the 7 others: 4 and 3.
	if fmt.Sprint(pv.WaveSizes) != "[2 4 3]" || len(pv.First) != 9 || pv.First[0].Hostname != "ws-000.acme.example" || pv.First[0].Holder != "alice" {
		t.Fatalf("waves %v first %+v", pv.WaveSizes, pv.First)
	}
	if ros, _, err := r.s.ListRollouts(r.ctx, r.admin, service.RolloutQuery{}, service.Page{}); err != nil || len(ros) != 0 {
		t.Fatalf("a dry run stored %d rollouts (%v)", len(ros), err)
	}
	v := r.create(spec)
	if v.State != rollout.StatePendingApproval || v.TargetCount != 9 || v.BindingHash != dry.BindingHash || v.Required != 1 || v.Spec.Template.ProfileHash == "" {
		t.Fatalf("created %+v", v)
	}
	if n := r.pass(); n != 0 {
		t.Fatalf("a rollout waiting for approval created %d jobs", n)
	}
	ts, _, err := r.s.ListRolloutTargets(r.ctx, r.admin, v.ID, service.RolloutTargetQuery{Outcome: rollout.OutcomePending}, service.Page{Limit: 4})
	if err != nil || len(ts) != 4 || ts[0].Seq != 1 || ts[0].Wave != 0 || ts[2].Wave != 1 {
		t.Fatalf("targets %+v, %v", ts, err)
	}

	// Bad specs name their field; a selector matching nothing says why.
	bad := inventorySpec("x")
	bad.Plan.Waves = []float64{60, 40}
	_, err = r.s.CreateRollout(r.ctx, r.owner, service.RolloutRequest{Spec: bad})
	var se *service.Error
	if !errors.As(err, &se) || se.Code != service.CodeBadRequest || !strings.HasPrefix(se.Field, "spec.plan.waves") {
		t.Fatalf("decreasing waves: %v", err)
	}
	none := inventorySpec("x")
	none.Selector.Tokens.Models = []string{"gamma"}
	_, err = r.s.CreateRollout(r.ctx, r.owner, service.RolloutRequest{Spec: none})
	if !errors.As(err, &se) || se.Field != "spec.selector" || !strings.Contains(se.Msg, "matches no target") {
		t.Fatalf("empty selection: %v", err)
	}
	noHolder := inventorySpec("x")
	noHolder.Template.Holder = ""
	_, err = r.s.CreateRollout(r.ctx, r.owner, service.RolloutRequest{Spec: noHolder})
	if !errors.As(err, &se) || !strings.Contains(se.Msg, "9 without a holder") {
		t.Fatalf("no holder: %v", err)
	}
	// Creating needs manage_rollouts.
	_, err = r.s.CreateRollout(r.ctx, r.helpdesk, service.RolloutRequest{Spec: spec})
	wantCode(t, err, service.CodeForbidden)
}

func TestRolloutApprovalRules(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(4)
	v := r.create(inventorySpec("rules"))
	vote := func(by service.Actor, verdict jobs.Verdict, hash, reason string) error {
		_, err := r.s.DecideRollout(r.ctx, by, v.ID, service.RolloutVote{Verdict: verdict, BindingHash: hash, Reason: reason})
		return err
	}
	// The creator, even as an approver.
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		u, err := tx.GetUserByUsername(r.ctx, "olga")
		if err != nil {
			return err
		}
		u.Roles = []jobs.Role{jobs.RoleApprover, jobs.RoleRolloutOwner}
		_, err = tx.UpdateUser(r.ctx, u)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, vote(r.owner, jobs.VerdictApprove, v.BindingHash, ""), service.CodeSelfApproval)
	// A holder of a target.
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		u := r.holder
		u.Roles = []jobs.Role{jobs.RoleApprover}
		_, err := tx.UpdateUser(r.ctx, u)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	alice, err := r.st.GetUserByUsername(r.ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, vote(service.ActorFor(alice), jobs.VerdictApprove, v.BindingHash, ""), service.CodeSelfApproval)
	// A role the profile does not name.
	wantCode(t, vote(r.helpdesk, jobs.VerdictApprove, v.BindingHash, ""), service.CodeRoleNotPermitted)
	// Another binding than the rollout's.
	wantCode(t, vote(r.ap1, jobs.VerdictApprove, strings.Repeat("ab", 32), ""), service.CodeBindingMismatch)
	// A rejection without a reason.
	wantCode(t, vote(r.ap1, jobs.VerdictReject, v.BindingHash, ""), service.CodeReasonRequired)
	// A malformed hash.
	wantCode(t, vote(r.ap1, jobs.VerdictApprove, "abc", ""), service.CodeBadRequest)
	// Every refusal is audited.
	denied := 0
	es, _, err := r.st.ListAudit(r.ctx, store.AuditFilter{}, store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Action == audit.ActionAccessDenied && e.Target == "rollout:"+v.ID {
			denied++
		}
	}
	if denied != 5 {
		t.Fatalf("%d refusals audited, want 5", denied)
	}
	// The profile changed since the creation: the rollout's approval would bind another version.
	if r.get(v.ID).State != rollout.StatePendingApproval {
		t.Fatal("refusals changed the rollout")
	}
	a := r.approve(r.ap1, v)
	if a.State != rollout.StateApproved || a.Approvals != 1 || fmt.Sprint(a.Approvers) != "[arne]" {
		t.Fatalf("approved: %+v", a)
	}
	// Decided: no more decisions, the same approver's included.
	wantCode(t, vote(r.ap2, jobs.VerdictApprove, v.BindingHash, ""), service.CodeNotPending)

	// Organisation scope: the approver must belong to every target holder's organisation.
	scoped := strings.Replace(strings.Replace(fleetProfile, "scope: any", "scope: organization", 1), "name: fleet", "name: fleet-org", 1)
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(scoped)); err != nil {
		t.Fatal(err)
	}
	spec := inventorySpec("scoped")
	spec.Template.Profile = "fleet-org"
	v2 := r.create(spec)
	_, err = r.s.DecideRollout(r.ctx, r.ap2, v2.ID, service.RolloutVote{Verdict: jobs.VerdictApprove, BindingHash: v2.BindingHash})
	wantCode(t, err, service.CodeOutOfScope)
	// Rejected for good, with a reason.
	if out, err := r.s.DecideRollout(r.ctx, r.ap1, v2.ID, service.RolloutVote{Verdict: jobs.VerdictReject, BindingHash: v2.BindingHash, Reason: "not this week"}); err != nil || out.State != rollout.StateRejected {
		t.Fatalf("reject: %+v, %v", out.State, err)
	}

	// Two of M: one approval is not enough, and nobody counts twice.
	two := strings.Replace(strings.Replace(fleetProfile, "required: 1", "required: 2", 1), "name: fleet", "name: fleet-two", 1)
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(two)); err != nil {
		t.Fatal(err)
	}
	spec = inventorySpec("two approvals")
	spec.Template.Profile = "fleet-two"
	v5 := r.create(spec)
	if got := r.approve(r.ap1, v5); got.State != rollout.StatePendingApproval || got.Approvals != 1 || got.Required != 2 {
		t.Fatalf("one of two: %+v", got)
	}
	_, err = r.s.DecideRollout(r.ctx, r.ap1, v5.ID, service.RolloutVote{Verdict: jobs.VerdictApprove, BindingHash: v5.BindingHash})
	wantCode(t, err, service.CodeAlreadyDecided)
	if got := r.approve(r.ap2, v5); got.State != rollout.StateApproved || got.Approvals != 2 {
		t.Fatalf("two of two: %+v", got)
	}

	// A profile edited after the creation voids the pending rollout's approval.
	v3 := r.create(inventorySpec("edited"))
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(strings.Replace(fleetProfile, "validity: 30d", "validity: 31d", 1))); err != nil {
		t.Fatal(err)
	}
	_, err = r.s.DecideRollout(r.ctx, r.ap1, v3.ID, service.RolloutVote{Verdict: jobs.VerdictApprove, BindingHash: v3.BindingHash})
	wantCode(t, err, service.CodeBindingMismatch)

	// Not approved in time: it expires (48 h, the profile's expires_after).
	v4 := r.create(inventorySpec("late"))
	r.clock.add(49 * time.Hour)
	_, err = r.s.DecideRollout(r.ctx, r.ap1, v4.ID, service.RolloutVote{Verdict: jobs.VerdictApprove, BindingHash: v4.BindingHash})
	wantCode(t, err, service.CodeApprovalExpired)
	r.pass()
	if st := r.get(v4.ID).State; st != rollout.StateExpired {
		t.Fatalf("a rollout not approved in time is %s", st)
	}
}

func TestRolloutWavesAndPromote(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(10)
	spec := inventorySpec("waves")
	spec.Plan.Pause = rollout.Pause{UntilPromoted: true}
	v := r.create(spec)
	r.approve(r.ap1, v)
	if n := r.pass(); n != 2 {
		t.Fatalf("approval created %d jobs, want the canary's 2", n)
	}
	js := r.rolloutJobs(v.ID)
	if len(js) != 2 {
		t.Fatalf("%d jobs", len(js))
	}
	for _, j := range js {
		if j.State != jobs.StateApproved || j.RolloutID != v.ID {
			t.Fatalf("job %+v", j)
		}
		ev, err := r.st.ListJobEvents(r.ctx, j.ID)
		if err != nil || len(ev) != 2 || ev[1].Actor != "rollout:"+v.ID || !strings.Contains(ev[1].Reason, "approved by rollout waves") {
			t.Fatalf("events %+v, %v", ev, err)
		}
	}
	if got := r.get(v.ID); got.State != rollout.StateRunning || got.Waves[0].Tally.Open != 2 {
		t.Fatalf("running: %+v", got)
	}
	// Promoting before the canary is done is refused.
	_, err := r.s.PromoteRollout(r.ctx, r.owner, v.ID, "")
	wantCode(t, err, service.CodeConflict)
	for _, j := range js {
		r.finish(j, "")
	}
	if n := r.pass(); n != 0 {
		t.Fatalf("wave 1 started without a promote: %d jobs", n)
	}
	got := r.get(v.ID)
	if got.CurrentWave != 0 || !strings.Contains(got.Waiting, "promote") || !got.Waves[0].Finished {
		t.Fatalf("waiting: %+v", got)
	}
	if _, err := r.s.PromoteRollout(r.ctx, r.owner, v.ID, "canary fine"); err != nil {
		t.Fatal(err)
	}
	if n := r.pass(); n != 4 {
		t.Fatalf("promote created %d jobs, want wave 1's 4", n)
	}
	for _, j := range r.rolloutJobs(v.ID, jobs.StateApproved) {
		r.finish(j, "")
	}
	r.pass()
	if _, err := r.s.PromoteRollout(r.ctx, r.owner, v.ID, ""); err != nil {
		t.Fatal(err)
	}
	if n := r.pass(); n != 4 {
		t.Fatalf("wave 2 created %d jobs, want 4", n)
	}
	for _, j := range r.rolloutJobs(v.ID, jobs.StateApproved) {
		r.finish(j, "")
	}
	r.pass()
	got = r.get(v.ID)
	if got.State != rollout.StateCompleted || got.Overall.Succeeded != 10 || got.FinishedAt.IsZero() {
		t.Fatalf("completed: %+v", got)
	}
	if len(r.rolloutJobs(v.ID)) != 10 {
		t.Fatal("a target got two jobs")
	}
}

func TestRolloutBrake(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(30)
	spec := inventorySpec("brake")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 10}, Waves: []float64{100}}
	spec.Brake = rollout.Brake{ThresholdPercent: 20, MinExecuted: 5, PerWave: true}
	v := r.create(spec)
	r.approve(r.ap1, v)
	if n := r.pass(); n != 10 {
		t.Fatalf("canary: %d jobs", n)
	}
	js := r.rolloutJobs(v.ID)
	slices.SortFunc(js, func(a, b store.Job) int { return strings.Compare(a.AgentID, b.AgentID) })
	// 1 failure in 4 executed: below min_executed. Then 2 of 10: 20%, the threshold.
	r.finish(js[0], "token.device_error")
	for _, j := range js[1:4] {
		r.finish(j, "")
	}
	r.pass()
	if st := r.get(v.ID).State; st != rollout.StateRunning {
		t.Fatalf("tripped below min_executed: %s", st)
	}
	r.finish(js[4], "csr_rejected")
	for _, j := range js[5:9] {
		r.finish(j, "")
	}
	r.pass()
	got := r.get(v.ID)
	if got.State != rollout.StatePaused || got.PauseKind != rollout.PauseBrake || got.PauseRound != 1 || got.Trip == nil {
		t.Fatalf("brake: %+v", got)
	}
	if got.Trip.Executed != 9 || got.Trip.Failed != 2 || len(got.Trip.ByCode) != 2 || len(got.Trip.ByCode[0].Examples) != 1 ||
		!strings.Contains(got.PauseReason, "brake tripped") {
		t.Fatalf("trip %+v reason %q", got.Trip, got.PauseReason)
	}
	// Running jobs finish; no new job.
	r.finish(js[9], "")
	if n := r.pass(); n != 0 {
		t.Fatalf("paused rollout created %d jobs", n)
	}
	_, err := r.s.ResumeRollout(r.ctx, r.owner, v.ID, "fixed")
	wantCode(t, err, service.CodeApprovalRequired)
	// The resumption needs an approval of its own round, bound to the same hash.
	got = r.approve(r.ap1, got)
	if got.State != rollout.StateRunning || got.PauseKind != "" {
		t.Fatalf("approved resume: %+v", got)
	}
	if n := r.pass(); n != 20 {
		t.Fatalf("resumed rollout created %d jobs, want wave 1's 20", n)
	}
	// The failures accepted with the resumption do not trip the brake again.
	for _, j := range r.rolloutJobs(v.ID, jobs.StateApproved)[:10] {
		r.finish(j, "")
	}
	r.pass()
	if st := r.get(v.ID).State; st != rollout.StateRunning {
		t.Fatalf("after resume: %s", st)
	}
	var trips int
	es, _, err := r.st.ListAudit(r.ctx, store.AuditFilter{}, store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Action == audit.ActionRolloutBrakeTripped {
			trips++
		}
	}
	if trips != 1 {
		t.Fatalf("%d brake trips audited", trips)
	}
}

func TestRolloutAbort(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(10)
	spec := inventorySpec("abort")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 6}, Waves: []float64{100}}
	v := r.create(spec)
	r.approve(r.ap1, v)
	r.pass()
	js := r.rolloutJobs(v.ID)
	// One running, one dispatched, one ended; the others approved.
	if err := r.s.UpdateJobs(r.ctx, func(jt *service.JobTx) error {
		a := store.JobChange{Actor: service.AgentActor(js[0].AgentID)}
		j, err := jt.Transition(r.ctx, js[0], jobs.StateDispatched, a)
		if err != nil {
			return err
		}
		if _, err := jt.Transition(r.ctx, j, jobs.StateRunning, a); err != nil {
			return err
		}
		_, err = jt.Transition(r.ctx, js[1], jobs.StateDispatched, store.JobChange{Actor: "system:dispatch"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r.finish(js[2], "")
	got, err := r.s.AbortRollout(r.ctx, r.owner, v.ID, "wrong profile")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != rollout.StateAborted || len(r.rolloutJobs(v.ID, jobs.StateCancelled)) != 4 || len(r.rolloutJobs(v.ID, jobs.StateRunning)) != 1 {
		t.Fatalf("abort: %+v", got)
	}
	if n := r.pass(); n != 0 || len(r.rolloutJobs(v.ID)) != 6 {
		t.Fatalf("an aborted rollout created %d jobs", n)
	}
	_, err = r.s.PauseRollout(r.ctx, r.owner, v.ID, "")
	wantCode(t, err, service.CodeConflict)
}

func TestRolloutOperatorPauseAndProfileChange(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(6)
	spec := inventorySpec("pause")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 2}, Waves: []float64{100}}
	v := r.create(spec)
	r.approve(r.ap1, v)
	if _, err := r.s.PauseRollout(r.ctx, r.owner, v.ID, "change freeze"); err != nil {
		t.Fatal(err)
	}
	if n := r.pass(); n != 0 {
		t.Fatalf("paused: %d jobs", n)
	}
	if _, err := r.s.ResumeRollout(r.ctx, r.owner, v.ID, ""); err != nil {
		t.Fatal(err)
	}
	if n := r.pass(); n != 2 {
		t.Fatalf("resumed: %d jobs", n)
	}
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(strings.Replace(fleetProfile, "validity: 30d", "validity: 60d", 1))); err != nil {
		t.Fatal(err)
	}
	for _, j := range r.rolloutJobs(v.ID) {
		r.finish(j, "")
	}
	if n := r.pass(); n != 0 {
		t.Fatalf("profile changed: %d jobs", n)
	}
	got := r.get(v.ID)
	if got.State != rollout.StatePaused || got.PauseKind != rollout.PauseProfileChanged {
		t.Fatalf("profile changed: %+v", got)
	}
	_, err := r.s.ResumeRollout(r.ctx, r.owner, v.ID, "")
	wantCode(t, err, service.CodeConflict)
}

func TestRolloutConcurrencyAndWindows(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(12)
	// Start on a Monday at 08:00 UTC; the window is 22:00–06:00.
	now := r.clock.now()
	monday := time.Date(now.Year(), now.Month(), now.Day(), 8, 0, 0, 0, time.UTC)
	for monday.Weekday() != time.Monday {
		monday = monday.AddDate(0, 0, 1)
	}
	r.clock.set(monday)
	spec := inventorySpec("capped")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 12}, Waves: []float64{100}, MaxConcurrent: 5,
		Windows: []rollout.Window{{Days: []string{"mon", "tue"}, Start: "22:00", End: "06:00"}}}
	v := r.create(spec)
	r.approve(r.ap1, v)
	if n := r.pass(); n != 0 {
		t.Fatalf("outside the window: %d jobs", n)
	}
	if got := r.get(v.ID); !strings.Contains(got.Waiting, "outside the maintenance windows") {
		t.Fatalf("waiting %q", got.Waiting)
	}
	r.clock.set(monday.Add(14*time.Hour + time.Minute)) // 22:01
	if n := r.pass(); n != 5 {
		t.Fatalf("inside the window: %d jobs, want max_concurrent 5", n)
	}
	js := r.rolloutJobs(v.ID)
	r.finish(js[0], "")
	r.finish(js[1], "")
	if n := r.pass(); n != 2 {
		t.Fatalf("two ended: %d new jobs", n)
	}
	if got := r.get(v.ID); got.Overall.Open != 5 || !strings.Contains(got.Waiting, "max_concurrent") {
		t.Fatalf("capped: %+v", got)
	}
	// After the window: nothing new even as jobs end.
	r.clock.set(monday.Add(22*time.Hour + time.Minute)) // Tuesday 06:01
	for _, j := range r.rolloutJobs(v.ID, jobs.StateApproved) {
		r.finish(j, "")
	}
	if n := r.pass(); n != 0 {
		t.Fatalf("after the window: %d jobs", n)
	}
}

func TestRolloutTargetUnavailable(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(3)
	spec := inventorySpec("gone")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 3}, Waves: []float64{100}}
	spec.Brake = rollout.Brake{Disabled: true}
	v := r.create(spec)
	r.approve(r.ap1, v)
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		_, err := tx.SetAgentState(r.ctx, "ws-001", store.AgentStateChange{State: store.AgentRemoved, Reason: "scrapped", By: "x"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if n := r.pass(); n != 3 {
		t.Fatalf("%d jobs", n)
	}
	failed := r.rolloutJobs(v.ID, jobs.StateFailed)
	if len(failed) != 1 || failed[0].AgentID != "ws-001" || failed[0].ErrorCode != service.JobErrTargetUnavailable {
		t.Fatalf("failed %+v", failed)
	}
	if got := r.get(v.ID); got.Overall.Failures[rollout.OutcomeRefused] != 1 {
		t.Fatalf("a target gone counts %v", got.Overall.Failures)
	}
}

// renewProfile turns on standing renewals 10 days before expiry.
const renewProfile = `name: renew
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
renew_before: 10d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], scope: any, expires_after: 48h}
`

// seedCertificate gives token tok-AGENT a certificate of profile renew for alice, and the
// user PIN a renewal needs, as an earlier job would have left them.
func (r *rig) seedCertificate(agent, serial string, notAfter time.Time) {
	r.t.Helper()
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		sp, err := tx.GetProfile(r.ctx, "renew")
		if err != nil {
			return err
		}
		j, err := tx.CreateJob(r.ctx, store.Job{Kind: jobs.KindIssue, State: jobs.StatePendingApproval, HolderID: r.holder.ID,
			ProfileName: "renew", ProfileHash: sp.ContentHash, AgentID: agent, TokenSerial: "tok-" + agent, RequesterID: r.holder.ID,
			BindingHash: strings.Repeat("0", 64), Created: r.clock.now()})
		if err != nil {
			return err
		}
		if _, err := tx.AddTokenPIN(r.ctx, store.TokenPIN{TokenSerial: "tok-" + agent, Purpose: store.PINPurposeUser, JobID: j.ID,
			Attempt: 1, Sealed: json.RawMessage(`{"sealed":"x"}`), Recorded: r.clock.now()}); err != nil {
			return err
		}
		_, err = tx.AddCertificate(r.ctx, store.Certificate{Serial: serial, JobID: j.ID, HolderID: r.holder.ID, Profile: "renew",
			TokenSerial: "tok-" + agent, AgentID: agent, Subject: "CN=alice", Issuer: "CN=test CA", NotBefore: notAfter.Add(-30 * 24 * time.Hour),
			NotAfter: notAfter, DER: []byte{0x30, 0}})
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
}

func TestRolloutRenewAndStanding(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(3)
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(renewProfile)); err != nil {
		t.Fatal(err)
	}
	now := r.clock.now()
	r.seedCertificate("ws-000", "a1", now.Add(5*24*time.Hour))  // inside the window
	r.seedCertificate("ws-001", "b1", now.Add(20*24*time.Hour)) // enters it in 10 days
	r.seedCertificate("ws-002", "c1", now.Add(25*24*time.Hour))

	// A one-off renewal of what expires within 7 days.
	spec := rollout.Spec{Name: "renew soon", Template: rollout.Template{Kind: jobs.KindRenew, Profile: "renew"},
		Selector: rollout.Selector{Certificates: rollout.CertificateSelector{ExpiresWithin: rollout.Duration(7 * 24 * time.Hour)}},
		Plan:     rollout.Plan{Canary: rollout.Canary{Count: 1}}}
	dry, err := r.s.CreateRollout(r.ctx, r.owner, service.RolloutRequest{Spec: spec, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.Preview.Targets != 1 || dry.Preview.First[0].CertificateSerial != "a1" || dry.Preview.First[0].TokenSerial != "tok-ws-000" {
		t.Fatalf("renewal preview %+v", dry.Preview)
	}

	// The standing rollout: approved once, it takes certificates up as they enter the window.
	standing := rollout.Spec{Name: "keep renewed", Standing: true, Template: rollout.Template{Kind: jobs.KindRenew, Profile: "renew"},
		Plan: rollout.Plan{Canary: rollout.Canary{Count: 1}}}
	v := r.create(standing)
	if v.TargetCount != 0 || v.Preview.Targets != 1 {
		t.Fatalf("standing created %+v preview %+v", v, v.Preview)
	}
	if _, err := r.s.CreateRollout(r.ctx, r.owner, service.RolloutRequest{Spec: standing}); !errors.Is(err, &service.Error{Code: service.CodeConflict}) {
		t.Fatalf("a second standing rollout of the profile: %v", err)
	}
	r.approve(r.ap1, v)
	if n := r.pass(); n != 1 {
		t.Fatalf("first pass: %d jobs", n)
	}
	// Many passes, across the scan interval: still one job for a1, none for the others yet.
	for range 5 {
		r.clock.add(time.Minute)
		r.pass()
	}
	js := r.rolloutJobs(v.ID)
	if len(js) != 1 || js[0].Kind != jobs.KindRenew || js[0].TokenSerial != "tok-ws-000" || js[0].State != jobs.StateApproved {
		t.Fatalf("standing jobs %+v", js)
	}
	// b1 enters its window 10 days before its expiry.
	r.finish(js[0], "")
	r.clock.add(11 * 24 * time.Hour)
	for range 5 {
		r.clock.add(time.Minute)
		r.pass()
	}
	js = r.rolloutJobs(v.ID)
	if len(js) != 2 {
		t.Fatalf("after b1 entered its window: %d jobs", len(js))
	}
	got := r.get(v.ID)
	if got.State != rollout.StateRunning || got.TargetCount != 2 || got.CurrentWave != 1 {
		t.Fatalf("standing %+v", got)
	}
	// b1 renewed: its new certificate supersedes it, and nothing more is queued for it.
	r.finish(js[0], "")
	r.seedCertificate("ws-001", "b2", r.clock.now().Add(30*24*time.Hour))
	for range 3 {
		r.clock.add(time.Minute)
		r.pass()
	}
	if js := r.rolloutJobs(v.ID); len(js) != 2 {
		t.Fatalf("renewed certificate queued again: %d jobs", len(js))
	}
}

// TestRolloutTwoCoordinatorsPostgres: two coordinators' engines pass over one rollout at
// the same time, in a loop: every target ends with exactly one job.
func TestRolloutTwoCoordinatorsPostgres(t *testing.T) {
	cfg := store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)}
	r := newRig(t, cfg)
	r.agents(300)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st2, err := store.Open(r.ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st2.Close() })
	s2, err := service.New(service.Options{Store: st2, Logger: log, Now: r.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	spec := inventorySpec("two")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 10}, Waves: []float64{100}}
	spec.Brake = rollout.Brake{Disabled: true}
	v := r.create(spec)
	r.approve(r.ap1, v)
	var wg sync.WaitGroup
	for _, s := range []*service.Service{r.s, s2} {
		wg.Go(func() {
			deadline := time.Now().Add(2 * time.Minute)
			for time.Now().Before(deadline) {
				if _, err := s.AdvanceRollouts(r.ctx); err != nil {
					t.Errorf("pass: %v", err)
					return
				}
				// Jobs end as passes go on: the canary ends, wave 1 starts.
				for _, j := range r.rolloutJobs(v.ID, jobs.StateApproved) {
					_ = s.UpdateJobs(r.ctx, func(jt *service.JobTx) error {
						cur, err := jt.GetJob(r.ctx, j.ID)
						if err != nil || cur.State != jobs.StateApproved {
							return err
						}
						a := store.JobChange{Actor: service.AgentActor(cur.AgentID)}
						if cur, err = jt.Transition(r.ctx, cur, jobs.StateDispatched, a); err != nil {
							return err
						}
						if cur, err = jt.Transition(r.ctx, cur, jobs.StateRunning, a); err != nil {
							return err
						}
						_, err = jt.Transition(r.ctx, cur, jobs.StateSucceeded, a)
						return err
					})
				}
				ro, err := r.st.GetRollout(r.ctx, v.ID)
				if err != nil {
					t.Error(err)
					return
				}
				if ro.State == string(rollout.StateCompleted) {
					return
				}
			}
			t.Error("the rollout did not complete")
		})
	}
	wg.Wait()
	js := r.rolloutJobs(v.ID)
	perAgent := map[string]int{}
	for _, j := range js {
		perAgent[j.AgentID]++
	}
	if len(js) != 300 || len(perAgent) != 300 {
		t.Fatalf("%d jobs for %d targets", len(js), len(perAgent))
	}
	if got := r.get(v.ID); got.State != rollout.StateCompleted || got.Overall.Succeeded != 300 {
		t.Fatalf("rollout %+v", got)
	}
	var entries []audit.Entry
	for e, err := range r.st.AuditEntries(r.ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	if err := audit.Verify(entries); err != nil {
		t.Fatal(err)
	}
}

// TestRolloutTenThousandTargets: a rollout of 10,000 targets is resolved, stored and
// approved, and its canary's job created, without loading more than its targets. (Queuing
// every job is the two-coordinator test's, at a size a race-detector run bears; the
// benchmark measures the full 10,000.)
func TestRolloutTenThousandTargets(t *testing.T) {
	t.Parallel()
	r := newRig(t, store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(t.TempDir(), "big.db")})
	r.agents(10_000)
	spec := inventorySpec("big")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 1, PerModel: true}, Waves: []float64{10, 100}, Pause: rollout.Pause{UntilPromoted: true}}
	v := r.create(spec)
	if v.TargetCount != 10_000 || fmt.Sprint(v.Preview.WaveSizes) != "[2 1000 8998]" {
		t.Fatalf("%d targets, waves %v", v.TargetCount, v.Preview.WaveSizes)
	}
	r.approve(r.ap1, v)
	if n := r.pass(); n != 2 {
		t.Fatalf("%d jobs, want the canary's 2 (one per token model)", n)
	}
	got := r.get(v.ID)
	if got.Overall.Pending != 9_998 || got.Overall.Open != 2 || len(got.Waves) != 3 || got.Waves[2].Size != 8_998 {
		t.Fatalf("progress %+v", got.Overall)
	}
}
