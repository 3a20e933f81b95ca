package service

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// UserUpdate changes a person: a nil field is left as it is; an empty one clears it.
type UserUpdate struct {
	DisplayName  *string
	Email        *string
	UPN          *string
	Organization *string // organisation name; "" for none
	Attributes   *map[string]string
	Roles        *[]jobs.Role
	Language     *string // fr, en; "" for the coordinator's default
}

// mayGrant refuses a change of roles that would give or take a permission the actor does
// not hold everywhere: whoever manages people cannot make anyone, themselves included,
// stronger than they are.
func (s *Service) mayGrant(ctx context.Context, acc access, op string, before, after []jobs.Role) error {
	var changed []jobs.Role
	for _, r := range after {
		if !slices.Contains(before, r) {
			changed = append(changed, r)
		}
	}
	for _, r := range before {
		if !slices.Contains(after, r) {
			changed = append(changed, r)
		}
	}
	custom, err := s.st.GetCustomRoles(ctx, changed)
	if err != nil {
		return AsError(err)
	}
	perms := map[jobs.Role][]jobs.Permission{}
	for _, c := range custom {
		perms[jobs.Role(c.Name)] = c.Permissions
	}
	for _, r := range changed {
		ps := jobs.RolePermissions(r)
		if !r.Valid() {
			ps = perms[r] // an unknown custom role is the store's to refuse
		}
		for _, p := range ps {
			if !acc.can(p, "") {
				return s.deny(ctx, acc.user, op, "", "", forbidden("%s cannot give or take the role %s: it grants the %s permission, which %s does not hold for every organisation",
					acc.user.Username, r, p, acc.user.Username))
			}
		}
	}
	return nil
}

// lastAdmin refuses a change that would leave no enabled administrator.
func lastAdmin(ctx context.Context, t *txn, u store.User) error {
	yes := false
	admins, _, err := t.ListUsers(ctx, store.UserFilter{Role: jobs.RoleAdmin, Disabled: &yes}, store.Page{Limit: 2})
	if err != nil {
		return err
	}
	for _, a := range admins {
		if a.ID != u.ID {
			return nil
		}
	}
	return newErr(CodeConflict, "", "%s is the last enabled administrator; make another administrator first", u.Username)
}

