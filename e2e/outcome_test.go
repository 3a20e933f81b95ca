//go:build cgo

package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// cancelBound is how soon a cancelled job must end on the agent that waits for its token.
const cancelBound = 5 * time.Second

// TestCancelWhileWaitingForToken: the agent waits for a token that is not plugged in; the
// help desk cancels the job, and the agent stops waiting at once: the job ends on the
// agent, cancelled, and the help desk sees the agent's answer in job show.
func TestCancelWhileWaitingForToken(t *testing.T) {
	s := newSystem(t, systemOptions{perAgentUsers: true})
	id := testenv.UniqueUser("ws-cancel-")
	s.enrol(id)
	run := s.startAgent(id, agentOptions{})

	// An inventory of a token nobody plugged in: the agent waits for it.
	jobID := s.queue(jobs.KindInventory, id, holder, "--token-serial", "NOT-PLUGGED-IN")
	eventually(t, "the agent to wait for the token", func() (bool, string) {
		d := s.job(jobID)
		steps := stepNames(d)
		return d.State == jobs.StateRunning && len(steps) > 0 && steps[len(steps)-1] == jobs.StepWaitingForToken,
			string(d.State)
	})

	start := time.Now()
	s.ctl(s.operator, "cancel", jobID, "--reason", "the holder is on leave")
	var state journal.State
	eventually(t, "the job to end on the agent", func() (bool, string) {
		state, _ = journalState(t, run.dir, jobID)
		return state.Finished(), string(state)
	})
	took := time.Since(start)
	t.Logf("cancel to the job's end on the agent: %v", took)
	if state != journal.StateCancelled {
		t.Errorf("the agent's journal says %s, want cancelled", state)
	}
	if took > cancelBound {
		t.Errorf("the agent took %v to stop, more than %v", took, cancelBound)
	}
	run.logs.waitFor(t, "the coordinator cancelled the job: the holder is on leave")

	// The help desk is told: the job is cancelled, and the agent said it stopped.
	eventually(t, "the agent's answer at the coordinator", func() (bool, string) {
		d := s.job(jobID)
		return strings.Contains(d.AgentResult, "job_cancelled"), d.AgentResult
	})
	show := s.ctl(s.operator, "job", "show", jobID)
	if !containsAll(show, "cancelled", "Agent said", "job_cancelled", "the holder is on leave") {
		t.Errorf("tokenfleetctl job show:\n%s", show)
	}
}

// gatedProfile is e2eProfile with the CA operator's approval before signing, on a P-256
// key.
const gatedProfile = `name: e2e-gated
description: Client authentication, signed only after a CA operator's approval.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
  organization: "{{.Organization}}"
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
token:
  initialize: true
  label: "{{.Name}}"
  any_blank: true
pin_policy: {min_length: 12, max_length: 16, so_pin_length: 16}
approval:
  required: 1
  roles: [approver]
  scope: organization
  expires_after: 72h
  ca_operator_required: true
`

// TestCoordinatorFailsTheJob: the agent waits for its certificate behind the CA operator;
// meanwhile the holder's record changes, so the approved names can no longer be signed.
// The coordinator fails the job and tells the agent, which stops waiting, says so in its
// log and journal, and reports what it left on the token.
func TestCoordinatorFailsTheJob(t *testing.T) {
	s := newSystem(t, systemOptions{perAgentUsers: true})
	profile := filepath.Join(t.TempDir(), "gated.yaml")
	if err := os.WriteFile(profile, []byte(gatedProfile), 0o600); err != nil {
		t.Fatal(err)
	}
	s.ctl(s.admin, "profile", "apply", profile)
	s.ctl(s.admin, "user", "create", "carla", "--name", "Carla CA", "--role", "ca_operator")
	caop := strings.TrimSpace(s.ctl(s.admin, "user", "token", "carla", "--name", "e2e"))
	id := testenv.UniqueUser("ws-fail-")
	s.enrol(id)
	run := s.startAgent(id, agentOptions{})

	jobID := strings.TrimSpace(s.ctl(s.operator, "issue", "--holder", holder, "--agent", id, "--profile", "e2e-gated"))
	s.ctl(s.approver, "approve", jobID)
	eventually(t, "the job to wait for the CA operator", func() (bool, string) {
		d := s.job(jobID)
		return d.State == jobs.StateAwaitingCertificate, string(d.State)
	})

	// The holder's name changes after the approval: what was approved is no longer what
	// the holder's record renders.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u, err := s.coord.Store.GetUserByUsername(ctx, holder)
	if err != nil {
		t.Fatal(err)
	}
	u.DisplayName = "Alice Renamed"
	if err := s.coord.Store.InTx(ctx, func(tx store.Tx) error { _, err := tx.UpdateUser(ctx, u); return err }); err != nil {
		t.Fatal(err)
	}
	s.ctl(caop, "approve", jobID, "--reason", "continue issuance")
	d := s.waitJob(jobID, jobs.StateFailed)
	if d.ErrorCode != "policy_violation" || !strings.Contains(d.ErrorMessage, "no longer gives the names that were approved") {
		t.Errorf("the job failed with %s: %s", d.ErrorCode, d.ErrorMessage)
	}

	run.logs.waitFor(t, "the coordinator failed the job", "no longer gives the names")
	var state journal.State
	eventually(t, "the job to end on the agent", func() (bool, string) {
		state, _ = journalState(t, run.dir, jobID)
		return state.Finished(), string(state)
	})
	if state != journal.StateFailed {
		t.Errorf("the agent's journal says %s, want failed", state)
	}
	eventually(t, "the agent's answer at the coordinator", func() (bool, string) {
		d := s.job(jobID)
		return strings.Contains(d.AgentResult, "job_cancelled"), d.AgentResult
	})
	// The token was initialised before the job failed: its PINs reached the coordinator,
	// so the token is not lost.
	if _, err := s.coord.Store.GetTokenPIN(ctx, s.job(jobID).TokenSerial, "so_pin"); err != nil {
		t.Errorf("the SO PIN of the token the failed job initialised: %v", err)
	}
}
