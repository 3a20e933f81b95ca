package ctl_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// An agent whose latest messages were refused shows offline with the reason under the
// table, naming the broker user that sent them; a refusal older than the agent's last
// accepted message explains nothing and is not shown.
func TestAgentsShowRefusals(t *testing.T) {
	fake := newFakeAPI(t)
	fake.on("GET /api/v1/agents", 200, client.AgentList{Items: []client.Agent{
		{ID: "ws-01", Hostname: "ws-01.acme.test", OS: "linux", Version: "1.0.0", Enrolled: fixedNow.Add(-48 * time.Hour),
			LastRefusal: api.AgentRefusal{At: fixedNow.Add(-2 * time.Minute), Code: "forged_sender", Sender: "guest",
				Reason: `the envelope claims agent ws-01 but broker user "guest" published it (the agent's is "agent-ws-01")`}},
		{ID: "ws-02", Hostname: "ws-02.acme.test", OS: "linux", Version: "1.0.0", Online: true, LastSeen: fixedNow.Add(-time.Minute),
			Enrolled:    fixedNow.Add(-48 * time.Hour),
			LastRefusal: api.AgentRefusal{At: fixedNow.Add(-time.Hour), Code: "event_not_allowed", Sender: "agent-ws-02", Reason: "old"}},
	}})
	r := runCtl(t, fake.env(), "", "agents")
	want := `ws-01: messages claiming to be this agent are refused (forged_sender, 2m ago, sent by broker user guest): the envelope claims agent ws-01 but broker user "guest" published it (the agent's is "agent-ws-01")` + "\n"
	if r.code != 0 || !strings.HasSuffix(r.stdout, want) || strings.Contains(r.stdout, "ws-02:") {
		t.Errorf("exit %d, stdout:\n%s\nwant it to end with:\n%s", r.code, r.stdout, want)
	}
	r = runCtl(t, fake.env(), "", "agents", "--json")
	if !strings.Contains(r.stdout, `"last_refusal": {`) || !strings.Contains(r.stdout, `"sender": "agent-ws-02"`) {
		t.Errorf("--json lacks the refusals:\n%s", r.stdout)
	}
}
