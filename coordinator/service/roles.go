package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// CustomRole is a custom role with the name of its organisation.
type CustomRole struct {
	store.CustomRole
	Organization string // "" for every organisation
}

// RoleRequest describes a custom role to create or replace.
type RoleRequest struct {
	Name         string
	Description  string
	Organization string // organisation name; "" for every organisation
	Permissions  []jobs.Permission
}

// orgBound are the permissions a role limited to one organisation may hold: those about
// things that belong to an organisation (jobs and their holders). The others act on what
// belongs to none (profiles, people, roles, the audit log, agents) and would mean the
// same as an unlimited grant.
var orgBound = []jobs.Permission{jobs.PermRequest, jobs.PermApprove, jobs.PermCAOperator, jobs.PermManageJobs, jobs.PermRead}

// maxCustomRoles bounds how many custom roles a coordinator keeps.
const maxCustomRoles = 1000

func (r *RoleRequest) validate() error {
	r.Name, r.Organization = strings.TrimSpace(r.Name), strings.TrimSpace(r.Organization)
	if !jobs.ValidCustomRoleName(r.Name) {
		return badRequest("name", "%q: want %s", r.Name, jobs.CustomRoleNameRule)
	}
	if err := checkText("description", r.Description, maxDisplayLen); err != nil {
		return err
	}
	if len(r.Permissions) == 0 {
		return badRequest("permissions", "name at least one of %v", jobs.AllPermissions())
	}
	for i, p := range r.Permissions {
		field := fmt.Sprintf("permissions[%d]", i)
		switch {
		case !p.Valid():
			return badRequest(field, "unknown permission %q (known: %v)", p, jobs.AllPermissions())
		case r.Organization != "" && !slices.Contains(orgBound, p):
			return badRequest(field, "%s cannot be limited to an organisation (only %v can); leave organization empty or drop it", p, orgBound)
		}
	}
	slices.Sort(r.Permissions)
	r.Permissions = slices.Compact(r.Permissions)
	return nil
}

// mayDefine refuses a role holding a permission the actor does not hold everywhere.
func (s *Service) mayDefine(ctx context.Context, acc access, op string, perms ...[]jobs.Permission) error {
	for _, ps := range perms {
		for _, p := range ps {
			if !acc.can(p, "") {
				return s.deny(ctx, acc.user, op, "", "", forbidden("%s cannot define a role with the %s permission: they do not hold it for every organisation", acc.user.Username, p))
			}
		}
	}
	return nil
}

// gatesNaming lists the profiles whose request gate names role.
func (s *Service) gatesNaming(ctx context.Context, r store.Reader, role string) ([]string, error) {
	ps, err := r.ListProfiles(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, sp := range ps {
		p, err := s.profiles.parse(sp)
		if err != nil {
			return nil, err
		}
		if slices.Contains(p.Approval.Roles, jobs.Role(role)) {
			out = append(out, sp.Name)
		}
	}
	return out, nil
}

// CreateRole creates a custom role (manage_users), audited.
func (s *Service) CreateRole(ctx context.Context, by Actor, r RoleRequest) (CustomRole, error) {
	actor := by.user
	const op = "create role"
	acc, err := s.authorize(ctx, actor, op, jobs.PermManageUsers, "")
	if err != nil {
		return CustomRole{}, err
	}
	if err := r.validate(); err != nil {
		return CustomRole{}, err
	}
	if err := s.mayDefine(ctx, acc, op, r.Permissions); err != nil {
		return CustomRole{}, err
	}
	var out CustomRole
	err = s.update(ctx, func(t *txn) error {
		all, err := t.ListCustomRoles(ctx)
		if err != nil {
			return err
		}
		if len(all) >= maxCustomRoles {
			return newErr(CodeConflict, "", "%d custom roles exist, the most a coordinator keeps; delete one first", len(all))
		}
		orgID, err := orgIDOf(ctx, t, r.Organization)
		if err != nil {
			return err
		}
		c, err := t.CreateCustomRole(ctx, store.CustomRole{Name: r.Name, Description: r.Description, OrganizationID: orgID,
			Permissions: r.Permissions, Created: t.now})
		if errors.Is(err, store.ErrConflict) {
			return newErr(CodeConflict, "name", "a custom role named %q exists", r.Name)
		}
		if err != nil {
			return err
		}
		out = CustomRole{CustomRole: c, Organization: r.Organization}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionRoleCreated, Target: "role:" + c.Name,
			Details: audit.Details("permissions", permissionNames(c.Permissions), "organization", r.Organization, "description", c.Description)})
	})
	return out, err
}

// orgIDOf finds an organisation by name; "" for none.
func orgIDOf(ctx context.Context, r store.Reader, name string) (string, error) {
	if name == "" {
		return "", nil
	}
	o, err := r.GetOrganizationByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return "", badRequest("organization", "no organisation named %q", name)
	}
	return o.ID, err
}

// ListRoles lists the custom roles by name (manage_users, or read for every organisation).
func (s *Service) ListRoles(ctx context.Context, by Actor) ([]CustomRole, error) {
	if _, err := s.canRead(ctx, by.user, resRoles); err != nil {
		return nil, err
	}
	cs, err := s.st.ListCustomRoles(ctx)
	if err != nil {
		return nil, AsError(err)
	}
	names := newNames(s.st)
	out := make([]CustomRole, len(cs))
	for i, c := range cs {
		out[i] = CustomRole{CustomRole: c, Organization: names.org(ctx, c.OrganizationID)}
	}
	return out, nil
}

