package amqp

import (
	"fmt"
	"strings"
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestDeclareAgents: many agents' queues declared pipelined on one channel are those
// DeclareAgent declares, unbound (commands come through the default exchange); declaring them again is
// harmless, and a queue that exists with other properties fails the call, saying which.
func TestDeclareAgents(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	ids := make([]string, 40)
	for i := range ids {
		ids[i] = fmt.Sprintf("ws-%02d", i)
	}
	for range 2 {
		if err := c.Declare(ctx, func(ch Declarer) error { return DeclareAgents(ch, ids) }); err != nil {
			t.Fatal(err)
		}
	}
	listed := map[string]map[string]any{}
	for _, row := range rabbitList(t, b, "queues") {
		listed[row["name"].(string)] = row
	}
	// Unbound: the commands exchange routes to none of them (commands go through the
	// default exchange, which every queue takes by its name).
	bound := map[string]string{}
	for _, row := range rabbitList(t, b, "bindings") {
		if row["source"] == protocol.CommandsExchange {
			bound[row["destination"].(string)] = row["routing_key"].(string)
		}
	}
	for _, id := range ids {
		q, err := protocol.AgentQueueSpec(id)
		if err != nil {
			t.Fatal(err)
		}
		row, ok := listed[q.Name]
		if !ok {
			t.Errorf("queue %s missing", q.Name)
			continue
		}
		if row["durable"] != q.Durable || normalizeArgs(row["arguments"]) != normalizeArgs(q.Args) {
			t.Errorf("queue %s: broker has %v, spec %+v", q.Name, row, q)
		}
		if key, ok := bound[q.Name]; ok {
			t.Errorf("queue %s bound to the commands exchange with key %q, want unbound", q.Name, key)
		}
	}

	// One queue of the batch exists with other properties: the call fails and says why.
	raw := rawChannel(t, b.URL)
	clash, _ := protocol.AgentQueue("ws-clash")
	if _, err := raw.QueueDeclare(clash, false, false, false, false, amqp091.Table{}); err != nil {
		t.Fatal(err)
	}
	err := c.Declare(ctx, func(ch Declarer) error { return DeclareAgents(ch, []string{"ws-90", "ws-clash", "ws-91"}) })
	if err == nil || !strings.Contains(err.Error(), clash) {
		t.Fatalf("declaring over a queue of other properties: %v, want an error naming %s", err, clash)
	}
	if err := c.Declare(ctx, func(ch Declarer) error { return DeclareAgents(ch, []string{"ws-92", "Not An ID"}) }); err == nil {
		t.Fatal("an invalid agent ID was declared")
	}
}
