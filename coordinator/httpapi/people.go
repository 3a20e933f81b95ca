package httpapi

import (
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

func (a *server) updateUser(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.UserUpdate
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	v, err := a.svc.UpdateUser(r.Context(), u, r.PathValue("username"), service.UserUpdate{DisplayName: in.DisplayName,
		Email: in.Email, UPN: in.UPN, Organization: in.Organization, Attributes: in.Attributes, Roles: in.Roles, Language: in.Language})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, userOut(v))
}

func (a *server) disableUser(w http.ResponseWriter, r *http.Request, u service.Actor) {
	a.setDisabled(w, r, u, true)
}

func (a *server) enableUser(w http.ResponseWriter, r *http.Request, u service.Actor) {
	a.setDisabled(w, r, u, false)
}

func (a *server) setDisabled(w http.ResponseWriter, r *http.Request, u service.Actor, disabled bool) {
	var in api.Reason
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	v, err := a.svc.SetUserDisabled(r.Context(), u, r.PathValue("username"), disabled, in.Reason)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, userOut(v))
}

func (a *server) setPassword(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.PasswordSet
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	if err := a.svc.SetPassword(r.Context(), u, r.PathValue("username"), in.Password); err != nil {
		a.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *server) unlinkOIDC(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.Reason
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	n, err := a.svc.UnlinkOIDC(r.Context(), u, r.PathValue("username"), in.Reason)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.OIDCUnlinked{Removed: n})
}

func apiTokenOut(t service.APIToken) api.APIToken {
	return api.APIToken{ID: t.ID, Name: t.Name, Username: t.Username, Created: t.Created, Expires: t.Expires,
		LastUsed: t.LastUsed, Revoked: t.Revoked, Bootstrap: t.Bootstrap}
}

func (a *server) listAPITokens(w http.ResponseWriter, r *http.Request, u service.Actor) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	ts, err := a.svc.ListAPITokens(r.Context(), u, r.PathValue("username"))
	if err != nil {
		a.fail(w, err)
		return
	}
	out := api.APITokenList{Items: make([]api.APIToken, len(ts))}
	for i, t := range ts {
		out.Items[i] = apiTokenOut(t)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *server) revokeAPIToken(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.Reason
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, false)); err != nil {
		a.fail(w, err)
		return
	}
	t, err := a.svc.RevokeAPIToken(r.Context(), u, r.PathValue("id"), in.Reason)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiTokenOut(t))
}

func roleOut(c service.CustomRole) api.CustomRole {
	perms := c.Permissions
	if perms == nil {
		perms = []jobs.Permission{}
	}
	return api.CustomRole{Name: c.Name, Description: c.Description, Organization: c.Organization, Permissions: perms,
		Created: c.Created, Updated: c.Updated}
}

func (a *server) listRoles(w http.ResponseWriter, r *http.Request, u service.Actor) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	cs, err := a.svc.ListRoles(r.Context(), u)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := api.CustomRoleList{Items: make([]api.CustomRole, len(cs))}
	for i, c := range cs {
		out.Items[i] = roleOut(c)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *server) createRole(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.CustomRoleCreate
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	c, err := a.svc.CreateRole(r.Context(), u, service.RoleRequest{Name: in.Name, Description: in.Description,
		Organization: in.Organization, Permissions: in.Permissions})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, roleOut(c))
}

func (a *server) getRole(w http.ResponseWriter, r *http.Request, u service.Actor) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	c, err := a.svc.GetRole(r.Context(), u, r.PathValue("name"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, roleOut(c))
}

func (a *server) updateRole(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.CustomRoleCreate
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	name := r.PathValue("name")
	if in.Name != "" && in.Name != name {
		a.fail(w, bad("name", "the body names role %q but the path %q; leave name out or make them agree", in.Name, name))
		return
	}
	c, err := a.svc.UpdateRole(r.Context(), u, service.RoleRequest{Name: name, Description: in.Description,
		Organization: in.Organization, Permissions: in.Permissions})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, roleOut(c))
}

func (a *server) deleteRole(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "reason")
	if err != nil {
		a.fail(w, err)
		return
	}
	if err := a.svc.DeleteRole(r.Context(), u, r.PathValue("name"), q.get("reason")); err != nil {
		a.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
