package console_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// rowsOf is the id of each table row of the page's main part with this id prefix.
func rowsOf(doc *html.Node, prefix string) []string {
	var out []string
	walk(doc, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "tr" && strings.HasPrefix(attr(n, "id"), prefix) {
			out = append(out, strings.TrimPrefix(attr(n, "id"), prefix))
		}
	})
	return out
}

// hasTest reports whether the page has an element with this data-test attribute.
func hasTest(doc *html.Node, name string) bool {
	found := false
	walk(doc, func(n *html.Node) {
		if n.Type == html.ElementNode && attr(n, "data-test") == name {
			found = true
		}
	})
	return found
}

func TestPagesByRole(t *testing.T) {
	t.Parallel()
	e := newPagesEnv(t)
	pages := []string{"/ui/agents", "/ui/tokens", "/ui/certificates", "/ui/rollouts", "/ui/audit", "/ui/profiles",
		"/ui/profiles/smartcard", "/ui/notifications", "/ui/recovery-certificates", "/ui/escrow"}
	// Who may open what, as the service's read rules have it; the navigation matches.
	refused := map[string][]string{
		"admin":  nil,
		"helen":  {"/ui/audit", "/ui/notifications"},
		"audrey": {"/ui/notifications"},
		"carl":   {"/ui/agents", "/ui/tokens", "/ui/audit", "/ui/notifications"},
		"rita":   {"/ui/audit", "/ui/notifications"},
	}
	for user, no := range refused {
		t.Run(user, func(t *testing.T) {
			t.Parallel()
			b := e.browser()
			home := b.signIn(user)
			for _, path := range pages {
				p := b.get(path)
				denied := false
				for _, n := range no {
					denied = denied || n == path
				}
				if denied {
					if p.status != http.StatusForbidden || alerts(p.doc) == "" {
						t.Errorf("%s opens %s: %d, alerts %q", user, path, p.status, alerts(p.doc))
					}
					if strings.Contains(home.body, `href="`+path+`"`) {
						t.Errorf("%s's navigation offers %s", user, path)
					}
					continue
				}
				if p.status != http.StatusOK {
					t.Errorf("%s opens %s: %d, alerts %q", user, path, p.status, alerts(p.doc))
				}
				if path != "/ui/profiles/smartcard" && !strings.Contains(home.body, `href="`+path+`"`) {
					t.Errorf("%s's navigation lacks %s", user, path)
				}
			}
		})
	}
}

