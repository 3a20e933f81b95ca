package service_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// The gates around a rollout's jobs: its approval covers its jobs only while it runs, and
// never lets one person pass both gates of a job.

// TestRolloutJobRetryOnlyWhileRunning: a retry of a rollout's failed job is a new attempt
// under the rollout's approval, so it is refused once the rollout stopped: paused by its
// brake (the resumption needs approvals), aborted, or ended.
func TestRolloutJobRetryOnlyWhileRunning(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(10)
	spec := inventorySpec("retry")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 4}, Waves: []float64{100}}
	spec.Brake = rollout.Brake{ThresholdPercent: 50, MinExecuted: 2}
	v := r.create(spec)
	r.approve(r.ap1, v)
	if n := r.pass(); n != 4 {
		t.Fatalf("canary: %d jobs", n)
	}
	js := r.rolloutJobs(v.ID)
	retry := func(j store.Job) error {
		_, err := r.s.RetryJob(r.ctx, r.helpdesk, j.ID, service.RetryRequest{Reason: "try again"})
		return err
	}
	// While it runs, a failed job may be tried again.
	r.finish(js[0], "token.device_error")
	if err := retry(js[0]); err != nil {
		t.Fatalf("retry while running: %v", err)
	}
	r.finish(js[0], "token.device_error")
	r.finish(js[1], "token.device_error")
	r.pass()
	if got := r.get(v.ID); got.State != rollout.StatePaused || got.PauseKind != rollout.PauseBrake {
		t.Fatalf("brake: %+v", got)
	}
	// Paused by its brake: only approvals resume it, and a retry would run what the brake stopped.
	err := retry(js[1])
	wantCode(t, err, service.CodeApprovalRequired)
	if !strings.Contains(err.Error(), "rollout approve "+v.ID) {
		t.Fatalf("refusal says no way out: %v", err)
	}
	if cur, err := r.st.GetJob(r.ctx, js[1].ID); err != nil || cur.State != jobs.StateFailed {
		t.Fatalf("the refused retry moved the job: %+v %v", cur.State, err)
	}
	// Aborted: never again.
	if _, err := r.s.AbortRollout(r.ctx, r.owner, v.ID, "enough"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, retry(js[0]), service.CodeConflict)
	// Its creator, the jobs' requester, is refused too.
	_, err = r.s.RetryJob(r.ctx, r.owner, js[0].ID, service.RetryRequest{})
	wantCode(t, err, service.CodeConflict)
	if n := len(r.rolloutJobs(v.ID, jobs.StateApproved)); n != 0 {
		t.Fatalf("%d jobs approved after the abort", n)
	}
}

// caProfile needs one approver and a CA operator; its jobs (issue) produce a certificate.
const caProfile = `name: ca-gated
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], scope: any, expires_after: 48h, ca_operator_required: true}
`

