package agent

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// TestRefusalWatch: a configuration refusal before the first connection ends the agent at
// once; once it has been connected, the same refusals are retried for the grace period
// (a broker restarting), which a successful connection or another kind of failure starts
// again.
func TestRefusalWatch(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	w := &refusalWatch{id: brokerIdentity{agentID: "ws-01", user: "agent-ws-01"}, grace: time.Minute, now: func() time.Time { return now }}
	notEnrolled := amqp.Status{State: amqp.StateDisconnected, Err: fmt.Errorf("declaring the topology: %w", &amqp.QueueNotFoundError{Queue: "tokenfleet.agent.ws-01", AgentID: "ws-01"})}
	login := amqp.Status{State: amqp.StateDisconnected, Err: &amqp.LoginRefusedError{User: "agent-ws-01", Cause: errors.New("403")}}
	down := amqp.Status{State: amqp.StateDisconnected, Err: errors.New("dial tcp 127.0.0.1:5672: connection refused")}

	if e := w.status(down); e != nil {
		t.Fatalf("a broker that is down: %v", e)
	}
	if e := w.status(notEnrolled); e == nil || e.Problem != ProblemNotEnrolled {
		t.Fatalf("not enrolled at the first connection: %v, want fatal", e)
	}

	w = &refusalWatch{id: w.id, grace: time.Minute, now: w.now}
	if e := w.status(amqp.Status{State: amqp.StateConnected}); e != nil {
		t.Fatal(e)
	}
	for _, step := range []struct {
		after time.Duration
		st    amqp.Status
		fatal bool
	}{
		{0, notEnrolled, false},
		{30 * time.Second, login, false},
		{29 * time.Second, notEnrolled, false},
		{time.Second, notEnrolled, true}, // a minute of refusals
		{0, amqp.Status{State: amqp.StateConnected}, false},
		{time.Second, login, false}, // a new run of refusals
		{50 * time.Second, down, false},
		{50 * time.Second, login, false}, // the broker down in between started it again
		{59 * time.Second, login, false},
		{time.Second, login, true},
	} {
		now = now.Add(step.after)
		if e := w.status(step.st); (e != nil) != step.fatal {
			t.Fatalf("after %v, %v: %v, want fatal %v", step.after, step.st.Err, e, step.fatal)
		}
	}
}
