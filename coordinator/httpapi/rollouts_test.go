package httpapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
)

// rolloutWorld is the world, a rollout owner of Acme, and ten more agents of Acme: twelve
// workstations ws-1 … ws-12.
func (e *env) rolloutWorld(t *testing.T) {
	t.Helper()
	e.world(t)
	ok[map[string]any](t, e.as(t, "admin", "POST", "/api/v1/users",
		map[string]any{"username": "ro", "organization": "Acme", "roles": []string{"rollout_owner"}}), 201)
	tok := ok[struct {
		ID, Token, Username string
		Expires             time.Time
	}](t, e.as(t, "admin", "POST", "/api/v1/users/ro/tokens", nil), 201)
	e.tokens["ro"] = tok.Token
	var agents []map[string]string
	for i := 3; i <= 12; i++ {
		id := fmt.Sprintf("ws-%d", i)
		agents = append(agents, map[string]string{"id": id, "hostname": id + ".acme.example"})
	}
	ok[map[string]any](t, e.as(t, "admin", "POST", "/api/v1/agents/batch", map[string]any{"agents": agents}), 201)
}

// rolloutSpec is a rollout of a certificate for ann on every Acme workstation: a canary
// of 2, then two waves of 5.
func rolloutSpec(name string) map[string]any {
	return map[string]any{
		"name":     name,
		"template": map[string]any{"kind": "issue", "profile": "email-signing", "holder": "ann", "deadline": "2d"},
		"selector": map[string]any{"agents": map[string]any{"host_pattern": "ws-*.acme.example"}},
		"plan":     map[string]any{"canary": map[string]any{"count": 2}, "waves": []float64{50, 100}, "max_concurrent": 5},
		"brake":    map[string]any{"threshold_percent": 20, "min_executed": 3},
	}
}

func with(m map[string]any, k string, v any) map[string]any {
	out := map[string]any{}
	for kk, vv := range m {
		out[kk] = vv
	}
	out[k] = v
	return out
}

