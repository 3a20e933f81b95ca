package console_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// TestTokenLifeActions: the tokens page shows each token's life-cycle state; the help desk
// suspends, reinstates and declares a token lost there with a reason, and the certificate
// on it is held, released and revoked; a move the life cycle refuses, or a missing reason,
// is shown with the service's message; an approver has no such form and is refused.
func TestTokenLifeActions(t *testing.T) {
	t.Parallel()
	e := newPagesEnv(t)
	e.tx(func(tx store.Tx) error {
		_, err := tx.UpsertToken(e.ctx, store.Token{Serial: "TOK-L", AgentID: "ws-0001", Label: "hugo", Model: "Rutoken ECP"})
		return err
	})
	e.addCertificate("e5", "hugo", "fleet", "TOK-L", e.clock.Now().Add(100*24*time.Hour))
	revocation := func() (time.Time, int) {
		c, err := e.st.GetCertificate(e.ctx, "e5")
		if err != nil {
			t.Fatal(err)
		}
		return c.RevokedAt, c.RevocationReason
	}
	state := func(b *browser) string {
		return strings.TrimSpace(text(byTest(byID(b.get("/ui/tokens?q=TOK-L").doc, "token-TOK-L"), "state")))
	}

	helen := e.browser()
	helen.signIn("helen")
	if s := state(helen); s != "active" {
		t.Fatalf("state shown %q", s)
	}
	if !hasTest(helen.get("/ui/tokens").doc, "token-state") {
		t.Fatal("the help desk has no life-cycle form")
	}
	p := helen.post("/ui/tokens/TOK-L/state", helen.form("state", "suspended", "reason", "left at home", "back", "/ui/tokens?q=TOK-L"))
	if p.status != http.StatusSeeOther || p.location() != "/ui/tokens?q=TOK-L" {
		t.Fatalf("suspend: %d to %q: %s", p.status, p.location(), alerts(p.doc))
	}
	if at, reason := revocation(); at.IsZero() || reason != 6 || state(helen) != "suspended" {
		t.Errorf("suspended: certificate revoked %v reason %d, state %q", at, reason, state(helen))
	}
	p = helen.post("/ui/tokens/TOK-L/state", helen.form("state", "active", "reason", "back"))
	if p.status != http.StatusSeeOther {
		t.Fatalf("reinstate: %d %s", p.status, alerts(p.doc))
	}
	if at, _ := revocation(); !at.IsZero() || state(helen) != "active" {
		t.Errorf("reinstated: certificate revoked %v, state %q", at, state(helen))
	}
	// Refusals come back on the page with the service's words.
	if p := helen.post("/ui/tokens/TOK-L/state", helen.form("state", "lost", "reason", " ")); p.status != http.StatusBadRequest ||
		!strings.Contains(alerts(p.doc), "say why") {
		t.Errorf("no reason: %d %q", p.status, alerts(p.doc))
	}
	if p := helen.post("/ui/tokens/TOK-L/state", helen.form("state", "active", "reason", "fine")); p.status != http.StatusConflict ||
		!strings.Contains(alerts(p.doc), "cannot become active") {
		t.Errorf("reinstating an active token: %d %q", p.status, alerts(p.doc))
	}
	if p := helen.post("/ui/tokens/TOK-L/state", helen.form("state", "lost", "reason", "not found")); p.status != http.StatusSeeOther {
		t.Fatalf("lost: %d %s", p.status, alerts(p.doc))
	}
	if at, reason := revocation(); at.IsZero() || reason != 1 {
		t.Errorf("lost: certificate revoked %v reason %d", at, reason)
	}

	alice := e.browser()
	alice.signIn("alice")
	if hasTest(alice.get("/ui/tokens").doc, "token-state") {
		t.Error("an approver is offered the life-cycle form")
	}
	if p := alice.post("/ui/tokens/TOK-L/state", alice.form("state", "stolen", "reason", "x")); p.status != http.StatusForbidden ||
		!strings.Contains(alerts(p.doc), "manage_tokens") {
		t.Errorf("approver moves a token: %d %q", p.status, alerts(p.doc))
	}
}

// byTest finds the first element below n with this data-test attribute.
func byTest(n *html.Node, name string) *html.Node {
	var out *html.Node
	if n == nil {
		return nil
	}
	walk(n, func(c *html.Node) {
		if out == nil && c.Type == html.ElementNode && attr(c, "data-test") == name {
			out = c
		}
	})
	return out
}
