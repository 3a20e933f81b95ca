package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

const blankIssueProfile = `name: blank-issue
description: Initialise any blank token, no approval.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
sans:
  email: true
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
token:
  initialize: true
  label: "tf {{.ID}}"
  any_blank: true
pin_policy: {min_length: 6, max_length: 16, so_pin_length: 16}
`

// TestDispatchSurvivesSIGKILL: the coordinator commits a job's dispatch to its outbox
// and is killed with SIGKILL before it could publish it; after a restart it publishes the
// same message, and the job runs to the end.
//
// Method: the coordinator first runs with a broker address nothing listens on, so the
// publisher cannot send anything (the state of a coordinator killed between the commit
// and the publish, without a test-only switch in the product); it is restarted on the
// same data directory with the real broker.
func TestDispatchSurvivesSIGKILL(t *testing.T) {
	t.Parallel() // its own data directory, port and vhost
	sqlite3Path(t)
	bins := buildBinaries(t)
	broker := testenv.NewBroker(t)
	data := t.TempDir()
	ctx := testenv.Context(t)

	co := startCoordinator(t, bins.coordinator, data, "--broker", noBroker)
	raw, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(co.url, strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateUser(ctx, client.UserCreate{Username: "alice", DisplayName: "Alice", Email: "alice@example.test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ApplyProfiles(ctx, []byte(blankIssueProfile)); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.EnrolAgent(ctx, client.AgentEnrolment{ID: "ws-kill", Hostname: "kill.test"}); err != nil {
		t.Fatal(err)
	}
	j, err := admin.CreateJob(ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-kill", Profile: "blank-issue"})
	if err != nil {
		t.Fatal(err)
	}
	if j.State != jobs.StateApproved {
		t.Fatalf("new job is %s, want approved", j.State)
	}
	db := filepath.Join(data, "coordinator.db")
	msgID := sqlite(t, db, "SELECT dispatch_message_id FROM job_attempts WHERE job_id = '"+j.ID+"' AND attempt = 1;")
	if protocol.ValidateMessageID(msgID) != nil {
		t.Fatalf("no dispatch committed for the job: %q", msgID)
	}
	if unsent := sqlite(t, db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND message_id = '"+msgID+"';"); unsent != "1" {
		t.Fatalf("the dispatch is not waiting in the outbox: %s", unsent)
	}

	if err := co.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-co.done

	co = startCoordinator(t, bins.coordinator, data, "--broker", broker.URL)
	admin, err = client.New(co.url, strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	a := dispatchtest.Start(t, broker.URL, "ws-kill")
	env := a.Next(protocol.TypeDispatch, j.ID)
	if env.ID != msgID {
		t.Fatalf("dispatch %s received, want the one committed before the kill, %s", env.ID, msgID)
	}
	waitJob(t, admin, j.ID, jobs.StateDispatched)
	a.Hello()
	is := a.IssueUntilCSR(env, "K1")
	a.Finish(is)
	d := waitJob(t, admin, j.ID, jobs.StateSucceeded)
	n := 0
	for _, e := range d.Timeline {
		if e.To == jobs.StateDispatched {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d transitions to dispatched", n)
	}
	if unsent := sqlite(t, db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL;"); unsent != "0" {
		t.Errorf("%s messages still unsent", unsent)
	}
	if got := len(a.Commands()); got != 2 {
		t.Errorf("the agent received %d distinct commands, want the dispatch and the certificate", got)
	}
}

// waitJob polls a job until it is in state.
func waitJob(t *testing.T, c *client.Client, id string, state jobs.State) client.JobDetail {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		d, err := c.GetJob(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if d.State == state {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %s (%s), want %s", id, d.State, d.ErrorMessage, state)
		}
		<-tick.C
	}
}
