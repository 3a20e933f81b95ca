//go:build cgo

package e2e_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/oidc/oidctest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// The console's people, besides those of every system: an auditor, a help-desk operator who
// is also an approver (to try approving her own request), and an approver of another
// organisation.
const (
	auditor       = "audrey"
	helpApprover  = "hanna"
	otherOrg      = "globex"
	otherApprover = "bert"
)

// consolePassword is the password of every person in the console's tests.
const consolePassword = "Correct-Horse-Battery-9"

// alert is the selector of the console's flash and error messages.
const alert = `[role="alert"]`

// newConsoleSite starts a coordinator with the console on a broker vhost of its own, with no
// agent running (approved jobs wait in the agent's queue: the refusals need no agent), with
// the people of every system, those of the console's tests and their passwords, and an
// enrolled agent, ws-01.
func newConsoleSite(t *testing.T, configure func(*coordinator.Config)) *system {
	t.Helper()
	s := &system{t: t, record: newRecord(t)}
	s.broker = testenv.NewBroker(t)
	s.startCoordinator(coordinatortest.Options{Configure: configure})
	s.setUp()
	s.addConsolePeople()
	s.ctl(s.admin, "agent", "add", "ws-01", "--hostname", "ws-01.acme.example")
	return s
}

// addConsolePeople adds the console's people, without passwords: each test sets those it
// signs in with (a password hash costs about a second).
func (s *system) addConsolePeople() {
	s.t.Helper()
	s.ctl(s.admin, "user", "create", auditor, "--name", "Audrey Auditor", "--org", org, "--role", "auditor")
	s.ctl(s.admin, "user", "create", helpApprover, "--name", "Hanna Helpdesk", "--org", org, "--role", "helpdesk", "--role", "approver")
	s.ctl(s.admin, "org", "create", otherOrg)
	s.ctl(s.admin, "user", "create", otherApprover, "--name", "Bert Approver", "--org", otherOrg, "--role", "approver")
}

// setPasswords sets people's console password (consolePassword) as an administrator does,
// with tokenfleetctl user password (the password on its standard input).
func (s *system) setPasswords(usernames ...string) {
	s.t.Helper()
	for _, u := range usernames {
		if r := s.ctlRunInput(s.admin, consolePassword+"\n", "user", "password", u); r.code != ctl.ExitOK {
			s.t.Fatalf("tokenfleetctl user password %s: exit status %d\n%s%s", u, r.code, r.stdout, r.stderr)
		}
	}
}

// consoleOn turns the console on (the coordinator serves it under /ui on the API's
// listener; the tests reach it directly, not through the proxy that checks API responses).
func consoleOn(c *coordinator.Config) { c.Console.Enabled = true }

// signIn signs in with a password on the sign-in page and waits for the page it leads to.
func (b *browser) signIn(username, password string) {
	b.t.Helper()
	b.open("/ui/signin")
	b.fill("username", username)
	b.fill("password", password)
	b.clickAndLoad("signin")
	if p := b.path(); strings.HasPrefix(p, "/ui/signin") {
		b.fail("sign in as "+username, fmt.Errorf("still on the sign-in page (%s)", p))
	}
}

// choose picks the radio button of that name and value.
func (b *browser) choose(name, value string) {
	b.t.Helper()
	b.clickSel(fmt.Sprintf(`input[type=radio][name=%q][value=%q]`, name, value))
}

var jobPath = regexp.MustCompile(`^/ui/jobs/([0-9A-Za-z]+)$`)

