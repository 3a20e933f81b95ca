package console_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/tokenfleet/tokenfleet/coordinator/console"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

func TestSignInHeadersAndPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	j := e.createJob("helen", "TOK-1")
	b := e.browser()

	// Not signed in: every page leads to the sign-in page, coming back after.
	p := b.get("/ui/jobs/" + j.ID)
	if p.status != http.StatusSeeOther || p.location() != "/ui/signin?next="+url.QueryEscape("/ui/jobs/"+j.ID) {
		t.Fatalf("signed out: %d to %q", p.status, p.location())
	}
	// A wrong password is refused with the service's message, and no session starts.
	p = b.post("/ui/signin", url.Values{"username": {"helen"}, "password": {"wrong password here"}})
	if p.status != http.StatusUnauthorized || !strings.Contains(alerts(p.doc), "username or password") {
		t.Fatalf("wrong password: %d, alerts %q", p.status, alerts(p.doc))
	}
	// Wrong passwords lock the account for a while: the page says until when.
	for range service.DefaultLockoutAttempts {
		p = b.post("/ui/signin", url.Values{"username": {"sam"}, "password": {"wrong password here"}})
	}
	p = b.post("/ui/signin", url.Values{"username": {"sam"}, "password": {password}})
	if p.status != http.StatusTooManyRequests || !strings.Contains(alerts(p.doc), "locked") {
		t.Fatalf("locked account: %d %q", p.status, alerts(p.doc))
	}
	// The sign-in goes back only to console pages.
	p = b.post("/ui/signin", url.Values{"username": {"helen"}, "password": {password}, "next": {"https://evil.example/ui/"}})
	if p.status != http.StatusSeeOther || p.location() != "/ui/" {
		t.Fatalf("sign in with a foreign next: %d to %q", p.status, p.location())
	}
	for _, ck := range b.c.Jar.Cookies(mustURL(t, e.srv.URL+"/ui/")) {
		if ck.Name != "tokenfleet_session" {
			t.Errorf("cookie %s set", ck.Name)
		}
	}

	for _, path := range []string{"/ui/", "/ui/approvals", "/ui/request", "/ui/jobs", "/ui/jobs?state=pending_approval&holder=hugo",
		"/ui/jobs/" + j.ID, "/ui/signin", "/ui/no-such-page"} {
		p := b.get(path)
		want := http.StatusOK
		if path == "/ui/no-such-page" {
			want = http.StatusNotFound
		}
		if p.status != want {
			t.Errorf("%s: status %d, want %d: %s", path, p.status, want, alerts(p.doc))
		}
		h := p.header
		if h.Get("Content-Security-Policy") != console.ContentSecurityPolicy || !strings.Contains(console.ContentSecurityPolicy, "default-src 'none'") {
			t.Errorf("%s: CSP %q", path, h.Get("Content-Security-Policy"))
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" || h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: headers %v", path, h)
		}
		if p.doc == nil || byID(p.doc, "main") == nil {
			t.Errorf("%s: no main landmark", path)
		}
	}
	// Static files carry the CSP too, and the script is the page's only one.
	p = b.get("/ui/static/console.js")
	if p.status != http.StatusOK || p.header.Get("Content-Security-Policy") == "" || !strings.Contains(p.body, "EventSource") {
		t.Errorf("console.js: %d %v", p.status, p.header)
	}

	// The help desk's navigation has no audit log; the approver's has the queue.
	home := b.get("/ui/")
	if strings.Contains(home.body, `href="/ui/audit"`) || !strings.Contains(home.body, `href="/ui/request"`) {
		t.Errorf("help desk navigation:\n%s", home.body)
	}
	if !strings.Contains(text(byID(home.doc, "main")), j.ID) {
		t.Errorf("home does not list the help desk's request %s", j.ID)
	}
	if on, off := byID(home.doc, "agents-online"), byID(home.doc, "agents-offline"); on == nil || off == nil || text(on) != "0" || text(off) != "1" {
		t.Errorf("home's agent counts missing or wrong")
	}

	// Signing out ends the session: the old cookie no longer opens pages.
	p = b.post("/ui/signout", b.form())
	if p.status != http.StatusSeeOther || p.location() != "/ui/signin" {
		t.Fatalf("sign out: %d to %q", p.status, p.location())
	}
	if p := b.get("/ui/"); p.status != http.StatusSeeOther {
		t.Errorf("after signing out, home answers %d", p.status)
	}
}

func TestFormsRefusedWithoutTheirToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	j := e.createJob("helen", "TOK-1")
	alice := e.browser()
	alice.signIn("alice")
	other := e.browser()
	other.signIn("gary")

	approve := "/ui/jobs/" + j.ID + "/approve"
	cases := []struct {
		name      string
		form      url.Values
		fetchSite string
		want      string
	}{
		{"no token", url.Values{"reason": {"ok"}}, "same-origin", "without its anti-forgery token"},
		{"another session's token", url.Values{"reason": {"ok"}, console.CSRFField: {other.csrf}}, "same-origin", "not this session's"},
		{"cross-origin", alice.form("reason", "ok"), "cross-site", "another site"},
	}
	for _, c := range cases {
		p := alice.postWith(approve, c.form, c.fetchSite)
		if p.status != http.StatusForbidden || !strings.Contains(alerts(p.doc), c.want) {
			t.Errorf("%s: %d, alerts %q", c.name, p.status, alerts(p.doc))
		}
	}
	// Nothing was decided.
	d, err := e.svc.GetJob(e.ctx, e.admin, j.ID)
	if err != nil || d.State != jobs.StatePendingApproval || len(d.Decisions) != 0 {
		t.Fatalf("job after refused forms: %s, %d decisions, %v", d.State, len(d.Decisions), err)
	}
	// The sign-in form is origin-checked too.
	p := e.browser().postWith("/ui/signin", url.Values{"username": {"alice"}, "password": {password}}, "cross-site")
	if p.status != http.StatusForbidden {
		t.Errorf("cross-site sign-in: %d", p.status)
	}
	// With its token the same form works.
	p = alice.post(approve, alice.form("reason", "looks right", "binding_hash", j.BindingHash))
	if p.status != http.StatusSeeOther {
		t.Fatalf("approve with the token: %d %s", p.status, alerts(p.doc))
	}
}

func TestSessionIdleTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser()
	b.signIn("helen")
	e.clock.Add(service.DefaultSessionIdle + time.Minute)
	p := b.get("/ui/jobs")
	if p.status != http.StatusSeeOther || p.location() != "/ui/signin?next="+url.QueryEscape("/ui/jobs") {
		t.Fatalf("idle session: %d to %q", p.status, p.location())
	}
	p = b.get(p.location())
	if p.status != http.StatusOK || !strings.Contains(alerts(p.doc), "idle for more than 30m") {
		t.Fatalf("sign-in page after the timeout does not say why: %q", alerts(p.doc))
	}
	// The reason is said once.
	if p := b.get("/ui/signin"); strings.Contains(alerts(p.doc), "idle") {
		t.Errorf("the reason is shown again: %q", alerts(p.doc))
	}
	b.signIn("helen")
}