// TestRolloutApproverIsNotCAOperatorOfItsJobs: the rollout's approval is its jobs'
// request-gate approval, so whoever gave it may not also pass their CA-operator gate (one
// person never passes both gates of a job); another CA operator may.
func TestRolloutApproverIsNotCAOperatorOfItsJobs(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(2)
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(caProfile)); err != nil {
		t.Fatal(err)
	}
	both := r.user("bert", "Acme", jobs.RoleApprover, jobs.RoleCAOperator)
	ca := r.user("cora", "Acme", jobs.RoleCAOperator)
	spec := inventorySpec("ca gated")
	spec.Template.Kind, spec.Template.Profile = jobs.KindIssue, "ca-gated"
	spec.Selector = rollout.Selector{} // one job per agent, on whichever token the profile allows
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 2}, Waves: []float64{100}}
	v := r.create(spec)
	r.approve(both, v)
	if n := r.pass(); n != 2 {
		t.Fatalf("%d jobs", n)
	}
	js := r.rolloutJobs(v.ID)
	// The agent sends its CSR: the job waits at the CA-operator gate.
	if err := r.s.UpdateJobs(r.ctx, func(jt *service.JobTx) error {
		j := js[0]
		a := store.JobChange{Actor: service.AgentActor(j.AgentID)}
		for _, to := range []jobs.State{jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate} {
			var err error
			if j, err = jt.Transition(r.ctx, j, to, a); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, err := r.s.Approve(r.ctx, both, js[0].ID, service.DecisionRequest{})
	wantCode(t, err, service.CodeAlreadyDecided)
	if !strings.Contains(err.Error(), v.ID) {
		t.Fatalf("refusal does not name the rollout: %v", err)
	}
	// Nor does the awaiting list offer it to them.
	if l, _, err := r.s.ListJobs(r.ctx, both, service.JobQuery{AwaitingMe: true}, service.Page{}); err != nil || len(l) != 0 {
		t.Fatalf("awaiting bert: %d jobs, %v", len(l), err)
	}
	if _, err := r.s.Approve(r.ctx, ca, js[0].ID, service.DecisionRequest{}); err != nil {
		t.Fatalf("another CA operator: %v", err)
	}
}

// TestRolloutHolderMovedAfterApproval: an approval covers the holders' organisations as
// they were: a holder moved to another organisation since gets no job approved by it.
func TestRolloutHolderMovedAfterApproval(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(2)
	scoped := strings.Replace(strings.Replace(fleetProfile, "scope: any", "scope: organization", 1), "name: fleet", "name: fleet-org", 1)
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(scoped)); err != nil {
		t.Fatal(err)
	}
	spec := inventorySpec("moved")
	spec.Template.Profile = "fleet-org"
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 2}, Waves: []float64{100}}
	spec.Brake = rollout.Brake{Disabled: true}
	v := r.create(spec)
	r.approve(r.ap1, v) // arne, of Acme, like alice
	globex, err := r.st.GetOrganizationByName(r.ctx, "Globex")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		u, err := tx.GetUser(r.ctx, r.holder.ID)
		if err != nil {
			return err
		}
		u.OrganizationID = globex.ID
		_, err = tx.UpdateUser(r.ctx, u)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r.pass()
	js := r.rolloutJobs(v.ID)
	if len(js) != 2 {
		t.Fatalf("%d jobs", len(js))
	}
	for _, j := range js {
		if j.State != jobs.StateFailed || j.ErrorCode != service.JobErrTargetUnavailable || !strings.Contains(j.ErrorMessage, "Globex") {
			t.Fatalf("job for a holder moved to Globex: %s %s %q", j.State, j.ErrorCode, j.ErrorMessage)
		}
	}
}

// seedCert gives token tok-AGENT a certificate of profile renew for holder, valid from
// notBefore to notAfter, and the user PIN a renewal needs.
func (r *rig) seedCert(holder store.User, agent, serial string, notBefore, notAfter time.Time) {
	r.t.Helper()
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		sp, err := tx.GetProfile(r.ctx, "renew")
		if err != nil {
			return err
		}
		j, err := tx.CreateJob(r.ctx, store.Job{Kind: jobs.KindIssue, State: jobs.StatePendingApproval, HolderID: holder.ID,
			ProfileName: "renew", ProfileHash: sp.ContentHash, AgentID: agent, TokenSerial: "tok-" + agent, RequesterID: holder.ID,
			BindingHash: strings.Repeat("0", 64), Created: r.clock.now()})
		if err != nil {
			return err
		}
		if _, err := tx.GetTokenPIN(r.ctx, "tok-"+agent, store.PINPurposeUser); err != nil {
			if _, err := tx.AddTokenPIN(r.ctx, store.TokenPIN{TokenSerial: "tok-" + agent, Purpose: store.PINPurposeUser, JobID: j.ID,
				Attempt: 1, Sealed: json.RawMessage(`{"sealed":"x"}`), Recorded: r.clock.now()}); err != nil {
				return err
			}
		}
		_, err = tx.AddCertificate(r.ctx, store.Certificate{Serial: serial, JobID: j.ID, HolderID: holder.ID, Profile: "renew",
			TokenSerial: "tok-" + agent, AgentID: agent, Subject: "CN=" + holder.Username, Issuer: "CN=test CA",
			NotBefore: notBefore, NotAfter: notAfter, DER: []byte{0x30, 0}})
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
}

