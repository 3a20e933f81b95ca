// Package console is the operators' web console, served by the coordinator under /ui/:
// server-rendered pages (html/template), a stylesheet and a small script embedded in the
// binary, no JavaScript tool chain. Every action calls the service method the API calls,
// so nothing the API refuses is possible here and everything is audited the same way.
//
// Decisions:
//   - Sessions are the service's (StartSession, Session, EndSession): the browser holds
//     only the session secret, in an HttpOnly, SameSite=Lax cookie (Secure and named
//     __Host-tokenfleet_session when Options.SecureCookies). A missing, ended or expired
//     session sends the browser to /ui/signin?next=..., which says why.
//   - Every POST passes two checks: net/http's CrossOriginProtection (Sec-Fetch-Site or
//     Origin), then the form's csrf_token against the session's, compared in constant
//     time. The sign-in form has no session yet: the origin check alone guards it.
//   - Every response carries a strict Content-Security-Policy (no inline script or style:
//     the pages load /ui/static/console.css and console.js only), nosniff, no referrer;
//     pages are not cached (Cache-Control: no-store).
//   - Navigation shows what the user's roles allow; the service still decides everything
//     and its refusals are shown with their message in role="alert".
//   - A job's page follows the job live over Server-Sent Events (/ui/jobs/{id}/events), fed
//     by service.WatchJob: one stream per open page, no polling by the browser.
package console

