package dispatch_test

import (
	"fmt"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestAgentsEnrolledDeclaresQueues: when a batch enrolment answers, every agent of it has
// its command queue, unbound (commands come through the default exchange), as a single
// enrolment leaves it.
func TestAgentsEnrolledDeclaresQueues(t *testing.T) {
	w := newWorld(t, "")
	batch := make([]client.AgentEnrolment, 250) // spread over every declaring channel
	for i := range batch {
		id := fmt.Sprintf("ws-%03d", i)
		batch[i] = client.AgentEnrolment{ID: id, Hostname: id + ".test"}
	}
	if _, err := w.admin.EnrolAgents(w.ctx, batch); err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.EnrolAgent(w.ctx, client.AgentEnrolment{ID: "ws-one", Hostname: "ws-one.test"}); err != nil {
		t.Fatal(err)
	}
	queues := map[string]bool{}
	for _, row := range w.broker.List(t, "queues") {
		queues[row["name"].(string)] = row["durable"] == true
	}
	// Unbound: commands reach them through the default exchange (protocol.CommandRoute).
	bound := map[string]string{}
	for _, row := range w.broker.List(t, "bindings") {
		if row["source"] == protocol.CommandsExchange {
			bound[row["destination"].(string)] = row["routing_key"].(string)
		}
	}
	for _, e := range append(batch, client.AgentEnrolment{ID: "ws-one"}) {
		q, err := protocol.AgentQueue(e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if key, ok := bound[q]; !queues[q] || ok {
			t.Errorf("agent %s: queue %s durable %v, bound to the commands exchange %v (key %q); want durable and unbound", e.ID, q, queues[q], ok, key)
		}
	}
}