// GetRole returns one custom role.
func (s *Service) GetRole(ctx context.Context, by Actor, name string) (CustomRole, error) {
	if _, err := s.canRead(ctx, by.user, resRoles); err != nil {
		return CustomRole{}, err
	}
	c, err := s.st.GetCustomRole(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return CustomRole{}, newErr(CodeNotFound, "", "no custom role named %q", name)
	}
	if err != nil {
		return CustomRole{}, AsError(err)
	}
	return CustomRole{CustomRole: c, Organization: newNames(s.st).org(ctx, c.OrganizationID)}, nil
}

// UpdateRole replaces a custom role's description, organisation and permissions
// (manage_users), audited with before and after. A role a profile's gate names keeps the
// approve permission. The change applies to its holders at their next request.
func (s *Service) UpdateRole(ctx context.Context, by Actor, r RoleRequest) (CustomRole, error) {
	actor := by.user
	const op = "update role"
	acc, err := s.authorize(ctx, actor, op, jobs.PermManageUsers, "")
	if err != nil {
		return CustomRole{}, err
	}
	if err := r.validate(); err != nil {
		return CustomRole{}, err
	}
	cur, err := s.st.GetCustomRole(ctx, r.Name)
	if errors.Is(err, store.ErrNotFound) {
		return CustomRole{}, newErr(CodeNotFound, "", "no custom role named %q", r.Name)
	}
	if err != nil {
		return CustomRole{}, AsError(err)
	}
	if err := s.mayDefine(ctx, acc, op, cur.Permissions, r.Permissions); err != nil {
		return CustomRole{}, err
	}
	var out CustomRole
	err = s.update(ctx, func(t *txn) error {
		before, err := t.GetCustomRole(ctx, r.Name)
		if err != nil {
			return err
		}
		if !slices.Contains(r.Permissions, jobs.PermApprove) {
			gates, err := s.gatesNaming(ctx, t, r.Name)
			if err != nil {
				return err
			}
			if len(gates) > 0 {
				return newErr(CodeConflict, "permissions", "the approval gates of profiles %s name role %s: it must keep the %s permission; change those profiles first",
					strings.Join(gates, ", "), r.Name, jobs.PermApprove)
			}
		}
		orgID, err := orgIDOf(ctx, t, r.Organization)
		if err != nil {
			return err
		}
		c, err := t.UpdateCustomRole(ctx, store.CustomRole{Name: r.Name, Description: r.Description, OrganizationID: orgID,
			Permissions: r.Permissions, Updated: t.now})
		if err != nil {
			return err
		}
		names := newNames(t)
		out = CustomRole{CustomRole: c, Organization: r.Organization}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionRoleUpdated, Target: "role:" + c.Name,
			Details: audit.Details(
				"before", map[string]any{"permissions": permissionNames(before.Permissions), "organization": names.org(ctx, before.OrganizationID), "description": before.Description},
				"after", map[string]any{"permissions": permissionNames(c.Permissions), "organization": r.Organization, "description": c.Description})})
	})
	return out, err
}

// DeleteRole deletes a custom role (manage_users), audited. A role that people hold or a
// profile's gate names is refused: take it from them first.
func (s *Service) DeleteRole(ctx context.Context, by Actor, name, reason string) error {
	actor := by.user
	const op = "delete role"
	acc, err := s.authorize(ctx, actor, op, jobs.PermManageUsers, "")
	if err != nil {
		return err
	}
	if err := checkReason("reason", reason); err != nil {
		return err
	}
	cur, err := s.st.GetCustomRole(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return newErr(CodeNotFound, "", "no custom role named %q", name)
	}
	if err != nil {
		return AsError(err)
	}
	if err := s.mayDefine(ctx, acc, op, cur.Permissions); err != nil {
		return err
	}
	return s.update(ctx, func(t *txn) error {
		holders, _, err := t.ListUsers(ctx, store.UserFilter{Role: jobs.Role(name)}, store.Page{Limit: 6})
		if err != nil {
			return err
		}
		if len(holders) > 0 {
			var who []string
			for _, u := range holders[:min(len(holders), 5)] {
				who = append(who, u.Username)
			}
			if len(holders) > 5 {
				who = append(who, "...")
			}
			return newErr(CodeConflict, "", "role %s is held by %s; take it from them first (tokenfleetctl user update --remove-role %s)", name, strings.Join(who, ", "), name)
		}
		gates, err := s.gatesNaming(ctx, t, name)
		if err != nil {
			return err
		}
		if len(gates) > 0 {
			return newErr(CodeConflict, "", "the approval gates of profiles %s name role %s; change those profiles first", strings.Join(gates, ", "), name)
		}
		if err := t.DeleteCustomRole(ctx, name); err != nil {
			return err
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionRoleDeleted, Target: "role:" + name, Reason: strings.TrimSpace(reason),
			Details: audit.Details("permissions", permissionNames(cur.Permissions))})
	})
}
