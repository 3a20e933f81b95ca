package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func testOrganizations(t *testing.T, h *harness) {
	o := do(t, h, func(tx store.Tx) (store.Organization, error) {
		return tx.CreateOrganization(h.ctx, store.Organization{Name: "Ministry of Tokens", Created: base})
	})
	if o.ID == "" || o.Name != "Ministry of Tokens" || !o.Created.Equal(stored(base)) {
		t.Fatalf("created %+v", o)
	}
	equal(t, "get", must(h.s.GetOrganization(h.ctx, o.ID))(t), o)
	equal(t, "get by name, other case", must(h.s.GetOrganizationByName(h.ctx, "MINISTRY of tokens"))(t), o)

	for _, tc := range []struct {
		name string
		org  store.Organization
		want error
	}{
		{"same name", store.Organization{Name: "Ministry of Tokens"}, store.ErrConflict},
		{"same name other case", store.Organization{Name: "ministry OF TOKENS"}, store.ErrConflict},
		{"same ID", store.Organization{ID: o.ID, Name: "Other"}, store.ErrConflict},
		{"empty name", store.Organization{Name: "  "}, store.ErrInvalid},
		{"bad ID", store.Organization{ID: "a/b", Name: "Slash"}, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, try(h, func(tx store.Tx) (store.Organization, error) { return tx.CreateOrganization(h.ctx, tc.org) }), tc.want)
		})
	}

	// Pagination: ordered by name, case-insensitively, every page at most the limit.
	names := []string{"delta", "Alpha", "charlie", "Bravo", "echo"}
	for _, n := range names {
		do(t, h, func(tx store.Tx) (store.Organization, error) {
			return tx.CreateOrganization(h.ctx, store.Organization{Name: n})
		})
	}
	all := listAll(t, 2, func(p store.Page) ([]store.Organization, string, error) { return h.s.ListOrganizations(h.ctx, p) })
	var got []string
	for _, o := range all {
		got = append(got, o.Name)
	}
	equal(t, "organisations in order", got, []string{"Alpha", "Bravo", "charlie", "delta", "echo", "Ministry of Tokens"})
}

func testUsers(t *testing.T, h *harness) {
	f := newFixture(t, h)
	u := do(t, h, func(tx store.Tx) (store.User, error) {
		return tx.CreateUser(h.ctx, store.User{
			Username: "J.Dupont", DisplayName: "Jeanne Dupont", Email: "jeanne@acme.test", UPN: "jdupont@acme.test",
			OrganizationID: f.org.ID, Attributes: map[string]string{"department": "R&D", "employee": "0042"},
			Roles:   []jobs.Role{jobs.RoleAuditor, jobs.RoleApprover, jobs.RoleAuditor},
			Created: base,
		})
	})
	want := store.User{
		ID: u.ID, Username: "J.Dupont", DisplayName: "Jeanne Dupont", Email: "jeanne@acme.test", UPN: "jdupont@acme.test",
		OrganizationID: f.org.ID, Attributes: map[string]string{"department": "R&D", "employee": "0042"},
		Roles: []jobs.Role{jobs.RoleApprover, jobs.RoleAuditor}, Created: stored(base),
	}
	equal(t, "created", u, want)
	equal(t, "get", must(h.s.GetUser(h.ctx, u.ID))(t), want)
	equal(t, "get by username, other case", must(h.s.GetUserByUsername(h.ctx, "j.dupont"))(t), want)
	if !u.HasRole(jobs.RoleApprover) || u.HasRole(jobs.RoleAdmin) {
		t.Fatalf("HasRole wrong for %v", u.Roles)
	}

	for _, tc := range []struct {
		name string
		user store.User
		want error
	}{
		{"username taken", store.User{Username: "j.dupont"}, store.ErrConflict},
		{"empty username", store.User{Username: ""}, store.ErrInvalid},
		{"unknown role", store.User{Username: "x", Roles: []jobs.Role{"superuser"}}, store.ErrInvalid},
		{"unknown organisation", store.User{Username: "y", OrganizationID: "nope"}, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, try(h, func(tx store.Tx) (store.User, error) { return tx.CreateUser(h.ctx, tc.user) }), tc.want)
		})
	}

	// A holder without roles, organisation or attributes.
	holder := do(t, h, func(tx store.Tx) (store.User, error) {
		return tx.CreateUser(h.ctx, store.User{Username: "plain"})
	})
	if holder.Roles != nil || holder.Attributes != nil || holder.OrganizationID != "" {
		t.Fatalf("plain user came back as %+v", holder)
	}

	// Update replaces everything, roles included.
	u.DisplayName = "Jeanne Martin"
	u.Roles = []jobs.Role{jobs.RoleAdmin}
	u.Attributes = nil
	u.OrganizationID = ""
	u.Disabled = true
	up := do(t, h, func(tx store.Tx) (store.User, error) { return tx.UpdateUser(h.ctx, u) })
	want = u
	equal(t, "updated", up, want)
	equal(t, "read after update", must(h.s.GetUser(h.ctx, u.ID))(t), want)

	renamed := holder
	renamed.Username = "J.DUPONT"
	wantErr(t, try(h, func(tx store.Tx) (store.User, error) { return tx.UpdateUser(h.ctx, renamed) }), store.ErrConflict)
	wantErr(t, try(h, func(tx store.Tx) (store.User, error) {
		return tx.UpdateUser(h.ctx, store.User{ID: "missing", Username: "ghost"})
	}), store.ErrNotFound)
}