func TestAgentsPage(t *testing.T) {
	t.Parallel()
	e := newPagesEnv(t)
	// 55 more agents: two pages. ws-0003 is online and sees a token.
	e.tx(func(tx store.Tx) error {
		for i := 2; i <= 56; i++ {
			id := fmt.Sprintf("ws-%04d", i)
			a := store.Agent{ID: id, Hostname: fmt.Sprintf("desk-%d.acme.example", i), Version: "1.4.2"}
			if i == 5 {
				a.State, a.Hostname = store.AgentPending, "new-laptop.acme.example"
			}
			if _, err := tx.CreateAgent(e.ctx, a); err != nil {
				return err
			}
		}
		if err := tx.RecordAgentSeen(e.ctx, "ws-0003", e.clock.Now(), true); err != nil {
			return err
		}
		_, err := tx.UpsertToken(e.ctx, store.Token{Serial: "TOK-3", AgentID: "ws-0003", Label: "hugo", Model: "Rutoken ECP"})
		return err
	})
	admin := e.browser()
	admin.signIn("admin")

	p := admin.get("/ui/agents")
	got := rowsOf(p.doc, "agent-")
	if len(got) != 50 || got[0] != "ws-0001" {
		t.Fatalf("first page: %d rows from %v", len(got), got[:min(3, len(got))])
	}
	next := ""
	walk(p.doc, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "a" && attr(n, "rel") == "next" {
			next = attr(n, "href")
		}
	})
	if next == "" {
		t.Fatal("no next page link")
	}
	if got := rowsOf(admin.get(next).doc, "agent-"); len(got) != 6 || got[5] != "ws-0056" {
		t.Fatalf("second page: %v", got)
	}
	row := text(byID(p.doc, "agent-ws-0003"))
	for _, want := range []string{"online", "TOK-3", "Rutoken ECP", "1.4.2", "active"} {
		if !strings.Contains(row, want) {
			t.Errorf("ws-0003's row lacks %q: %s", want, row)
		}
	}
	if !strings.Contains(text(byID(p.doc, "agent-ws-0002")), "offline") {
		t.Errorf("ws-0002 not offline: %s", text(byID(p.doc, "agent-ws-0002")))
	}

	for q, want := range map[string][]string{
		"presence=online":                        {"ws-0003"},
		"q=NEW-LAPTOP":                           {"ws-0005"},
		"state=pending":                          {"ws-0005"},
		"q=desk-1&presence=offline&state=active": {"ws-0010", "ws-0011", "ws-0012", "ws-0013", "ws-0014", "ws-0015", "ws-0016", "ws-0017", "ws-0018", "ws-0019"},
	} {
		if got := rowsOf(admin.get("/ui/agents?"+q).doc, "agent-"); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: %v, want %v", q, got, want)
		}
	}
	if p := admin.get("/ui/agents?presence=asleep"); p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "online or offline") {
		t.Errorf("bad presence: %d %q", p.status, alerts(p.doc))
	}

	// The administrator disables an agent with a reason, through the service: back to the
	// same filtered list, the agent disabled and the reason kept.
	back := "/ui/agents?q=desk-2"
	p = admin.post("/ui/agents/ws-0002/disable", admin.form("reason", "stolen laptop", "back", back))
	if p.status != http.StatusSeeOther || p.location() != back {
		t.Fatalf("disable: %d to %q: %s", p.status, p.location(), alerts(p.doc))
	}
	p = admin.get(back)
	if row := text(byID(p.doc, "agent-ws-0002")); !strings.Contains(row, "disabled") || !strings.Contains(row, "stolen laptop") ||
		!strings.Contains(alerts(p.doc), "ws-0002 disabled") {
		t.Errorf("after disabling: %s | %s", row, alerts(p.doc))
	}
	// A back field leading elsewhere is not followed.
	p = admin.post("/ui/agents/ws-0002/enable", admin.form("reason", "found", "back", "https://evil.example/ui/agents"))
	if p.status != http.StatusSeeOther || p.location() != "/ui/agents" {
		t.Errorf("enable: %d to %q", p.status, p.location())
	}
	// What the service refuses is shown with its message: approving needs broker
	// management, which this coordinator has not.
	p = admin.post("/ui/agents/ws-0005/approve", admin.form("reason", "ours", "back", "/ui/agents?state=pending"))
	if p.status != http.StatusServiceUnavailable || !strings.Contains(alerts(p.doc), "broker management") ||
		len(rowsOf(p.doc, "agent-")) != 1 || inputValue(p.doc, "reason") != "ours" {
		t.Errorf("approve refused: %d %q, rows %v", p.status, alerts(p.doc), rowsOf(p.doc, "agent-"))
	}

	// Reject a pending agent, remove an active one: both through the service, both listed
	// as removed with their reasons.
	for id, action := range map[string]string{"ws-0005": "reject", "ws-0004": "remove"} {
		if p := admin.post("/ui/agents/"+id+"/"+action, admin.form("reason", "not ours")); p.status != http.StatusSeeOther {
			t.Fatalf("%s %s: %d %q", action, id, p.status, alerts(p.doc))
		}
	}
	if got := rowsOf(admin.get("/ui/agents?state=removed").doc, "agent-"); strings.Join(got, " ") != "ws-0004 ws-0005" {
		t.Errorf("removed agents: %v", got)
	}
	if p := admin.post("/ui/agents/ws-0004/teleport", admin.form()); p.status != http.StatusNotFound {
		t.Errorf("unknown action: %d", p.status)
	}

	// The help desk reads agents but has no buttons, and a forged form is refused by the
	// service.
	helen := e.browser()
	helen.signIn("helen")
	p = helen.get("/ui/agents")
	if hasTest(p.doc, "agent-disable") || !hasTest(admin.get("/ui/agents").doc, "agent-disable") {
		t.Error("the help desk is offered agent actions, or the administrator is not")
	}
	p = helen.post("/ui/agents/ws-0003/remove", helen.form("reason", "why not"))
	if p.status != http.StatusForbidden || !strings.Contains(alerts(p.doc), "manage_agents") {
		t.Errorf("help desk removes an agent: %d %q", p.status, alerts(p.doc))
	}
	if a, _, err := e.svc.SearchAgents(e.ctx, e.admin, service.AgentQuery{Search: "ws-0003"}, service.Page{}); err != nil || a[0].State != store.AgentActive {
		t.Fatalf("ws-0003 after a refused removal: %+v %v", a, err)
	}
}

