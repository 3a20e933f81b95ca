package service

import (
	"context"
	"slices"

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
)

// scope is what a reader may see of a resource: everything, or one organisation's part.
type scope struct {
	all bool
	org string // organisation ID when !all
}

// narrowList limits a list filter's organisation to what the scope reads: its own
// organisation for a scoped reader (asking for another is refused, audited), what was
// asked for otherwise. what names the listed things in the refusal ("jobs", "users").
func (s *Service) narrowList(ctx context.Context, actor store.User, sc scope, orgID, what string) (string, error) {
	if sc.all {
		return orgID, nil
	}
	if orgID != "" && orgID != sc.org {
		return "", s.deny(ctx, actor, "list "+what, "", "org:"+orgID,
			newErr(CodeOutOfScope, "organization", "%s reads the %s of their own organisation only", actor.Username, what))
	}
	return sc.org, nil
}

// readScope decides who reads what (the package doc has the table). Roles are cumulative:
// the widest wins.
func readScope(u store.User, r resource) (scope, error) {
	has := func(rs ...jobs.Role) bool { return slices.ContainsFunc(rs, u.HasRole) }
	if r == resAudit {
		if has(jobs.RoleAdmin, jobs.RoleAuditor) {
			return scope{all: true}, nil
		}
		return scope{}, forbidden("reading %s needs the admin or auditor role", r)
	}
	if has(jobs.RoleAdmin, jobs.RoleHelpdesk, jobs.RoleAuditor) {
		return scope{all: true}, nil
	}
	if u.HasRole(jobs.RoleCAOperator) {
		switch r {
		case resOrgs, resUsers, resProfiles, resJobs, resCertificates:
			return scope{all: true}, nil
		}
	}
	if u.HasRole(jobs.RoleApprover) {
		switch r {
		case resProfiles:
			return scope{all: true}, nil
		case resOrgs, resUsers, resJobs:
			if u.OrganizationID == "" {
				return scope{}, newErr(CodeOutOfScope, "", "%s is an approver without an organisation and reads no %s", u.Username, r)
			}
			return scope{org: u.OrganizationID}, nil
		}
	}
	if len(u.Roles) == 0 {
		return scope{}, forbidden("%s holds no role: only whoami is open to them", u.Username)
	}
	return scope{}, forbidden("the roles of %s do not allow reading %s", u.Username, r)
}

// canRead checks a read and audits a refusal.
func (s *Service) canRead(ctx context.Context, actor store.User, r resource) (scope, error) {
	sc, err := readScope(actor, r)
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

// requireRole refuses, audited, an actor holding none of roles.
func (s *Service) requireRole(ctx context.Context, actor store.User, op string, roles ...jobs.Role) error {
	if slices.ContainsFunc(roles, actor.HasRole) {
		return nil
	}
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	return s.deny(ctx, actor, op, "", "", forbidden("%s needs one of the roles %v; %s holds %v", op, names, actor.Username, actor.Roles))
}

// systemActor names the coordinator's own components in audit entries and timelines.
func systemActor(component string) string { return "system:" + component }
