package httpapi_test

import (
	"strings"
	"testing"
)

// TestRolloutBadInput: what a careless or hostile caller sends is refused whole, with the
// field at fault and what to write instead; nothing is stored.
func TestRolloutBadInput(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.rolloutWorld(t)
	tmpl := func(kv ...any) map[string]any {
		m := map[string]any{"kind": "issue", "profile": "email-signing", "holder": "ann"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	sel := func(s map[string]any) map[string]any { return with(rolloutSpec("bad"), "selector", s) }
	plan := func(p map[string]any) map[string]any { return with(rolloutSpec("bad"), "plan", p) }
	manyWaves := make([]float64, 150)
	for i := range manyWaves {
		manyWaves[i] = float64(i+1) * 100 / 150
	}
	for _, tc := range []struct {
		name, field, says string
		body              any
	}{
		{"a deadline beyond a year", "template.deadline", "at most", with(rolloutSpec("bad"), "template", tmpl("deadline", "400d"))},
		{"a deadline past the duration range", "template.deadline", "days", with(rolloutSpec("bad"), "template", tmpl("deadline", "200000d"))},
		{"a name with a line break", "name", "control", with(rolloutSpec("bad\nrollout"), "name", "bad\nrollout")},
		{"certificates selected for an issue", "selector.certificates", "renew", sel(map[string]any{
			"agents": map[string]any{"host_pattern": "ws-*"}, "certificates": map[string]any{"expires_within": "30d"}})},
		{"an agent ID nobody enrolled", "selector.agents.ids[1]", "ws-99", sel(map[string]any{
			"agents": map[string]any{"ids": []string{"ws-1", "ws-99"}}})},
		{"disabled agents selected", "selector.agents.states[0]", "active", sel(map[string]any{
			"agents": map[string]any{"states": []string{"disabled"}}})},
		{"too many waves", "plan.waves", "100", plan(map[string]any{"waves": manyWaves})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			er := wantErr(t, e.as(t, "ro", "POST", "/api/v1/rollouts", tc.body), 400, "bad_request", tc.field)
			if !strings.Contains(er.Error.Message, tc.says) {
				t.Errorf("message %q does not say %q", er.Error.Message, tc.says)
			}
		})
	}
	// A standing rollout takes certificates as they enter the profile's renew_before: an
	// expiry window of its own would be ignored.
	wantErr(t, e.as(t, "ro", "POST", "/api/v1/rollouts", map[string]any{"name": "keep", "standing": true,
		"template": map[string]any{"kind": "renew", "profile": "email-signing"},
		"selector": map[string]any{"certificates": map[string]any{"expires_within": "30d"}}}), 400, "bad_request", "selector.certificates.expires_within")

	// A body past the limit, and query parameters that mean nothing.
	huge := with(rolloutSpec("huge"), "selector", map[string]any{"agents": map[string]any{"ids": []string{strings.Repeat("x", 2<<20)}}})
	wantErr(t, e.as(t, "ro", "POST", "/api/v1/rollouts", huge), 413, "too_large", "-")
	wantErr(t, e.as(t, "ro", "POST", "/api/v1/rollouts?dry_run=true", rolloutSpec("q")), 400, "bad_request", "dry_run")
	wantErr(t, e.as(t, "ro", "GET", "/api/v1/rollouts?state=done", nil), 400, "bad_request", "state")
	wantErr(t, e.as(t, "ro", "GET", "/api/v1/rollouts?limit=-1", nil), 400, "bad_request", "limit")
	wantErr(t, e.as(t, "ro", "GET", "/api/v1/rollouts?cursor=%00%ff", nil), 400, "bad_request", "cursor")
	wantErr(t, e.as(t, "ro", "GET", "/api/v1/rollouts/nope/targets?outcome=fine", nil), 400, "bad_request", "outcome")
	wantErr(t, e.as(t, "ro", "GET", "/api/v1/rollouts/nope/targets?wave=two", nil), 400, "bad_request", "wave")
	wantErr(t, e.as(t, "ro", "GET", "/api/v1/rollouts/nope/targets", nil), 404, "not_found", "-")
	wantErr(t, e.as(t, "ro", "POST", "/api/v1/rollouts/nope/pause", map[string]string{"reason": "x"}), 404, "not_found", "-")
	wantErr(t, e.as(t, "ro", "POST", "/api/v1/rollouts/nope/abort", map[string]string{"reason": "line\nbreak"}), 400, "bad_request", "reason")
	wantErr(t, e.as(t, "ap1", "POST", "/api/v1/rollouts/nope/approve", map[string]string{"binding_hash": "x"}), 400, "bad_request", "binding_hash")
	if l := ok[list[map[string]any]](t, e.as(t, "ro", "GET", "/api/v1/rollouts", nil), 200); len(l.Items) != 0 {
		t.Fatalf("refused rollouts stored: %d", len(l.Items))
	}
}
