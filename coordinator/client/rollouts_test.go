package client_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
)

// TestRolloutsAgainstCoordinator runs every rollout call of the client against the real
// coordinator.
func TestRolloutsAgainstCoordinator(t *testing.T) {
	ctx := context.Background()
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	for _, id := range []string{"ws-01", "ws-02", "ws-03"} {
		inst.EnrolAgent(t, id, id+".acme.example")
	}
	admin := must(client.New(inst.URL, inst.AdminToken))(t)
	must(admin.CreateOrg(ctx, "acme"))(t)
	for _, u := range []client.UserCreate{
		{Username: "owner", Organization: "acme", Roles: []jobs.Role{jobs.RoleRolloutOwner}},
		{Username: "appr1", Organization: "acme", Roles: []jobs.Role{jobs.RoleApprover}},
		{Username: "alice", DisplayName: "Alice Holder", Organization: "acme", UPN: "alice@acme.example"},
	} {
		must(admin.CreateUser(ctx, u))(t)
	}
	must(admin.ApplyProfiles(ctx, exampleProfile(t, "smartcard-logon")))(t)
	as := func(username string) *client.Client {
		issued := must(admin.CreateAPIToken(ctx, username, client.APITokenCreate{}))(t)
		return must(client.New(inst.URL, issued.Token))(t)
	}
	owner, appr := as("owner"), as("appr1")

	spec := client.RolloutSpec{Name: "logon acme",
		Template: rollout.Template{Kind: jobs.KindIssue, Profile: "smartcard-logon", Holder: "alice"},
		Selector: rollout.Selector{Agents: rollout.AgentSelector{HostPattern: "ws-*.acme.example"}},
		Plan:     rollout.Plan{Canary: rollout.Canary{Count: 1}, Pause: rollout.Pause{UntilPromoted: true}}}
	dry := must(owner.DryRunRollout(ctx, spec))(t)
	if dry.Preview == nil || dry.Preview.Targets != 3 || len(dry.BindingHash) != 64 {
		t.Fatalf("dry run %+v", dry)
	}
	r := must(owner.CreateRollout(ctx, spec))(t)
	if r.ID == "" || r.State != rollout.StatePendingApproval || r.BindingHash != dry.BindingHash || r.TargetCount != 3 {
		t.Fatalf("created %+v", r)
	}
	spec.Name = "logon acme, again"
	other := must(owner.CreateRollout(ctx, spec))(t)
	spec.Name = ""
	_, err := owner.CreateRollout(ctx, spec)
	wantCode(t, err, "bad_request")

	if got := must(appr.GetRollout(ctx, r.ID))(t); got.BindingHash != r.BindingHash || len(got.Waves) != 2 {
		t.Errorf("get %+v", got)
	}
	_, err = appr.GetRollout(ctx, "nope")
	wantCode(t, err, "not_found")
	all := must(client.Collect(owner.AllRollouts(ctx, client.RolloutFilter{State: rollout.StatePendingApproval}, 1)))(t)
	if len(all) != 2 || all[0].ID != other.ID || all[1].ID != r.ID {
		t.Errorf("rollouts over pages of 1: %+v", all)
	}
	standing := true
	if l := must(owner.ListRollouts(ctx, client.RolloutFilter{Standing: &standing}, client.Page{}))(t); len(l.Items) != 0 {
		t.Errorf("standing rollouts: %+v", l.Items)
	}
	targets := must(client.Collect(owner.AllRolloutTargets(ctx, r.ID, client.RolloutTargetFilter{}, 2)))(t)
	if len(targets) != 3 || targets[0].Seq != 1 || targets[0].AgentID != "ws-01" || targets[0].Outcome != rollout.OutcomePending {
		t.Errorf("targets %+v", targets)
	}
	canary := 0
	if c := must(client.Collect(owner.AllRolloutTargets(ctx, r.ID, client.RolloutTargetFilter{Wave: &canary}, 0)))(t); len(c) != 1 {
		t.Errorf("canary targets %+v", c)
	}

	_, err = appr.ApproveRollout(ctx, r.ID, strings.Repeat("0", 64), "")
	wantCode(t, err, "binding_mismatch")
	_, err = owner.ApproveRollout(ctx, r.ID, r.BindingHash, "")
	wantCode(t, err, "self_approval")
	_, err = appr.RejectRollout(ctx, other.ID, other.BindingHash, "")
	wantCode(t, err, "reason_required")
	if rej := must(appr.RejectRollout(ctx, other.ID, other.BindingHash, "one is enough"))(t); rej.State != rollout.StateRejected {
		t.Errorf("rejected %+v", rej)
	}
	if ok := must(appr.ApproveRollout(ctx, r.ID, r.BindingHash, "checked"))(t); ok.Approvals != 1 || ok.Approvers[0] != "appr1" {
		t.Errorf("approved %+v", ok)
	}
	if p := must(owner.PauseRollout(ctx, r.ID, "freeze"))(t); p.State != rollout.StatePaused || p.PauseKind != rollout.PauseOperator {
		t.Errorf("paused %+v", p)
	}
	if p := must(owner.ResumeRollout(ctx, r.ID, ""))(t); p.State != rollout.StateRunning {
		t.Errorf("resumed %+v", p)
	}
	_, err = owner.PromoteRollout(ctx, r.ID, "")
	if err != nil {
		wantCode(t, err, "conflict") // the canary may not have ended: nothing to promote past yet
	}
	if a := must(owner.AbortRollout(ctx, r.ID, "test over"))(t); a.State != rollout.StateAborted {
		t.Errorf("aborted %+v", a)
	}
}
