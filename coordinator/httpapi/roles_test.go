package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

type apiToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Username  string    `json:"username"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	LastUsed  time.Time `json:"last_used"`
	Revoked   time.Time `json:"revoked"`
	Bootstrap bool      `json:"bootstrap"`
}

func TestAPITokenExpiryAndRevocation(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)

	// The bootstrap token is the only one without expiry, and says so.
	l := ok[list[apiToken]](t, e.as(t, "admin", "GET", "/api/v1/users/admin/tokens", nil), 200)
	if len(l.Items) != 1 || !l.Items[0].Bootstrap || !l.Items[0].Expires.IsZero() {
		t.Fatalf("admin's tokens: %+v", l.Items)
	}
	// A user lists their own; not another's.
	own := ok[list[apiToken]](t, e.as(t, "hd", "GET", "/api/v1/users/hd/tokens", nil), 200)
	if len(own.Items) != 1 || own.Items[0].Bootstrap || own.Items[0].Expires.IsZero() || own.Items[0].LastUsed.IsZero() {
		t.Fatalf("hd's tokens: %+v", own.Items)
	}
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/users/ann/tokens", nil), 403, "forbidden", "")
	// Longer than api_tokens.max_ttl is refused, naming the limit.
	r := wantErr(t, e.as(t, "admin", "POST", "/api/v1/users/ann/tokens", map[string]string{"expires_in": "400d"}), 400, "bad_request", "expires_in")
	if !strings.Contains(r.Error.Message, "api_tokens.max_ttl") {
		t.Fatalf("max_ttl refusal: %s", r.Error.Message)
	}

	// An expired token gets 401, audited as an unauthenticated request.
	short := ok[issuedToken](t, e.as(t, "admin", "POST", "/api/v1/users/ann/tokens", map[string]string{"name": "short", "expires_in": "1h"}), 201)
	ok[user](t, e.do(t, "GET", "/api/v1/whoami", short.Token, nil), 200)
	head := e.auditHead(t)
	e.clock.advance(61 * time.Minute)
	wantErr(t, e.do(t, "GET", "/api/v1/whoami", short.Token, nil), 401, "unauthenticated", "")
	if d := e.auditSince(t, head, audit.ActionAccessDenied); len(d) != 1 || d[0].Actor != service.AnonymousActor {
		t.Fatalf("expired token not audited: %+v", d)
	}

	// A revoked token gets 401 at once: its owner revokes it, and an admin another's.
	laptop := ok[issuedToken](t, e.as(t, "admin", "POST", "/api/v1/users/ann/tokens", map[string]string{"name": "laptop"}), 201)
	ok[user](t, e.do(t, "GET", "/api/v1/whoami", laptop.Token, nil), 200)
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/api-tokens/"+laptop.ID+"/revoke", nil), 403, "forbidden", "")
	rv := ok[apiToken](t, e.do(t, "POST", "/api/v1/api-tokens/"+laptop.ID+"/revoke", laptop.Token, map[string]string{"reason": "laptop lost"}), 200)
	if rv.Revoked.IsZero() || rv.Username != "ann" {
		t.Fatalf("revoked %+v", rv)
	}
	wantErr(t, e.do(t, "GET", "/api/v1/whoami", laptop.Token, nil), 401, "unauthenticated", "")
	revoked := e.auditSince(t, head, audit.ActionTokenRevoked)
	if len(revoked) != 1 || revoked[0].Target != "token:"+laptop.ID || revoked[0].Reason != "laptop lost" {
		t.Fatalf("revocation audit: %+v", revoked)
	}
	ok[apiToken](t, e.as(t, "admin", "POST", "/api/v1/api-tokens/"+own.Items[0].ID+"/revoke", nil), 200)
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/whoami", nil), 401, "unauthenticated", "")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/api-tokens/nope/revoke", nil), 404, "not_found", "id")
	// Revoking again changes nothing and writes nothing.
	h2 := e.auditHead(t)
	ok[apiToken](t, e.as(t, "admin", "POST", "/api/v1/api-tokens/"+laptop.ID+"/revoke", nil), 200)
	if n := len(e.auditSince(t, h2, audit.ActionTokenRevoked)); n != 0 {
		t.Fatalf("second revocation audited %d times", n)
	}
	toks := ok[list[apiToken]](t, e.as(t, "admin", "GET", "/api/v1/users/ann/tokens", nil), 200)
	if len(toks.Items) != 3 || toks.Items[2].Revoked.IsZero() {
		t.Fatalf("ann's tokens: %+v", toks.Items)
	}
}

func TestUserUpdateAndDisable(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	head := e.auditHead(t)
	u := ok[user](t, e.as(t, "admin", "PATCH", "/api/v1/users/ann", map[string]any{
		"display_name": "Ann Martin-Smith", "organization": "Globex", "attributes": map[string]string{"employee_id": "42"}}), 200)
	if u.DisplayName != "Ann Martin-Smith" || u.Organization != "Globex" || u.Email != "ann@acme.example" || u.Attributes["employee_id"] != "42" {
		t.Fatalf("updated %+v", u)
	}
	upd := e.auditSince(t, head, audit.ActionUserUpdated)
	if len(upd) != 1 {
		t.Fatalf("user.updated entries: %d", len(upd))
	}
	var d struct {
		Changes map[string]struct{ Before, After any } `json:"changes"`
	}
	if err := json.Unmarshal(upd[0].Details, &d); err != nil || d.Changes["organization"].Before != "Acme" ||
		d.Changes["organization"].After != "Globex" || d.Changes["display_name"].After != "Ann Martin-Smith" || len(d.Changes) != 3 {
		t.Fatalf("changes audited: %s (%v)", upd[0].Details, err)
	}
	u = ok[user](t, e.as(t, "admin", "PATCH", "/api/v1/users/hd", map[string]any{"roles": []string{"helpdesk", "auditor"}}), 200)
	if len(u.Roles) != 2 {
		t.Fatalf("roles %v", u.Roles)
	}
	if rc := e.auditSince(t, head, audit.ActionRolesChanged); len(rc) != 1 || !strings.Contains(string(rc[0].Details), `"before":["helpdesk"]`) {
		t.Fatalf("roles_changed: %+v", rc)
	}
	wantErr(t, e.as(t, "admin", "PATCH", "/api/v1/users/hd", map[string]any{"roles": []string{"no-such-role"}}), 400, "bad_request", "roles[0]")
	wantErr(t, e.as(t, "admin", "PATCH", "/api/v1/users/hd", map[string]any{"email": "not mail"}), 400, "bad_request", "email")
	wantErr(t, e.as(t, "hd", "PATCH", "/api/v1/users/hd", map[string]any{"roles": []string{"admin"}}), 403, "forbidden", "")
	wantErr(t, e.as(t, "admin", "PATCH", "/api/v1/users/admin", map[string]any{"roles": []string{}}), 409, "conflict", "")

	// Disabled: their token gets 401 at once, they hold no new job; enabled again, it works.
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/users/bob/disable", map[string]any{}), 400, "bad_request", "reason")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/users/admin/disable", map[string]any{"reason": "test"}), 409, "conflict", "")
	ok[user](t, e.as(t, "admin", "POST", "/api/v1/users/ap1/disable", map[string]any{"reason": "left the company"}), 200)
	wantErr(t, e.as(t, "ap1", "GET", "/api/v1/whoami", nil), 401, "unauthenticated", "")
	u = ok[user](t, e.as(t, "admin", "POST", "/api/v1/users/bob/disable", map[string]any{"reason": "on leave"}), 200)
	if !u.Disabled {
		t.Fatal("bob not disabled")
	}
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/jobs", issue("bob", "open-client", "ws-1")), 400, "bad_request", "holder")
	if dis := e.auditSince(t, head, audit.ActionUserDisabled); len(dis) != 2 || dis[1].Reason != "on leave" {
		t.Fatalf("user.disabled: %+v", dis)
	}
	ok[user](t, e.as(t, "admin", "POST", "/api/v1/users/ap1/enable", map[string]any{"reason": "back"}), 200)
	ok[user](t, e.as(t, "ap1", "GET", "/api/v1/whoami", nil), 200)
	if en := e.auditSince(t, head, audit.ActionUserEnabled); len(en) != 1 || en[0].Reason != "back" {
		t.Fatalf("user.enabled: %+v", en)
	}
}

const profileSite = `name: site-signing
description: Approved by the site approvers of the holder's organisation.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
pin_policy: {min_length: 6, max_length: 8}
approval:
  required: 1
  roles: [site-approver]
  scope: any
  expires_after: 7d