func TestTokensAndCertificatesPages(t *testing.T) {
	t.Parallel()
	e := newPagesEnv(t)
	now := e.clock.Now()
	e.tx(func(tx store.Tx) error {
		for _, tok := range []store.Token{
			{Serial: "TOK-A", AgentID: "ws-0001", Label: "hugo", Manufacturer: "Aktiv", Model: "Rutoken ECP"},
			{Serial: "TOK-B", AgentID: "ws-0001", Label: "spare", Manufacturer: "Yubico", Model: "YubiKey 5"},
		} {
			if _, err := tx.UpsertToken(e.ctx, tok); err != nil {
				return err
			}
		}
		return nil
	})
	e.addCertificate("a1", "hugo", "fleet", "TOK-A", now.Add(10*24*time.Hour))      // within fleet's 30 days
	e.addCertificate("b2", "hugo", "fleet", "TOK-A", now.Add(200*24*time.Hour))     // not yet
	e.addCertificate("c3", "alice", "smartcard", "TOK-B", now.Add(5*24*time.Hour))  // smartcard warns nothing: a week
	e.addCertificate("d4", "alice", "smartcard", "TOK-B", now.Add(-2*24*time.Hour)) // expired

	helen := e.browser()
	helen.signIn("helen")
	p := helen.get("/ui/tokens?holder=hugo")
	if got := rowsOf(p.doc, "token-"); strings.Join(got, " ") != "TOK-A" {
		t.Fatalf("hugo's tokens: %v", got)
	}
	if row := text(byID(p.doc, "token-TOK-A")); !strings.Contains(row, "a1") || !strings.Contains(row, "b2") || !strings.Contains(row, "10 days left (renew soon)") {
		t.Errorf("TOK-A's certificates: %s", row)
	}
	if got := rowsOf(helen.get("/ui/tokens?model=yubikey").doc, "token-"); strings.Join(got, " ") != "TOK-B" {
		t.Errorf("YubiKeys: %v", got)
	}
	if p := helen.get("/ui/tokens?holder=nobody"); p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), `no user named "nobody"`) {
		t.Errorf("unknown holder: %d %q", p.status, alerts(p.doc))
	}

	p = helen.get("/ui/certificates")
	expiring := map[string]string{}
	walk(p.doc, func(n *html.Node) {
		if n.Type == html.ElementNode && strings.HasPrefix(attr(n, "class"), "expiry") {
			for a := n.Parent; a != nil; a = a.Parent {
				if strings.HasPrefix(attr(a, "id"), "cert-") {
					expiring[strings.TrimPrefix(attr(a, "id"), "cert-")] = attr(n, "class")
				}
			}
		}
	})
	want := map[string]string{"a1": "expiry expiring", "b2": "expiry", "c3": "expiry expiring", "d4": "expiry expired"}
	if fmt.Sprint(expiring) != fmt.Sprint(want) {
		t.Errorf("expiry marks %v, want %v", expiring, want)
	}
	if hasTest(p.doc, "revoke") {
		t.Error("the help desk is offered revocation")
	}
	for q, want := range map[string]string{
		"profile=fleet":                   "b2 a1",
		"holder=alice&expires_within=30":  "d4 c3",
		"expires_within=30&profile=fleet": "a1",
		"token=TOK-B&status=valid":        "d4 c3",
	} {
		if got := rowsOf(helen.get("/ui/certificates?"+q).doc, "cert-"); strings.Join(got, " ") != want {
			t.Errorf("%s: %v, want %s", q, got, want)
		}
	}
	if p := helen.get("/ui/certificates?expires_within=soon"); p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "number of days") {
		t.Errorf("bad expires_within: %d %q", p.status, alerts(p.doc))
	}

	// The help desk cannot revoke: the service says why.
	p = helen.post("/ui/certificates/a1/revoke", helen.form("reason", "key_compromise"))
	if p.status != http.StatusForbidden || !strings.Contains(alerts(p.doc), "ca_operator") {
		t.Errorf("help desk revokes: %d %q", p.status, alerts(p.doc))
	}
	carl := e.browser()
	carl.signIn("carl")
	p = carl.get("/ui/certificates")
	if !hasTest(p.doc, "revoke") {
		t.Fatal("the CA operator has no revoke button")
	}
	p = carl.post("/ui/certificates/a1/revoke", carl.form("comment", "lost"))
	if p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "key_compromise") || inputValue(p.doc, "comment") != "lost" {
		t.Errorf("no reason: %d %q", p.status, alerts(p.doc))
	}
	p = carl.post("/ui/certificates/a1/revoke", carl.form("reason", "key_compromise", "comment", "token lost on a train", "back", "/ui/certificates?profile=fleet"))
	if p.status != http.StatusSeeOther || p.location() != "/ui/certificates?profile=fleet" {
		t.Fatalf("revoke: %d to %q: %s", p.status, p.location(), alerts(p.doc))
	}
	p = carl.get(p.location())
	if row := text(byID(p.doc, "cert-a1")); !strings.Contains(row, "revoked") || !strings.Contains(row, "key compromise") {
		t.Errorf("a1 after revocation: %s", row)
	}
	if got := rowsOf(carl.get("/ui/certificates?status=revoked").doc, "cert-"); strings.Join(got, " ") != "a1" {
		t.Errorf("revoked: %v", got)
	}
	es, _, err := e.svc.SearchAudit(e.ctx, e.admin, service.AuditQuery{Action: audit.ActionCertificateRevoked}, service.Page{})
	if err != nil || len(es) != 1 || es[0].Reason != "token lost on a train" || es[0].ActorName != "carl" {
		t.Fatalf("revocation audit: %+v %v", es, err)
	}
	// Twice is a conflict, said on the page.
	p = carl.post("/ui/certificates/a1/revoke", carl.form("reason", "superseded"))
	if p.status != http.StatusConflict || !strings.Contains(alerts(p.doc), "was revoked at") {
		t.Errorf("second revocation: %d %q", p.status, alerts(p.doc))
	}
}