func TestApproveAndRejectThroughForms(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	j1 := e.createJob("sam", "TOK-1")
	j2 := e.createJob("helen", "TOK-2")

	// Sam requested j1 and is an approver: the queue does not offer it to him, and the
	// service refuses his approval as self-approval, shown on the queue.
	sam := e.browser()
	sam.signIn("sam")
	q := sam.get("/ui/approvals")
	if byID(q.doc, "job-"+j1.ID) != nil || byID(q.doc, "job-"+j2.ID) == nil {
		t.Errorf("sam's queue:\n%s", text(byID(q.doc, "main")))
	}
	p := sam.post("/ui/jobs/"+j1.ID+"/approve", sam.form("binding_hash", j1.BindingHash))
	if p.status != http.StatusForbidden || !strings.Contains(alerts(p.doc), "sam requested job "+j1.ID+" and may not decide on it") {
		t.Fatalf("self-approval: %d %q", p.status, alerts(p.doc))
	}

	// Gary approves for Globex: Acme's jobs are not in his queue, and his approval is refused.
	gary := e.browser()
	gary.signIn("gary")
	q = gary.get("/ui/approvals")
	if byID(q.doc, "job-"+j1.ID) != nil || !strings.Contains(q.body, "Nothing waits for your decision") {
		t.Errorf("gary's queue shows Acme's job")
	}
	p = gary.post("/ui/jobs/"+j1.ID+"/approve", gary.form())
	if p.status != http.StatusForbidden || !strings.Contains(alerts(p.doc), "organisation") {
		t.Fatalf("other organisation's approval: %d %q", p.status, alerts(p.doc))
	}

	// Alice sees what she approves, and approves j1.
	alice := e.browser()
	home := alice.signIn("alice")
	if aw := byID(home.doc, "awaiting"); aw == nil || !strings.Contains(text(aw.Parent), j1.ID) || byID(home.doc, "agents-online") != nil {
		t.Errorf("alice's home: awaiting %v, fleet shown %v", aw != nil, byID(home.doc, "agents-online") != nil)
	}
	if strings.Contains(home.body, `href="/ui/request"`) || !strings.Contains(home.body, `href="/ui/approvals"`) {
		t.Errorf("an approver's navigation offers requests or lacks approvals")
	}
	q = alice.get("/ui/approvals")
	card := byID(q.doc, "job-"+j1.ID)
	if card == nil {
		t.Fatalf("alice's queue lacks %s:\n%s", j1.ID, text(byID(q.doc, "main")))
	}
	for _, want := range []string{"hugo", "CN=Hugo Holder", "email:hugo@acme.example", "smartcard, version 1", "ws-0001", "reception-pc",
		"TOK-1", j1.BindingHash, "sam"} {
		if !strings.Contains(text(card), want) {
			t.Errorf("queue entry lacks %q:\n%s", want, text(card))
		}
	}
	p = alice.post("/ui/jobs/"+j1.ID+"/approve", alice.form("binding_hash", j1.BindingHash, "reason", "checked with Hugo"))
	if p.status != http.StatusSeeOther || p.location() != "/ui/approvals" {
		t.Fatalf("approve: %d to %q: %s", p.status, p.location(), alerts(p.doc))
	}
	q = alice.get(p.location())
	if !strings.Contains(alerts(q.doc), "Job "+j1.ID+" approved") || byID(q.doc, "job-"+j1.ID) != nil {
		t.Errorf("after approving: alerts %q", alerts(q.doc))
	}

	// A rejection needs a reason: the service says so; with one it rejects.
	p = alice.post("/ui/jobs/"+j2.ID+"/reject", alice.form("binding_hash", j2.BindingHash))
	if p.status == http.StatusSeeOther || !strings.Contains(alerts(p.doc), "reason") {
		t.Fatalf("reject without a reason: %d %q", p.status, alerts(p.doc))
	}
	p = alice.post("/ui/jobs/"+j2.ID+"/reject", alice.form("binding_hash", j2.BindingHash, "reason", "wrong workstation"))
	if p.status != http.StatusSeeOther {
		t.Fatalf("reject: %d %q", p.status, alerts(p.doc))
	}
	for id, want := range map[string]jobs.State{j1.ID: jobs.StateApproved, j2.ID: jobs.StateRejected} {
		d, err := e.svc.GetJob(e.ctx, e.admin, id)
		if err != nil || d.State != want {
			t.Errorf("job %s: %s, want %s (%v)", id, d.State, want, err)
		}
	}
	// A decision bound to a binding hash the job no longer has is refused.
	j3 := e.createJob("helen", "TOK-3")
	p = alice.post("/ui/jobs/"+j3.ID+"/approve", alice.form("binding_hash", strings.Repeat("0", 64)))
	if p.status != http.StatusConflict || alerts(p.doc) == "" {
		t.Errorf("approve with a stale binding hash: %d %q", p.status, alerts(p.doc))
	}
}

func TestRequestFormCreatesAJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser()
	b.signIn("helen")

	// The holder search works as a plain GET form.
	p := b.get("/ui/request?holder_q=HOLDER")
	holders := byID(p.doc, "holder-choices")
	if holders == nil || !strings.Contains(text(holders), "hugo") || strings.Contains(text(holders), "alice") {
		t.Fatalf("holder search for HOLDER:\n%s", text(holders))
	}
	if main := text(byID(p.doc, "main")); !strings.Contains(main, "reception-pc") || !strings.Contains(main, "offline") {
		t.Errorf("agent picker:\n%s", main)
	}
	key := inputValue(p.doc, "idempotency_key")
	if key == "" {
		t.Fatal("the form has no idempotency key")
	}
	form := b.form("kind", "issue", "holder", "hugo", "profile", "smartcard", "agent", "ws-0001", "token_serial", "", "idempotency_key", key)

	// A mistake is shown with the service's message, the form kept.
	bad := b.form("kind", "issue", "holder", "nobody", "profile", "smartcard", "agent", "ws-0001", "idempotency_key", key)
	p = b.post("/ui/request", bad)
	if p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), `no user named "nobody"`) {
		t.Fatalf("request for nobody: %d %q", p.status, alerts(p.doc))
	}

	p = b.post("/ui/request", form)
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.location(), "/ui/jobs/") {
		t.Fatalf("request: %d to %q: %s", p.status, p.location(), alerts(p.doc))
	}
	id := strings.TrimPrefix(p.location(), "/ui/jobs/")
	d, err := e.svc.GetJob(e.ctx, e.admin, id)
	if err != nil || d.Holder != "hugo" || d.Requester != "helen" || d.AgentID != "ws-0001" || d.State != jobs.StatePendingApproval {
		t.Fatalf("created job: %+v, %v", d.Job, err)
	}
	page := b.get(p.location())
	if st := byID(page.doc, "job-state"); st == nil || attr(st, "data-state") != "pending_approval" || !strings.Contains(alerts(page.doc), "awaits approval") {
		t.Errorf("job page after the request: %q", alerts(page.doc))
	}
	// The same form sent again (a double click) creates nothing more.
	b.csrf = form.Get(console.CSRFField)
	p = b.post("/ui/request", form)
	if p.location() != "/ui/jobs/"+id {
		t.Errorf("the form sent twice made %q, want the same job %s", p.location(), id)
	}

	// Another help desk operator may not cancel it (the service refuses); its requester may.
	other := e.browser()
	other.signIn("sam")
	p = other.post("/ui/jobs/"+id+"/cancel", other.form("reason", "not mine"))
	if p.status != http.StatusForbidden || alerts(p.doc) == "" {
		t.Fatalf("cancel by another: %d %q", p.status, alerts(p.doc))
	}
	p = b.post("/ui/jobs/"+id+"/cancel", b.form("reason", "wrong holder"))
	if p.status != http.StatusSeeOther {
		t.Fatalf("cancel: %d %q", p.status, alerts(p.doc))
	}
	if p = b.get(p.location()); attr(byID(p.doc, "job-state"), "data-state") != "cancelled" || strings.Contains(p.body, `data-test="cancel"`) {
		t.Errorf("after the cancel: state %q", attr(byID(p.doc, "job-state"), "data-state"))
	}
}

func TestJobEventsStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	j := e.createJob("helen", "TOK-1")
	b := e.browser()
	b.signIn("helen")

	s := b.stream(j.ID)
	first := s.next(t)
	if first.State != "pending_approval" || !strings.Contains(first.HTML, `id="job-live"`) {
		t.Fatalf("first event: %+v", first)
	}
	if _, err := e.svc.Approve(e.ctx, e.actor("alice"), j.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	// The approval is one change (the decision and the transition commit together).
	ev := s.next(t)
	if ev.State != "approved" || ev.StateLabel != "approved" || !strings.Contains(ev.HTML, "alice") {
		t.Fatalf("after the approval: %+v", ev)
	}
	// The agent's run: the last state arrives, intermediate ones may be dropped.
	e.succeed(j.ID, "482913")
	for ev.State != "succeeded" {
		ev = s.next(t)
	}
	if !strings.Contains(ev.HTML, "reveal-pin") {
		t.Errorf("the succeeded job's live part offers no PIN reveal to its requester")
	}
	// Someone who may not read the job gets no stream.
	gary := e.browser()
	gary.signIn("gary")
	if p := gary.get("/ui/jobs/" + j.ID + "/events"); p.status != http.StatusForbidden {
		t.Errorf("another organisation's approver streams the job: %d", p.status)
	}
	// A server shutting down ends the stream (the browser reconnects to the next one).
	close(e.stop)
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, s.r)
		ended <- err
	}()
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("stream ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived the console's stop")
	}

	if p := b.get("/ui/jobs/" + j.ID + "/events"); p.status != http.StatusServiceUnavailable {
		t.Errorf("a stream asked for after the stop: %d", p.status)
	}
}

func TestPINRevealedOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	j := e.createJob("helen", "TOK-1")
	if _, err := e.svc.Approve(e.ctx, e.actor("alice"), j.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	e.succeed(j.ID, "482913")
	b := e.browser()
	b.signIn("helen")
	p := b.get("/ui/jobs/" + j.ID)
	if !strings.Contains(text(byID(p.doc, "certs").Parent), "1a2b3c") {
		t.Errorf("the job page does not show the certificate it issued")
	}
	if byID(p.doc, "pin") != nil || !strings.Contains(text(byID(p.doc, "main")), "shown once") {
		t.Fatalf("job page before the reveal:\n%s", text(byID(p.doc, "main")))
	}
	p = b.post("/ui/jobs/"+j.ID+"/pin", b.form())
	pin := byID(p.doc, "pin")
	if p.status != http.StatusOK || pin == nil || text(pin) != "482913" || p.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("reveal: %d, pin %v, %v", p.status, pin != nil, p.header)
	}
	if !strings.Contains(text(byID(p.doc, "main")), "cannot be shown again") {
		t.Error("the revealed PIN comes without its warning")
	}
	if strings.Contains(p.body, "reveal-pin") || byID(p.doc, "pin-revealed") == nil {
		t.Error("the page that shows the PIN still offers to reveal it, or does not say it was shown")
	}
	if p = b.get("/ui/jobs/" + j.ID); strings.Contains(p.body, "reveal-pin") || byID(p.doc, "pin-revealed") == nil || strings.Contains(p.body, "482913") {
		t.Error("after the reveal, the job page offers it again, does not say it was shown, or shows the PIN")
	}
	p = b.post("/ui/jobs/"+j.ID+"/pin", b.form())
	if p.status != http.StatusConflict || byID(p.doc, "pin") != nil || !strings.Contains(alerts(p.doc), "already shown") {
		t.Fatalf("second reveal: %d %q", p.status, alerts(p.doc))
	}
	if strings.Contains(p.body, "482913") {
		t.Error("the second reveal shows the PIN")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestJobListFiltersAndPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Each request supersedes the one before (same holder, profile and agent): one stays
	// pending, the rest are superseded.
	var last service.Job
	for range console.PageSize + 5 {
		last = e.createJob("helen", "TOK-1")
	}
	b := e.browser()
	b.signIn("helen")

	rows := func(p page) int {
		n := 0
		walk(p.doc, func(n2 *html.Node) {
			if n2.Type == html.ElementNode && n2.Data == "tr" && n2.Parent != nil && n2.Parent.Data == "tbody" {
				n++
			}
		})
		return n
	}
	link := func(p page, rel string) string {
		href := ""
		walk(p.doc, func(n *html.Node) {
			if n.Type == html.ElementNode && n.Data == "a" && text(n) == rel {
				href = attr(n, "href")
			}
		})
		return href
	}
	p := b.get("/ui/jobs")
	if rows(p) != console.PageSize || link(p, "Next page") == "" || link(p, "First page") != "" {
		t.Fatalf("first page: %d rows, next %q", rows(p), link(p, "Next page"))
	}
	p = b.get(link(p, "Next page"))
	if rows(p) != 5 || link(p, "Next page") != "" || link(p, "First page") != "/ui/jobs" {
		t.Fatalf("second page: %d rows, first %q", rows(p), link(p, "First page"))
	}
	p = b.get("/ui/jobs?state=pending_approval&profile=smartcard&holder=hugo&agent=ws-0001")
	if rows(p) != 1 || !strings.Contains(text(byID(p.doc, "main")), last.ID) {
		t.Fatalf("filtered: %d rows", rows(p))
	}
	if p := b.get("/ui/jobs?state=superseded&cursor="); rows(p) != console.PageSize {
		t.Errorf("superseded: %d rows", rows(p))
	}
	// The search box opens a job by its ID, lists a holder's jobs, and says when it
	// finds neither.
	if p := b.get("/ui/jobs?q=" + last.ID); p.status != http.StatusSeeOther || p.location() != "/ui/jobs/"+last.ID {
		t.Errorf("search by ID: %d to %q", p.status, p.location())
	}
	if p := b.get("/ui/jobs?q=hugo&state=pending_approval"); rows(p) != 1 {
		t.Errorf("search by holder: %d rows", rows(p))
	}
	p = b.get("/ui/jobs?q=nobody")
	if p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), `no job with ID "nobody", and no holder of that username`) {
		t.Errorf("search for nothing: %d %q", p.status, alerts(p.doc))
	}
	if p := b.get("/ui/jobs?state=bogus"); p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "unknown state") {
		t.Errorf("unknown state: %d %q", p.status, alerts(p.doc))
	}
}
