package dispatch_test

import (
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestRefusalShownOnAgent: an agent running under the wrong broker user (the shared
// guest instead of its own, under per_agent) has every message refused; the agents API
// shows why beside the offline agent: code, reason and the broker user that really sent
// them, newer with each refused heartbeat. An agent under its own user shows none.
func TestRefusalShownOnAgent(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "per_agent")
	w.agentUser("ws-wrong")          // enrolled with its own user...
	wrong := w.agent("ws-wrong", "") // ...but running as guest
	good := w.agent("ws-good", w.agentUser("ws-good"))
	good.Hello()

	hello := wrong.Hello()
	waitRejected(t, w, hello.ID)
	first := waitRefusal(t, w, "ws-wrong", time.Time{})
	want := `the envelope claims agent ws-wrong but broker user "guest" published it (the agent's is "` + w.brokerUsers["ws-wrong"] + `")`
	if first.Code != string(protocol.CodeForgedSender) || first.Sender != "guest" || first.Reason != want {
		t.Errorf("refusal %+v, want forged_sender from guest: %s", first, want)
	}

	// Refused heartbeats keep it current, as the agent keeps trying.
	wrong.Heartbeat()
	second := waitRefusal(t, w, "ws-wrong", first.At)
	if second.Sender != "guest" || second.Code != string(protocol.CodeForgedSender) {
		t.Errorf("heartbeat refusal %+v", second)
	}

	for _, a := range listAgents(t, w) {
		switch a.ID {
		case "ws-wrong":
			if a.Online {
				t.Errorf("ws-wrong online: %+v", a)
			}
		case "ws-good":
			if !a.LastRefusal.At.IsZero() || !a.Online {
				t.Errorf("ws-good: %+v, want online without refusal", a)
			}
		}
	}
}

func listAgents(t *testing.T, w *world) []client.Agent {
	t.Helper()
	l, err := w.admin.ListAgents(w.ctx, client.Page{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// waitRefusal polls the agents API until agent id shows a refusal later than after.
func waitRefusal(t *testing.T, w *world, id string, after time.Time) api.AgentRefusal {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, a := range listAgents(t, w) {
			if a.ID == id && a.LastRefusal.At.After(after) {
				return a.LastRefusal
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refusal shown on agent %s after %v", id, after)
		}
		<-tick.C
	}
}

// TestDisabledAgentRefused: whatever a disabled agent still has in flight (its broker
// user may not be gone yet, or its messages were queued before) is refused as
// agent_not_active and shown on the agent; nothing it says marks it online.
func TestDisabledAgentRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "per_agent")
	a := w.agent("ws-off", w.agentUser("ws-off"))
	a.Hello()
	if _, err := w.admin.DisableAgent(w.ctx, "ws-off", "laptop stolen"); err != nil {
		t.Fatal(err)
	}
	hello := a.Hello()
	waitRejected(t, w, hello.ID)
	r := waitRefusal(t, w, "ws-off", time.Time{})
	if r.Code != string(protocol.CodeAgentNotActive) || r.Reason != "agent ws-off is disabled (laptop stolen): nothing it sends is taken" {
		t.Errorf("refusal %+v, want agent_not_active", r)
	}
	for _, ag := range listAgents(t, w) {
		if ag.ID == "ws-off" && (ag.Online || ag.State != "disabled") {
			t.Errorf("disabled agent shown %+v", ag)
		}
	}
}