// passAfter moves the clock past the standing scan interval and runs engine passes, n times.
func (r *rig) passAfter(n int) {
	r.t.Helper()
	for range n {
		r.clock.add(time.Minute)
		r.pass()
	}
}

// TestRolloutStandingNoRenewalLoop: a certificate issued for less than renew_before (its
// validity cut by a CA certificate that expires first) is due for renewal as soon as it
// is issued; a standing rollout would renew it, and its renewal, and so on, every scan.
// It takes up none, and says why in its preview.
func TestRolloutStandingNoRenewalLoop(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(2)
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(renewProfile)); err != nil {
		t.Fatal(err)
	}
	now := r.clock.now()
	// ws-000: an ordinary certificate entering its window; ws-001: a renewal the CA cut
	// to 8 days, 2 of them gone.
	r.seedCert(r.holder, "ws-000", "a1", now.Add(-25*24*time.Hour), now.Add(5*24*time.Hour))
	r.seedCert(r.holder, "ws-001", "b1", now.Add(-2*24*time.Hour), now.Add(6*24*time.Hour))
	standing := rollout.Spec{Name: "keep renewed", Standing: true, Template: rollout.Template{Kind: jobs.KindRenew, Profile: "renew"},
		Plan: rollout.Plan{Canary: rollout.Canary{Count: 1}}}
	v := r.create(standing)
	pv := v.Preview
	if pv.Targets != 1 || pv.First[0].CertificateSerial != "a1" || pv.SkippedCount != 1 || pv.Skipped[0].CertificateSerial != "b1" ||
		!strings.Contains(pv.Skipped[0].Reason, "renew_before") {
		t.Fatalf("preview %+v", pv)
	}
	r.approve(r.ap1, v)
	r.passAfter(3)
	js := r.rolloutJobs(v.ID)
	if len(js) != 1 || js[0].AgentID != "ws-000" {
		t.Fatalf("standing jobs: %+v", js)
	}
	// a1 renewed, by a CA that cuts the new certificate to 7 days: not renewed again.
	r.finish(js[0], "")
	r.seedCert(r.holder, "ws-000", "a2", r.clock.now(), r.clock.now().Add(7*24*time.Hour))
	r.passAfter(3)
	if js := r.rolloutJobs(v.ID); len(js) != 1 {
		t.Fatalf("the renewal was renewed again: %d jobs", len(js))
	}
}

// TestRolloutStandingApproverNotTarget: a standing rollout's targets arrive after its
// approval, so the rule that no approver holds a target is kept as they arrive: the
// certificates of its approvers are not taken up.
func TestRolloutStandingApproverNotTarget(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(2)
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(renewProfile)); err != nil {
		t.Fatal(err)
	}
	arne, err := r.st.GetUserByUsername(r.ctx, "arne")
	if err != nil {
		t.Fatal(err)
	}
	standing := rollout.Spec{Name: "keep renewed", Standing: true, Template: rollout.Template{Kind: jobs.KindRenew, Profile: "renew"},
		Plan: rollout.Plan{Canary: rollout.Canary{Count: 1}}}
	v := r.create(standing)
	r.approve(r.ap1, v) // arne
	now := r.clock.now()
	r.seedCert(r.holder, "ws-000", "a1", now.Add(-25*24*time.Hour), now.Add(5*24*time.Hour))
	r.seedCert(arne, "ws-001", "b1", now.Add(-25*24*time.Hour), now.Add(5*24*time.Hour))
	r.passAfter(3)
	for _, j := range r.rolloutJobs(v.ID) {
		r.finish(j, "")
	}
	r.passAfter(3)
	js := r.rolloutJobs(v.ID)
	if got := r.get(v.ID); got.TargetCount != 1 || len(js) != 1 || js[0].HolderID != r.holder.ID {
		t.Fatalf("standing: %d targets, jobs %+v: the approver's certificate was taken up", got.TargetCount, js)
	}
}

