package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// ---- organisations ----

const orgCols = "id, name, created_at"

func scanOrg(r scanner) (Organization, error) {
	var o Organization
	err := r.Scan(&o.ID, &o.Name, timeCol{&o.Created})
	return o, err
}

func (x *q) CreateOrganization(ctx context.Context, o Organization) (Organization, error) {
	o.Name = strings.TrimSpace(o.Name)
	if err := required("create organisation", "name", o.Name); err != nil {
		return Organization{}, err
	}
	if o.ID == "" {
		o.ID = newID()
	} else if err := checkID("create organisation", o.ID); err != nil {
		return Organization{}, err
	}
	o.Created = orNow(o.Created)
	row := x.queryRow(ctx, `INSERT INTO organisations (id, name, name_key, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (name_key) DO NOTHING RETURNING `+orgCols,
		o.ID, o.Name, strings.ToLower(o.Name), x.d.ts(o.Created))
	out, err := scanOrg(row)
	if isNoRows(err) {
		return Organization{}, fmt.Errorf("store: create organisation: name %q is taken: %w", o.Name, ErrConflict)
	}
	return out, x.d.wrap("create organisation "+o.Name, err)
}

func (x *q) GetOrganization(ctx context.Context, id string) (Organization, error) {
	o, err := scanOrg(x.queryRow(ctx, "SELECT "+orgCols+" FROM organisations WHERE id = ?", id))
	return o, x.d.wrap("organisation "+id, err)
}

func (x *q) GetOrganizationByName(ctx context.Context, name string) (Organization, error) {
	o, err := scanOrg(x.queryRow(ctx, "SELECT "+orgCols+" FROM organisations WHERE name_key = ?",
		strings.ToLower(strings.TrimSpace(name))))
	return o, x.d.wrap("organisation "+name, err)
}

func (x *q) ListOrganizations(ctx context.Context, p Page) ([]Organization, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap("list organisations", err)
	}
	var w where
	if p.Cursor != "" {
		c, err := decodeCursor(p.Cursor, 1)
		if err != nil {
			return nil, "", x.d.wrap("list organisations", err)
		}
		w.add("name_key > ?", c[0])
	}
	rows, err := x.query(ctx, "SELECT "+orgCols+", name_key FROM organisations"+w.sql()+
		" ORDER BY name_key LIMIT ?", append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap("list organisations", err)
	}
	defer func() { _ = rows.Close() }()
	var out []Organization
	var keys []string
	for rows.Next() {
		var o Organization
		var key string
		if err := rows.Scan(&o.ID, &o.Name, timeCol{&o.Created}, &key); err != nil {
			return nil, "", x.d.wrap("list organisations", err)
		}
		out = append(out, o)
		keys = append(keys, key)
	}
	if err := rows.Err(); err != nil {
		return nil, "", x.d.wrap("list organisations", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = encodeCursor(keys[limit-1])
	}
	return out, next, nil
}

// ---- users ----

const userCols = "id, username, display_name, email, upn, organisation_id, attributes, disabled, created_at, language"

func scanUser(r scanner, extra ...any) (User, error) {
	var u User
	var attrs []byte
	dest := []any{&u.ID, &u.Username, &u.DisplayName, &u.Email, &u.UPN, strCol{&u.OrganizationID},
		bytesCol{&attrs}, &u.Disabled, timeCol{&u.Created}, &u.Language}
	if err := r.Scan(append(dest, extra...)...); err != nil {
		return User{}, err
	}
	if len(attrs) > 0 {
		if err := json.Unmarshal(attrs, &u.Attributes); err != nil {
			return User{}, fmt.Errorf("user %s attributes: %w", u.ID, err)
		}
	}
	if len(u.Attributes) == 0 {
		u.Attributes = nil
	}
	return u, nil
}

