package amqp

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestDeclareTopologyMatchesSpec declares the shared topology and an agent
// queue twice (on connect, then again by hand) and compares what the broker
// reports with protocol's specification.
func TestDeclareTopologyMatchesSpec(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	const agent = "ws-01"
	for range 2 {
		if err := c.Declare(ctx, func(ch Declarer) error {
			if err := DeclareShared(ch); err != nil {
				return err
			}
			return DeclareAgent(ch, agent)
		}); err != nil {
			t.Fatalf("declaring again: %v", err)
		}
	}

	spec := protocol.SharedTopology()
	agentSpec, err := protocol.AgentQueueSpec(agent)
	if err != nil {
		t.Fatal(err)
	}
	queues := append(spec.Queues, agentSpec)

	exchanges := map[string]map[string]any{}
	for _, row := range rabbitList(t, b, "exchanges") {
		exchanges[row["name"].(string)] = row
	}
	for _, x := range spec.Exchanges {
		row, ok := exchanges[x.Name]
		if !ok {
			t.Errorf("exchange %s missing", x.Name)
			continue
		}
		if row["type"] != x.Kind || row["durable"] != x.Durable {
			t.Errorf("exchange %s: broker has %v, spec %+v", x.Name, row, x)
		}
	}

	listed := map[string]map[string]any{}
	for _, row := range rabbitList(t, b, "queues") {
		listed[row["name"].(string)] = row
	}
	if len(listed) != len(queues) {
		t.Errorf("broker has %d queues, spec %d: %v", len(listed), len(queues), listed)
	}
	for _, q := range queues {
		row, ok := listed[q.Name]
		if !ok {
			t.Errorf("queue %s missing", q.Name)
			continue
		}
		if row["durable"] != q.Durable {
			t.Errorf("queue %s: durable %v, spec %v", q.Name, row["durable"], q.Durable)
		}
		if got, want := normalizeArgs(row["arguments"]), normalizeArgs(q.Args); got != want {
			t.Errorf("queue %s arguments:\n broker %s\n spec   %s", q.Name, got, want)
		}
	}

	var gotBindings, wantBindings []string
	for _, row := range rabbitList(t, b, "bindings") {
		if row["source"] == "" {
			continue // the default exchange's implicit bindings
		}
		gotBindings = append(gotBindings, fmt.Sprintf("%s -> %s [%s]", row["source"], row["destination"], row["routing_key"]))
	}
	for _, q := range queues {
		for _, bd := range q.Bindings {
			wantBindings = append(wantBindings, fmt.Sprintf("%s -> %s [%s]", bd.Exchange, q.Name, bd.RoutingKey))
		}
	}
	sort.Strings(gotBindings)
	sort.Strings(wantBindings)
	if strings.Join(gotBindings, "\n") != strings.Join(wantBindings, "\n") {
		t.Errorf("bindings:\n broker %q\n spec   %q", gotBindings, wantBindings)
	}

	// The events queue must dead-letter at least once and bound
	// redeliveries, or a poison message loops and a dead letter can be lost.
	args := listed[protocol.EventsQueue]["arguments"]
	for _, want := range []string{`x-delivery-limit=20`, `x-dead-letter-strategy=at-least-once`, `x-overflow=reject-publish`, `x-dead-letter-exchange=tokenfleet.dead`} {
		if !strings.Contains(normalizeArgs(args), want) {
			t.Errorf("events queue arguments %s lack %s", normalizeArgs(args), want)
		}
	}
}

// normalizeArgs renders queue arguments as sorted key=value pairs, from the
// spec's map or from the broker's JSON (an object, or a list of
// [key, type, value] triples depending on the version).
func normalizeArgs(v any) string {
	var pairs []string
	switch a := v.(type) {
	case map[string]any:
		for k, val := range a {
			pairs = append(pairs, fmt.Sprintf("%s=%v", k, val))
		}
	case []any:
		for _, e := range a {
			switch kv := e.(type) {
			case []any:
				if len(kv) >= 2 {
					pairs = append(pairs, fmt.Sprintf("%v=%v", kv[0], kv[len(kv)-1]))
				}
			case map[string]any:
				for k, val := range kv {
					pairs = append(pairs, fmt.Sprintf("%s=%v", k, val))
				}
			}
		}
	}
	sort.Strings(pairs)
	return strings.Join(pairs, " ")
}