// TestConsoleIssue: the whole issue of a token in the console, in real Chromium, with a
// real agent on SoftHSM2. The help-desk operator signs in and requests a token for Alice at
// the workstation; the approver signs in and finds it in the queue with what she approves
// (holder, subject, profile, agent, binding hash) and approves; the operator's job page,
// open all along, follows the agent's progress live (the state and the steps change without
// a reload) until it succeeds; the PIN is revealed once, logs in to the token, and a second reveal
// is refused; the auditor verifies the audit log. Every page is checked with axe-core and
// photographed; no page writes an error to the console.
func TestConsoleIssue(t *testing.T) {
	s := newSystem(t, systemOptions{perAgentUsers: true, configure: consoleOn})
	s.addConsolePeople()
	s.setPasswords(operator, approver, auditor)
	id := testenv.UniqueUser("ws-console-")
	s.enrol(id)
	s.startAgent(id, agentOptions{})
	shots := newShots(t)
	url := s.coord.DirectURL

	// The operator requests the token.
	olga := newBrowser(t, operator, url, shots)
	olga.signIn(operator, consolePassword)
	wantSessionCookie(t, olga)
	olga.axe("home")
	olga.screenshot("home")
	olga.open("/ui/request")
	// The holder list filters as she types (the page's script).
	olga.typeInto("#holder-filter-input", "Alice H")
	olga.waitJS("the holders filtered", `(() => {
		const shown = (v) => !document.querySelector('input[name="holder"][value="' + v + '"]').closest("label").hidden;
		return shown("alice") && !shown("arne") && !shown("olga");
	})()`)
	olga.choose("holder", holder)
	olga.fill("profile", profileName)
	olga.choose("agent", id)
	olga.axe("request")
	olga.screenshot("request")
	olga.sentRequests() // from here on, what the request and the job's page send
	olga.clickAndLoad("submit-request")
	m := jobPath.FindStringSubmatch(olga.path())
	if m == nil {
		olga.fail("request a token", fmt.Errorf("landed on %s, not a job's page", olga.path()))
	}
	jobID := m[1]
	d := s.job(jobID)
	if d.State != jobs.StatePendingApproval || d.Holder != holder || d.Requester != operator || d.Agent != id {
		t.Fatalf("the requested job: state %s, holder %s, requester %s, agent %s", d.State, d.Holder, d.Requester, d.Agent)
	}
	olga.waitJS("the job pending approval", `document.querySelector("#job-state").dataset.state === "pending_approval"`)
	olga.axe("job pending approval")
	olga.screenshot("job-pending")
	olga.watchText("#job-state")

	// The approver finds it in the queue, with what she approves, and approves.
	arne := newBrowser(t, approver, url, shots)
	arne.signIn(approver, consolePassword)
	arne.open("/ui/approvals")
	card := "#job-" + jobID
	for _, want := range []string{holder, "CN=Alice Holder", profileName, id, d.BindingHash, operator} {
		arne.waitText(card, want)
	}
	arne.axe("approvals")
	arne.screenshot("approvals")
	arne.clickLoadSel(card + " " + byTest("approve"))
	arne.waitVisible(alert)
	arne.screenshot("approved")

	// The operator's page follows the job to its end, live.
	olga.waitJS("the job to succeed", `document.querySelector("#job-state").dataset.state === "succeeded"`)
	d = s.waitJob(jobID, jobs.StateSucceeded)
	for _, st := range d.Steps { // the live part of the page shows every step the agent reported
		olga.waitText("#job-live", strings.ReplaceAll(string(st.Step), "_", " "))
	}
	seen, live := olga.seenTexts()
	if !live {
		t.Errorf("the job page was reloaded while it followed the job")
	}
	if len(seen) < 3 {
		t.Errorf("the job page showed states %q, want its progress (at least three states) live", seen)
	}
	t.Logf("the job page showed %q", seen)
	// Live without a polling storm: the page was loaded once and opened one event stream;
	// it asked for nothing else of the job while it followed it.
	sent := olga.sentRequests()
	t.Logf("from the request to the job's end, the page sent %q", sent)
	var ofJob []string
	for _, r := range sent {
		if strings.HasPrefix(r, "GET /ui/jobs/"+jobID) {
			ofJob = append(ofJob, r)
		}
	}
	if !slices.Equal(ofJob, []string{"GET /ui/jobs/" + jobID, "GET /ui/jobs/" + jobID + "/events"}) || len(sent) > 8 {
		t.Errorf("from the request to the job's end, the page sent %q; want the job's page once and one event stream", sent)
	}
	olga.axe("job succeeded")
	olga.screenshot("job-succeeded")
	wantIssueHistory(t, d)

	// The PIN, once.
	csrf := eval[string](olga, "read the form's CSRF token", `document.querySelector("[name=csrf_token]").value`)
	olga.clickAndLoad("reveal-pin")
	pin := olga.text("#pin")
	if pin == "" {
		t.Fatal("the revealed PIN is empty")
	}
	s.remember("user PIN revealed in the console for job "+jobID, pin)
	wantLogin(t, d.TokenSerial, pin, true)
	eval[bool](olga, "mask the PIN for the screenshot", `(() => { document.querySelector("#pin").textContent = "••••••••••••"; return true; })()`)
	olga.axe("PIN revealed")
	olga.screenshot("pin-revealed")
	// Again: the page no longer offers it, so the form is sent again by hand.
	if olga.exists(byTest("reveal-pin")) {
		t.Error("the page that showed the PIN still offers to reveal it")
	}
	olga.postForm("/ui/jobs/"+jobID+"/pin", map[string]string{"csrf_token": csrf})
	olga.waitText(alert, "already shown")
	if txt := olga.pageText(); strings.Contains(txt, pin) {
		t.Fatalf("a second reveal showed the PIN again")
	}
	olga.screenshot("pin-refused")

	// The auditor verifies the audit log.
	audrey := newBrowser(t, auditor, url, shots)
	audrey.signIn(auditor, consolePassword)
	audrey.open("/ui/audit")
	audrey.axe("audit")
	audrey.screenshot("audit")
	audrey.click("verify-audit")
	audrey.waitVisible("#audit-verify-result")
	res := audrey.text("#audit-verify-result")
	verified := eval[string](audrey, "read the verification's verdict", `document.querySelector("#audit-verify-result").dataset.verified`)
	if verified != "true" || !strings.Contains(res, "intact") {
		t.Errorf("the audit log's verification (verified=%q) says %q", verified, res)
	}
	audrey.axe("audit verified")
	audrey.screenshot("audit-verified")

	// The escrow pages an auditor reads: the backup keys and a holder's escrowed and
	// encryption keys (none here: the profile makes keys on the token).
	audrey.open("/ui/recovery-certificates")
	audrey.waitText("main", "None in use")
	audrey.axe("backup keys")
	audrey.open("/ui/escrow?holder=" + holder)
	audrey.waitText("main", "No encryption key is recorded")
	audrey.axe("escrowed keys")
	audrey.screenshot("escrowed-keys")

	for _, b := range []*browser{olga, arne, audrey} {
		b.checkConsole()
	}
	s.finalChecks()
}

