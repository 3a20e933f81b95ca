package httpapi_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

type user struct {
	ID           string            `json:"id"`
	Username     string            `json:"username"`
	DisplayName  string            `json:"display_name"`
	Email        string            `json:"email"`
	UPN          string            `json:"upn"`
	Organization string            `json:"organization"`
	Attributes   map[string]string `json:"attributes"`
	Roles        []string          `json:"roles"`
	Disabled     bool              `json:"disabled"`
	Created      time.Time         `json:"created"`
}

type org struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

func TestAuthentication(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	head := e.auditHead(t)

	tests := []struct {
		name   string
		header string
	}{
		{"no header", ""},
		{"unknown token", "Bearer tfk_nope_nope"},
		{"not a token", "Bearer garbage"},
		{"wrong scheme", "Basic YWRtaW46YWRtaW4="},
		{"empty bearer", "Bearer "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(context.Background(), "GET", e.srv.URL+"/api/v1/whoami", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("status %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	r := e.do(t, "GET", "/api/v1/whoami", "tfk_abc_def", nil)
	wantErr(t, r, 401, "unauthenticated", "")

	// A flood from one source is audited once per reason and window, not per request.
	for range 20 {
		e.do(t, "GET", "/api/v1/jobs", "tfk_flood_flood", nil)
	}
	denied := e.auditSince(t, head, audit.ActionAccessDenied)
	reasons := map[string]int{}
	for _, d := range denied {
		if d.Actor != service.AnonymousActor {
			t.Errorf("unauthenticated denial by %q", d.Actor)
		}
		reasons[d.Reason]++
	}
	if len(denied) != 3 || reasons["unknown, revoked or expired API token"] != 1 || reasons["no bearer token"] != 1 ||
		reasons["malformed Authorization header"] != 1 {
		t.Fatalf("denials audited: %v", reasons)
	}
	// After the window, the next one is written with how many were left out.
	e.clock.advance(2 * time.Minute)
	e.do(t, "GET", "/api/v1/jobs", "tfk_flood_flood", nil)
	denied = e.auditSince(t, head, audit.ActionAccessDenied)
	last := denied[len(denied)-1]
	if len(denied) != 4 || !strings.Contains(string(last.Details), `"suppressed":22`) {
		t.Fatalf("after the window: %d entries, last %s", len(denied), last.Details)
	}
}

func TestTokenUseAudited(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	head := e.auditHead(t)
	for range 5 {
		ok[user](t, e.as(t, "admin", "GET", "/api/v1/whoami", nil), 200)
	}
	used := e.auditSince(t, head, audit.ActionTokenUsed)
	if len(used) != 1 || used[0].Actor != e.user(t, "admin").ID || !strings.HasPrefix(used[0].Target, "token:") {
		t.Fatalf("token.used entries: %+v", used)
	}
	e.clock.advance(59 * time.Minute)
	ok[user](t, e.as(t, "admin", "GET", "/api/v1/whoami", nil), 200)
	if n := len(e.auditSince(t, head, audit.ActionTokenUsed)); n != 1 {
		t.Fatalf("%d token.used entries within the hour", n)
	}
	e.clock.advance(2 * time.Minute)
	ok[user](t, e.as(t, "admin", "GET", "/api/v1/whoami", nil), 200)
	if n := len(e.auditSince(t, head, audit.ActionTokenUsed)); n != 2 {
		t.Fatalf("%d token.used entries after the hour", n)
	}
	toks, err := e.st.ListAPITokens(context.Background(), e.user(t, "admin").ID)
	if err != nil || len(toks) != 1 || !toks[0].LastUsed.Equal(e.clock.now()) {
		t.Fatalf("last use not recorded: %+v, %v", toks, err)
	}
}

func TestWhoami(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	u := ok[user](t, e.as(t, "ann", "GET", "/api/v1/whoami", nil), 200)
	if u.Username != "ann" || u.Organization != "Acme" || len(u.Roles) != 0 || u.Email != "ann@acme.example" {
		t.Fatalf("whoami: %+v", u)
	}
	wantErr(t, e.as(t, "ann", "GET", "/api/v1/whoami?x=1", nil), 400, "bad_request", "x")
	// A holder without role reads themselves and nothing else.
	ok[user](t, e.as(t, "ann", "GET", "/api/v1/users/ann", nil), 200)
	head := e.auditHead(t)
	for _, path := range []string{"/api/v1/users/bob", "/api/v1/users", "/api/v1/orgs", "/api/v1/jobs", "/api/v1/profiles",
		"/api/v1/agents", "/api/v1/tokens", "/api/v1/certificates", "/api/v1/audit"} {
		wantErr(t, e.as(t, "ann", "GET", path, nil), 403, "forbidden", "")
	}
	if n := len(e.auditSince(t, head, audit.ActionAccessDenied)); n != 9 {
		t.Fatalf("%d denials audited, want 9", n)
	}
}

func TestOrganizations(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	o := ok[org](t, e.as(t, "admin", "POST", "/api/v1/orgs", map[string]string{"name": "  Initech "}), 201)
	if o.Name != "Initech" || o.ID == "" || o.Created.IsZero() {
		t.Fatalf("created %+v", o)
	}
	created := e.auditSince(t, 0, audit.ActionOrgCreated)
	if last := created[len(created)-1]; last.Target != "org:"+o.ID || last.Actor != e.user(t, "admin").ID {
		t.Fatalf("audit %+v", last)
	}

	head := e.auditHead(t)
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/orgs", map[string]string{"name": "initech"}), 409, "conflict", "name")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/orgs", map[string]string{"name": " "}), 400, "bad_request", "name")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/orgs", map[string]any{"name": 3}), 400, "bad_request", "name")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/orgs", map[string]any{"name": "x", "color": "red"}), 400, "bad_request", "color")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/orgs", nil), 400, "bad_request", "")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/orgs", `{"name": "x"`), 400, "bad_request", "")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/orgs", `{"name": "x"} {"name": "y"}`), 400, "bad_request", "")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/orgs", `["x"]`), 400, "bad_request", "")
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/orgs", `{"name": "`+strings.Repeat("a", 2<<20)+`"}`), 413, "too_large", "")
	if h := e.auditHead(t); h != head {
		t.Fatalf("bad input changed the audit log: %d entries added", h-head)
	}
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/orgs", map[string]string{"name": "Hooli"}), 403, "forbidden", "")
	if d := e.auditSince(t, head, audit.ActionAccessDenied); len(d) != 1 || d[0].Actor != e.user(t, "hd").ID {
		t.Fatalf("denial audit: %+v", d)
	}

	// Pagination walks the whole list exactly once.
	var names []string
	cursor := ""
	for pages := 0; ; pages++ {
		l := ok[list[org]](t, e.as(t, "hd", "GET", "/api/v1/orgs?limit=1&cursor="+cursor, nil), 200)
		if len(l.Items) > 1 || pages > 5 {
			t.Fatalf("page %d: %+v", pages, l)
		}
		for _, o := range l.Items {
			names = append(names, o.Name)
		}
		if cursor = l.NextCursor; cursor == "" {
			break
		}
	}
	if !slices.Equal(names, []string{"Acme", "Globex", "Initech"}) {
		t.Fatalf("paged names %v", names)
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=x", "limit=1&limit=2", "page=2"} {
		wantErr(t, e.as(t, "hd", "GET", "/api/v1/orgs?"+q, nil), 400, "bad_request", "-")
	}
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/orgs?cursor=%%%", nil), 400, "bad_request", "")
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/orgs?cursor=!!", nil), 400, "bad_request", "cursor")

	// An approver sees their own organisation only.
	l := ok[list[org]](t, e.as(t, "apg", "GET", "/api/v1/orgs", nil), 200)
	if len(l.Items) != 1 || l.Items[0].Name != "Globex" {
		t.Fatalf("approver sees %+v", l)
	}
}

