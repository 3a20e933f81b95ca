package httpapi_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// TestListFilters: the lists' search filters, as the console's pages use them.
func TestListFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.world(t)
	ctx := context.Background()
	der := testCertificate(t)
	now := e.clock.now()
	err := e.st.InTx(ctx, func(tx store.Tx) error {
		if err := tx.RecordAgentSeen(ctx, "ws-2", now, true); err != nil {
			return err
		}
		for _, tok := range []store.Token{{Serial: "0042", AgentID: "ws-1", Label: "Ann", Model: "SoftHSM v2"},
			{Serial: "0043", AgentID: "ws-1", Label: "spare", Manufacturer: "Yubico", Model: "YubiKey 5"}} {
			if _, err := tx.UpsertToken(ctx, tok); err != nil {
				return err
			}
		}
		_, err := tx.AddCertificate(ctx, store.Certificate{Serial: "0a1b", HolderID: e.user(t, "ann").ID, Profile: "email-signing",
			TokenSerial: "0042", AgentID: "ws-1", Subject: "CN=Ann Martin", Issuer: "CN=tokenfleet test CA",
			NotBefore: now, NotAfter: now.Add(20 * 24 * time.Hour), DER: der})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each item's key: an agent's id, a token's or certificate's serial, a username.
	ids := func(path string) []string {
		t.Helper()
		var out []string
		for _, it := range ok[list[map[string]any]](t, e.as(t, "admin", "GET", path, nil), 200).Items {
			for _, k := range []string{"id", "serial", "username"} {
				if v, found := it[k].(string); found && (k != "id" || it["username"] == nil) {
					out = append(out, v)
					break
				}
			}
		}
		return out
	}
	for path, want := range map[string][]string{
		"/api/v1/agents?online=true":                 {"ws-2"},
		"/api/v1/agents?online=false&q=WS-":          {"ws-1"},
		"/api/v1/tokens?holder=ann":                  {"0042"},
		"/api/v1/tokens?model=yubi":                  {"0043"},
		"/api/v1/tokens?q=spa":                       {"0043"},
		"/api/v1/certificates?profile=email-signing": {"a1b"},
		"/api/v1/certificates?revoked=true":          nil,
		"/api/v1/certificates?expires_before=" + url.QueryEscape(now.Add(30*24*time.Hour).Format(time.RFC3339)): {"a1b"},
		"/api/v1/certificates?expires_before=" + url.QueryEscape(now.Add(10*24*time.Hour).Format(time.RFC3339)): nil,
		"/api/v1/users?q=martin": {"ann"},
	} {
		if got := ids(path); len(got) != len(want) || len(got) > 0 && got[0] != want[0] {
			t.Errorf("%s: %v, want %v", path, got, want)
		}
	}
	wantErr(t, e.as(t, "admin", "GET", "/api/v1/agents?online=maybe", nil), 400, "bad_request", "online")
	wantErr(t, e.as(t, "admin", "GET", "/api/v1/certificates?expires_before=tomorrow", nil), 400, "bad_request", "expires_before")
	wantErr(t, e.as(t, "admin", "GET", "/api/v1/tokens?holder=nobody", nil), 400, "bad_request", "holder")
}