func TestAuditPage(t *testing.T) {
	t.Parallel()
	e := newPagesEnv(t)
	for i := range 55 {
		if _, err := e.svc.CreateOrganization(e.ctx, e.admin, fmt.Sprintf("Org %02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	b := e.browser()
	b.signIn("audrey")
	p := b.get("/ui/audit?action=org.created")
	got := rowsOf(p.doc, "entry-")
	if len(got) != 50 || !hasTest(p.doc, "verify-audit") {
		t.Fatalf("first page of org.created: %d rows", len(got))
	}
	var next string
	walk(p.doc, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "a" && attr(n, "rel") == "next" {
			next = attr(n, "href")
		}
	})
	rest := rowsOf(b.get(next).doc, "entry-")
	// Two organisations of the scene and 55 more: 57, newest first across the pages.
	seqs := append(got, rest...)
	for i := 1; i < len(seqs); i++ {
		if a, b := atoi(t, seqs[i-1]), atoi(t, seqs[i]); a <= b {
			t.Fatalf("entry %d listed before entry %d", a, b)
		}
	}
	if len(rest) != 7 {
		t.Fatalf("second page %v", rest)
	}
	if got := rowsOf(b.get("/ui/audit?actor=carl").doc, "entry-"); len(got) != 0 {
		t.Errorf("carl did nothing yet: %v", got)
	}
	p = b.get("/ui/audit?actor=admin&action=user.created")
	if got := rowsOf(p.doc, "entry-"); len(got) != 6 || !strings.Contains(text(byID(p.doc, "entry-"+got[0])), "admin") {
		t.Errorf("users created by admin: %v", got)
	}

	// Verify: intact, with the checkpoint.
	cp, err := e.cps.Make(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	p = b.post("/ui/audit/verify", b.form())
	res := byID(p.doc, "audit-verify-result")
	if p.status != http.StatusOK || res == nil || attr(res, "data-verified") != "true" || !strings.Contains(text(res), "intact") ||
		!strings.Contains(text(res), fmt.Sprintf("the latest of entry %d", cp.Seq)) {
		t.Fatalf("verify: %d %q", p.status, text(res))
	}
	// An entry edited behind the coordinator's back is found and named.
	e.tamper("DROP TRIGGER audit_log_no_update", "UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 5")
	p = b.post("/ui/audit/verify", b.form("back", "/ui/audit?action=org.created"))
	res = byID(p.doc, "audit-verify-result")
	if res == nil || attr(res, "data-verified") != "false" || !strings.Contains(text(res), "entry 5 edited") {
		t.Fatalf("tampered: %q", text(res))
	}
	if len(rowsOf(p.doc, "entry-")) != 50 {
		t.Errorf("the filtered list is not shown under the result")
	}
	// Each verification is in the log.
	if got := rowsOf(b.get("/ui/audit?action="+audit.ActionAuditVerified).doc, "entry-"); len(got) != 2 {
		t.Errorf("audit.verified entries: %v", got)
	}
	// The help desk may not verify; the service says so.
	helen := e.browser()
	helen.signIn("helen")
	p = helen.post("/ui/audit/verify", helen.form())
	if p.status != http.StatusForbidden || byID(p.doc, "audit-verify-result") != nil {
		t.Errorf("help desk verifies: %d %q", p.status, alerts(p.doc))
	}
}

func TestProfilesPages(t *testing.T) {
	t.Parallel()
	e := newPagesEnv(t)
	helen := e.browser()
	helen.signIn("helen")
	p := helen.get("/ui/profiles")
	if got := rowsOf(p.doc, "profile-"); strings.Join(got, " ") != "fleet smartcard" {
		t.Fatalf("profiles: %v", got)
	}
	stored, err := e.svc.GetProfile(e.ctx, e.admin, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	p = helen.get("/ui/profiles/fleet")
	if text(byID(p.doc, "profile-hash")) != stored.ContentHash || text(byID(p.doc, "profile-text")) != strings.Join(strings.Fields(fleetProfile), " ") {
		t.Errorf("fleet as shown: hash %q, text %q", text(byID(p.doc, "profile-hash")), text(byID(p.doc, "profile-text")))
	}
	if hasTest(p.doc, "apply-profile") {
		t.Error("the help desk may edit profiles")
	}
	edited := strings.Replace(fleetProfile, "expiry_warning: 30d", "expiry_warning: 14d", 1)
	p = helen.post("/ui/profiles/fleet", helen.form("content", edited))
	if p.status != http.StatusForbidden || !strings.Contains(alerts(p.doc), "manage_profiles") {
		t.Errorf("help desk edits: %d %q", p.status, alerts(p.doc))
	}

	admin := e.browser()
	admin.signIn("admin")
	// A bad edit: refused with the field's path, the text kept, nothing stored changed.
	bad := strings.Replace(fleetProfile, "validity: 365d", "validity: 10d", 1)
	p = admin.post("/ui/profiles/fleet", admin.form("content", bad))
	if p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "expiry_warning") {
		t.Fatalf("bad edit: %d %q", p.status, alerts(p.doc))
	}
	var area string
	walk(p.doc, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "textarea" && n.FirstChild != nil {
			area = n.FirstChild.Data
		}
	})
	if area != bad {
		t.Errorf("the refused text is not kept:\n%s", area)
	}
	if now, err := e.svc.GetProfile(e.ctx, e.admin, "fleet"); err != nil || now.Version != stored.Version || now.ContentHash != stored.ContentHash {
		t.Fatalf("after a refused edit: version %d, %v", now.Version, err)
	}
	// A good edit makes version 2.
	p = admin.post("/ui/profiles/fleet", admin.form("content", edited))
	if p.status != http.StatusSeeOther || p.location() != "/ui/profiles/fleet" {
		t.Fatalf("edit: %d to %q: %s", p.status, p.location(), alerts(p.doc))
	}
	p = admin.get("/ui/profiles/fleet")
	if !strings.Contains(alerts(p.doc), "fleet is now version 2") || !strings.Contains(text(byID(p.doc, "main")), "warned 14d before expiry") {
		t.Errorf("after the edit: %q", alerts(p.doc))
	}
	// A new profile from the list page.
	newer := strings.Replace(fleetProfile, "name: fleet", "name: vpn", 1)
	if p = admin.post("/ui/profiles", admin.form("content", newer)); p.status != http.StatusSeeOther || p.location() != "/ui/profiles/vpn" {
		t.Errorf("new profile: %d to %q: %s", p.status, p.location(), alerts(p.doc))
	}
	if p = admin.post("/ui/profiles", admin.form("content", "  ")); p.status != http.StatusBadRequest {
		t.Errorf("empty document: %d", p.status)
	}
}

func TestRolloutPages(t *testing.T) {
	t.Parallel()
	e := newPagesEnv(t)
	e.tx(func(tx store.Tx) error {
		for i := range 4 {
			if _, err := tx.UpsertToken(e.ctx, store.Token{Serial: fmt.Sprintf("R-%d", i), AgentID: "ws-0001", Model: "alpha"}); err != nil {
				return err
			}
		}
		return nil
	})
	spec := rollout.Spec{Name: "inventory-alpha",
		Template: rollout.Template{Kind: jobs.KindInventory, Profile: "fleet", Holder: "hugo"},
		Selector: rollout.Selector{Tokens: rollout.TokenSelector{Models: []string{"alpha"}}},
		Plan:     rollout.Plan{Canary: rollout.Canary{Count: 1}, Waves: []float64{100}},
		Brake:    rollout.Brake{ThresholdPercent: 25, MinExecuted: 2}}
	v, err := e.svc.CreateRollout(e.ctx, e.actor("rita"), service.RolloutRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	rita := e.browser()
	rita.signIn("rita")
	p := rita.get("/ui/rollouts?state=pending_approval")
	if got := rowsOf(p.doc, "rollout-"); strings.Join(got, " ") != v.ID {
		t.Fatalf("pending rollouts: %v", got)
	}
	if got := rowsOf(rita.get("/ui/rollouts?state=running").doc, "rollout-"); len(got) != 0 {
		t.Errorf("running rollouts: %v", got)
	}
	if p := rita.get("/ui/rollouts?state=sleeping"); p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "unknown state") {
		t.Errorf("bad state: %d %q", p.status, alerts(p.doc))
	}
	p = rita.get("/ui/rollouts/" + v.ID)
	main := text(byID(p.doc, "main"))
	for _, want := range []string{"pending approval", "1 target(s)", "25%", "Not tripped", v.BindingHash, "canary"} {
		if !strings.Contains(main, want) {
			t.Errorf("rollout page lacks %q: %s", want, main)
		}
	}
	if hasTest(p.doc, "approve") || !hasTest(p.doc, "rollout-abort") {
		t.Error("the owner is offered approval, or no abort")
	}
	// Its creator may not approve it even by forging the form: the service's message.
	p = rita.post("/ui/rollouts/"+v.ID+"/approve", rita.form("binding_hash", v.BindingHash))
	if p.status == http.StatusSeeOther || alerts(p.doc) == "" {
		t.Errorf("owner approves: %d %q", p.status, alerts(p.doc))
	}

	alice := e.browser()
	alice.signIn("alice")
	p = alice.get("/ui/rollouts/" + v.ID)
	if !hasTest(p.doc, "approve") || !strings.Contains(text(byID(p.doc, "main")), "You approve exactly: binding hash "+v.BindingHash) {
		t.Fatalf("approver's page: %s", text(byID(p.doc, "main")))
	}
	// An approval bound to another hash is refused, with the service's message.
	p = alice.post("/ui/rollouts/"+v.ID+"/approve", alice.form("binding_hash", strings.Repeat("0", 64)))
	if p.status != http.StatusConflict || !strings.Contains(strings.ToLower(alerts(p.doc)), "binding") {
		t.Errorf("stale binding: %d %q", p.status, alerts(p.doc))
	}
	p = alice.post("/ui/rollouts/"+v.ID+"/approve", alice.form("binding_hash", v.BindingHash, "reason", "inventory is harmless"))
	if p.status != http.StatusSeeOther || p.location() != "/ui/rollouts/"+v.ID {
		t.Fatalf("approve: %d %q", p.status, alerts(p.doc))
	}
	if _, err := e.svc.AdvanceRollouts(e.ctx); err != nil {
		t.Fatal(err)
	}
	p = rita.get("/ui/rollouts/" + v.ID)
	if st := text(byID(p.doc, "rollout-state")); st != "running" || !hasTest(p.doc, "rollout-pause") {
		t.Fatalf("after approval: %q", st)
	}
	if got := text(byID(p.doc, "main")); !strings.Contains(got, "1 of 1: alice") {
		t.Errorf("approvals not shown: %s", got)
	}
	p = rita.post("/ui/rollouts/"+v.ID+"/pause", rita.form("reason", "lunch"))
	if p.status != http.StatusSeeOther {
		t.Fatalf("pause: %d %q", p.status, alerts(p.doc))
	}
	p = rita.get("/ui/rollouts/" + v.ID)
	if !strings.Contains(text(byID(p.doc, "main")), "lunch") || !hasTest(p.doc, "rollout-resume") {
		t.Errorf("paused page: %s", text(byID(p.doc, "main")))
	}
	// Pausing twice is refused with the service's message.
	if p = rita.post("/ui/rollouts/"+v.ID+"/pause", rita.form("reason", "again")); p.status < 400 || alerts(p.doc) == "" {
		t.Errorf("second pause: %d %q", p.status, alerts(p.doc))
	}
	if p = rita.post("/ui/rollouts/"+v.ID+"/resume", rita.form("reason", "back")); p.status != http.StatusSeeOther {
		t.Errorf("resume: %d %q", p.status, alerts(p.doc))
	}
	if st := text(byID(rita.get("/ui/rollouts/"+v.ID).doc, "rollout-state")); st != "running" {
		t.Errorf("after resume: %q", st)
	}
	if p = rita.post("/ui/rollouts/"+v.ID+"/abort", rita.form("reason", "done for today")); p.status != http.StatusSeeOther {
		t.Errorf("abort: %d %q", p.status, alerts(p.doc))
	}
	if st := text(byID(rita.get("/ui/rollouts/"+v.ID).doc, "rollout-state")); st != "aborted" {
		t.Errorf("after abort: %q", st)
	}

	// Another rollout, rejected: a reason is required, and the service says so.
	spec.Name = "inventory-again"
	v2, err := e.svc.CreateRollout(e.ctx, e.actor("rita"), service.RolloutRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if p = alice.post("/ui/rollouts/"+v2.ID+"/reject", alice.form("binding_hash", v2.BindingHash)); p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "reason") {
		t.Errorf("reject without a reason: %d %q", p.status, alerts(p.doc))
	}
	if p = alice.post("/ui/rollouts/"+v2.ID+"/reject", alice.form("binding_hash", v2.BindingHash, "reason", "not this week")); p.status != http.StatusSeeOther {
		t.Fatalf("reject: %d %q", p.status, alerts(p.doc))
	}
	if st := text(byID(alice.get("/ui/rollouts/"+v2.ID).doc, "rollout-state")); st != "rejected" {
		t.Errorf("after rejection: %q", st)
	}
}

func TestNotificationsPage(t *testing.T) {
	t.Parallel()
	e := newPagesEnv(t)
	now := e.clock.Now()
	var ids []string
	e.tx(func(tx store.Tx) error {
		_, err := tx.AddNotifications(e.ctx, []store.Notification{
			{DedupeKey: "n1", Event: "request_decided", Channel: store.ChannelEmail, Recipient: "hugo@acme.example", Subject: "Decided", Body: []byte("x"), NextAttempt: now},
			{DedupeKey: "n2", Event: "request_decided", Channel: store.ChannelWebhook, Recipient: "siem", Subject: "Decided", Body: []byte("{}"), NextAttempt: now},
		})
		return err
	})
	ns, _, err := e.svc.ListNotifications(e.ctx, e.admin, service.NotificationQuery{}, service.Page{})
	if err != nil || len(ns) != 2 {
		t.Fatalf("notifications %+v %v", ns, err)
	}
	for _, n := range ns {
		ids = append(ids, n.ID)
	}
	admin := e.browser()
	admin.signIn("admin")
	p := admin.get("/ui/notifications")
	if got := rowsOf(p.doc, "notification-"); len(got) != 2 || !strings.Contains(text(byID(p.doc, "notification-"+ids[0])), "pending") {
		t.Fatalf("notifications: %v", got)
	}
	if got := rowsOf(admin.get("/ui/notifications?channel=webhook").doc, "notification-"); len(got) != 1 {
		t.Errorf("webhooks: %v", got)
	}
	if got := rowsOf(admin.get("/ui/notifications?state=failed").doc, "notification-"); len(got) != 0 {
		t.Errorf("given up: %v", got)
	}
	if p := admin.get("/ui/notifications?state=lost"); p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "pending, sent or failed") {
		t.Errorf("bad state: %d %q", p.status, alerts(p.doc))
	}
	helen := e.browser()
	helen.signIn("helen")
	if p := helen.get("/ui/notifications"); p.status != http.StatusForbidden {
		t.Errorf("help desk reads notifications: %d", p.status)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