func TestUsers(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	u := ok[user](t, e.as(t, "admin", "POST", "/api/v1/users", map[string]any{
		"username": "zoe", "display_name": "Zoé Dupont", "email": "zoe@acme.example", "upn": "zoe@acme.local",
		"organization": "acme", "attributes": map[string]string{"hostname": "srv1.acme.example"},
		"roles": []string{"approver", "helpdesk", "approver"}}), 201)
	if u.Organization != "Acme" || !slices.Equal(u.Roles, []string{"approver", "helpdesk"}) || u.Attributes["hostname"] != "srv1.acme.example" {
		t.Fatalf("created %+v", u)
	}
	got := ok[user](t, e.as(t, "hd", "GET", "/api/v1/users/zoe", nil), 200)
	if got.ID != u.ID || got.DisplayName != "Zoé Dupont" {
		t.Fatalf("read back %+v", got)
	}
	if a := e.auditSince(t, 0, audit.ActionUserCreated); a[len(a)-1].Target != "user:"+u.ID ||
		!strings.Contains(string(a[len(a)-1].Details), `"roles":["approver","helpdesk"]`) {
		t.Fatalf("audit %+v", a[len(a)-1])
	}

	head := e.auditHead(t)
	bad := []struct {
		name  string
		body  any
		field string
	}{
		{"no username", map[string]any{"display_name": "x"}, "username"},
		{"bad username", map[string]any{"username": "a b"}, "username"},
		{"long username", map[string]any{"username": strings.Repeat("a", 129)}, "username"},
		{"unknown role", map[string]any{"username": "x", "roles": []string{"approver", "boss"}}, "roles[1]"},
		{"roles not a list", map[string]any{"username": "x", "roles": "admin"}, "roles"},
		{"unknown organisation", map[string]any{"username": "x", "organization": "Nowhere"}, "organization"},
		{"bad email", map[string]any{"username": "x", "email": "Zoe <z@x>"}, "email"},
		{"bad upn", map[string]any{"username": "x", "upn": "zoe"}, "upn"},
		{"control characters", map[string]any{"username": "x", "display_name": "a\nb"}, "display_name"},
		{"bad attribute key", map[string]any{"username": "x", "attributes": map[string]string{"1x": "y"}}, "attributes"},
		{"attribute not a string", map[string]any{"username": "x", "attributes": map[string]int{"k": 1}}, "attributes"},
		{"unknown field", map[string]any{"username": "x", "password": "secret"}, "password"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, e.as(t, "admin", "POST", "/api/v1/users", tc.body), 400, "bad_request", tc.field)
		})
	}
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/users", map[string]any{"username": "ZOE"}), 409, "conflict", "username")
	if h := e.auditHead(t); h != head {
		t.Fatalf("bad input changed the audit log: %d entries added", h-head)
	}
	l := ok[list[user]](t, e.as(t, "admin", "GET", "/api/v1/users?limit=500", nil), 200)
	if len(l.Items) != 13 {
		t.Fatalf("%d users after refused creations", len(l.Items))
	}
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/users", map[string]any{"username": "mallory", "roles": []string{"admin"}}), 403, "forbidden", "")

	// Filters, and the approver's scope.
	l = ok[list[user]](t, e.as(t, "hd", "GET", "/api/v1/users?organization=Globex", nil), 200)
	if len(l.Items) != 2 {
		t.Fatalf("Globex users: %+v", l.Items)
	}
	l = ok[list[user]](t, e.as(t, "aud", "GET", "/api/v1/users?role=approver", nil), 200)
	if len(l.Items) != 6 {
		t.Fatalf("approvers: %d", len(l.Items))
	}
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/users?role=boss", nil), 400, "bad_request", "role")
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/users?organization=Nowhere", nil), 400, "bad_request", "organization")
	l = ok[list[user]](t, e.as(t, "apg", "GET", "/api/v1/users", nil), 200)
	for _, u := range l.Items {
		if u.Organization != "Globex" {
			t.Fatalf("approver of Globex sees %s of %s", u.Username, u.Organization)
		}
	}
	wantErr(t, e.as(t, "apg", "GET", "/api/v1/users?organization=Acme", nil), 403, "out_of_scope", "organization")
	wantErr(t, e.as(t, "apg", "GET", "/api/v1/users/ann", nil), 403, "out_of_scope", "")
	ok[user](t, e.as(t, "apg", "GET", "/api/v1/users/gina", nil), 200)
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/users/nobody", nil), 404, "not_found", "")

	// Paging users.
	seen := map[string]bool{}
	cursor := ""
	for {
		l := ok[list[user]](t, e.as(t, "aud", "GET", "/api/v1/users?limit=4&cursor="+cursor, nil), 200)
		for _, u := range l.Items {
			if seen[u.Username] {
				t.Fatalf("%s on two pages", u.Username)
			}
			seen[u.Username] = true
		}
		if cursor = l.NextCursor; cursor == "" {
			break
		}
	}
	if len(seen) != 13 {
		t.Fatalf("paged %d users", len(seen))
	}
}