// postForm posts a form built in the page (as a person re-sending an old form would), and
// waits for the page it loads; it returns the page's HTTP status.
func (b *browser) postForm(action string, fields map[string]string) int64 {
	b.t.Helper()
	var sb strings.Builder
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&sb, `i = document.createElement("input"); i.type = "hidden"; i.name = %q; i.value = %q; f.appendChild(i);`, k, fields[k])
	}
	js := fmt.Sprintf(`(() => { const f = document.createElement("form"); f.method = "post"; f.action = %q; let i; %s
		const s = document.createElement("button"); s.type = "submit"; s.dataset.test = "forged-submit"; f.appendChild(s);
		document.body.appendChild(f); return true; })()`, action, sb.String())
	eval[bool](b, "build a form to "+action, js)
	return b.clickAndLoad("forged-submit")
}

// exists says whether an element matches sel now.
func (b *browser) exists(sel string) bool {
	b.t.Helper()
	return eval[bool](b, "look for "+sel, fmt.Sprintf(`document.querySelector(%q) !== null`, sel))
}

// queueFor queues a job for a holder at ws-01 as the help-desk operator, through
// tokenfleetctl. Each test has a holder of its own: a request for the same holder, profile
// and agent supersedes the open one.
func (s *system) queueFor(holderName string) string {
	s.t.Helper()
	id := strings.TrimSpace(s.ctl(s.operator, "issue", "--holder", holderName, "--agent", "ws-01", "--profile", profileName))
	if id == "" {
		s.t.Fatal("tokenfleetctl issue printed no job ID")
	}
	return id
}

