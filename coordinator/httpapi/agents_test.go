package httpapi_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
)

func TestEnrolAgent(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t) // enrols ws-1 and ws-2
	head := e.auditHead(t)

	type agent struct {
		ID       string    `json:"id"`
		Hostname string    `json:"hostname"`
		OS       string    `json:"os"`
		Version  string    `json:"version"`
		Online   bool      `json:"online"`
		Enrolled time.Time `json:"enrolled"`
		Approved bool      `json:"approved"`
		State    string    `json:"state"`
	}
	a := ok[agent](t, e.as(t, "admin", "POST", "/api/v1/agents", map[string]string{"id": "ws-3", "hostname": "ws-3.acme.example"}), 201)
	if a.ID != "ws-3" || a.Hostname != "ws-3.acme.example" || !a.Approved || a.Online || a.Enrolled.IsZero() {
		t.Errorf("enrolled agent = %+v", a)
	}
	entries := e.auditSince(t, head, audit.ActionAgentEnrolled)
	if len(entries) != 1 || entries[0].Target != "agent:ws-3" || !strings.Contains(string(entries[0].Details), "agent-ws-3") {
		t.Errorf("audit entries = %+v, want one agent.enrolled for ws-3 with its broker user", entries)
	}

	// A user's session on a shared terminal server has an agent of its own.
	if a := ok[agent](t, e.as(t, "admin", "POST", "/api/v1/agents", map[string]string{"id": "alice@ts-01", "hostname": "ts-01.acme.example"}), 201); a.ID != "alice@ts-01" {
		t.Errorf("enrolled %+v", a)
	}

	// Jobs may now target it.
	e.newJob(t, "hd", issue("ann", "open-client", "ws-3"))

	head = e.auditHead(t)
	r := e.as(t, "admin", "POST", "/api/v1/agents", map[string]string{"id": "ws-1", "hostname": "elsewhere"})
	ae := wantErr(t, r, 409, "conflict", "id")
	if !strings.Contains(ae.Error.Message, "ws-1.acme.example") {
		t.Errorf("a taken ID must name the host holding it: %q", ae.Error.Message)
	}
	for _, bad := range []struct {
		body  map[string]string
		field string
	}{
		{map[string]string{"id": ""}, "id"},
		{map[string]string{"id": "WS-4"}, "id"},
		{map[string]string{"id": "ws.4"}, "id"},
		{map[string]string{"id": "ws-4", "hostname": strings.Repeat("h", 300)}, "hostname"},
	} {
		wantErr(t, e.as(t, "admin", "POST", "/api/v1/agents", bad.body), 400, "bad_request", bad.field)
	}
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/agents", map[string]string{"id": "ws-5"}), 403, "forbidden", "")
	if got := e.auditSince(t, head, audit.ActionAgentEnrolled); len(got) != 0 {
		t.Errorf("refused enrolments were recorded: %+v", got)
	}
}