// TestCheckAgentQueue: an agent's broker user may not configure anything;
// it checks its queue passively, is told clearly that it is not enrolled
// while the queue is missing, and connects once the coordinator declared it.
func TestCheckAgentQueue(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	coord := coordinatorConn(t, b, "tokenfleet-coordinator test")
	agent := randomAgentID(t)
	user, _ := protocol.AgentUser(agent)
	perms, _ := protocol.AgentPermissions(agent)
	agentURL := b.AddUser(t, user, perms.Configure, perms.Write, perms.Read)

	// Directly on a channel: the typed error and its exact wording.
	ch := rawChannel(t, agentURL)
	err := CheckAgentQueue(ch, agent)
	if !errors.Is(err, ErrNotEnrolled) || !errors.Is(err, ErrQueueNotFound) {
		t.Fatalf("CheckAgentQueue before enrolment: %v, want ErrNotEnrolled", err)
	}
	if want := fmt.Sprintf("queue tokenfleet.agent.%s does not exist: the agent is not enrolled", agent); err.Error() != want {
		t.Errorf("error text %q, want %q", err.Error(), want)
	}

	// Through a Conn: it keeps retrying and says why.
	var statuses []Status
	statusCh := make(chan Status, 64)
	c, err := Open(context.Background(), Config{
		URL:      agentURL,
		Name:     "tokenfleet-agent " + agent + "@test",
		Backoff:  fastBackoff,
		Logger:   testLogger(t),
		Topology: func(ch Declarer) error { return CheckAgentQueue(ch, agent) },
		OnStatus: func(s Status) {
			select {
			case statusCh <- s:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	// First the refusal, however long a busy machine takes to get there; then Ready, which
	// must keep waiting and, at its deadline, say why.
	waitFor(t, 60*time.Second, "the refusal while not enrolled", func() bool { return errors.Is(c.Status().Err, ErrNotEnrolled) })
	waitCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err = c.Ready(waitCtx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrNotEnrolled) || !strings.Contains(err.Error(), "the agent is not enrolled") {
		t.Fatalf("Ready while not enrolled: %v", err)
	}
	if st := c.Status(); !errors.Is(st.Err, ErrNotEnrolled) {
		t.Errorf("status error %v, want ErrNotEnrolled", st.Err)
	}

	if err := coord.Declare(ctx, func(ch Declarer) error { return DeclareAgent(ch, agent) }); err != nil {
		t.Fatalf("enrolling: %v", err)
	}
	if err := c.Ready(ctx); err != nil {
		t.Fatalf("Ready after enrolment: %v", err)
	}
	// Ready may return before OnStatus has handed over the connected status: collect until
	// it has come.
	waitFor(t, 30*time.Second, "the connected status", func() bool {
		for {
			select {
			case s := <-statusCh:
				statuses = append(statuses, s)
			default:
				return len(statuses) > 0 && statuses[len(statuses)-1].State == StateConnected
			}
		}
	})
	var sawDisconnected bool
	for _, s := range statuses {
		if s.State == StateDisconnected && errors.Is(s.Err, ErrNotEnrolled) && s.RetryIn > 0 {
			sawDisconnected = true
		}
	}
	if !sawDisconnected || statuses[len(statuses)-1].State != StateConnected {
		t.Errorf("status sequence %+v: want disconnected (not enrolled, retrying) then connected", statuses)
	}

	// Without configure rights the agent cannot declare its queue itself.
	ch = rawChannel(t, agentURL)
	if err := DeclareAgent(ch, agent); brokerCode(err) != amqp091.AccessRefused {
		t.Errorf("agent declaring its own queue: %v, want ACCESS_REFUSED", err)
	}
}

// TestTopologyMismatch: a queue declared with other arguments is reported,
// not silently used.
func TestTopologyMismatch(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ch := rawChannel(t, b.URL)
	if _, err := ch.QueueDeclare(protocol.EventsQueue, true, false, false, false, amqp091.Table{"x-queue-type": "classic"}); err != nil {
		t.Fatal(err)
	}
	ch = rawChannel(t, b.URL)
	err := DeclareShared(ch)
	if !errors.Is(err, ErrTopologyMismatch) || brokerCode(err) != amqp091.PreconditionFailed {
		t.Fatalf("DeclareShared over a classic events queue: %v, want ErrTopologyMismatch", err)
	}
	if !strings.Contains(err.Error(), "queue "+protocol.EventsQueue) {
		t.Errorf("error %q does not name the queue", err)
	}
}

// A coordinator's broker user with protocol.CoordinatorPermissions declares the topology
// and an agent's queue and reaches the agent with a command; one set up as for earlier
// versions (tokenfleet.* only, no write to the default exchange) is stopped at the
// declaration with what to grant, instead of having every command refused later.
func TestCoordinatorPermissionsOnTheBroker(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	perm := protocol.CoordinatorPermissions()
	url := b.AddUser(t, testenv.UniqueUser("coordinator-"), perm.Configure, perm.Write, perm.Read)
	c := openConn(t, Config{URL: url, Name: "tokenfleet-coordinator permissions", Topology: DeclareShared})
	const agent = "ws-perm"
	if err := c.Declare(ctx, func(ch Declarer) error { return DeclareAgent(ch, agent) }); err != nil {
		t.Fatalf("declaring an agent's queue with the coordinator's permissions: %v", err)
	}
	env := cancelEnv(t, agent)
	if err := c.PublishCommand(ctx, env); err != nil {
		t.Fatalf("a command with the coordinator's permissions: %v", err)
	}
	if got := getN(t, rawChannel(t, b.URL), protocol.AgentQueuePrefix+agent, 1)[0]; got.MessageId != env.ID {
		t.Errorf("the agent's queue holds %s, want %s", got.MessageId, env.ID)
	}

	old := b.AddUser(t, testenv.UniqueUser("coordinator-"), `^tokenfleet\.`, `^tokenfleet\.`, `^tokenfleet\.`)
	says := func(err error) {
		t.Helper()
		if !errors.Is(err, ErrCommandRouteRefused) {
			t.Errorf("error %v, want ErrCommandRouteRefused", err)
		}
		for _, want := range []string{"may not write to the default exchange (amq.default)", "rabbitmqctl set_permissions", perm.Write, "ACCESS_REFUSED"} {
			if !strings.Contains(fmt.Sprint(err), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	}
	says(DeclareShared(rawChannel(t, old)))
	// A coordinator's connection with that user does not come up, and says why while it
	// retries.
	oc, err := Open(ctx, Config{URL: old, Name: "tokenfleet-coordinator old permissions", Topology: DeclareShared,
		Backoff: fastBackoff, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = oc.Close() })
	waitFor(t, 20*time.Second, "the connection to report the refusal", func() bool { return oc.Status().Err != nil })
	if st := oc.Status(); st.State == StateConnected {
		t.Fatalf("connected with a user that may not write to the default exchange: %+v", st)
	}
	says(oc.Status().Err)
}

// A call that found the channel closed carries the close's reason beside its own error:
// the refusal is found in either place.
func TestHasBrokerCode(t *testing.T) {
	closed := &amqp091.Error{Code: amqp091.ChannelError, Reason: "channel/connection is not open"}
	refused := &amqp091.Error{Code: amqp091.AccessRefused, Reason: "ACCESS_REFUSED"}
	for _, tc := range []struct {
		what string
		err  error
		want bool
	}{
		{"the refusal itself", refused, true},
		{"the refusal wrapped", fmt.Errorf("declaring: %w", refused), true},
		{"the refusal as the close's reason", fmt.Errorf("declaring: %w", fmt.Errorf("%w (the broker closed the channel: %w)", closed, refused)), true},
		{"closed without a reason", fmt.Errorf("declaring: %w", closed), false},
		{"no broker error", errors.New("other"), false},
		{"nil", nil, false},
	} {
		if got := hasBrokerCode(tc.err, amqp091.AccessRefused); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.what, got, tc.want)
		}
	}
}
