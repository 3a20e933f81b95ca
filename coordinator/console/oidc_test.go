package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/oidc/oidctest"
)

// ssoSignIn goes through single sign-on as a browser does: the console's start, the
// provider's authorization endpoint, the console's callback. It returns the callback's
// answer.
func (b *browser) ssoSignIn(next string) page {
	b.e.t.Helper()
	p := b.get("/ui/oidc/start?next=" + url.QueryEscape(next))
	if p.status != http.StatusFound {
		b.e.t.Fatalf("oidc start: %d %s", p.status, alerts(p.doc))
	}
	var flow *http.Cookie
	for _, ck := range b.c.Jar.Cookies(mustURL(b.e.t, b.e.srv.URL+"/ui/oidc/callback")) {
		if ck.Name == "tokenfleet_oidc" {
			flow = ck
		}
	}
	if flow == nil {
		b.e.t.Fatal("no flow cookie for /ui/oidc")
	}
	for _, ck := range b.c.Jar.Cookies(mustURL(b.e.t, b.e.srv.URL+"/ui/")) {
		if ck.Name == "tokenfleet_oidc" {
			b.e.t.Error("the flow cookie is sent outside /ui/oidc")
		}
	}
	back := oidctest.Authorize(b.e.t, p.location()).String()
	if !strings.HasPrefix(back, b.e.srv.URL+"/ui/oidc/callback?") {
		b.e.t.Fatalf("the provider sends the browser to %q", back)
	}
	return b.get(strings.TrimPrefix(back, b.e.srv.URL))
}

func TestSingleSignOn(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t)
	e := newEnvWith(t, idp)

	b := e.browser()
	if p := b.get("/ui/signin"); !strings.Contains(p.body, "Sign in with Acme SSO") {
		t.Fatal("the sign-in page offers no single sign-on")
	}
	idp.QueueUser(oidctest.User{Username: "alice", Email: "alice@acme.example"})
	p := b.ssoSignIn("/ui/approvals")
	if p.status != http.StatusSeeOther || p.location() != "/ui/approvals" {
		t.Fatalf("callback: %d to %q: %s", p.status, p.location(), alerts(p.doc))
	}
	if q := b.get("/ui/approvals"); q.status != http.StatusOK || !strings.Contains(q.body, "Signed in as <strong>alice</strong>") {
		t.Fatalf("after single sign-on: %d", q.status)
	}

	// An ID token for another client is refused, and says why.
	b = e.browser()
	idp.QueueUser(oidctest.User{Username: "alice", Override: map[string]any{"aud": "another-client"}})
	p = b.ssoSignIn("/ui/")
	if p.status != http.StatusUnauthorized || !strings.Contains(alerts(p.doc), "audience") {
		t.Fatalf("wrong audience: %d %q", p.status, alerts(p.doc))
	}
	// An identity that matches no user is refused by the service.
	idp.QueueUser(oidctest.User{Username: "stranger"})
	p = b.ssoSignIn("/ui/")
	if p.status != http.StatusUnauthorized || !strings.Contains(alerts(p.doc), "stranger") {
		t.Fatalf("unknown identity: %d %q", p.status, alerts(p.doc))
	}
	if q := b.get("/ui/"); q.status != http.StatusSeeOther {
		t.Errorf("a refused sign-in opened a session: %d", q.status)
	}
	// A callback without the flow cookie (another browser) is refused.
	p = e.browser().get("/ui/oidc/callback?state=x&code=y")
	if p.status != http.StatusUnauthorized || alerts(p.doc) == "" {
		t.Errorf("callback without a flow: %d %q", p.status, alerts(p.doc))
	}
}

func TestSingleSignOnOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser()
	if p := b.get("/ui/signin"); strings.Contains(p.body, "/ui/oidc/start") {
		t.Error("the sign-in page offers single sign-on that is not configured")
	}
	if p := b.get("/ui/oidc/start"); p.status != http.StatusNotFound || !strings.Contains(alerts(p.doc), "not configured") {
		t.Errorf("oidc start without a provider: %d %q", p.status, alerts(p.doc))
	}
}