// TestRollouts runs a rollout through the API: a dry run, its creation, reading it, its
// targets and the list, the approval bound to its hash, pause, resume and abort.
func TestRollouts(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.rolloutWorld(t)
	ctx := context.Background()

	dry := ok[api.Rollout](t, e.as(t, "ro", "POST", "/api/v1/rollouts", with(rolloutSpec("certs acme"), "dry_run", true)), 200)
	if p := dry.Preview; p == nil || p.Targets != 12 || len(p.First) != 12 || fmt.Sprint(p.WaveSizes) != "[2 5 5]" ||
		len(dry.BindingHash) != 64 || len(p.ByOrganization) != 1 || p.ByOrganization[0] != (api.RolloutGroup{Key: "Acme", Count: 12}) {
		t.Fatalf("dry run: %+v preview %+v", dry, dry.Preview)
	}
	if l := ok[list[api.Rollout]](t, e.as(t, "ro", "GET", "/api/v1/rollouts", nil), 200); len(l.Items) != 0 {
		t.Fatalf("a dry run stored %+v", l.Items)
	}

	r := ok[api.Rollout](t, e.as(t, "ro", "POST", "/api/v1/rollouts", rolloutSpec("certs acme")), 201)
	if r.ID == "" || r.State != rollout.StatePendingApproval || r.TargetCount != 12 || r.CreatedBy != "ro" ||
		r.Approvals != 0 || r.Required != 1 || r.Preview == nil || r.Preview.Targets != 12 || r.BindingHash != dry.BindingHash ||
		r.Spec.Template.ProfileHash == "" || r.Spec.Template.Deadline != rollout.Duration(48*time.Hour) || len(r.Waves) != 3 {
		t.Fatalf("created %+v", r)
	}
	path := "/api/v1/rollouts/" + r.ID
	got := ok[api.Rollout](t, e.as(t, "ro", "GET", path, nil), 200)
	if got.BindingHash != r.BindingHash || got.Preview != nil || got.Overall.Pending != 12 || got.Waves[0].Name != "canary" ||
		got.Waves[0].Size != 2 || got.Waves[1].Size != 5 {
		t.Fatalf("get: %+v", got)
	}
	wantErr(t, e.as(t, "ro", "GET", "/api/v1/rollouts/nope", nil), 404, "not_found", "-")
	wantErr(t, e.as(t, "ro", "GET", path+"?verbose=1", nil), 400, "bad_request", "verbose")

	// The targets, in their frozen order, by page, by wave and by outcome.
	page := ok[list[api.RolloutTarget]](t, e.as(t, "ro", "GET", path+"/targets?limit=5", nil), 200)
	if len(page.Items) != 5 || page.NextCursor == "" || page.Items[0].Seq != 1 || page.Items[0].Wave != 0 ||
		page.Items[0].Outcome != rollout.OutcomePending || page.Items[0].Holder != "ann" || page.Items[0].JobID != "" {
		t.Fatalf("targets page 1: %+v", page)
	}
	rest := ok[list[api.RolloutTarget]](t, e.as(t, "ro", "GET", path+"/targets?limit=500&cursor="+page.NextCursor, nil), 200)
	if len(rest.Items) != 7 || rest.NextCursor != "" || rest.Items[0].Seq != 6 {
		t.Fatalf("targets page 2: %+v", rest)
	}
	if w := ok[list[api.RolloutTarget]](t, e.as(t, "ro", "GET", path+"/targets?wave=0", nil), 200); len(w.Items) != 2 ||
		w.Items[0].Wave != 0 || w.Items[1].Wave != 0 {
		t.Fatalf("canary targets: %+v", w)
	}
	if o := ok[list[api.RolloutTarget]](t, e.as(t, "ro", "GET", path+"/targets?outcome=pending", nil), 200); len(o.Items) != 12 {
		t.Fatalf("pending targets: %d", len(o.Items))
	}
	wantErr(t, e.as(t, "ro", "GET", path+"/targets?wave=-1", nil), 400, "bad_request", "wave")

	// A second rollout, and the list: by page, by state, standing or not. Newest first:
	// the service's clock moves on in between.
	e.clock.advance(time.Second)
	second := ok[api.Rollout](t, e.as(t, "ro", "POST", "/api/v1/rollouts", rolloutSpec("certs acme again")), 201)
	first := ok[list[api.Rollout]](t, e.as(t, "ro", "GET", "/api/v1/rollouts?limit=1", nil), 200)
	if len(first.Items) != 1 || first.Items[0].ID != second.ID || first.NextCursor == "" {
		t.Fatalf("list page 1: %+v", first)
	}
	next := ok[list[api.Rollout]](t, e.as(t, "ro", "GET", "/api/v1/rollouts?limit=1&cursor="+first.NextCursor, nil), 200)
	if len(next.Items) != 1 || next.Items[0].ID != r.ID || next.NextCursor != "" {
		t.Fatalf("list page 2: %+v", next)
	}
	for q, n := range map[string]int{"state=pending_approval": 2, "state=running": 0, "standing=true": 0, "standing=false": 2} {
		if l := ok[list[api.Rollout]](t, e.as(t, "ro", "GET", "/api/v1/rollouts?"+q, nil), 200); len(l.Items) != n {
			t.Errorf("list ?%s: %d rollouts, want %d", q, len(l.Items), n)
		}
	}
	wantErr(t, e.as(t, "ro", "GET", "/api/v1/rollouts?standing=yes", nil), 400, "bad_request", "standing")

	// The approval is bound to the hash the approver saw.
	wantErr(t, e.as(t, "ap1", "POST", path+"/approve", map[string]string{"binding_hash": strings.Repeat("0", 64)}), 409, "binding_mismatch", "-")
	wantErr(t, e.as(t, "ap1", "POST", path+"/approve", map[string]string{"reason": "looks fine"}), 400, "bad_request", "binding_hash")
	wantErr(t, e.as(t, "ap1", "POST", path+"/approve", nil), 400, "bad_request", "")
	wantErr(t, e.as(t, "ap1", "POST", "/api/v1/rollouts/"+second.ID+"/reject", map[string]string{"binding_hash": second.BindingHash}),
		400, "reason_required", "-")
	rejected := ok[api.Rollout](t, e.as(t, "ap1", "POST", "/api/v1/rollouts/"+second.ID+"/reject",
		map[string]string{"binding_hash": second.BindingHash, "reason": "one is enough"}), 200)
	if rejected.State != rollout.StateRejected {
		t.Fatalf("rejected: %+v", rejected)
	}
	approved := ok[api.Rollout](t, e.as(t, "ap1", "POST", path+"/approve", map[string]string{"binding_hash": r.BindingHash, "reason": "checked"}), 200)
	if approved.State != rollout.StateApproved && approved.State != rollout.StateRunning || approved.Approvals != 1 ||
		len(approved.Approvers) != 1 || approved.Approvers[0] != "ap1" || approved.ApprovedAt.IsZero() {
		t.Fatalf("approved: %+v", approved)
	}

	// One engine pass creates the canary's jobs.
	if _, err := e.svc.AdvanceRollouts(ctx); err != nil {
		t.Fatal(err)
	}
	running := ok[api.Rollout](t, e.as(t, "ro", "GET", path, nil), 200)
	if running.State != rollout.StateRunning || running.Overall.Open != 2 || running.Overall.Pending != 10 || !running.Waves[0].Started {
		t.Fatalf("after a pass: %+v", running)
	}

	paused := ok[api.Rollout](t, e.as(t, "ro", "POST", path+"/pause", map[string]string{"reason": "change freeze"}), 200)
	if paused.State != rollout.StatePaused || paused.PauseKind != rollout.PauseOperator || paused.PauseReason != "change freeze" ||
		paused.PausedBy != "ro" {
		t.Fatalf("paused: %+v", paused)
	}
	resumed := ok[api.Rollout](t, e.as(t, "ro", "POST", path+"/resume", nil), 200)
	if resumed.State != rollout.StateRunning || resumed.PauseKind != "" {
		t.Fatalf("resumed: %+v", resumed)
	}
	wantErr(t, e.as(t, "hd", "POST", path+"/pause", nil), 403, "forbidden", "-")

	aborted := ok[api.Rollout](t, e.as(t, "ro", "POST", path+"/abort", map[string]string{"reason": "wrong profile"}), 200)
	if aborted.State != rollout.StateAborted || aborted.FinishedAt.IsZero() {
		t.Fatalf("aborted: %+v", aborted)
	}
	// The canary's jobs had not started: the abort cancelled them.
	if c := ok[list[api.RolloutTarget]](t, e.as(t, "ro", "GET", path+"/targets?outcome=cancelled", nil), 200); len(c.Items) != 2 ||
		c.Items[0].JobID == "" || c.Items[0].JobState != "cancelled" {
		t.Fatalf("cancelled targets: %+v", c)
	}
	wantErr(t, e.as(t, "ro", "POST", path+"/resume", nil), 409, "conflict", "-")
}

