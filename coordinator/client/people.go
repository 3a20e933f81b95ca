package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// UpdateUser changes a person (manage_users): fields left nil stay as they are.
func (c *Client) UpdateUser(ctx context.Context, username string, u UserUpdate) (User, error) {
	if err := needID("username", username); err != nil {
		return User{}, err
	}
	var out User
	_, err := c.do(ctx, request{method: http.MethodPatch, path: "/api/v1/users/" + url.PathEscape(username), body: u, out: &out})
	return out, err
}

// SetUserDisabled disables a person, or enables them again, saying why (manage_users).
func (c *Client) SetUserDisabled(ctx context.Context, username string, disabled bool, reason string) (User, error) {
	if err := needID("username", username); err != nil {
		return User{}, err
	}
	verb := "/enable"
	if disabled {
		verb = "/disable"
	}
	var out User
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/users/" + url.PathEscape(username) + verb,
		body: api.Reason{Reason: reason}, out: &out})
	return out, err
}

// ListAPITokens lists a person's API tokens: one's own, or anyone's with manage_users.
func (c *Client) ListAPITokens(ctx context.Context, username string) (APITokenList, error) {
	if err := needID("username", username); err != nil {
		return APITokenList{}, err
	}
	var out APITokenList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/users/" + url.PathEscape(username) + "/tokens", out: &out})
	return out, err
}

// RevokeAPIToken revokes an API token by its ID: one's own, or anyone's with manage_users.
func (c *Client) RevokeAPIToken(ctx context.Context, id, reason string) (APIToken, error) {
	if err := needID("token ID", id); err != nil {
		return APIToken{}, err
	}
	var out APIToken
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/api-tokens/" + url.PathEscape(id) + "/revoke",
		body: api.Reason{Reason: reason}, out: &out})
	return out, err
}

// ListRoles returns every custom role.
func (c *Client) ListRoles(ctx context.Context) (CustomRoleList, error) {
	var out CustomRoleList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/roles", out: &out})
	return out, err
}

// GetRole returns one custom role.
func (c *Client) GetRole(ctx context.Context, name string) (CustomRole, error) {
	if err := needID("role name", name); err != nil {
		return CustomRole{}, err
	}
	var out CustomRole
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/roles/" + url.PathEscape(name), out: &out})
	return out, err
}

// CreateRole creates a custom role.
func (c *Client) CreateRole(ctx context.Context, r CustomRoleSpec) (CustomRole, error) {
	var out CustomRole
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/roles", body: r, want: []int{http.StatusCreated}, out: &out})
	return out, err
}

// UpdateRole replaces a custom role's description, organisation and permissions.
func (c *Client) UpdateRole(ctx context.Context, name string, r CustomRoleSpec) (CustomRole, error) {
	if err := needID("role name", name); err != nil {
		return CustomRole{}, err
	}
	var out CustomRole
	_, err := c.do(ctx, request{method: http.MethodPut, path: "/api/v1/roles/" + url.PathEscape(name), body: r, out: &out})
	return out, err
}

// SetPassword sets a person's password for signing in to the web console: anyone their
// own, a holder of manage_users anyone's. It ends that person's console sessions.
func (c *Client) SetPassword(ctx context.Context, username, password string) error {
	if err := needID("username", username); err != nil {
		return err
	}
	_, err := c.do(ctx, request{method: http.MethodPut, path: "/api/v1/users/" + url.PathEscape(username) + "/password",
		body: api.PasswordSet{Password: password}, want: []int{http.StatusNoContent}})
	return err
}

// UnlinkOIDC removes a person's links to identity providers' subjects (manage_users), so
// that their next OIDC sign-in links them again by username; it returns how many it
// removed.
func (c *Client) UnlinkOIDC(ctx context.Context, username, reason string) (int, error) {
	if err := needID("username", username); err != nil {
		return 0, err
	}
	var out api.OIDCUnlinked
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/users/" + url.PathEscape(username) + "/unlink-oidc",
		body: api.Reason{Reason: reason}, out: &out})
	return out.Removed, err
}

// DeleteRole deletes a custom role nobody holds.
func (c *Client) DeleteRole(ctx context.Context, name, reason string) error {
	if err := needID("role name", name); err != nil {
		return err
	}
	q := url.Values{}
	set(q, "reason", reason)
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/api/v1/roles/" + url.PathEscape(name), query: q,
		want: []int{http.StatusNoContent}})
	return err
}