// checkUser validates and normalises the fields callers set.
func checkUser(what string, u *User) (attrs string, err error) {
	u.Username = strings.TrimSpace(u.Username)
	if err := required(what, "username", u.Username); err != nil {
		return "", err
	}
	roles := slices.Clone(u.Roles)
	slices.Sort(roles)
	roles = slices.Compact(roles)
	for _, r := range roles {
		if !r.WellFormed() {
			return "", fmt.Errorf("%s %s: malformed role %q: %w", what, u.Username, r, ErrInvalid)
		}
	}
	u.Roles = roles
	if len(u.Roles) == 0 {
		u.Roles = nil
	}
	if len(u.Attributes) == 0 {
		u.Attributes = nil
		return "{}", nil
	}
	b, err := json.Marshal(u.Attributes)
	if err != nil {
		return "", fmt.Errorf("%s %s: attributes: %w", what, u.Username, err)
	}
	return string(b), nil
}

func (x *q) CreateUser(ctx context.Context, u User) (User, error) {
	attrs, err := checkUser("create user", &u)
	if err != nil {
		return User{}, err
	}
	if u.ID == "" {
		u.ID = newID()
	} else if err := checkID("create user", u.ID); err != nil {
		return User{}, err
	}
	u.Created = orNow(u.Created)
	row := x.queryRow(ctx, `INSERT INTO users (id, username, username_key, display_name, email, upn,
			organisation_id, attributes, disabled, created_at, language)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (username_key) DO NOTHING RETURNING id`,
		u.ID, u.Username, strings.ToLower(u.Username), u.DisplayName, u.Email, u.UPN,
		nullStr(u.OrganizationID), attrs, u.Disabled, x.d.ts(u.Created), u.Language)
	var id string
	if err := row.Scan(&id); err != nil {
		if isNoRows(err) {
			return User{}, fmt.Errorf("store: create user: username %q is taken: %w", u.Username, ErrConflict)
		}
		return User{}, x.d.wrap("create user "+u.Username, err)
	}
	if err := x.insertRoles(ctx, u.ID, u.Roles); err != nil {
		return User{}, x.d.wrap("create user "+u.Username, err)
	}
	return x.GetUser(ctx, u.ID)
}

// insertRoles records a user's roles: a built-in role, or a custom role that exists.
func (x *q) insertRoles(ctx context.Context, userID string, roles []jobs.Role) error {
	for _, r := range roles {
		if r.Valid() {
			if _, err := x.exec(ctx, "INSERT INTO user_roles (user_id, role) VALUES (?, ?)", userID, string(r)); err != nil {
				return err
			}
			continue
		}
		res, err := x.exec(ctx, `INSERT INTO user_roles (user_id, role)
			SELECT ?, name FROM custom_roles WHERE name = ?`, userID, string(r))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("no built-in or custom role named %q: %w", r, ErrInvalid)
		}
	}
	return nil
}

func (x *q) UpdateUser(ctx context.Context, u User) (User, error) {
	attrs, err := checkUser("update user", &u)
	if err != nil {
		return User{}, err
	}
	if err := required("update user", "ID", u.ID); err != nil {
		return User{}, err
	}
	res, err := x.exec(ctx, `UPDATE users SET username = ?, username_key = ?, display_name = ?, email = ?,
			upn = ?, organisation_id = ?, attributes = ?, disabled = ?, language = ?
		WHERE id = ?`,
		u.Username, strings.ToLower(u.Username), u.DisplayName, u.Email, u.UPN,
		nullStr(u.OrganizationID), attrs, u.Disabled, u.Language, u.ID)
	if err != nil {
		return User{}, x.d.wrap("update user "+u.ID, err)
	}
	if err := mustAffect(res); err != nil {
		return User{}, x.d.wrap("update user "+u.ID, err)
	}
	if _, err := x.exec(ctx, "DELETE FROM user_roles WHERE user_id = ?", u.ID); err != nil {
		return User{}, x.d.wrap("update user "+u.ID, err)
	}
	if err := x.insertRoles(ctx, u.ID, u.Roles); err != nil {
		return User{}, x.d.wrap("update user "+u.ID, err)
	}
	return x.GetUser(ctx, u.ID)
}

func (x *q) GetUser(ctx context.Context, id string) (User, error) {
	return x.getUser(ctx, "user "+id, "id = ?", id)
}