// TestRolloutMalformed: a malformed rollout is refused whole, naming the field at fault
// by its whole path in the request.
func TestRolloutMalformed(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.rolloutWorld(t)
	plan := func(p map[string]any) map[string]any { return with(rolloutSpec("bad"), "plan", p) }
	for _, tc := range []struct {
		name  string
		body  any
		field string
	}{
		{"unknown field", with(rolloutSpec("bad"), "priority", 1), "priority"},
		{"unknown nested field", plan(map[string]any{"canary": map[string]any{"cuont": 2}}), "plan.canary.cuont"},
		{"duration without unit", with(rolloutSpec("bad"), "template",
			map[string]any{"kind": "issue", "profile": "email-signing", "holder": "ann", "deadline": "48"}), "template.deadline"},
		{"duration as a number", plan(map[string]any{"pause": map[string]any{"after": 3600}}), "plan.pause.after"},
		{"waves as text", plan(map[string]any{"waves": "25,50,100"}), "plan.waves"},
		{"a wave not a number", plan(map[string]any{"waves": []any{25, "half", 100}}), "plan.waves[1]"},
		{"waves going down", plan(map[string]any{"waves": []float64{50, 25, 100}}), "plan.waves[1]"},
		{"a wave above 100", plan(map[string]any{"waves": []float64{50, 150}}), "plan.waves[1]"},
		{"no name", with(rolloutSpec(""), "name", ""), "name"},
		{"unknown kind", with(rolloutSpec("bad"), "template", map[string]any{"kind": "mint", "profile": "email-signing"}), "template.kind"},
		{"unknown profile", with(rolloutSpec("bad"), "template", map[string]any{"kind": "issue", "profile": "nope", "holder": "ann"}), "template.profile"},
		{"not an object", []int{1}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			er := wantErr(t, e.as(t, "ro", "POST", "/api/v1/rollouts", tc.body), 400, "bad_request", tc.field)
			if strings.Contains(er.Error.Message, "spec.") {
				t.Errorf("message names the service's path: %s", er.Error.Message)
			}
		})
	}
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/rollouts", rolloutSpec("helpdesk")), 403, "forbidden", "-")
	if l := ok[list[api.Rollout]](t, e.as(t, "ro", "GET", "/api/v1/rollouts", nil), 200); len(l.Items) != 0 {
		t.Fatalf("refused rollouts stored: %+v", l.Items)
	}
}