// TestRolloutRenewedSinceApproval: a renewal target whose certificate was renewed (or
// revoked) by other means while it waited for its wave is not renewed a second time: its
// job is cancelled, saying why, and the rollout goes on.
func TestRolloutRenewedSinceApproval(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(3)
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(renewProfile)); err != nil {
		t.Fatal(err)
	}
	now := r.clock.now()
	for _, a := range []string{"ws-000", "ws-001", "ws-002"} {
		r.seedCert(r.holder, a, "c"+a[3:], now.Add(-25*24*time.Hour), now.Add(5*24*time.Hour))
	}
	spec := rollout.Spec{Name: "renew", Template: rollout.Template{Kind: jobs.KindRenew, Profile: "renew"},
		Plan:  rollout.Plan{Canary: rollout.Canary{Count: 1}, Waves: []float64{100}, Pause: rollout.Pause{UntilPromoted: true}},
		Brake: rollout.Brake{ThresholdPercent: 10, MinExecuted: 1}}
	v := r.create(spec)
	r.approve(r.ap1, v)
	if n := r.pass(); n != 1 {
		t.Fatalf("canary: %d jobs", n)
	}
	r.finish(r.rolloutJobs(v.ID)[0], "")
	// Meanwhile the help desk renewed ws-001's certificate, and ws-002's was revoked.
	r.seedCert(r.holder, "ws-001", "d001", r.clock.now(), r.clock.now().Add(30*24*time.Hour))
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		_, err := tx.RevokeCertificate(r.ctx, "c002", r.clock.now(), 4)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r.pass()
	if _, err := r.s.PromoteRollout(r.ctx, r.owner, v.ID, "canary fine"); err != nil {
		t.Fatal(err)
	}
	r.pass()
	byAgent := map[string]store.Job{}
	for _, j := range r.rolloutJobs(v.ID) {
		byAgent[j.AgentID] = j
	}
	for agent, want := range map[string]string{"ws-001": "renewed", "ws-002": "revoked"} {
		j := byAgent[agent]
		if j.State != jobs.StateCancelled || !strings.Contains(j.ErrorMessage+timelineReason(t, r, j), want) {
			t.Fatalf("%s: job %s %s %q", agent, j.ID, j.State, timelineReason(t, r, j))
		}
	}
	got := r.get(v.ID)
	if got.State != rollout.StateCompleted || got.Overall.Cancelled != 2 || got.Overall.Succeeded != 1 {
		t.Fatalf("rollout %+v %+v", got.State, got.Overall)
	}
}

// timelineReason is the reason of the job's last transition.
func timelineReason(t *testing.T, r *rig, j store.Job) string {
	t.Helper()
	d, err := r.s.GetJob(r.ctx, r.admin, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Timeline) == 0 {
		return ""
	}
	return d.Timeline[len(d.Timeline)-1].Reason
}

// TestRolloutStandingTokenMoved: a certificate renewed after its token moved to another
// workstation is superseded all the same (same holder, profile and token): a standing
// rollout does not renew the old one again.
func TestRolloutStandingTokenMoved(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(2)
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(renewProfile)); err != nil {
		t.Fatal(err)
	}
	now := r.clock.now()
	r.seedCert(r.holder, "ws-000", "a1", now.Add(-25*24*time.Hour), now.Add(5*24*time.Hour))
	// The token went to ws-001, where it was renewed: a2, on the same token.
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		old, err := tx.GetCertificate(r.ctx, "a1")
		if err != nil {
			return err
		}
		_, err = tx.AddCertificate(r.ctx, store.Certificate{Serial: "a2", JobID: old.JobID, HolderID: r.holder.ID, Profile: "renew",
			TokenSerial: "tok-ws-000", AgentID: "ws-001", Subject: "CN=alice", Issuer: "CN=test CA",
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(29 * 24 * time.Hour), DER: []byte{0x30, 0}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	standing := rollout.Spec{Name: "keep renewed", Standing: true, Template: rollout.Template{Kind: jobs.KindRenew, Profile: "renew"},
		Plan: rollout.Plan{Canary: rollout.Canary{Count: 1}}}
	v := r.create(standing)
	if v.Preview.Targets != 0 {
		t.Fatalf("preview %+v: the renewed certificate would be renewed again", v.Preview)
	}
	r.approve(r.ap1, v)
	r.passAfter(2)
	if got := r.get(v.ID); got.TargetCount != 0 {
		t.Fatalf("%d targets", got.TargetCount)
	}
}
