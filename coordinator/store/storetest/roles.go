package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func testCustomRoles(t *testing.T, h *harness) {
	f := newFixture(t, h)
	r := do(t, h, func(tx store.Tx) (store.CustomRole, error) {
		return tx.CreateCustomRole(h.ctx, store.CustomRole{Name: "site-approver", Description: "approves for Acme",
			OrganizationID: f.org.ID, Permissions: []jobs.Permission{jobs.PermRead, jobs.PermApprove, jobs.PermRead}, Created: base})
	})
	if r.Name != "site-approver" || r.OrganizationID != f.org.ID || !slices.Equal(r.Permissions, []jobs.Permission{jobs.PermApprove, jobs.PermRead}) ||
		!r.Created.Equal(stored(base)) || !r.Updated.Equal(stored(base)) {
		t.Fatalf("created %+v", r)
	}
	equal(t, "get", must(h.s.GetCustomRole(h.ctx, r.Name))(t), r)
	for _, tc := range []struct {
		name string
		role store.CustomRole
		want error
	}{
		{"taken", store.CustomRole{Name: "site-approver"}, store.ErrConflict},
		{"built-in name", store.CustomRole{Name: "admin"}, store.ErrInvalid},
		{"upper case", store.CustomRole{Name: "Site"}, store.ErrInvalid},
		{"unknown permission", store.CustomRole{Name: "x", Permissions: []jobs.Permission{"fly"}}, store.ErrInvalid},
		{"unknown organisation", store.CustomRole{Name: "y", OrganizationID: "no-such-org"}, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, try(h, func(tx store.Tx) (store.CustomRole, error) { return tx.CreateCustomRole(h.ctx, tc.role) }), tc.want)
		})
	}
	global := do(t, h, func(tx store.Tx) (store.CustomRole, error) {
		return tx.CreateCustomRole(h.ctx, store.CustomRole{Name: "auditor-lite", Permissions: []jobs.Permission{jobs.PermReadAudit}})
	})
	if global.OrganizationID != "" || len(global.Permissions) != 1 {
		t.Fatalf("global role %+v", global)
	}
	// A role with no permission yet lists an empty set.
	empty := do(t, h, func(tx store.Tx) (store.CustomRole, error) {
		return tx.CreateCustomRole(h.ctx, store.CustomRole{Name: "empty"})
	})
	if empty.Permissions == nil || len(empty.Permissions) != 0 {
		t.Fatalf("empty role %+v", empty)
	}

	// Users hold custom roles like built-in ones; an unknown one is refused.
	u := f.approver
	u.Roles = []jobs.Role{jobs.RoleApprover, "site-approver"}
	u = do(t, h, func(tx store.Tx) (store.User, error) { return tx.UpdateUser(h.ctx, u) })
	if !slices.Equal(u.Roles, []jobs.Role{jobs.RoleApprover, "site-approver"}) {
		t.Fatalf("roles %v", u.Roles)
	}
	bad := u
	bad.Roles = []jobs.Role{"no-such-role"}
	wantErr(t, try(h, func(tx store.Tx) (store.User, error) { return tx.UpdateUser(h.ctx, bad) }), store.ErrInvalid)
	if listed := must3(t)(h.s.ListUsers(h.ctx, store.UserFilter{Role: "site-approver"}, store.Page{})); len(listed) != 1 || listed[0].ID != u.ID {
		t.Fatalf("users with the custom role: %+v", listed)
	}

	got := must(h.s.GetCustomRoles(h.ctx, []jobs.Role{jobs.RoleAdmin, "site-approver", "gone", "auditor-lite"}))(t)
	if len(got) != 2 || got[0].Name != "auditor-lite" || got[1].Name != "site-approver" {
		t.Fatalf("GetCustomRoles: %+v", got)
	}
	if none := must(h.s.GetCustomRoles(h.ctx, []jobs.Role{jobs.RoleAdmin}))(t); len(none) != 0 {
		t.Fatalf("built-in names only: %+v", none)
	}

	r.Permissions = []jobs.Permission{jobs.PermApprove}
	r.OrganizationID = ""
	r.Description = "approves anywhere"
	r.Updated = base.Add(time.Hour)
	up := do(t, h, func(tx store.Tx) (store.CustomRole, error) { return tx.UpdateCustomRole(h.ctx, r) })
	if up.OrganizationID != "" || !slices.Equal(up.Permissions, []jobs.Permission{jobs.PermApprove}) || up.Description != "approves anywhere" ||
		!up.Created.Equal(stored(base)) || !up.Updated.Equal(stored(base.Add(time.Hour))) {
		t.Fatalf("updated %+v", up)
	}
	wantErr(t, try(h, func(tx store.Tx) (store.CustomRole, error) {
		return tx.UpdateCustomRole(h.ctx, store.CustomRole{Name: "missing"})
	}), store.ErrNotFound)

	all := must(h.s.ListCustomRoles(h.ctx))(t)
	var names []string
	for _, c := range all {
		names = append(names, c.Name)
	}
	equal(t, "listed by name", names, []string{"auditor-lite", "empty", "site-approver"})

	// Deleting a role takes it from the users holding it.
	h.tx(t, func(tx store.Tx) error { return tx.DeleteCustomRole(h.ctx, "site-approver") })
	if u := must(h.s.GetUser(h.ctx, f.approver.ID))(t); !slices.Equal(u.Roles, []jobs.Role{jobs.RoleApprover}) {
		t.Fatalf("roles after delete: %v", u.Roles)
	}
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.DeleteCustomRole(h.ctx, "site-approver") }), store.ErrNotFound)
	_, err := h.s.GetCustomRole(h.ctx, "site-approver")
	wantErr(t, err, store.ErrNotFound)
}

func testBootstrapToken(t *testing.T, h *harness) {
	f := newFixture(t, h)
	var boot, plain store.APIToken
	h.tx(t, func(tx store.Tx) error {
		var err error
		if boot, _, err = tx.CreateBootstrapAPIToken(h.ctx, f.requester.ID); err != nil {
			return err
		}
		plain, _, err = tx.CreateAPIToken(h.ctx, f.requester.ID, "ci", base.Add(time.Hour))
		return err
	})
	if !boot.Bootstrap || !boot.Expires.IsZero() || boot.Name != "bootstrap" || plain.Bootstrap {
		t.Fatalf("bootstrap %+v, plain %+v", boot, plain)
	}
	equal(t, "get", must(h.s.GetAPIToken(h.ctx, boot.ID))(t), boot)
	_, err := h.s.GetAPIToken(h.ctx, "nope")
	wantErr(t, err, store.ErrNotFound)
	toks := must(h.s.ListAPITokens(h.ctx, f.requester.ID))(t)
	if len(toks) != 2 || !toks[0].Bootstrap || toks[1].Bootstrap {
		t.Fatalf("listed %+v", toks)
	}
}
