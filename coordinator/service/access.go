package service

import (
	"context"
	"slices"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// resource is something the API lists or shows.
type resource string

const (
	resOrgs         resource = "organisations"
	resUsers        resource = "users"
	resProfiles     resource = "profiles"
	resJobs         resource = "jobs"
	resFleet        resource = "agents and tokens"
	resCertificates resource = "certificates"
	resAudit        resource = "the audit log"
	resRoles        resource = "custom roles"
	resRollouts     resource = "rollouts"
)

// grant is one role an actor holds: what it permits, and where.
type grant struct {
	role    jobs.Role
	perms   []jobs.Permission
	org     string // organisation ID the role is limited to; "" for every organisation
	builtin bool
}

// access is what one actor may do, resolved from the store when an operation starts (or
// inside its transaction), so that a role changed a moment ago counts at once.
type access struct {
	user   store.User
	grants []grant
}

// accessOf resolves the roles of u. A disabled user holds none.
func accessOf(ctx context.Context, r store.Reader, u store.User) (access, error) {
	a := access{user: u}
	if u.Disabled {
		return a, nil
	}
	for _, role := range u.Roles {
		if role.Valid() {
			a.grants = append(a.grants, grant{role: role, perms: jobs.RolePermissions(role), builtin: true})
		}
	}
	custom, err := r.GetCustomRoles(ctx, u.Roles)
	if err != nil {
		return access{}, err
	}
	for _, c := range custom {
		a.grants = append(a.grants, grant{role: jobs.Role(c.Name), perms: c.Permissions, org: c.OrganizationID})
	}
	return a, nil
}

// can is the one permission check: whether a holds p for something of organisation org.
// org "" is something of no organisation (a profile, an organisation, the audit log):
// only a role not limited to an organisation grants that.
func (a access) can(p jobs.Permission, org string) bool {
	return slices.ContainsFunc(a.grants, func(g grant) bool {
		return slices.Contains(g.perms, p) && (g.org == "" || g.org == org)
	})
}

// canAnywhere reports whether a holds p for at least one organisation.
func (a access) canAnywhere(p jobs.Permission) bool {
	return slices.ContainsFunc(a.grants, func(g grant) bool { return slices.Contains(g.perms, p) })
}

// jobActor is the actor as the job rules see them on a job of organisation org: the
// built-in roles, and the custom roles that apply there with their permissions.
func (a access) jobActor(org string) jobs.Actor {
	out := jobs.Actor{ID: a.user.ID, Name: a.user.Username, Organization: a.user.OrganizationID}
	for _, g := range a.grants {
		if g.builtin {
			out.Roles = append(out.Roles, g.role)
			continue
		}
		if g.org == "" || g.org == org {
			out.Roles = append(out.Roles, g.role)
			out.Permissions = append(out.Permissions, g.perms...)
		}
	}
	return out
}

// refusal says why a lacks p, naming the roles that would grant it.
func (a access) refusal(op string, p jobs.Permission, org string) *Error {
	var builtin []string
	for _, r := range jobs.AllRoles() {
		if slices.Contains(jobs.RolePermissions(r), p) {
			builtin = append(builtin, string(r))
		}
	}
	held := roleNames(a.user.Roles)
	if a.user.Disabled {
		return forbidden("%s is disabled", a.user.Username)
	}
	if org != "" && a.canAnywhere(p) {
		return newErr(CodeOutOfScope, "", "%s: the roles of %s grant the %s permission for another organisation only", op, a.user.Username, p)
	}
	return forbidden("%s needs the %s permission (roles %s, or a custom role with it); %s holds %v",
		op, p, strings.Join(builtin, ", "), a.user.Username, held)
}

// authorize resolves actor's roles and checks p for something of organisation org
// (see can), refusing, audited, when it is missing.
func (s *Service) authorize(ctx context.Context, actor store.User, op string, p jobs.Permission, org string) (access, error) {
	a, err := accessOf(ctx, s.st, actor)
	if err != nil {
		return access{}, AsError(err)
	}
	if a.can(p, org) {
		return a, nil
	}
	return access{}, s.deny(ctx, actor, op, "", "", a.refusal(op, p, org))
}

// authorizeAnywhere is authorize for an operation whose organisation is known only later
// (a job's holder is looked up in its transaction): p for some organisation now, and
// can(p, org) once org is known.
func (s *Service) authorizeAnywhere(ctx context.Context, actor store.User, op string, p jobs.Permission) (access, error) {
	a, err := accessOf(ctx, s.st, actor)
	if err != nil {
		return access{}, AsError(err)
	}
	if a.canAnywhere(p) {
		return a, nil
	}
	return access{}, s.deny(ctx, actor, op, "", "", a.refusal(op, p, ""))
}

// scope is what a reader may see of a resource: everything, or some organisations' part.
type scope struct {
	all  bool
	orgs []string // organisation IDs when !all
}

// covers reports whether the scope reads things of organisation org.
func (sc scope) covers(org string) bool {
	return sc.all || (org != "" && slices.Contains(sc.orgs, org))
}

func (sc *scope) add(org string) {
	if !slices.Contains(sc.orgs, org) {
		sc.orgs = append(sc.orgs, org)
	}
}

// narrowList limits a list filter's organisation to what the scope reads: its own
// organisation for a scoped reader (asking for another is refused, audited), what was
// asked for otherwise. what names the listed things in the refusal ("jobs", "users").
func (s *Service) narrowList(ctx context.Context, actor store.User, sc scope, orgID, what string) (string, error) {
	if sc.all {
		return orgID, nil
	}
	if orgID != "" && !sc.covers(orgID) {
		return "", s.deny(ctx, actor, "list "+what, "", "org:"+orgID,
			newErr(CodeOutOfScope, "organization", "%s reads the %s of their own organisation only", actor.Username, what))
	}
	if orgID != "" {
		return orgID, nil
	}
	if len(sc.orgs) > 1 {
		names := newNames(s.st)
		var list []string
		for _, o := range sc.orgs {
			list = append(list, names.org(ctx, o))
		}
		return "", badRequest("organization", "%s reads the %s of several organisations (%s): name one", actor.Username, what, strings.Join(list, ", "))
	}
	return sc.orgs[0], nil
}

// readScope decides who reads what (the package doc has the table). Roles are cumulative:
// the widest wins. Built-in roles read as the table says; a custom role with read reads
// like an approver when limited to an organisation (its jobs, users and organisation, and
// the profiles) and everything but the audit log otherwise; a custom role with approve
// reads the jobs it may decide on (those of its organisation, or all).
func readScope(a access, r resource) (scope, error) {
	u := a.user
	if r == resAudit {
		if a.can(jobs.PermReadAudit, "") {
			return scope{all: true}, nil
		}
		return scope{}, forbidden("reading %s needs the %s permission (roles admin, auditor, or a custom role with it)", r, jobs.PermReadAudit)
	}
	var sc scope
	approverNoOrg := false
	for _, g := range a.grants {
		if g.builtin {
			switch {
			case slices.Contains([]jobs.Role{jobs.RoleAdmin, jobs.RoleHelpdesk, jobs.RoleAuditor, jobs.RoleRolloutOwner}, g.role):
				return scope{all: true}, nil
			case (g.role == jobs.RoleCAOperator || g.role == jobs.RoleKeyRecoveryOfficer) && r != resFleet:
				return scope{all: true}, nil
			case g.role == jobs.RoleApprover && r == resProfiles:
				return scope{all: true}, nil
			case g.role == jobs.RoleApprover && (r == resOrgs || r == resUsers || r == resJobs):
				if u.OrganizationID == "" {
					approverNoOrg = true
					continue
				}
				sc.add(u.OrganizationID)
			}
			continue
		}
		reads := slices.Contains(g.perms, jobs.PermRead)
		decides := slices.Contains(g.perms, jobs.PermApprove) && r == resJobs
		switch {
		case (reads || decides) && g.org == "" && r != resRoles:
			return scope{all: true}, nil
		case reads && r == resProfiles:
			return scope{all: true}, nil
		case (reads && (r == resOrgs || r == resUsers || r == resJobs)) || decides:
			sc.add(g.org)
		}
	}
	if r == resRoles && a.can(jobs.PermManageUsers, "") {
		return scope{all: true}, nil
	}
	if len(sc.orgs) > 0 {
		return sc, nil
	}
	if approverNoOrg {
		return scope{}, newErr(CodeOutOfScope, "", "%s is an approver without an organisation and reads no %s", u.Username, r)
	}
	if len(a.grants) == 0 {
		if u.Disabled {
			return scope{}, forbidden("%s is disabled", u.Username)
		}
		return scope{}, forbidden("%s holds no role: only whoami is open to them", u.Username)
	}
	return scope{}, forbidden("the roles of %s do not allow reading %s", u.Username, r)
}

// canRead checks a read and audits a refusal.
func (s *Service) canRead(ctx context.Context, actor store.User, r resource) (scope, error) {
	a, err := accessOf(ctx, s.st, actor)
	if err != nil {
		return scope{}, AsError(err)
	}
	sc, err := readScope(a, r)
	if err != nil {
		return scope{}, s.deny(ctx, actor, "read "+string(r), "", "", err)
	}
	return sc, nil
}

// deny records a refusal outside any other change: its own transaction, holding only the
// audit entry.
func (s *Service) deny(ctx context.Context, actor store.User, op, jobID, target string, err error) error {
	return s.update(ctx, func(t *txn) error { return t.refuse(ctx, actor, op, jobID, target, err) })
}

// systemActor names the coordinator's own components in audit entries and timelines.
func systemActor(component string) string { return "system:" + component }

// permissionNames renders permissions for messages and audit details.
func permissionNames(ps []jobs.Permission) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p)
	}
	return out
}
