package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// enrolledUser makes agent id's own broker user with the permissions an enrolled agent
// has, and returns its URL.
func enrolledUser(t *testing.T, b *testenv.Broker, id string) string {
	t.Helper()
	user, err := protocol.AgentUser(id)
	if err != nil {
		t.Fatal(err)
	}
	p, err := protocol.AgentPermissions(id)
	if err != nil {
		t.Fatal(err)
	}
	u := b.AddUser(t, user, p.Configure, p.Write, p.Read)
	b.SetTopicPermissions(t, user, p.TopicExchange, p.TopicWrite, p.TopicRead)
	return u
}

// runUntilEnd runs an agent until Run returns, which it must by itself within waitLimit.
func runUntilEnd(t *testing.T, cfg agent.Config) error {
	t.Helper()
	a, err := agent.New(cfg, newTestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(waitLimit):
		t.Fatal("the agent kept retrying: Run did not end")
		return nil
	}
}

// TestRefusedBrokerLoginEndsTheAgent: the built agent whose broker password is wrong
// stops at once with exit status 2 and one line saying the broker refused the user and
// where the password comes from; it does not retry as if the broker were down.
func TestRefusedBrokerLoginEndsTheAgent(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	id := newAgentID(t)
	u, err := url.Parse(enrolledUser(t, b, id))
	if err != nil {
		t.Fatal(err)
	}
	user := u.User.Username()
	u.User = url.UserPassword(user, "wrong-password")

	p := startBinary(t, binaryArgs(u.String(), id, t.TempDir(), "--queue", "check")...)
	wantExit(t, p.exit(t, waitLimit), 2)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(p.logs.String()), "\n") {
		if !json.Valid([]byte(l)) {
			lines = append(lines, l)
		}
	}
	want := `tokenfleet-agent: configuration error: the broker amqp://` + user + `@` + testenv.RabbitMQAddr + `/` + b.VHost +
		` refused user "` + user + `" (wrong password or no such user): check the password in broker.password_file (--broker-password-file`
	if len(lines) != 1 || !strings.HasPrefix(lines[0], want) || !strings.Contains(lines[0], "rabbitmqctl add_user "+user+" PASSWORD") {
		t.Errorf("output outside the JSON log: %q; want one line starting %q", lines, want)
	}
	if strings.Contains(p.logs.String(), "wrong-password") {
		t.Error("the password appears in the output")
	}
}

// TestNotEnrolledEndsTheAgent: an agent whose queue does not exist at its first
// connection (not enrolled) ends with a *BrokerConfigError naming the tokenfleetctl
// command that enrols it, in check and in auto mode; once enrolled it works.
func TestNotEnrolledEndsTheAgent(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderAgentUsers)
	id := newAgentID(t)
	agentURL := enrolledUser(t, b, id)
	user, _ := protocol.AgentUser(id)

	for _, mode := range []agent.QueueMode{agent.QueueCheck, agent.QueueAuto} {
		err := runUntilEnd(t, agent.Config{ID: id, DataDir: t.TempDir(), Modules: []string{testenv.SoftHSMModule},
			Broker: agent.Broker{URL: agentURL, Backoff: fastBackoff, Queue: mode}})
		var ce *agent.BrokerConfigError
		if !errors.As(err, &ce) || ce.Problem != agent.ProblemNotEnrolled || ce.User != user {
			t.Fatalf("%s mode: Run: %v, want a not_enrolled *BrokerConfigError", mode, err)
		}
		want := "configuration error: agent " + id + " is not enrolled: the broker amqp://" + user + "@" + testenv.RabbitMQAddr + "/" + b.VHost +
			" has no queue tokenfleet.agent." + id + ": an administrator enrols it with: tokenfleetctl agent add " + id + " --hostname "
		if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "--broker-user") {
			t.Errorf("%s mode: error %q, want it to start %q", mode, err, want)
		}
	}

	// Enrolled under another broker user than the default: the command says so.
	other := agent.BrokerConfigError{Problem: agent.ProblemNotEnrolled, AgentID: id, Hostname: "ws.example", User: "alice-ws"}
	if !strings.Contains(other.Error(), "tokenfleetctl agent add "+id+" --hostname ws.example --broker-user alice-ws") {
		t.Errorf("with a broker user of its own: %q", other.Error())
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := c.conn.Declare(ctx, func(ch amqp.Declarer) error { return amqp.DeclareAgent(ch, id) }); err != nil {
		t.Fatalf("enrolling the agent: %v", err)
	}
	ra := startAgent(t, b, agentOptions{id: id, url: agentURL, queue: agent.QueueCheck})
	c.hello(ra.id, nil)
}
