package console

import (
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/oidc"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// The OpenID Connect flow (state, nonce, PKCE verifier) waits in a cookie between
// /ui/oidc/start and the provider's redirect to /ui/oidc/callback: short-lived, HttpOnly,
// scoped to /ui/oidc. SameSite=Lax, not Strict: the callback is a top-level navigation
// coming from the provider's site, which Strict would strip the cookie from.
const (
	oidcCookie = "tokenfleet_oidc"
	oidcPath   = Prefix + "oidc"
)

// oidcEnabled reports whether single sign-on is offered.
func (c *Console) oidcEnabled() bool { return c.oidc != nil }

// oidcStart begins a sign-in with the identity provider.
func (c *Console) oidcStart(w http.ResponseWriter, r *http.Request) {
	noStore(w.Header())
	if c.oidc == nil {
		c.oidcOff(w, r)
		return
	}
	f, authURL, err := c.oidc.Start()
	if err != nil {
		c.fail(w, r, &service.Error{Code: service.CodeInternal, Msg: "single sign-on cannot start", Err: err})
		return
	}
	next := safeNext(r.URL.Query().Get("next"))
	c.setCookie(w, oidcCookie, f.Encode()+"."+base64.RawURLEncoding.EncodeToString([]byte(next)), oidcPath, int(oidc.FlowTTL/time.Second))
	http.Redirect(w, r, authURL, http.StatusFound)
}

// oidcCallback finishes the sign-in: the relying party checks the state, exchanges the
// code and verifies the ID token; the service then maps the identity to a user
// (SignInOIDC, audited) and a session starts. Any refusal is shown on the sign-in page.
func (c *Console) oidcCallback(w http.ResponseWriter, r *http.Request) {
	noStore(w.Header())
	if c.oidc == nil {
		c.oidcOff(w, r)
		return
	}
	// The flow serves once, whatever happens next.
	c.setCookie(w, oidcCookie, "", oidcPath, -1)
	raw := ""
	if ck, err := r.Cookie(oidcCookie); err == nil {
		raw = ck.Value
	}
	encoded, nextB64, _ := strings.Cut(raw, ".")
	next := Prefix
	if b, err := base64.RawURLEncoding.DecodeString(nextB64); err == nil {
		next = safeNext(string(b))
	}
	refuse := func(err error) {
		c.log.Info().Err(err).Str("source", source(r)).Msg("console: single sign-on refused")
		c.render(w, r, http.StatusUnauthorized, "signin", Page{Title: "Sign in", Data: signinData{Next: next},
			Error: &service.Error{Code: service.CodeUnauthenticated, Msg: "Single sign-on failed: " + err.Error()}})
	}
	f, err := oidc.DecodeFlow(encoded)
	if err != nil {
		refuse(err)
		return
	}
	id, err := c.oidc.FinishCallback(r.Context(), f, r.URL.Query())
	if err != nil {
		refuse(err)
		return
	}
	a, err := c.svc.SignInOIDC(r.Context(), service.OIDCIdentity{Issuer: id.Issuer, Subject: id.Subject, Username: id.Username, Email: id.Email}, source(r))
	if err != nil {
		c.render(w, r, http.StatusUnauthorized, "signin", Page{Title: "Sign in", Data: signinData{Next: next}, Error: service.AsError(err)})
		return
	}
	c.startSession(w, r, a, "oidc", next)
}

func (c *Console) oidcOff(w http.ResponseWriter, r *http.Request) {
	c.fail(w, r, &service.Error{Code: service.CodeNotFound, Msg: "single sign-on is not configured on this coordinator: sign in with your username and password"})
}