import (
	"context"
	"errors"
	"html/template"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/oidc"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// Prefix is where the console is served.
const Prefix = "/ui/"

// Options configure the console.
type Options struct {
	Service *service.Service // required
	Logger  zerolog.Logger
	// OIDC is the identity provider's relying party; nil offers password sign-in only.
	OIDC *oidc.Provider
	// OIDCName names the identity provider on the sign-in button; "" says "single sign-on".
	OIDCName string
	// SecureCookies marks cookies Secure and names the session cookie with the __Host-
	// prefix: set it whenever browsers reach the coordinator over HTTPS.
	SecureCookies bool
	// Stop, when closed, ends the live streams of job pages (the server is shutting
	// down: an open stream would hold the shutdown until its timeout).
	Stop <-chan struct{}
	// Now is the clock for "3 min ago"; nil: time.Now.
	Now func() time.Time
}

// Console serves the pages. Handlers of other files hang off it.
type Console struct {
	svc      *service.Service
	log      zerolog.Logger
	oidc     *oidc.Provider
	oidcName string
	secure   bool
	stop     <-chan struct{}
	now      func() time.Time
	pages    map[string]*template.Template
	origin   *http.CrossOriginProtection
	mux      *http.ServeMux
}

// New returns the console's handler, to be mounted at /ui/ (it also answers /ui).
func New(o Options) (http.Handler, error) {
	if o.Service == nil {
		return nil, errors.New("console: no service")
	}
	c := &Console{svc: o.Service, log: o.Logger, oidc: o.OIDC, oidcName: o.OIDCName, secure: o.SecureCookies,
		stop: o.Stop, now: o.Now, origin: http.NewCrossOriginProtection(), mux: http.NewServeMux()}
	if c.now == nil {
		c.now = time.Now
	}
	if c.oidcName == "" {
		c.oidcName = "single sign-on"
	}
	var err error
	if c.pages, err = parsePages(c.funcs()); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

// routes registers every page: view for a signed-in page, action for a form's POST
// (checked for origin and anti-forgery token). Handlers are wrapped per route (not
// around the mux) so that the mux sets the request's Pattern on the request the
// coordinator's request metrics hold: they count console requests by route, never by
// raw path.
func (c *Console) routes() {
	m := c.mux
	m.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
	})
	m.Handle("GET /ui/static/", staticHandler())

	m.HandleFunc("GET /ui/signin", c.signinPage)
	m.Handle("POST /ui/signin", c.originChecked(http.HandlerFunc(c.signin)))
	m.HandleFunc("GET /ui/oidc/start", c.oidcStart)
	m.HandleFunc("GET /ui/oidc/callback", c.oidcCallback)
	m.Handle("POST /ui/signout", c.action(c.signout))

	m.Handle("GET /ui/{$}", c.view(c.home))
	m.Handle("GET /ui/approvals", c.view(c.approvals))
	m.Handle("POST /ui/jobs/{id}/approve", c.action(c.decide(true)))
	m.Handle("POST /ui/jobs/{id}/reject", c.action(c.decide(false)))
	m.Handle("GET /ui/request", c.view(c.requestPage))
	m.Handle("POST /ui/request", c.action(c.request))
	m.Handle("GET /ui/jobs", c.view(c.jobList))
	m.Handle("GET /ui/jobs/{id}", c.view(c.jobPage))
	m.Handle("GET /ui/jobs/{id}/events", c.view(c.jobEvents))
	m.Handle("POST /ui/jobs/{id}/pin", c.action(c.revealPIN))
	m.Handle("POST /ui/jobs/{id}/cancel", c.action(c.cancel))
	m.Handle("POST /ui/jobs/{id}/retry", c.action(c.retry))

	m.Handle("GET /ui/me", c.view(func(w http.ResponseWriter, r *http.Request) { c.me(w, r, meData{}, nil) }))
	m.Handle("POST /ui/me/tokens/{serial}/renew", c.action(c.selfJob(jobs.KindRenew)))
	m.Handle("POST /ui/me/tokens/{serial}/unblock", c.action(c.selfJob(jobs.KindUnblockPIN)))
	m.Handle("POST /ui/me/tokens/{serial}/report", c.action(c.selfReport))
	m.Handle("POST /ui/me/jobs/{id}/pin", c.action(c.selfPIN))

	m.Handle("GET /ui/agents", c.view(func(w http.ResponseWriter, r *http.Request) { c.agents(w, r, "", nil) }))
	m.Handle("POST /ui/agents/{id}/{action}", c.action(c.agentAction))
	m.Handle("GET /ui/tokens", c.view(func(w http.ResponseWriter, r *http.Request) { c.tokens(w, r, "", nil) }))
	m.Handle("POST /ui/tokens/{serial}/state", c.action(c.setTokenState))
	m.Handle("GET /ui/certificates", c.view(func(w http.ResponseWriter, r *http.Request) { c.certificates(w, r, "", nil) }))
	m.Handle("POST /ui/certificates/{serial}/revoke", c.action(c.revoke))
	m.Handle("GET /ui/register", c.view(c.registerPage))
	m.Handle("GET /ui/register/export", c.view(c.registerExport))
	m.Handle("GET /ui/rollouts", c.view(c.rollouts))
	m.Handle("GET /ui/rollouts/{id}", c.view(func(w http.ResponseWriter, r *http.Request) { c.rolloutPage(w, r, r.PathValue("id"), nil) }))
	m.Handle("POST /ui/rollouts/{id}/{action}", c.action(c.rolloutAction))
	m.Handle("GET /ui/audit", c.view(func(w http.ResponseWriter, r *http.Request) { c.auditLog(w, r, nil, nil) }))
	m.Handle("POST /ui/audit/verify", c.action(c.verifyAudit))
	m.Handle("GET /ui/profiles", c.view(func(w http.ResponseWriter, r *http.Request) { c.profiles(w, r, "", nil) }))
	m.Handle("POST /ui/profiles", c.action(c.applyProfiles))
	m.Handle("GET /ui/profiles/{name}", c.view(func(w http.ResponseWriter, r *http.Request) { c.profilePage(w, r, r.PathValue("name"), "", nil) }))
	m.Handle("POST /ui/profiles/{name}", c.action(c.applyProfiles))
	m.Handle("GET /ui/notifications", c.view(c.notifications))
	m.Handle("GET /ui/recovery-certificates", c.view(func(w http.ResponseWriter, r *http.Request) { c.recoveryCerts(w, r, recoveryCertsData{}, nil) }))
	m.Handle("POST /ui/recovery-certificates", c.action(c.addRecoveryCert))
	m.Handle("POST /ui/recovery-certificates/{id}/retire", c.action(c.retireRecoveryCert))
	m.Handle("GET /ui/escrow", c.view(func(w http.ResponseWriter, r *http.Request) { c.escrow(w, r, escrowData{}, nil) }))
	m.Handle("POST /ui/escrow/{id}/recover", c.action(c.requestRecovery))
	m.Handle("GET /ui/encryption-keys/{holder}/{id}/certificate.pem", c.view(c.encryptionCert))

	m.Handle("/ui/", c.view(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, &service.Error{Code: service.CodeNotFound, Msg: "no such page: " + r.URL.Path})
	}))
}

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	c.mux.ServeHTTP(w, r)
}

// source is the request's client address, as the service records it.
func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// stopping reports whether the console was told to stop.
func (c *Console) stopping() bool {
	select {
	case <-c.stop: // a nil stop never is
		return true
	default:
		return false
	}
}

// stopped returns a context that ends with ctx or when the console is told to stop.
func (c *Console) stopped(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	if c.stop != nil {
		go func() {
			select {
			case <-c.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	return ctx, cancel
}
