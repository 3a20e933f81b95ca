package console_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// TestAnotherOrganisationsJob: an approver of Globex reaches nothing of an Acme job by
// its ID: not its page, not its live stream, not its PIN, not its decisions.
func TestAnotherOrganisationsJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	j := e.createJob("helen", "TOK-1")
	gary := e.browser()
	gary.signIn("gary")
	for _, path := range []string{"/ui/jobs/" + j.ID, "/ui/jobs/" + j.ID + "/events"} {
		if p := gary.get(path); p.status != http.StatusForbidden || strings.Contains(p.body, "TOK-1") {
			t.Errorf("GET %s by another organisation's approver: %d", path, p.status)
		}
	}
	if p := gary.get("/ui/jobs?q=" + j.ID); p.status == http.StatusSeeOther {
		t.Errorf("the job search leads another organisation's approver to the job")
	}
	for _, action := range []string{"approve", "reject", "cancel", "retry", "pin"} {
		p := gary.post("/ui/jobs/"+j.ID+"/"+action, gary.form("reason", "mine now", "binding_hash", j.BindingHash))
		if p.status < 400 {
			t.Errorf("POST %s by another organisation's approver: %d", action, p.status)
		}
	}
	d, err := e.svc.GetJob(e.ctx, e.admin, j.ID)
	if err != nil || d.State != jobs.StatePendingApproval || len(d.Decisions) != 0 {
		t.Fatalf("the job after another organisation's tries: %s, %d decisions, %v", d.State, len(d.Decisions), err)
	}
	// Once succeeded, its PIN is not his either.
	if _, err := e.svc.Approve(e.ctx, e.actor("alice"), j.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	e.succeed(j.ID, "482913")
	if p := gary.post("/ui/jobs/"+j.ID+"/pin", gary.form()); p.status != http.StatusForbidden || strings.Contains(p.body, "482913") {
		t.Fatalf("PIN to another organisation's approver: %d", p.status)
	}
	if p := gary.post("/ui/me/jobs/"+j.ID+"/pin", gary.form()); p.status < 400 || strings.Contains(p.body, "482913") {
		t.Fatalf("PIN through My tokens to another organisation's approver: %d", p.status)
	}
}

// TestSignedOutCookieReplayed: a session cookie kept after signing out opens nothing.
func TestSignedOutCookieReplayed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser()
	b.signIn("helen")
	u := mustURL(t, e.srv.URL+"/ui/")
	kept := b.c.Jar.Cookies(u)
	if p := b.post("/ui/signout", b.form()); p.status != http.StatusSeeOther {
		t.Fatalf("sign out: %d", p.status)
	}
	thief := e.browser()
	thief.c.Jar.SetCookies(u, kept)
	if p := thief.get("/ui/jobs"); p.status != http.StatusSeeOther || !strings.HasPrefix(p.location(), "/ui/signin") {
		t.Fatalf("the signed-out cookie: %d to %q", p.status, p.location())
	}
}

// TestHostileAgentFields: what agents report is shown as text, never as markup.
func TestHostileAgentFields(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const evil = `<script>alert(1)</script><img src=x onerror=alert(2)>`
	e.tx(func(tx store.Tx) error {
		if _, err := tx.CreateAgent(e.ctx, store.Agent{ID: "ws-evil", Hostname: evil, OS: evil, Version: evil}); err != nil {
			return err
		}
		_, err := tx.UpsertToken(e.ctx, store.Token{Serial: "TOK-EVIL", AgentID: "ws-evil", Label: evil, Flags: []byte(`{"initialized":true}`)})
		return err
	})
	b := e.browser()
	b.signIn("admin")
	for _, path := range []string{"/ui/agents", "/ui/tokens", "/ui/agents?q=ws-evil"} {
		p := b.get(path) // checkHTML refuses inline script
		if p.status != http.StatusOK || strings.Contains(p.body, "<img src=x") {
			t.Errorf("%s: %d, the hostile value is markup", path, p.status)
		}
	}
}

// TestJobStreamEndsWithSession: a job page left open in another tab stops following the
// job once its session is signed out: the next change is not sent.
func TestJobStreamEndsWithSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	j := e.createJob("helen", "TOK-1")
	b := e.browser()
	b.signIn("helen")
	s := b.stream(j.ID)
	if first := s.next(t); first.State != "pending_approval" {
		t.Fatalf("first event: %+v", first)
	}
	if p := b.post("/ui/signout", b.form()); p.status != http.StatusSeeOther {
		t.Fatalf("sign out: %d", p.status)
	}
	if _, err := e.svc.Approve(e.ctx, e.actor("alice"), j.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	rest := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(s.r)
		rest <- string(b)
	}()
	select {
	case got := <-rest:
		if strings.Contains(got, "event: job") {
			t.Errorf("the signed-out stream sent a change:\n%s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived its signed-out session")
	}
}