`

type customRole struct {
	Name         string    `json:"name"`
	Description  string    `json:"description"`
	Organization string    `json:"organization"`
	Permissions  []string  `json:"permissions"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
}

// TestCustomRoleApproveOnly: a custom role with only approve, limited to Acme, approves at
// a gate naming it, on Acme's jobs, and does nothing else.
func TestCustomRoleApproveOnly(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	head := e.auditHead(t)

	// A gate may not name a role that does not exist, or cannot approve.
	wantErr(t, e.as(t, "admin", "PUT", "/api/v1/profiles", profileSite), 400, "invalid_profile", "approval.roles[0]")
	ok[customRole](t, e.as(t, "admin", "POST", "/api/v1/roles", map[string]any{"name": "site-approver", "permissions": []string{"read"}}), 201)
	wantErr(t, e.as(t, "admin", "PUT", "/api/v1/profiles", profileSite), 400, "invalid_profile", "approval.roles[0]")
	r := ok[customRole](t, e.as(t, "admin", "PUT", "/api/v1/roles/site-approver", map[string]any{"organization": "Acme", "permissions": []string{"approve"}}), 200)
	if r.Organization != "Acme" || len(r.Permissions) != 1 || r.Permissions[0] != "approve" {
		t.Fatalf("role %+v", r)
	}
	ok[map[string]any](t, e.as(t, "admin", "PUT", "/api/v1/profiles", profileSite), 200)
	// Now that a gate names it, it keeps approve, and is not deleted.
	wantErr(t, e.as(t, "admin", "PUT", "/api/v1/roles/site-approver", map[string]any{"permissions": []string{"read"}}), 409, "conflict", "permissions")
	wantErr(t, e.as(t, "admin", "DELETE", "/api/v1/roles/site-approver", nil), 409, "conflict", "")
	// Refused shapes.
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/roles", map[string]any{"name": "admin", "permissions": []string{"read"}}), 400, "bad_request", "name")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/roles", map[string]any{"name": "x", "permissions": []string{"fly"}}), 400, "bad_request", "permissions[0]")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/roles", map[string]any{"name": "x", "organization": "Acme", "permissions": []string{"manage_users"}}), 400, "bad_request", "permissions[0]")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/roles", map[string]any{"name": "site-approver", "permissions": []string{"read"}}), 409, "conflict", "name")

	ok[user](t, e.as(t, "admin", "POST", "/api/v1/users", map[string]any{"username": "sa", "organization": "Acme", "roles": []string{"site-approver"}}), 201)
	e.tokens["sa"] = ok[issuedToken](t, e.as(t, "admin", "POST", "/api/v1/users/sa/tokens", nil), 201).Token
	if l := ok[list[user]](t, e.as(t, "admin", "GET", "/api/v1/users?role=site-approver", nil), 200); len(l.Items) != 1 {
		t.Fatalf("holders of the role: %+v", l.Items)
	}

	acme := e.newJob(t, "hd", issue("ann", "site-signing", "ws-1"))
	globex := e.newJob(t, "hd", issue("gina", "site-signing", "ws-2"))
	other := e.newJob(t, "hd", issue("ann", "email-signing", "ws-2")) // its gate names approver
	// It sees what waits for it: Acme's job only.
	l := ok[list[job]](t, e.as(t, "sa", "GET", "/api/v1/jobs?awaiting_me=true", nil), 200)
	if len(l.Items) != 1 || l.Items[0].ID != acme.ID {
		t.Fatalf("awaiting sa: %+v", l.Items)
	}
	d := ok[jobDetail](t, e.as(t, "sa", "POST", "/api/v1/jobs/"+acme.ID+"/approve", map[string]string{"binding_hash": acme.BindingHash}), 200)
	if d.State != "approved" {
		t.Fatalf("after sa's approval: %s", d.State)
	}
	wantErr(t, e.as(t, "sa", "POST", "/api/v1/jobs/"+globex.ID+"/approve", nil), 403, "role_not_permitted", "")
	wantErr(t, e.as(t, "sa", "POST", "/api/v1/jobs/"+other.ID+"/approve", nil), 403, "role_not_permitted", "")

	// Everything else is refused, each naming what is missing.
	for _, tc := range []struct {
		method, path string
		body         any
		code         string
	}{
		{"POST", "/api/v1/jobs", issue("ann", "open-client", "ws-1"), "forbidden"},
		{"POST", "/api/v1/jobs/" + other.ID + "/cancel", nil, "forbidden"},
		{"GET", "/api/v1/users", nil, "forbidden"},
		{"GET", "/api/v1/users/ann", nil, "forbidden"},
		{"POST", "/api/v1/users", map[string]any{"username": "x"}, "forbidden"},
		{"PATCH", "/api/v1/users/sa", map[string]any{"roles": []string{"admin"}}, "forbidden"},
		{"POST", "/api/v1/users/ann/disable", map[string]any{"reason": "x"}, "forbidden"},
		{"POST", "/api/v1/users/ann/tokens", nil, "forbidden"},
		{"GET", "/api/v1/users/ann/tokens", nil, "forbidden"},
		{"GET", "/api/v1/orgs", nil, "forbidden"},
		{"POST", "/api/v1/orgs", map[string]any{"name": "X"}, "forbidden"},
		{"GET", "/api/v1/roles", nil, "forbidden"},
		{"POST", "/api/v1/roles", map[string]any{"name": "mine", "permissions": []string{"approve"}}, "forbidden"},
		{"PUT", "/api/v1/profiles", profileOpen, "forbidden"},
		{"GET", "/api/v1/profiles", nil, "forbidden"},
		{"GET", "/api/v1/agents", nil, "forbidden"},
		{"POST", "/api/v1/agents", map[string]string{"id": "ws-9", "hostname": "ws-9"}, "forbidden"},
		{"GET", "/api/v1/tokens", nil, "forbidden"},
		{"GET", "/api/v1/certificates", nil, "forbidden"},
		{"GET", "/api/v1/audit", nil, "forbidden"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			var r response
			if s, isText := tc.body.(string); isText {
				r = e.doCT(t, tc.method, tc.path, e.tokens["sa"], "application/yaml", s)
			} else {
				r = e.as(t, "sa", tc.method, tc.path, tc.body)
			}
			got := wantErr(t, r, 403, tc.code, "")
			if got.Error.Message == "" {
				t.Fatal("a refusal without a message")
			}
		})
	}
	if d := e.auditSince(t, head, audit.ActionAccessDenied); len(d) < 20 {
		t.Fatalf("%d refusals audited", len(d))
	}
	if c := e.auditSince(t, head, audit.ActionRoleCreated); len(c) != 1 {
		t.Fatalf("role.created entries: %d", len(c))
	}
	if u := e.auditSince(t, head, audit.ActionRoleUpdated); len(u) != 1 || !strings.Contains(string(u[0].Details), `"before"`) {
		t.Fatalf("role.updated entries: %+v", u)
	}

	// Deleting needs the role unheld and unnamed.
	ok[user](t, e.as(t, "admin", "PATCH", "/api/v1/users/sa", map[string]any{"roles": []string{}}), 200)
	ok[map[string]any](t, e.as(t, "admin", "POST", "/api/v1/roles", map[string]any{"name": "spare", "permissions": []string{"read"}}), 201)
	if rr := e.as(t, "admin", "DELETE", "/api/v1/roles/spare?reason=unused", nil); rr.status != 204 {
		t.Fatalf("delete: %s", rr)
	}
	wantErr(t, e.as(t, "admin", "GET", "/api/v1/roles/spare", nil), 404, "not_found", "")
}
