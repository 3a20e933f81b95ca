package service

import (
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// TestOnePermissionCheck: built-in and custom roles answer through the same check, a
// custom role limited to an organisation only there, and a job sees only the roles that
// apply to it.
func TestOnePermissionCheck(t *testing.T) {
	t.Parallel()
	u := store.User{ID: "u1", Username: "sam", OrganizationID: "acme", Roles: []jobs.Role{jobs.RoleHelpdesk, "site-approver"}}
	a := access{user: u, grants: []grant{
		{role: jobs.RoleHelpdesk, perms: jobs.RolePermissions(jobs.RoleHelpdesk), builtin: true},
		{role: "site-approver", perms: []jobs.Permission{jobs.PermApprove, jobs.PermCAOperator}, org: "acme"},
	}}
	for _, tc := range []struct {
		perm jobs.Permission
		org  string
		want bool
	}{
		{jobs.PermRequest, "", true},          // built-in: everywhere
		{jobs.PermRequest, "globex", true},    // built-in: everywhere
		{jobs.PermApprove, "acme", true},      // custom, in its organisation
		{jobs.PermApprove, "globex", false},   // custom, elsewhere
		{jobs.PermApprove, "", false},         // custom, on something of no organisation
		{jobs.PermManageUsers, "acme", false}, // nobody grants it
	} {
		if got := a.can(tc.perm, tc.org); got != tc.want {
			t.Errorf("can(%s, %q) = %v", tc.perm, tc.org, got)
		}
	}
	if e := a.refusal("approve", jobs.PermApprove, "globex"); e.Code != CodeOutOfScope {
		t.Errorf("refusal elsewhere: %v", e)
	}
	if e := a.refusal("apply profiles", jobs.PermManageProfiles, ""); e.Code != CodeForbidden {
		t.Errorf("refusal: %v", e)
	}
	in, out := a.jobActor("acme"), a.jobActor("globex")
	if !in.HasRole("site-approver") || !in.Can(jobs.PermCAOperator) || out.HasRole("site-approver") || out.Can(jobs.PermCAOperator) || !out.HasRole(jobs.RoleHelpdesk) {
		t.Errorf("job actors: in %+v, out %+v", in, out)
	}

	// Reading: approve alone reads the jobs of its scope, nothing else.
	approveOnly := access{user: store.User{ID: "u2", Username: "ap", Roles: []jobs.Role{"x"}},
		grants: []grant{{role: "x", perms: []jobs.Permission{jobs.PermApprove}, org: "acme"}}}
	if sc, err := readScope(approveOnly, resJobs); err != nil || sc.all || !sc.covers("acme") || sc.covers("globex") {
		t.Errorf("approve-only jobs: %+v, %v", sc, err)
	}
	for _, r := range []resource{resUsers, resOrgs, resProfiles, resFleet, resCertificates, resAudit, resRoles} {
		if _, err := readScope(approveOnly, r); err == nil {
			t.Errorf("approve-only reads %s", r)
		}
	}
	// A disabled user holds nothing, whatever their roles.
	dis := u
	dis.Disabled = true
	if _, err := readScope(access{user: dis}, resJobs); err == nil {
		t.Error("a disabled user reads jobs")
	}
}
