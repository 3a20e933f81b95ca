package httpapi_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// TestSetPassword: PUT /api/v1/users/{username}/password sets a console password: anyone
// their own, manage_users anyone's; the password is in no answer and no audit entry.
func TestSetPassword(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	head := e.auditHead(t)
	const pw = "a long enough console passphrase"

	if r := e.as(t, "admin", "PUT", "/api/v1/users/ann/password", map[string]string{"password": pw}); r.status != 204 || len(r.body) != 0 {
		t.Fatalf("admin sets ann's password: %s", r)
	}
	if _, err := e.svc.SignInPassword(context.Background(), "ann", pw, "test"); err != nil {
		t.Fatalf("sign in with the password set: %v", err)
	}
	// Their own, without manage_users.
	if r := e.as(t, "hd", "PUT", "/api/v1/users/hd/password", map[string]string{"password": pw + " of hd"}); r.status != 204 {
		t.Fatalf("hd sets their own: %s", r)
	}
	if _, err := e.svc.SignInPassword(context.Background(), "hd", pw+" of hd", "test"); err != nil {
		t.Fatalf("hd signs in: %v", err)
	}
	wantErr(t, e.as(t, "hd", "PUT", "/api/v1/users/ann/password", map[string]string{"password": pw}), 403, "forbidden", "")
	e2 := wantErr(t, e.as(t, "admin", "PUT", "/api/v1/users/ann/password", map[string]string{"password": "short"}), 400, "bad_request", "password")
	if !strings.Contains(e2.Error.Message, "at least 12") {
		t.Fatalf("short password refused with %q", e2.Error.Message)
	}
	wantErr(t, e.as(t, "admin", "PUT", "/api/v1/users/ann/password", map[string]string{"password": strings.Repeat("p", 1025)}), 400, "bad_request", "password")
	wantErr(t, e.as(t, "admin", "PUT", "/api/v1/users/nobody/password", map[string]string{"password": pw}), 404, "not_found", "")
	wantErr(t, e.as(t, "admin", "PUT", "/api/v1/users/ann/password", map[string]string{"pass": pw}), 400, "bad_request", "pass")
	wantErr(t, e.as(t, "admin", "PUT", "/api/v1/users/ann/password", nil), 400, "bad_request", "")
	wantErr(t, e.do(t, "PUT", "/api/v1/users/ann/password", "", map[string]string{"password": pw}), 401, "unauthenticated", "")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/users/ann/password", map[string]string{"password": pw}), 405, "method_not_allowed", "")

	set := e.auditSince(t, head, audit.ActionPasswordSet)
	if len(set) != 2 {
		t.Fatalf("%d password changes audited, want 2", len(set))
	}
	for _, en := range e.auditAll(t) {
		if strings.Contains(string(en.Details), "passphrase") || strings.Contains(en.Reason, "passphrase") {
			t.Fatalf("audit entry %s holds the password: %s", en.Action, en.Details)
		}
	}
}

// TestUnlinkOIDC: POST /api/v1/users/{username}/unlink-oidc removes a person's identity
// provider links (manage_users, with a reason).
func TestUnlinkOIDC(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.world(t)
	if _, err := e.svc.SignInOIDC(context.Background(), service.OIDCIdentity{Issuer: "https://idp.example.test", Subject: "s-ann", Username: "ann"}, "test"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/users/ann/unlink-oidc", map[string]string{"reason": "new account"}), 403, "forbidden", "")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/users/ann/unlink-oidc", map[string]string{}), 400, "bad_request", "reason")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/users/nobody/unlink-oidc", map[string]string{"reason": "x"}), 404, "not_found", "")
	head := e.auditHead(t)
	got := ok[struct {
		Removed int `json:"removed"`
	}](t, e.as(t, "admin", "POST", "/api/v1/users/ann/unlink-oidc", map[string]string{"reason": "new account"}), 200)
	if got.Removed != 1 {
		t.Fatalf("removed %d", got.Removed)
	}
	if es := e.auditSince(t, head, audit.ActionOIDCUnlinked); len(es) != 1 || es[0].Reason != "new account" || !strings.Contains(string(es[0].Details), "s-ann") {
		t.Fatalf("audited %+v", es)
	}
	got = ok[struct {
		Removed int `json:"removed"`
	}](t, e.as(t, "admin", "POST", "/api/v1/users/ann/unlink-oidc", map[string]string{"reason": "again"}), 200)
	if got.Removed != 0 {
		t.Fatalf("removed again %d", got.Removed)
	}
}
