package console

import (
	"net/http"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// signinData is the sign-in page's.
type signinData struct {
	Next     string
	Username string
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	c.page(w, r, "signin", Page{Title: "Sign in", Data: signinData{Next: next}})
}

// signin checks a username and password with the service, starts a session and sends
// the browser where it was going. A refusal shows the service's message: one message for
// an unknown user and a wrong password; a locked account says when to try again.
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	username := strings.TrimSpace(r.PostFormValue("username"))
	password := r.PostFormValue("password")
	next := safeNext(r.PostFormValue("next"))
	d := signinData{Next: next, Username: username}
	if username == "" || password == "" {
		c.page(w, r, "signin", Page{Title: "Sign in", Data: d,
			Error: &service.Error{Code: service.CodeBadRequest, Field: "username", Msg: "enter your username and your password"}})
		return
	}
	a, err := c.svc.SignInPassword(r.Context(), username, password, source(r))
	if err != nil {
		c.page(w, r, "signin", Page{Title: "Sign in", Data: d, Error: service.AsError(err)})
		return
	}
	c.startSession(w, r, a, "password", next)
}

// startSession starts a session for a, sets its cookie and redirects to next.
func (c *Console) startSession(w http.ResponseWriter, r *http.Request, a service.Actor, method, next string) {
	secret, _, err := c.svc.StartSession(r.Context(), a, method, source(r))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.setSessionCookie(w, secret)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// signout ends the session (a POST with the anti-forgery token: a link could be followed
// by another site).
func (c *Console) signout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(c.cookieName()); err == nil {
		if err := c.svc.EndSession(r.Context(), ck.Value, source(r)); err != nil {
			c.log.Warn().Err(err).Msg("console: ending a session")
		}
	}
	c.clearSessionCookie(w)
	c.setFlash(w, "You are signed out.")
	http.Redirect(w, r, signinPath, http.StatusSeeOther)
}