func (x *q) GetUserByUsername(ctx context.Context, username string) (User, error) {
	return x.getUser(ctx, "user "+username, "username_key = ?", strings.ToLower(strings.TrimSpace(username)))
}

func (x *q) getUser(ctx context.Context, what, cond string, arg any) (User, error) {
	u, err := scanUser(x.queryRow(ctx, "SELECT "+userCols+" FROM users WHERE "+cond, arg))
	if err != nil {
		return User{}, x.d.wrap(what, err)
	}
	users := []User{u}
	if err := x.loadRoles(ctx, users); err != nil {
		return User{}, x.d.wrap(what, err)
	}
	return users[0], nil
}

// loadRoles fills in the roles of users with one query.
func (x *q) loadRoles(ctx context.Context, users []User) error {
	if len(users) == 0 {
		return nil
	}
	idx := make(map[string]int, len(users))
	args := make([]any, len(users))
	for i, u := range users {
		idx[u.ID] = i
		args[i] = u.ID
	}
	rows, err := x.query(ctx, "SELECT user_id, role FROM user_roles WHERE user_id IN ("+
		placeholders(len(users))+") ORDER BY user_id, role", args...)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var id, role string
		if err := rows.Scan(&id, &role); err != nil {
			return err
		}
		i := idx[id]
		users[i].Roles = append(users[i].Roles, jobs.Role(role))
	}
	return rows.Err()
}

