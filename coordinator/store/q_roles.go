package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// ---- custom roles ----

const customRoleCols = "name, description, organisation_id, permissions, created_at, updated_at"

func scanCustomRole(r scanner) (CustomRole, error) {
	var c CustomRole
	var perms []byte
	if err := r.Scan(&c.Name, &c.Description, strCol{&c.OrganizationID}, bytesCol{&perms}, timeCol{&c.Created}, timeCol{&c.Updated}); err != nil {
		return CustomRole{}, err
	}
	if err := json.Unmarshal(perms, &c.Permissions); err != nil {
		return CustomRole{}, fmt.Errorf("custom role %s permissions: %w", c.Name, err)
	}
	slices.Sort(c.Permissions)
	return c, nil
}

// checkCustomRole validates and normalises a role, and returns its permissions as JSON.
func checkCustomRole(what string, c *CustomRole) (string, error) {
	if !jobs.ValidCustomRoleName(c.Name) {
		return "", fmt.Errorf("%s: name %q: want %s: %w", what, c.Name, jobs.CustomRoleNameRule, ErrInvalid)
	}
	perms := slices.Clone(c.Permissions)
	slices.Sort(perms)
	perms = slices.Compact(perms)
	for _, p := range perms {
		if !p.Valid() {
			return "", fmt.Errorf("%s %s: unknown permission %q: %w", what, c.Name, p, ErrInvalid)
		}
	}
	if perms == nil {
		perms = []jobs.Permission{}
	}
	c.Permissions = perms
	b, err := json.Marshal(perms)
	return string(b), err
}

func (x *q) CreateCustomRole(ctx context.Context, c CustomRole) (CustomRole, error) {
	perms, err := checkCustomRole("create custom role", &c)
	if err != nil {
		return CustomRole{}, err
	}
	c.Created = orNow(c.Created)
	row := x.queryRow(ctx, `INSERT INTO custom_roles (`+customRoleCols+`) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO NOTHING RETURNING `+customRoleCols,
		c.Name, c.Description, nullStr(c.OrganizationID), perms, x.d.ts(c.Created), x.d.ts(c.Created))
	out, err := scanCustomRole(row)
	if isNoRows(err) {
		return CustomRole{}, fmt.Errorf("store: create custom role: name %q is taken: %w", c.Name, ErrConflict)
	}
	return out, x.d.wrap("create custom role "+c.Name, err)
}

func (x *q) UpdateCustomRole(ctx context.Context, c CustomRole) (CustomRole, error) {
	perms, err := checkCustomRole("update custom role", &c)
	if err != nil {
		return CustomRole{}, err
	}
	row := x.queryRow(ctx, `UPDATE custom_roles SET description = ?, organisation_id = ?, permissions = ?, updated_at = ?
		WHERE name = ? RETURNING `+customRoleCols,
		c.Description, nullStr(c.OrganizationID), perms, x.d.ts(orNow(c.Updated)), c.Name)
	out, err := scanCustomRole(row)
	return out, x.d.wrap("update custom role "+c.Name, err)
}

func (x *q) DeleteCustomRole(ctx context.Context, name string) error {
	res, err := x.exec(ctx, "DELETE FROM custom_roles WHERE name = ?", name)
	if err == nil {
		err = mustAffect(res)
	}
	if err != nil {
		return x.d.wrap("delete custom role "+name, err)
	}
	_, err = x.exec(ctx, "DELETE FROM user_roles WHERE role = ?", name)
	return x.d.wrap("delete custom role "+name, err)
}

func (x *q) GetCustomRole(ctx context.Context, name string) (CustomRole, error) {
	c, err := scanCustomRole(x.queryRow(ctx, "SELECT "+customRoleCols+" FROM custom_roles WHERE name = ?", name))
	return c, x.d.wrap("custom role "+name, err)
}

func (x *q) GetCustomRoles(ctx context.Context, names []jobs.Role) ([]CustomRole, error) {
	var args []any
	for _, n := range names {
		if !n.Valid() {
			args = append(args, string(n))
		}
	}
	if len(args) == 0 {
		return nil, nil
	}
	rows, err := x.query(ctx, "SELECT "+customRoleCols+" FROM custom_roles WHERE name IN ("+placeholders(len(args))+") ORDER BY name", args...)
	if err != nil {
		return nil, x.d.wrap("custom roles", err)
	}
	return collect(rows, x.d, "custom roles", scanCustomRole)
}

func (x *q) ListCustomRoles(ctx context.Context) ([]CustomRole, error) {
	rows, err := x.query(ctx, "SELECT "+customRoleCols+" FROM custom_roles ORDER BY name")
	if err != nil {
		return nil, x.d.wrap("list custom roles", err)
	}
	return collect(rows, x.d, "list custom roles", scanCustomRole)
}
