package httpapi_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

type enrolledAgent struct {
	ID       string    `json:"id"`
	Hostname string    `json:"hostname"`
	OS       string    `json:"os"`
	Version  string    `json:"version"`
	Online   bool      `json:"online"`
	Enrolled time.Time `json:"enrolled"`
	Approved bool      `json:"approved"`
	State    string    `json:"state"`
}

func agentsBody(agents ...map[string]string) map[string]any {
	return map[string]any{"agents": agents}
}

// TestEnrolAgentsBatch: POST /api/v1/agents/batch enrols every agent of the request or
// none, answers them as the single enrolment does, in the order given, and audits each.
func TestEnrolAgentsBatch(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t) // enrols ws-1 and ws-2 one by one
	head := e.auditHead(t)

	got := ok[list[enrolledAgent]](t, e.as(t, "admin", "POST", "/api/v1/agents/batch", agentsBody(
		map[string]string{"id": "ws-20", "hostname": "ws-20.acme.example"},
		map[string]string{"id": "ws-10", "hostname": "ws-10.acme.example", "broker_user": "tf-ws-10"},
		map[string]string{"id": "ws-30", "hostname": "ws-30.acme.example"},
	)), 201)
	if len(got.Items) != 3 {
		t.Fatalf("enrolled %+v", got)
	}
	for i, id := range []string{"ws-20", "ws-10", "ws-30"} {
		a := got.Items[i]
		if a.ID != id || a.Hostname != id+".acme.example" || !a.Approved || a.Online || a.Enrolled.IsZero() {
			t.Errorf("item %d = %+v, want %s enrolled and approved", i, a, id)
		}
	}
	entries := e.auditSince(t, head, audit.ActionAgentEnrolled)
	if len(entries) != 3 {
		t.Fatalf("audit: %+v, want one agent.enrolled per agent", entries)
	}
	for i, en := range entries {
		if en.Target != "agent:"+got.Items[i].ID || !strings.Contains(string(en.Details), `"batch_size":3`) {
			t.Errorf("audit entry %d = %+v %s", i, en, en.Details)
		}
	}
	if !strings.Contains(string(entries[1].Details), `"broker_user":"tf-ws-10"`) {
		t.Errorf("ws-10's entry does not name its broker user: %s", entries[1].Details)
	}
	hooked := e.rec.hooked()
	if fmt.Sprint(hooked[len(hooked)-1]) != "[ws-20 ws-10 ws-30]" {
		t.Errorf("the agent hook heard %v, want the batch at once", hooked)
	}
	// They are agents like any other: listed, and jobs may target them.
	all := ok[list[enrolledAgent]](t, e.as(t, "admin", "GET", "/api/v1/agents", nil), 200)
	if len(all.Items) != 5 {
		t.Errorf("agents listed: %+v", all.Items)
	}
	e.newJob(t, "hd", issue("ann", "open-client", "ws-30"))

	// The largest batch allowed.
	big := make([]map[string]string, service.MaxAgentBatch)
	for i := range big {
		id := fmt.Sprintf("pc-%04d", i)
		big[i] = map[string]string{"id": id, "hostname": id + ".globex.example"}
	}
	if n := len(ok[list[enrolledAgent]](t, e.as(t, "admin", "POST", "/api/v1/agents/batch", agentsBody(big...)), 201).Items); n != len(big) {
		t.Fatalf("enrolled %d of %d", n, len(big))
	}
	if api.MaxAgentBatch != service.MaxAgentBatch {
		t.Errorf("the API says at most %d agents a request, the service %d", api.MaxAgentBatch, service.MaxAgentBatch)
	}
}