// UpdateUser changes a person's fields and roles (manage_users). The audit entries carry
// what changed, before and after: user.updated for the fields, user.roles_changed for the
// roles.
func (s *Service) UpdateUser(ctx context.Context, by Actor, username string, r UserUpdate) (User, error) {
	actor := by.user
	const op = "update user"
	acc, err := s.authorize(ctx, actor, op, jobs.PermManageUsers, "")
	if err != nil {
		return User{}, err
	}
	cur, err := s.st.GetUserByUsername(ctx, username)
	if errors.Is(err, store.ErrNotFound) {
		return User{}, newErr(CodeNotFound, "", "no user named %q", username)
	}
	if err != nil {
		return User{}, AsError(err)
	}
	// Check the new values with the rules of a new user.
	check := UserRequest{Username: cur.Username, DisplayName: cur.DisplayName, Email: cur.Email, UPN: cur.UPN, Attributes: cur.Attributes,
		Language: cur.Language}
	if r.DisplayName != nil {
		check.DisplayName = *r.DisplayName
	}
	if r.Email != nil {
		check.Email = strings.TrimSpace(*r.Email)
	}
	if r.UPN != nil {
		check.UPN = strings.TrimSpace(*r.UPN)
	}
	if r.Organization != nil {
		check.Organization = strings.TrimSpace(*r.Organization)
	}
	if r.Attributes != nil {
		check.Attributes = *r.Attributes
	}
	if r.Roles != nil {
		check.Roles = *r.Roles
	}
	if r.Language != nil {
		check.Language = strings.TrimSpace(*r.Language)
	}
	if err := check.validate(); err != nil {
		return User{}, err
	}
	if r.Roles != nil {
		if err := s.rolesExist(ctx, "roles", *r.Roles); err != nil {
			return User{}, err
		}
		if err := s.mayGrant(ctx, acc, op, cur.Roles, *r.Roles); err != nil {
			return User{}, err
		}
	}
	var out User
	err = s.update(ctx, func(t *txn) error {
		u, err := t.GetUser(ctx, cur.ID)
		if err != nil {
			return err
		}
		before := u
		names := newNames(t)
		beforeOrg := names.org(ctx, u.OrganizationID)
		u.DisplayName, u.Email, u.UPN, u.Attributes, u.Language = check.DisplayName, check.Email, check.UPN, check.Attributes, check.Language
		if r.Organization != nil {
			u.OrganizationID = ""
			if check.Organization != "" {
				o, err := t.GetOrganizationByName(ctx, check.Organization)
				if errors.Is(err, store.ErrNotFound) {
					return badRequest("organization", "no organisation named %q", check.Organization)
				}
				if err != nil {
					return err
				}
				u.OrganizationID = o.ID
			}
		}
		if r.Roles != nil {
			u.Roles = *r.Roles
			if before.HasRole(jobs.RoleAdmin) && !slices.Contains(u.Roles, jobs.RoleAdmin) && !before.Disabled {
				if err := lastAdmin(ctx, t, before); err != nil {
					return err
				}
			}
		}
		nu, err := t.UpdateUser(ctx, u)
		if errors.Is(err, store.ErrInvalid) {
			return badRequest("roles", "%s; create the custom role first (tokenfleetctl role create)", trimStore(err))
		}
		if err != nil {
			return err
		}
		afterOrg := names.org(ctx, nu.OrganizationID)
		out = User{User: nu, Organization: afterOrg}
		changes := map[string]any{}
		diff := func(field string, b, a any, same bool) {
			if !same {
				changes[field] = map[string]any{"before": b, "after": a}
			}
		}
		diff("display_name", before.DisplayName, nu.DisplayName, before.DisplayName == nu.DisplayName)
		diff("email", before.Email, nu.Email, before.Email == nu.Email)
		diff("upn", before.UPN, nu.UPN, before.UPN == nu.UPN)
		diff("language", before.Language, nu.Language, before.Language == nu.Language)
		diff("organization", beforeOrg, afterOrg, before.OrganizationID == nu.OrganizationID)
		diff("attributes", before.Attributes, nu.Attributes, maps.Equal(before.Attributes, nu.Attributes))
		if len(changes) > 0 {
			if err := t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionUserUpdated, Target: "user:" + nu.ID,
				Details: audit.Details("username", nu.Username, "changes", changes)}); err != nil {
				return err
			}
		}
		if !slices.Equal(before.Roles, nu.Roles) {
			return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionRolesChanged, Target: "user:" + nu.ID,
				Details: audit.Details("username", nu.Username, "before", roleNames(before.Roles), "after", roleNames(nu.Roles))})
		}
		return nil
	})
	return out, err
}

// SetUserDisabled disables a person, or enables them again (manage_users), with a reason
// that is audited. A disabled user's API tokens are refused at once, they decide nothing
// and hold no job; their decisions already recorded stay. No one disables themselves or
// the last enabled administrator.
func (s *Service) SetUserDisabled(ctx context.Context, by Actor, username string, disabled bool, reason string) (User, error) {
	actor := by.user
	op := "enable user"
	if disabled {
		op = "disable user"
	}
	if _, err := s.authorize(ctx, actor, op, jobs.PermManageUsers, ""); err != nil {
		return User{}, err
	}
	reason, err := requiredReason("reason", reason)
	if err != nil {
		return User{}, err
	}
	var out User
	err = s.update(ctx, func(t *txn) error {
		u, err := t.GetUserByUsername(ctx, username)
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeNotFound, "", "no user named %q", username)
		}
		if err != nil {
			return err
		}
		out = User{User: u, Organization: newNames(t).org(ctx, u.OrganizationID)}
		if u.Disabled == disabled {
			return nil // already so: nothing to change or audit
		}
		if disabled {
			if u.ID == actor.ID {
				return newErr(CodeConflict, "", "%s cannot disable themselves; ask another administrator", actor.Username)
			}
			if u.HasRole(jobs.RoleAdmin) {
				if err := lastAdmin(ctx, t, u); err != nil {
					return err
				}
			}
		}
		u.Disabled = disabled
		nu, err := t.UpdateUser(ctx, u)
		if err != nil {
			return err
		}
		out.User = nu
		action := audit.ActionUserEnabled
		details := audit.Details("username", nu.Username)
		if disabled {
			action = audit.ActionUserDisabled
			// A disabled user's console sessions end with their API tokens' use.
			ended, err := t.endUserSessions(ctx, nu.ID, "", store.SessionUserDisabled)
			if err != nil {
				return err
			}
			details = audit.Details("username", nu.Username, "sessions_ended", ended)
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: action, Target: "user:" + nu.ID, Reason: reason, Details: details})
	})
	return out, err
}
