package client_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
)

// TestCreateRolloutLostAnswer: the coordinator created the rollout but the answer was
// lost; the client sends the request again with the same key and gets that rollout, and
// the coordinator holds one rollout, not two. A caller's own key finds its rollout again.
func TestCreateRolloutLostAnswer(t *testing.T) {
	ctx := context.Background()
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	inst.EnrolAgent(t, "ws-01", "ws-01.acme.example")
	admin := must(client.New(inst.URL, inst.AdminToken))(t)
	must(admin.CreateOrg(ctx, "acme"))(t)
	for _, u := range []client.UserCreate{
		{Username: "owner", Organization: "acme", Roles: []jobs.Role{jobs.RoleRolloutOwner}},
		{Username: "alice", DisplayName: "Alice Holder", Organization: "acme", UPN: "alice@acme.example"},
	} {
		must(admin.CreateUser(ctx, u))(t)
	}
	must(admin.ApplyProfiles(ctx, exampleProfile(t, "smartcard-logon")))(t)
	issued := must(admin.CreateAPIToken(ctx, "owner", client.APITokenCreate{}))(t)

	proxy := &dropFirstCreate{target: inst.URL, path: "/api/v1/rollouts"}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	c := must(client.New(srv.URL, issued.Token))(t)

	spec := client.RolloutSpec{Name: "logon acme",
		Template: rollout.Template{Kind: jobs.KindIssue, Profile: "smartcard-logon", Holder: "alice"}}
	r := must(c.CreateRollout(ctx, spec))(t)
	keys := proxy.seen()
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] {
		t.Fatalf("keys sent %q: want the request twice with one key", keys)
	}
	all := must(client.Collect(c.AllRollouts(ctx, client.RolloutFilter{}, 0)))(t)
	if len(all) != 1 || all[0].ID != r.ID {
		t.Fatalf("rollouts on the coordinator: %+v, want only %s", all, r.ID)
	}
	// A dry run is never sent again, and takes no key.
	must(c.DryRunRollout(ctx, spec))(t)
	if n := len(proxy.seen()); n != 3 {
		t.Fatalf("%d posts after the dry run, want 3", n)
	}

	spec.Name = "logon acme, nightly"
	k, replayed, err := c.CreateRolloutWithKey(ctx, spec, "nightly-2026-12-06")
	if err != nil || replayed || k.Preview == nil {
		t.Fatalf("first run: %v, replayed %v", err, replayed)
	}
	again, replayed, err := c.CreateRolloutWithKey(ctx, spec, "nightly-2026-12-06")
	if err != nil || !replayed || again.ID != k.ID {
		t.Fatalf("second run: %+v, replayed %v, %v; want rollout %s replayed", again.ID, replayed, err, k.ID)
	}
	spec.Name = "something else"
	_, _, err = c.CreateRolloutWithKey(ctx, spec, "nightly-2026-12-06")
	wantCode(t, err, "idempotency_key_reused")
}