func (x *q) ListUsers(ctx context.Context, f UserFilter, p Page) ([]User, string, error) {
	const op = "list users"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	var w where
	if f.OrganizationID != "" {
		w.add("organisation_id = ?", f.OrganizationID)
	}
	if f.Role != "" {
		w.add("id IN (SELECT user_id FROM user_roles WHERE role = ?)", string(f.Role))
	}
	if f.Disabled != nil {
		w.add("disabled = ?", *f.Disabled)
	}
	w.contains(f.Search, "username", "display_name", "email")
	if p.Cursor != "" {
		c, err := decodeCursor(p.Cursor, 1)
		if err != nil {
			return nil, "", x.d.wrap(op, err)
		}
		w.add("username_key > ?", c[0])
	}
	rows, err := x.query(ctx, "SELECT "+userCols+" FROM users"+w.sql()+" ORDER BY username_key LIMIT ?",
		append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	all, err := collect(rows, x.d, op, func(r scanner) (User, error) { return scanUser(r) })
	if err != nil {
		return nil, "", err
	}
	out, next, _ := pageOf(all, limit, func(u User) string { return encodeCursor(strings.ToLower(u.Username)) })
	if err := x.loadRoles(ctx, out); err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	return out, next, nil
}

// ---- API tokens ----

// API tokens look like tfk_<id>_<secret>: the ID finds the row, the whole token is
// compared by its SHA-256 in constant time. The secret has 256 bits, so a plain hash is
// enough (no password-hashing function is needed for a value nobody chose).
const apiTokenPrefix = "tfk_"

const apiTokenCols = "id, user_id, name, created_at, expires_at, last_used_at, revoked_at, bootstrap"

func scanAPIToken(r scanner, extra ...any) (APIToken, error) {
	var t APIToken
	dest := []any{&t.ID, &t.UserID, &t.Name, timeCol{&t.Created}, timeCol{&t.Expires},
		timeCol{&t.LastUsed}, timeCol{&t.Revoked}, &t.Bootstrap}
	err := r.Scan(append(dest, extra...)...)
	return t, err
}

func (x *q) CreateAPIToken(ctx context.Context, userID, name string, expires time.Time) (APIToken, string, error) {
	return x.createAPIToken(ctx, userID, name, expires, false)
}

func (x *q) CreateBootstrapAPIToken(ctx context.Context, userID string) (APIToken, string, error) {
	return x.createAPIToken(ctx, userID, "bootstrap", time.Time{}, true)
}

func (x *q) createAPIToken(ctx context.Context, userID, name string, expires time.Time, bootstrap bool) (APIToken, string, error) {
	if err := required("create API token", "user", userID, "name", name); err != nil {
		return APIToken{}, "", err
	}
	id := randomString(10)
	token := apiTokenPrefix + id + "_" + randomString(32)
	row := x.queryRow(ctx, `INSERT INTO api_tokens (id, user_id, name, secret_hash, created_at, expires_at, bootstrap)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING `+apiTokenCols,
		id, userID, name, hashToken(token), x.d.ts(now()), x.d.ts(expires), bootstrap)
	t, err := scanAPIToken(row)
	if err != nil {
		return APIToken{}, "", x.d.wrap("create API token for user "+userID, err)
	}
	return t, token, nil
}

func hashToken(token string) string { return sha256Sum([]byte(token)) }

func (x *q) LookupAPIToken(ctx context.Context, presented string, at time.Time) (APIToken, User, error) {
	const op = "API token"
	rest, ok := strings.CutPrefix(presented, apiTokenPrefix)
	id, secret, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || id == "" || secret == "" {
		return APIToken{}, User{}, fmt.Errorf("store: %s: malformed: %w", op, ErrNotFound)
	}
	var stored string
	t, err := scanAPIToken(x.queryRow(ctx, "SELECT "+apiTokenCols+", secret_hash FROM api_tokens WHERE id = ?", id), &stored)
	if err != nil {
		return APIToken{}, User{}, x.d.wrap(op+" "+id, err)
	}
	if !constantTimeEqual(hashToken(presented), stored) {
		return APIToken{}, User{}, fmt.Errorf("store: %s %s: wrong secret: %w", op, id, ErrNotFound)
	}
	at = orNow(at)
	switch {
	case !t.Revoked.IsZero():
		return APIToken{}, User{}, fmt.Errorf("store: %s %s: revoked: %w", op, id, ErrNotFound)
	case !t.Expires.IsZero() && !at.Before(t.Expires):
		return APIToken{}, User{}, fmt.Errorf("store: %s %s: expired: %w", op, id, ErrNotFound)
	}
	u, err := x.GetUser(ctx, t.UserID)
	if err != nil {
		return APIToken{}, User{}, err
	}
	if u.Disabled {
		return APIToken{}, User{}, fmt.Errorf("store: %s %s: user %s is disabled: %w", op, id, u.Username, ErrNotFound)
	}
	return t, u, nil
}

func (x *q) ListAPITokens(ctx context.Context, userID string) ([]APIToken, error) {
	rows, err := x.query(ctx, "SELECT "+apiTokenCols+" FROM api_tokens WHERE user_id = ? ORDER BY created_at, id", userID)
	if err != nil {
		return nil, x.d.wrap("list API tokens", err)
	}
	return collect(rows, x.d, "list API tokens", func(r scanner) (APIToken, error) { return scanAPIToken(r) })
}

func (x *q) GetAPIToken(ctx context.Context, id string) (APIToken, error) {
	t, err := scanAPIToken(x.queryRow(ctx, "SELECT "+apiTokenCols+" FROM api_tokens WHERE id = ?", id))
	return t, x.d.wrap("API token "+id, err)
}

// apiTokenTouchEvery is how stale last_used may get before a use is written.
const apiTokenTouchEvery = time.Minute

func (x *q) TouchAPIToken(ctx context.Context, id string, at time.Time) error {
	at = orNow(at)
	res, err := x.exec(ctx, `UPDATE api_tokens SET last_used_at = ?
		WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`,
		x.d.ts(at), id, x.d.ts(at.Add(-apiTokenTouchEvery)))
	if err != nil {
		return x.d.wrap("touch API token "+id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return x.exists(ctx, "API token "+id, "SELECT 1 FROM api_tokens WHERE id = ?", id)
	}
	return nil
}

func (x *q) RevokeAPIToken(ctx context.Context, id string, at time.Time) error {
	res, err := x.exec(ctx, "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
		x.d.ts(orNow(at)), id)
	if err != nil {
		return x.d.wrap("revoke API token "+id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		// Revoking twice keeps the first time; only a missing token is an error.
		return x.exists(ctx, "API token "+id, "SELECT 1 FROM api_tokens WHERE id = ?", id)
	}
	return nil
}