// wantStillPending fails the test unless the job still waits for approval, with no
// approval given.
func (s *system) wantStillPending(jobID, after string) {
	s.t.Helper()
	d := s.job(jobID)
	if d.State != jobs.StatePendingApproval || len(d.ApprovalList) != 0 {
		s.t.Errorf("after %s, job %s is %s with decisions %+v; want it pending with none", after, jobID, d.State, d.ApprovalList)
	}
}

// TestConsoleRefusals: what the API refuses, the console refuses, in the browser: a wrong
// password; the requester approving her own request; an approver of another organisation
// approving (the job is not in his queue, and a forged approval is refused); a form posted
// without its CSRF token (and the same form with it then goes through); and a signed-out
// session is gone. And a person at the keyboard alone signs in and skips to the content.
func TestConsoleRefusals(t *testing.T) {
	t.Parallel()
	site := newConsoleSite(t, consoleOn)
	site.setPasswords(operator, approver, helpApprover, otherApprover)
	url := site.coord.DirectURL

	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		shots := newShots(t)
		b := newBrowser(t, operator, url, shots)
		b.open("/ui/signin")
		b.fill("username", operator)
		b.fill("password", "not-"+consolePassword)
		b.clickAndLoad("signin")
		b.waitVisible(alert)
		b.axe("sign-in refused")
		b.screenshot("signin-refused")
		if !strings.HasPrefix(b.path(), "/ui/signin") {
			t.Errorf("a wrong password led to %s", b.path())
		}
		// Someone who does not exist gets the same answer: the page does not tell.
		wrong := b.text(alert)
		b.fill("username", "nobody")
		b.fill("password", consolePassword)
		b.clickAndLoad("signin")
		if unknown := b.text(alert); unknown != strings.ReplaceAll(wrong, operator, "nobody") && unknown != wrong {
			t.Errorf("a wrong password says %q, an unknown user %q: the page tells who exists", wrong, unknown)
		}
		b.open("/ui/")
		if !strings.HasPrefix(b.path(), "/ui/signin") {
			t.Errorf("after a refused sign-in, /ui/ shows %s, not the sign-in page", b.path())
		}
	})

	t.Run("self-approval", func(t *testing.T) {
		t.Parallel()
		s := site.sub(t)
		s.addHolder("sam", "Sam Self")
		shots := newShots(t)
		b := newBrowser(t, helpApprover, url, shots)
		b.signIn(helpApprover, consolePassword)
		b.open("/ui/request")
		b.choose("holder", "sam")
		b.fill("profile", profileName)
		b.choose("agent", "ws-01")
		b.clickAndLoad("submit-request")
		m := jobPath.FindStringSubmatch(b.path())
		if m == nil {
			b.fail("request a token", fmt.Errorf("landed on %s, not a job's page", b.path()))
		}
		jobID := m[1]
		d := s.job(jobID)
		b.open("/ui/approvals")
		card := "#job-" + jobID
		if b.exists(card) {
			b.clickLoadSel(card + " " + byTest("approve"))
		} else {
			b.postForm("/ui/jobs/"+jobID+"/approve", map[string]string{
				"csrf_token": b.csrf(), "binding_hash": d.BindingHash, "reason": "my own"})
		}
		b.waitText(alert, "may not decide")
		b.axe("self-approval refused")
		b.screenshot("self-approval-refused")
		s.wantStillPending(jobID, "her own approval")
		b.checkConsole()
	})

	t.Run("other organisation", func(t *testing.T) {
		t.Parallel()
		s := site.sub(t)
		s.addHolder("otto", "Otto Other")
		jobID := s.queueFor("otto")
		d := s.job(jobID)
		shots := newShots(t)
		b := newBrowser(t, otherApprover, url, shots)
		b.signIn(otherApprover, consolePassword)
		b.open("/ui/approvals")
		if b.exists("#job-" + jobID) {
			t.Errorf("an approver of %s sees %s's job in his queue", otherOrg, org)
		}
		b.screenshot("other-queue")
		b.postForm("/ui/jobs/"+jobID+"/approve", map[string]string{
			"csrf_token": b.csrf(), "binding_hash": d.BindingHash, "reason": "not mine to approve"})
		b.waitText(alert, "another organisation")
		b.axe("other organisation refused")
		b.screenshot("other-refused")
		s.wantStillPending(jobID, "an approval from another organisation")
		b.checkConsole()
	})

	t.Run("no CSRF token", func(t *testing.T) {
		t.Parallel()
		s := site.sub(t)
		s.addHolder("cora", "Cora CSRF")
		jobID := s.queueFor("cora")
		shots := newShots(t)
		b := newBrowser(t, approver, url, shots)
		b.signIn(approver, consolePassword)
		b.open("/ui/approvals")
		card := "#job-" + jobID
		b.waitVisible(card)
		eval[bool](b, "remove the CSRF field", fmt.Sprintf(
			`(() => { document.querySelector(%q).form.querySelector("[name=csrf_token]").remove(); return true; })()`,
			card+" "+byTest("approve")))
		if status := b.clickLoadSel(card + " " + byTest("approve")); status != 403 {
			t.Errorf("an approval posted without its CSRF token answered %d, want 403", status)
		}
		b.waitText(alert, "anti-forgery")
		b.axe("CSRF refusal")
		b.screenshot("no-csrf-refused")
		s.wantStillPending(jobID, "an approval without its CSRF token")
		// The same form with its token goes through.
		b.open("/ui/approvals")
		b.clickLoadSel(card + " " + byTest("approve"))
		b.waitVisible(alert)
		if d := s.job(jobID); d.State == jobs.StatePendingApproval || len(d.ApprovalList) != 1 {
			t.Errorf("the approval with its CSRF token left the job %s with decisions %+v", d.State, d.ApprovalList)
		}
	})

	t.Run("keyboard only", func(t *testing.T) {
		t.Parallel()
		shots := newShots(t)
		b := newBrowser(t, approver, url, shots)
		// The sign-in page puts the focus in the username field; Tab goes to the password,
		// Enter sends the form.
		b.open("/ui/signin")
		b.keys(approver + "\t" + consolePassword)
		b.keysAndLoad("\r")
		if p := b.path(); strings.HasPrefix(p, "/ui/signin") {
			b.fail("sign in at the keyboard", fmt.Errorf("still on %s", p))
		}
		// The first Tab on a page reaches the link that skips to its content; Enter follows it.
		b.open("/ui/approvals")
		b.keys("\t")
		focused := eval[string](b, "read the focus", `document.activeElement.textContent.trim()`)
		if focused != "Skip to content" {
			t.Errorf("the first Tab focuses %q, not the link that skips to the content", focused)
		}
		b.keys("\r")
		b.waitJS("the focus on the content", `document.activeElement && document.activeElement.id === "main"`)
		b.screenshot("keyboard")
		b.checkConsole()
	})

	t.Run("sign out", func(t *testing.T) {
		t.Parallel()
		shots := newShots(t)
		b := newBrowser(t, operator, url, shots)
		b.signIn(operator, consolePassword)
		b.clickAndLoad("signout")
		if !strings.HasPrefix(b.path(), "/ui/signin") {
			t.Errorf("signing out led to %s, not the sign-in page", b.path())
		}
		b.screenshot("signed-out")
		b.open("/ui/jobs")
		if !strings.HasPrefix(b.path(), "/ui/signin") {
			t.Errorf("after signing out, /ui/jobs shows %s, not the sign-in page", b.path())
		}
	})
}