type issuedToken struct {
	ID       string    `json:"id"`
	Token    string    `json:"token"`
	Username string    `json:"username"`
	Expires  time.Time `json:"expires"`
}

func TestAPITokens(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	tok := ok[issuedToken](t, e.as(t, "admin", "POST", "/api/v1/users/ann/tokens", map[string]string{"name": "laptop", "expires_in": "2d"}), 201)
	if tok.Username != "ann" || tok.Token == "" || !tok.Expires.Equal(e.clock.now().Add(48*time.Hour)) {
		t.Fatalf("issued %+v", tok)
	}
	a := e.auditSince(t, 0, audit.ActionTokenCreated)
	if last := a[len(a)-1]; strings.Contains(string(last.Details), tok.Token) || !strings.Contains(string(last.Details), tok.ID) {
		t.Fatalf("token audit must name the token's ID and never its secret: %s", last.Details)
	}
	if u := ok[user](t, e.do(t, "GET", "/api/v1/whoami", tok.Token, nil), 200); u.Username != "ann" {
		t.Fatalf("token authenticates %s", u.Username)
	}
	e.clock.advance(49 * time.Hour)
	wantErr(t, e.do(t, "GET", "/api/v1/whoami", tok.Token, nil), 401, "unauthenticated", "")

	for _, tc := range []struct {
		body  any
		field string
	}{
		{map[string]string{"expires_in": "soon"}, "expires_in"},
		{map[string]string{"expires_in": "-5h"}, "expires_in"},
		{map[string]string{"name": strings.Repeat("n", 65)}, "name"},
		{map[string]any{"name": true}, "name"},
		{map[string]any{"scope": "all"}, "scope"},
	} {
		wantErr(t, e.as(t, "admin", "POST", "/api/v1/users/ann/tokens", tc.body), 400, "bad_request", tc.field)
	}
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/users/nobody/tokens", nil), 404, "not_found", "")
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/users/hd/tokens", nil), 403, "forbidden", "")
	// No expiry asked: the default life (api_tokens.default_ttl).
	tok = ok[issuedToken](t, e.as(t, "admin", "POST", "/api/v1/users/bob/tokens", nil), 201)
	if !tok.Expires.Equal(e.clock.now().Add(service.DefaultAPITokenTTL)) {
		t.Fatalf("token without expires_in expires at %s", tok.Expires)
	}
}
