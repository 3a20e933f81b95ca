package service_test

import (
	"context"
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

// rolloutAudit returns the audit entries about the rollout itself, oldest first.
func (r *rig) rolloutAudit(id string) []audit.Entry {
	r.t.Helper()
	var out []audit.Entry
	for e, err := range r.st.AuditEntries(r.ctx, 1) {
		if err != nil {
			r.t.Fatal(err)
		}
		if e.Target == "rollout:"+id && strings.HasPrefix(e.Action, "rollout.") {
			out = append(out, e)
		}
	}
	return out
}

// TestRolloutEveryChangeAudited: a rollout's life, from its creation through its waves,
// a pause, a promote, the brake and its approved resumption to its end, leaves one audit
// entry per change, each naming who (a person or the engine) and why.
func TestRolloutEveryChangeAudited(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(6)
	spec := inventorySpec("audited")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 2}, Waves: []float64{100}, Pause: rollout.Pause{UntilPromoted: true}}
	spec.Brake = rollout.Brake{ThresholdPercent: 50, MinExecuted: 2}
	v := r.create(spec)
	r.approve(r.ap1, v)
	r.pass()
	if _, err := r.s.PauseRollout(r.ctx, r.owner, v.ID, "lunch"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.ResumeRollout(r.ctx, r.owner, v.ID, ""); err != nil {
		t.Fatal(err)
	}
	js := r.rolloutJobs(v.ID)
	r.finish(js[0], "token.device_error")
	r.finish(js[1], "token.device_error")
	r.pass() // the brake trips
	r.approve(r.ap2, r.get(v.ID))
	r.pass()
	if _, err := r.s.PromoteRollout(r.ctx, r.owner, v.ID, "canary understood"); err != nil {
		t.Fatal(err)
	}
	r.pass()
	for _, j := range r.rolloutJobs(v.ID, jobs.StateApproved) {
		r.finish(j, "")
	}
	r.pass()
	if st := r.get(v.ID).State; st != rollout.StateCompleted {
		t.Fatalf("rollout %s", st)
	}
	want := []string{audit.ActionRolloutCreated, audit.ActionRolloutApproved, audit.ActionRolloutStarted, audit.ActionRolloutPaused,
		audit.ActionRolloutResumed, audit.ActionRolloutBrakeTripped, audit.ActionRolloutApproved, audit.ActionRolloutResumed,
		audit.ActionRolloutPromoted, audit.ActionRolloutWaveStarted, audit.ActionRolloutCompleted}
	es := r.rolloutAudit(v.ID)
	var got []string
	for _, e := range es {
		got = append(got, e.Action)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("audited\n %v\nwant\n %v", got, want)
	}
	for _, e := range es {
		if e.Actor == "" || e.Reason == "" {
			t.Errorf("%s by %q: no one or no reason (%q)", e.Action, e.Actor, e.Reason)
		}
	}
}