// csrf is the page's CSRF token (every signed-in page has one, in the sign-out form).
func (b *browser) csrf() string {
	b.t.Helper()
	return eval[string](b, "read the CSRF token", `document.querySelector("[name=csrf_token]").value`)
}

// sessionIdle is the idle timeout of TestConsoleSessionTimeout's coordinator.
const sessionIdle = 2 * time.Second

// TestConsoleSessionTimeout: a session left idle past the coordinator's idle timeout is
// ended; the next page sends the browser back to the sign-in page, which says why, and a
// new sign-in works.
func TestConsoleSessionTimeout(t *testing.T) {
	t.Parallel()
	s := newConsoleSite(t, func(c *coordinator.Config) {
		consoleOn(c)
		c.Console.SessionIdle = coordinator.Duration(sessionIdle)
	})
	s.setPasswords(approver)
	url := s.coord.DirectURL
	shots := newShots(t)
	b := newBrowser(t, approver, url, shots)
	b.signIn(approver, consolePassword)
	b.open("/ui/approvals")
	lastUse := time.Now() // the session was last used no later than this

	// Nothing the test does may touch the session now: wait, on the clock, until its idle
	// timeout has passed for certain.
	eventually(t, "the session's idle timeout to pass", func() (bool, string) {
		left := time.Until(lastUse.Add(sessionIdle + 500*time.Millisecond))
		return left <= 0, fmt.Sprintf("%v left", left)
	})
	b.open("/ui/approvals")
	if p := b.path(); !strings.HasPrefix(p, "/ui/signin") {
		t.Fatalf("a session idle past its timeout still opens %s", p)
	}
	b.waitText(alert, "idle")
	b.axe("session expired")
	b.screenshot("session-expired")
	b.signIn(approver, consolePassword)
	b.open("/ui/approvals")
	if p := b.path(); p != "/ui/approvals" {
		t.Errorf("after signing in again, /ui/approvals shows %s", p)
	}
	b.checkConsole()
}