// TestEnrolAgentsBatchRefused: a request with any bad entry enrols none, and its error
// names every bad entry by position and ID; nothing is stored or audited, and the agent
// hook hears nothing.
func TestEnrolAgentsBatchRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.world(t) // ws-1 and ws-2, held by ws-1.acme.example and ws-2.acme.example
	head := e.auditHead(t)
	hookedBefore := len(e.rec.hooked())
	agentsBefore := len(ok[list[enrolledAgent]](t, e.as(t, "admin", "GET", "/api/v1/agents", nil), 200).Items)

	fine := map[string]string{"id": "ws-new", "hostname": "new.acme.example"}
	tooMany := make([]map[string]string, service.MaxAgentBatch+1)
	for i := range tooMany {
		tooMany[i] = map[string]string{"id": fmt.Sprintf("pc-%04d", i), "hostname": "h"}
	}
	for _, tc := range []struct {
		name    string
		body    any
		status  int
		code    string
		field   string
		entries []string // "index id field code"
		says    string
	}{
		{"taken ID", agentsBody(fine, map[string]string{"id": "ws-1", "hostname": "elsewhere"}),
			409, "conflict", "agents", []string{"1 ws-1 id conflict"}, "ws-1.acme.example"},
		{"taken broker user", agentsBody(fine, map[string]string{"id": "ws-3", "hostname": "h", "broker_user": "agent-ws-2"}),
			409, "conflict", "agents", []string{"1 ws-3 broker_user conflict"}, `"ws-2"`},
		{"repeated ID", agentsBody(fine, map[string]string{"id": "ws-3", "hostname": "h"}, map[string]string{"id": "ws-new", "hostname": "again"}),
			409, "conflict", "agents", []string{"2 ws-new id conflict"}, "entry 0"},
		{"malformed entries", agentsBody(
			map[string]string{"id": "WS-4", "hostname": "h"},
			fine,
			map[string]string{"id": "ws.5", "hostname": "h"},
			map[string]string{"id": "ws-6"},
			map[string]string{"id": "ws-7", "hostname": strings.Repeat("h", 300)},
			map[string]string{"id": "ws-2", "hostname": "taken too"},
		), 400, "bad_request", "agents", []string{"0 WS-4 id bad_request", "2 ws.5 id bad_request",
			"3 ws-6 hostname bad_request", "4 ws-7 hostname bad_request", "5 ws-2 id conflict"}, "5 of 6 entries"},
		{"empty list", agentsBody(), 400, "bad_request", "agents", nil, "at least one"},
		{"no list", map[string]any{}, 400, "bad_request", "agents", nil, "at least one"},
		{"too many", agentsBody(tooMany...), 400, "bad_request", "agents", nil, "at most 1000"},
		{"unknown field", map[string]any{"agents": []map[string]string{fine}, "org": "Acme"}, 400, "bad_request", "org", nil, "unknown field"},
		{"unknown entry field", map[string]any{"agents": []map[string]string{{"id": "ws-8", "hostname": "h", "tags": "x"}}},
			400, "bad_request", "tags", nil, "unknown field"},
		{"not a list", map[string]any{"agents": "ws-9"}, 400, "bad_request", "agents", nil, "want an array"},
		{"not JSON", "[", 400, "bad_request", "", nil, "malformed JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ae := wantErr(t, e.as(t, "admin", "POST", "/api/v1/agents/batch", tc.body), tc.status, tc.code, tc.field)
			if !strings.Contains(ae.Error.Message, tc.says) {
				t.Errorf("message %q does not say %q", ae.Error.Message, tc.says)
			}
			var named []string
			for _, en := range ae.Error.Entries {
				named = append(named, fmt.Sprintf("%d %s %s %s", en.Index, en.ID, en.Field, en.Code))
				if en.Message == "" {
					t.Errorf("entry %d has no message", en.Index)
				}
			}
			if fmt.Sprint(named) != fmt.Sprint(tc.entries) {
				t.Errorf("entries %v, want %v", named, tc.entries)
			}
		})
	}
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/agents/batch", agentsBody(fine)), 403, "forbidden", "")
	wantErr(t, e.doCT(t, "POST", "/api/v1/agents/batch", e.admin, "text/csv", "id,hostname\nws-new,h\n"), 415, "unsupported_media_type", "Content-Type")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/agents/batch?dry_run=true", agentsBody(fine)), 400, "bad_request", "dry_run")
	wantErr(t, e.do(t, "POST", "/api/v1/agents/batch", "", agentsBody(fine)), 401, "unauthenticated", "")
	r := e.as(t, "admin", "GET", "/api/v1/agents/batch", nil)
	wantErr(t, r, 405, "method_not_allowed", "")

	// Nothing of any refused request was kept.
	if n := len(ok[list[enrolledAgent]](t, e.as(t, "admin", "GET", "/api/v1/agents", nil), 200).Items); n != agentsBefore {
		t.Errorf("%d agents after refused batches, %d before", n, agentsBefore)
	}
	if got := e.auditSince(t, head, audit.ActionAgentEnrolled); len(got) != 0 {
		t.Errorf("refused batches were audited as enrolments: %+v", got)
	}
	denied := 0
	for _, en := range e.auditSince(t, head, audit.ActionAccessDenied) {
		if en.Actor == e.user(t, "hd").ID && strings.Contains(string(en.Details), `"operation":"enrol agents"`) {
			denied++
		}
	}
	if denied != 1 {
		t.Errorf("the helpdesk's refused batch was audited %d times, want once as access.denied", denied)
	}
	if got := e.rec.hooked(); len(got) != hookedBefore {
		t.Errorf("the agent hook heard of refused batches: %v", got[hookedBefore:])
	}
}