func testUserList(t *testing.T, h *harness) {
	orgs := do(t, h, func(tx store.Tx) ([]store.Organization, error) {
		a, err := tx.CreateOrganization(h.ctx, store.Organization{Name: "A"})
		if err != nil {
			return nil, err
		}
		b, err := tx.CreateOrganization(h.ctx, store.Organization{Name: "B"})
		return []store.Organization{a, b}, err
	})
	type spec struct {
		name     string
		org      int
		roles    []jobs.Role
		disabled bool
	}
	specs := []spec{
		{"u01", 0, nil, false},
		{"u02", 0, []jobs.Role{jobs.RoleApprover}, false},
		{"u03", 1, []jobs.Role{jobs.RoleApprover, jobs.RoleAdmin}, false},
		{"u04", 1, nil, true},
		{"u05", 0, []jobs.Role{jobs.RoleHelpdesk}, false},
		{"u06", 0, []jobs.Role{jobs.RoleApprover}, true},
		{"u07", 1, nil, false},
	}
	h.tx(t, func(tx store.Tx) error {
		// Created out of order: the list order comes from the username.
		for _, i := range []int{3, 0, 6, 2, 5, 1, 4} {
			s := specs[i]
			if _, err := tx.CreateUser(h.ctx, store.User{Username: s.name, OrganizationID: orgs[s.org].ID,
				Roles: s.roles, Disabled: s.disabled}); err != nil {
				return err
			}
		}
		return nil
	})
	names := func(users []store.User) []string {
		var out []string
		for _, u := range users {
			out = append(out, u.Username)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		filter store.UserFilter
		want   []string
	}{
		{"all", store.UserFilter{}, []string{"u01", "u02", "u03", "u04", "u05", "u06", "u07"}},
		{"organisation", store.UserFilter{OrganizationID: orgs[1].ID}, []string{"u03", "u04", "u07"}},
		{"role", store.UserFilter{Role: jobs.RoleApprover}, []string{"u02", "u03", "u06"}},
		{"role in organisation", store.UserFilter{Role: jobs.RoleApprover, OrganizationID: orgs[0].ID}, []string{"u02", "u06"}},
		{"enabled approvers", store.UserFilter{Role: jobs.RoleApprover, Disabled: ptr(false)}, []string{"u02", "u03"}},
		{"disabled", store.UserFilter{Disabled: ptr(true)}, []string{"u04", "u06"}},
		{"nobody", store.UserFilter{Role: jobs.RoleAuditor}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, limit := range []int{1, 2, 100} {
				got := listAll(t, limit, func(p store.Page) ([]store.User, string, error) {
					return h.s.ListUsers(h.ctx, tc.filter, p)
				})
				equal(t, fmt.Sprintf("limit %d", limit), names(got), tc.want)
			}
		})
	}
	// Roles come with listed users.
	got := must3(t)(h.s.ListUsers(h.ctx, store.UserFilter{Role: jobs.RoleAdmin}, store.Page{}))
	if len(got) != 1 || !slices.Equal(got[0].Roles, []jobs.Role{jobs.RoleAdmin, jobs.RoleApprover}) {
		t.Fatalf("admins: %+v", got)
	}
}

// must3 unwraps a (list, next, error) result.
func must3(t *testing.T) func(items []store.User, next string, err error) []store.User {
	return func(items []store.User, _ string, err error) []store.User {
		t.Helper()
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return items
	}
}