// TestConsoleSingleSignOn: signing in with OpenID Connect against a real provider on
// loopback: the sign-in page offers it, the provider vouches for the approver, who lands
// signed in; an ID token for another client (wrong audience) and an expired one are refused
// with the reason, and open no session.
func TestConsoleSingleSignOn(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t)
	port := freePort(t)
	site := newConsoleSite(t, func(c *coordinator.Config) {
		consoleOn(c)
		c.Listen = "127.0.0.1:" + port
		o := idp.Config("http://127.0.0.1:" + port + coordinator.OIDCCallbackPath)
		secret := filepath.Join(t.TempDir(), "oidc-client.secret")
		if err := os.WriteFile(secret, []byte(o.ClientSecret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c.Console.OIDC = coordinator.OIDCConfig{Issuer: o.Issuer, ClientID: o.ClientID, ClientSecretFile: secret,
			RedirectURL: o.RedirectURL, Scopes: []string{"openid", "profile", "email"}, UsernameClaim: "preferred_username"}
	})
	url := site.coord.DirectURL
	shots := newShots(t)

	b := newBrowser(t, approver, url, shots)
	b.open("/ui/signin")
	b.waitVisible(byTest("signin-oidc"))
	b.axe("sign-in with single sign-on")
	b.screenshot("signin")
	idp.QueueUser(oidctest.User{Username: approver, Email: approver + "@acme.example"})
	b.clickAndLoad("signin-oidc")
	b.waitText("header", "Signed in as "+approver)
	b.open("/ui/approvals")
	if p := b.path(); p != "/ui/approvals" {
		t.Errorf("signed in with OpenID Connect, /ui/approvals shows %s", p)
	}
	b.screenshot("signed-in")
	b.checkConsole()

	for _, c := range []struct {
		name, reason string
		claims       map[string]any
	}{
		{"wrong audience", "audience", map[string]any{"aud": "another-client"}},
		{"expired", "expired", map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()}},
	} {
		r := newBrowser(t, approver+"-"+strings.ReplaceAll(c.name, " ", "-"), url, shots)
		idp.QueueUser(oidctest.User{Username: approver, Override: c.claims})
		r.open("/ui/signin")
		r.clickAndLoad("signin-oidc")
		r.waitVisible(alert)
		if txt := strings.ToLower(r.text(alert)); !strings.Contains(txt, c.reason) {
			t.Errorf("%s ID token: the console says %q, want the reason (%s)", c.name, txt, c.reason)
		}
		r.axe("single sign-on refused")
		r.screenshot("refused")
		r.open("/ui/approvals")
		if p := r.path(); !strings.HasPrefix(p, "/ui/signin") {
			t.Errorf("after a refused single sign-on (%s), /ui/approvals shows %s", c.name, p)
		}
	}
}

