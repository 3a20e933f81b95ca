package jobs

import (
	"errors"
	"testing"
	"time"
)

func TestCustomRoleAtGates(t *testing.T) {
	t.Parallel()
	p := Policy{Required: 1, Roles: []Role{"site-approver"}, Scope: ScopeAny, ExpiresAfter: 2 * day, CAOperatorRequired: true}
	if err := p.Validate(); err != nil {
		t.Fatalf("a well-formed custom role in a policy: %v", err)
	}
	custom := Actor{ID: "c-1", Roles: []Role{"site-approver"}, Permissions: []Permission{PermApprove}}
	other := Actor{ID: "c-2", Roles: []Role{"other"}, Permissions: []Permission{PermApprove}}
	j := pendingJob()
	if _, _, err := Decide(p, j, other, approve, t0.Add(time.Hour)); !errors.Is(err, ErrRoleNotPermitted) {
		t.Fatalf("a custom role the gate does not name: %v", err)
	}
	if out := record(t, p, &j, custom, approve, t0.Add(time.Hour)); out.Status != StatusApproved {
		t.Fatalf("custom role at the request gate: %+v", out)
	}
	j.State, j.StateSince = StateAwaitingCertificate, t0.Add(2*time.Hour)
	// The CA-operator gate asks for the permission, whichever role grants it.
	if _, _, err := Decide(p, j, other, approve, t0.Add(3*time.Hour)); !errors.Is(err, ErrRoleNotPermitted) {
		t.Fatalf("approve only at the CA gate: %v", err)
	}
	caCustom := Actor{ID: "c-3", Roles: []Role{"pki-team"}, Permissions: []Permission{PermCAOperator}}
	if out := record(t, p, &j, caCustom, approve, t0.Add(3*time.Hour)); out.Status != StatusApproved || out.Gate != GateCAOperator {
		t.Fatalf("custom ca_operator at the CA gate: %+v", out)
	}
}

func TestPermissions(t *testing.T) {
	t.Parallel()
	for _, r := range AllRoles() {
		if len(RolePermissions(r)) == 0 {
			t.Errorf("built-in role %s allows nothing", r)
		}
	}
	if len(RolePermissions(RoleAdmin)) != len(AllPermissions()) {
		t.Error("admin does not hold every permission")
	}
	a := Actor{ID: "x", Roles: []Role{RoleHelpdesk}}
	if !a.Can(PermRequest) || a.Can(PermManageJobs) {
		t.Errorf("helpdesk: request %v, manage_jobs %v", a.Can(PermRequest), a.Can(PermManageJobs))
	}
	for name, want := range map[string]bool{"site-approver": true, "admin": false, "Boss": false, "9x": false, "": false} {
		if got := ValidCustomRoleName(name); got != want {
			t.Errorf("ValidCustomRoleName(%q) = %v", name, got)
		}
	}
	if !Role("admin").WellFormed() || !Role("x_y").WellFormed() || Role("X").WellFormed() {
		t.Error("WellFormed")
	}
}