func testAPITokens(t *testing.T, h *harness) {
	f := newFixture(t, h)
	type created struct {
		tok   store.APIToken
		clear string
	}
	mk := func(user, name string, expires time.Time) created {
		t.Helper()
		var c created
		h.tx(t, func(tx store.Tx) error {
			var err error
			c.tok, c.clear, err = tx.CreateAPIToken(h.ctx, user, name, expires)
			return err
		})
		return c
	}
	now := time.Now()
	live := mk(f.requester.ID, "ci", time.Time{})
	if live.tok.ID == "" || live.tok.UserID != f.requester.ID || live.tok.Name != "ci" || live.tok.Created.IsZero() ||
		!live.tok.Expires.IsZero() || !live.tok.Revoked.IsZero() || !strings.Contains(live.clear, live.tok.ID) {
		t.Fatalf("created %+v / %q", live.tok, live.clear)
	}
	if other := mk(f.requester.ID, "ci", time.Time{}); other.clear == live.clear || other.tok.ID == live.tok.ID {
		t.Fatal("two tokens are the same")
	}

	tok, user, err := h.s.LookupAPIToken(h.ctx, live.clear, now)
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	equal(t, "token", tok, live.tok)
	equal(t, "owner", user, f.requester)

	expiring := mk(f.holder.ID, "short", now.Add(time.Hour))
	if _, _, err := h.s.LookupAPIToken(h.ctx, expiring.clear, now); err != nil {
		t.Fatalf("lookup before expiry: %v", err)
	}
	revoked := mk(f.holder.ID, "gone", time.Time{})
	h.tx(t, func(tx store.Tx) error { return tx.RevokeAPIToken(h.ctx, revoked.tok.ID, now) })
	h.tx(t, func(tx store.Tx) error { return tx.RevokeAPIToken(h.ctx, revoked.tok.ID, now.Add(time.Hour)) })
	disabledOwner := mk(f.approver.ID, "owner disabled", time.Time{})
	a := f.approver
	a.Disabled = true
	do(t, h, func(tx store.Tx) (store.User, error) { return tx.UpdateUser(h.ctx, a) })

	// Replace the last character of the secret: same ID, wrong secret.
	last := live.clear[len(live.clear)-1]
	wrong := live.clear[:len(live.clear)-1] + map[bool]string{true: "b", false: "a"}[last == 'a']
	for _, tc := range []struct{ name, token string }{
		{"wrong secret", wrong},
		{"unknown ID", "tfk_aaaaaaaaaaaaaaaa_" + strings.Repeat("a", 52)},
		{"malformed", "Bearer something"},
		{"empty", ""},
		{"prefix only", "tfk_"},
		{"expired", expiring.clear},
		{"revoked", revoked.clear},
		{"owner disabled", disabledOwner.clear},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := now
			if tc.name == "expired" {
				at = now.Add(2 * time.Hour)
			}
			_, _, err := h.s.LookupAPIToken(h.ctx, tc.token, at)
			wantErr(t, err, store.ErrNotFound)
		})
	}

	// Last use: written, then not rewritten within the minute.
	h.tx(t, func(tx store.Tx) error { return tx.TouchAPIToken(h.ctx, live.tok.ID, base) })
	h.tx(t, func(tx store.Tx) error { return tx.TouchAPIToken(h.ctx, live.tok.ID, base.Add(30*time.Second)) })
	tokens := must(h.s.ListAPITokens(h.ctx, f.requester.ID))(t)
	if len(tokens) != 2 || tokens[0].ID != live.tok.ID || !tokens[0].LastUsed.Equal(stored(base)) {
		t.Fatalf("after touches within a minute: %+v", tokens)
	}
	h.tx(t, func(tx store.Tx) error { return tx.TouchAPIToken(h.ctx, live.tok.ID, base.Add(2*time.Minute)) })
	tok = must(h.s.ListAPITokens(h.ctx, f.requester.ID))(t)[0]
	if !tok.LastUsed.Equal(stored(base.Add(2 * time.Minute))) {
		t.Fatalf("last used %v after a touch two minutes later", tok.LastUsed)
	}
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.TouchAPIToken(h.ctx, "nope", now) }), store.ErrNotFound)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RevokeAPIToken(h.ctx, "nope", now) }), store.ErrNotFound)
	wantErr(t, try(h, func(tx store.Tx) (store.APIToken, error) {
		tok, _, err := tx.CreateAPIToken(h.ctx, "no-such-user", "x", time.Time{})
		return tok, err
	}), store.ErrInvalid)
}

// testAPITokenStorage reads the token table behind the store's back: the token must not
// be there in any form but its hash.
func testAPITokenStorage(t *testing.T, h *harness) {
	f := newFixture(t, h)
	var clear string
	var tok store.APIToken
	h.tx(t, func(tx store.Tx) error {
		var err error
		tok, clear, err = tx.CreateAPIToken(h.ctx, f.requester.ID, "cli", time.Time{})
		return err
	})
	secret := clear[strings.LastIndex(clear, "_")+1:]
	if len(secret) < 43 {
		t.Fatalf("secret part %q is too short for 256 bits", secret)
	}
	cols, rows := tableText(t, h, "api_tokens")
	wantHash := hashOf([]byte(clear))
	n, sawHash := len(rows), false
	for _, row := range rows {
		for i, s := range row {
			if strings.Contains(s, secret) || strings.Contains(s, clear) {
				t.Fatalf("column %s holds the token in clear", cols[i])
			}
			if s == wantHash {
				sawHash = true
			}
		}
	}
	if n != 1 || !sawHash {
		t.Fatalf("%d rows; SHA-256 of the token stored: %v", n, sawHash)
	}
	if _, _, err := h.s.LookupAPIToken(h.ctx, clear, time.Now()); err != nil {
		t.Fatalf("lookup of %s: %v", tok.ID, err)
	}
}