// freePort is a loopback TCP port free a moment ago: for a coordinator whose own URL must
// be known before it starts (the identity provider's redirect URL).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// wantSessionCookie checks what the browser holds after signing in: one session cookie,
// HttpOnly (no script reads it) and SameSite=Lax; and that the page came with a
// Content-Security-Policy that allows no inline script or style.
func wantSessionCookie(t *testing.T, b *browser) {
	t.Helper()
	cs := b.cookies()
	if len(cs) != 1 || !strings.Contains(cs[0].Name, "session") {
		t.Fatalf("cookies after signing in: %+v, want the session's alone", cs)
	}
	c := cs[0]
	if !c.HTTPOnly || c.SameSite != network.CookieSameSiteLax {
		t.Errorf("session cookie %s: HttpOnly %v, SameSite %q; want HttpOnly and Lax", c.Name, c.HTTPOnly, c.SameSite)
	}
	if seen := eval[string](b, "read document.cookie", "document.cookie"); strings.Contains(seen, c.Value) {
		t.Errorf("a script in the page reads the session cookie")
	}
	csp := eval[string](b, "read the page's CSP",
		`fetch(location.href).then(r => r.headers.get("content-security-policy") || "")`)
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "style-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("the console's Content-Security-Policy %q allows more than its own scripts and styles", csp)
	}
}

// TestConsoleTLS: served over TLS, as in production, the console's session cookie is
// __Host-tokenfleet_session: Secure, HttpOnly, SameSite=Lax, for the whole site and no
// domain (what the __Host- prefix demands, which Chromium enforces); signing in and out
// works with it. (Chromium is told to accept the test's self-signed certificate.)
func TestConsoleTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls-key.pem")
	testenv.WriteSelfSigned(t, cert, key, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	c := coordinatortest.Start(t, coordinatortest.Options{Configure: func(c *coordinator.Config) {
		consoleOn(c)
		c.TLS = coordinator.TLSConfig{CertFile: cert, KeyFile: key}
	}})
	if !strings.HasPrefix(c.DirectURL, "https://") {
		t.Fatalf("the coordinator serves %s, not HTTPS", c.DirectURL)
	}
	// The bootstrap administrator's password, through the service (tokenfleetctl would need
	// to trust the certificate).
	ctx := context.Background()
	svc := c.Server.Service()
	admin, err := svc.Authenticate(ctx, c.AdminToken, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.SetPassword(ctx, admin, admin.Username(), consolePassword); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, admin.Username(), c.DirectURL, newShots(t), chromedp.IgnoreCertErrors)
	b.signIn(admin.Username(), consolePassword)
	cs := b.cookies()
	if len(cs) != 1 {
		t.Fatalf("cookies over TLS: %+v, want the session's alone", cs)
	}
	k := cs[0]
	if k.Name != "__Host-tokenfleet_session" || !k.Secure || !k.HTTPOnly || k.SameSite != network.CookieSameSiteLax || k.Path != "/" {
		t.Errorf("session cookie over TLS: %s Secure %v HttpOnly %v SameSite %q Path %q; want __Host-tokenfleet_session, Secure, HttpOnly, Lax, /",
			k.Name, k.Secure, k.HTTPOnly, k.SameSite, k.Path)
	}
	b.axe("home over TLS")
	b.screenshot("home")
	b.clickAndLoad("signout")
	if p := b.path(); !strings.HasPrefix(p, "/ui/signin") {
		t.Errorf("signing out led to %s", p)
	}
	b.open("/ui/")
	if p := b.path(); !strings.HasPrefix(p, "/ui/signin") {
		t.Errorf("after signing out, /ui/ shows %s", p)
	}
	b.checkConsole()
}