// TestRolloutFinalStatesStay: a rejected, expired or aborted rollout never comes back —
// no approval, resumption, promote or pause moves it, and the engine leaves it — and
// only holders of manage_rollouts steer a rollout.
func TestRolloutFinalStatesStay(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(4)
	rejected := r.create(inventorySpec("rejected"))
	if _, err := r.s.DecideRollout(r.ctx, r.ap1, rejected.ID, service.RolloutVote{Verdict: jobs.VerdictReject,
		BindingHash: rejected.BindingHash, Reason: "no"}); err != nil {
		t.Fatal(err)
	}
	expired := r.create(inventorySpec("expired"))
	aborted := r.create(inventorySpec("aborted"))
	r.approve(r.ap1, aborted)
	r.pass()
	// Someone without manage_rollouts, an approver included, steers nothing.
	for name, op := range map[string]func(context.Context, service.Actor, string, string) (service.RolloutView, error){
		"pause": r.s.PauseRollout, "resume": r.s.ResumeRollout, "promote": r.s.PromoteRollout, "abort": r.s.AbortRollout} {
		for _, by := range []service.Actor{r.ap1, r.helpdesk} {
			_, err := op(r.ctx, by, aborted.ID, "mine now")
			if !strings.Contains(errString(err), "manage_rollouts") {
				t.Errorf("%s by %s: %v", name, by.Username(), err)
			}
		}
	}
	if _, err := r.s.AbortRollout(r.ctx, r.owner, aborted.ID, "stop"); err != nil {
		t.Fatal(err)
	}
	r.clock.add(49 * time.Hour)
	r.pass()
	if st := r.get(expired.ID).State; st != rollout.StateExpired {
		t.Fatalf("expired: %s", st)
	}
	for _, v := range []service.RolloutView{rejected, expired, aborted} {
		before := r.get(v.ID)
		_, err := r.s.DecideRollout(r.ctx, r.ap2, v.ID, service.RolloutVote{Verdict: jobs.VerdictApprove, BindingHash: v.BindingHash})
		wantCode(t, err, service.CodeNotPending)
		for name, op := range map[string]func(context.Context, service.Actor, string, string) (service.RolloutView, error){
			"pause": r.s.PauseRollout, "resume": r.s.ResumeRollout, "promote": r.s.PromoteRollout} {
			if _, err := op(r.ctx, r.owner, v.ID, ""); !strings.Contains(errString(err), "conflict") {
				t.Errorf("%s of %s rollout: %v", name, before.State, err)
			}
		}
		r.pass()
		if after := r.get(v.ID); after.State != before.State || after.Overall.Open != before.Overall.Open || after.Overall.Pending != before.Overall.Pending {
			t.Errorf("%s rollout moved: %s, %+v", before.State, after.State, after.Overall)
		}
	}
	if n := len(r.rolloutJobs(aborted.ID, jobs.StateApproved)); n != 0 {
		t.Fatalf("%d approved jobs left by the abort", n)
	}
	// The creator never decides, not on the resumption after a brake trip either.
	spec := inventorySpec("creator")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 2}, Waves: []float64{100}}
	spec.Brake = rollout.Brake{ThresholdPercent: 50, MinExecuted: 2}
	owner := r.user("otto", "Acme", jobs.RoleRolloutOwner, jobs.RoleApprover)
	v, err := r.s.CreateRollout(r.ctx, owner, service.RolloutRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	r.approve(r.ap1, v)
	r.pass()
	for _, j := range r.rolloutJobs(v.ID) {
		r.finish(j, "token.device_error")
	}
	r.pass()
	_, err = r.s.DecideRollout(r.ctx, owner, v.ID, service.RolloutVote{Verdict: jobs.VerdictApprove, BindingHash: v.BindingHash})
	wantCode(t, err, service.CodeSelfApproval)
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestRolloutAbortRacesEngine: an abort while another coordinator's engine is creating
// the rollout's jobs leaves none of them to start: a job made in a transaction that
// committed before the abort is cancelled by it, and no transaction commits one after.
func TestRolloutAbortRacesEngine(t *testing.T) {
	cfg := store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)}
	r := newRig(t, cfg)
	r.agents(1200)
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
	spec := inventorySpec("raced")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 1200}, Waves: []float64{100}}
	spec.Brake = rollout.Brake{Disabled: true}
	v := r.create(spec)
	r.approve(r.ap1, v)
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := s2.AdvanceRollouts(r.ctx); err != nil {
			t.Errorf("pass: %v", err)
		}
	})
	// Abort once the other coordinator has committed its first batch.
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for len(r.rolloutJobs(v.ID)) == 0 && time.Now().Before(deadline) {
		<-tick.C
	}
	_, err = r.s.AbortRollout(r.ctx, r.owner, v.ID, "stop")
	wg.Wait()
	if err != nil {
		t.Fatalf("abort while the engine creates jobs: %v", err)
	}
	all := r.rolloutJobs(v.ID)
	if open := r.rolloutJobs(v.ID, jobs.StateApproved, jobs.StateDispatched); len(open) != 0 || len(all) == 1200 {
		t.Fatalf("%d of %d jobs left to start after the abort (1200 targets)", len(open), len(all))
	}
	if n, err := s2.AdvanceRollouts(r.ctx); err != nil || n != 0 {
		t.Fatalf("a pass after the abort created %d jobs (%v)", n, err)
	}
}
