//go:build cgo && linux

package e2e_test

import (
	"math/rand/v2"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// A lane's model after a job that did not succeed: rejected or cancelled at its gate as
// decided, the token is as it was; a job that reached the agent and failed or expired
// left the token as far as it got (agent/executor's TestAFailedIssueLeavesItsTokenInitialised
// and TestAFailedRenewalLeavesItsKeyBesideTheCurrentOne), and the lane wipes it next. The
// lane used to go on as if the token were untouched: after a first issue that failed it
// asked for a blank token again, and waited for one until the run's time was up.
func TestLaneAfterAJobThatDidNotSucceed(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		from                 tokenState
		serial               string
		decision             string
		kind                 jobs.Kind
		end                  jobs.State
		found                string // the token serial the coordinator has for the job
		wantState            tokenState
		wantKind             jobs.Kind
		wantSerial, wantKeep string // wantKeep: keyJob kept
	}{
		{"first issue failed after initialising", tokenBlank, "", "none", jobs.KindIssue, jobs.StateFailed, "T1",
			tokenUnknown, jobs.KindWipe, "T1", ""},
		{"first issue failed before finding a token", tokenBlank, "", "approve", jobs.KindIssue, jobs.StateFailed, "",
			tokenBlank, jobs.KindIssue, "", ""},
		{"first issue rejected as decided", tokenBlank, "", "reject", jobs.KindIssue, jobs.StateRejected, "",
			tokenBlank, jobs.KindIssue, "", ""},
		{"renewal failed", tokenIssued, "T2", "none", jobs.KindRenew, jobs.StateFailed, "T2",
			tokenUnknown, jobs.KindWipe, "T2", ""},
		{"renewal expired", tokenIssued, "T2", "approve", jobs.KindRenew, jobs.StateExpired, "T2",
			tokenUnknown, jobs.KindWipe, "T2", ""},
		{"renewal cancelled as decided", tokenIssued, "T2", "cancel", jobs.KindRenew, jobs.StateCancelled, "",
			tokenIssued, "", "T2", "issue-job"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &lane{serial: tc.serial, state: tc.from, rng: rand.New(rand.NewPCG(1, 2))} //nolint:gosec // a test's plan
			if tc.from == tokenIssued {
				l.keyJob, l.pinJob = "issue-job", "issue-job"
			}
			l.leftBehind(&jobRecord{kind: tc.kind, decision: tc.decision}, client.JobDetail{Job: client.Job{State: tc.end, TokenSerial: tc.found}})
			if l.state != tc.wantState || l.serial != tc.wantSerial || l.keyJob != tc.wantKeep {
				t.Fatalf("lane state %s, serial %q, key of %q; want %s, %q, %q", l.state, l.serial, l.keyJob, tc.wantState, tc.wantSerial, tc.wantKeep)
			}
			if tc.wantKind == "" {
				return
			}
			if kind, serial := l.next(); kind != tc.wantKind || serial != tc.wantSerial {
				t.Errorf("next job %s on %q, want %s on %q", kind, serial, tc.wantKind, tc.wantSerial)
			}
		})
	}
}
