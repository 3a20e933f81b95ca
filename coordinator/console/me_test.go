package console_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// TestMyTokens: a holder without a role signs in and sees "My tokens": their token and
// certificate, but not another holder's. Without self_service in the profile they are
// offered nothing and a request is refused; with it they reveal the PIN their job set once,
// request a renewal (which awaits approval) and report the token lost, and may not report
// someone else's.
func TestMyTokens(t *testing.T) {
	t.Parallel()
	e := newPagesEnv(t)
	if err := e.svc.SetPassword(e.ctx, e.admin, "hugo", password); err != nil {
		t.Fatal(err)
	}
	report := func(serials ...string) { // as the agent reports its tokens
		e.tx(func(tx store.Tx) error {
			for _, s := range serials {
				if _, err := tx.UpsertToken(e.ctx, store.Token{Serial: s, AgentID: "ws-0001", Flags: []byte(`{"initialized":true}`), LastSeen: e.clock.Now()}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	report("TOK-A")
	e.addCertificate("a1", "alice", "smartcard", "TOK-A", e.clock.Now().Add(100*24*time.Hour))
	j := e.createJob("helen", "TOK-H")
	if _, err := e.svc.Approve(e.ctx, e.actor("alice"), j.ID, service.DecisionRequest{Reason: "ok"}); err != nil {
		t.Fatal(err)
	}
	e.succeed(j.ID, "73905142")
	report("TOK-H")

	hugo := e.browser()
	hugo.signIn("hugo")
	me := hugo.get("/ui/me")
	if me.status != http.StatusOK || !strings.Contains(me.body, `href="/ui/me"`) || byID(me.doc, "token-TOK-H") == nil || byID(me.doc, "token-TOK-A") != nil {
		t.Fatalf("my tokens: %d\n%s", me.status, me.body)
	}
	if !strings.Contains(text(byID(me.doc, "token-TOK-H")), "1a2b3c") {
		t.Errorf("the certificate is not shown: %s", text(byID(me.doc, "token-TOK-H")))
	}
	for _, b := range []string{"self-renew", "self-reveal-pin", "self-unblock"} {
		if hasTest(me.doc, b) {
			t.Errorf("%s offered by a profile without self_service", b)
		}
	}
	f := hugo.form("profile", "smartcard", "agent", "ws-0001", "idempotency_key", "k1")
	if p := hugo.post("/ui/me/tokens/TOK-H/renew", f); p.status != http.StatusForbidden || !strings.Contains(alerts(p.doc), "self_service.request") {
		t.Fatalf("renewal without self_service: %d %q", p.status, alerts(p.doc))
	}
	if p := hugo.post("/ui/me/jobs/"+j.ID+"/pin", hugo.form()); p.status != http.StatusForbidden || byID(p.doc, "pin") != nil {
		t.Fatalf("PIN without self_service: %d %q", p.status, alerts(p.doc))
	}

	if _, err := e.svc.ApplyProfiles(e.ctx, e.admin, []byte(testProfile+"self_service: {request: true, reveal_pin: true, unblock_pin: true}\n---\n"+fleetProfile)); err != nil {
		t.Fatal(err)
	}
	me = hugo.get("/ui/me")
	for _, b := range []string{"self-renew", "self-reveal-pin", "self-unblock", "self-report"} {
		if !hasTest(me.doc, b) {
			t.Errorf("%s not offered", b)
		}
	}
	p := hugo.post("/ui/me/jobs/"+j.ID+"/pin", hugo.form("token", "TOK-H"))
	if p.status != http.StatusOK || strings.TrimSpace(text(byID(p.doc, "pin"))) != "73905142" {
		t.Fatalf("reveal: %d %q", p.status, alerts(p.doc))
	}
	if p := hugo.post("/ui/me/jobs/"+j.ID+"/pin", hugo.form("token", "TOK-H")); p.status != http.StatusConflict || byID(p.doc, "pin") != nil {
		t.Fatalf("second reveal: %d %q", p.status, alerts(p.doc))
	}
	if hasTest(hugo.get("/ui/me").doc, "self-reveal-pin") {
		t.Error("the reveal is offered after the PIN was shown")
	}

	f = hugo.form("profile", "smartcard", "agent", "ws-0001", "idempotency_key", "k2")
	if p := hugo.post("/ui/me/tokens/TOK-H/renew", f); p.status != http.StatusSeeOther || p.location() != "/ui/me" {
		t.Fatalf("renewal: %d %q", p.status, alerts(p.doc))
	}
	hugoID := e.actor("hugo").ID()
	js, _, err := e.st.ListJobs(e.ctx, store.JobFilter{HolderID: hugoID, Kinds: []jobs.Kind{jobs.KindRenew}}, store.Page{})
	if err != nil || len(js) != 1 || js[0].State != jobs.StatePendingApproval || js[0].RequesterID != hugoID {
		t.Fatalf("renew jobs: %+v, %v", js, err)
	}
	// The page again with the same key makes no second job.
	if p := hugo.post("/ui/me/tokens/TOK-H/renew", f); p.status != http.StatusSeeOther {
		t.Fatalf("renewal again: %d %q", p.status, alerts(p.doc))
	}
	if js, _, _ := e.st.ListJobs(e.ctx, store.JobFilter{HolderID: hugoID, Kinds: []jobs.Kind{jobs.KindRenew}}, store.Page{}); len(js) != 1 {
		t.Fatalf("%d renew jobs", len(js))
	}

	if p := hugo.post("/ui/me/tokens/TOK-A/report", hugo.form("state", "lost", "reason", "found it")); p.status != http.StatusForbidden ||
		!strings.Contains(alerts(p.doc), "not yours") {
		t.Fatalf("another's token: %d %q", p.status, alerts(p.doc))
	}
	if p := hugo.post("/ui/me/tokens/TOK-H/report", hugo.form("state", "retired", "reason", "done")); p.status != http.StatusForbidden {
		t.Fatalf("retire: %d %q", p.status, alerts(p.doc))
	}
	if p := hugo.post("/ui/me/tokens/TOK-H/report", hugo.form("state", "lost", "reason", "lost on the train")); p.status != http.StatusSeeOther {
		t.Fatalf("lost: %d %q", p.status, alerts(p.doc))
	}
	if s := strings.TrimSpace(text(byTest(byID(hugo.get("/ui/me").doc, "token-TOK-H"), "state"))); s != "lost" {
		t.Fatalf("state shown %q", s)
	}
}
