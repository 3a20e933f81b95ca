package console

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// ContentSecurityPolicy is sent with every response: nothing inline, nothing from
// elsewhere, no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// CSRFField is the name of the anti-forgery field of every form.
const CSRFField = "csrf_token"

// Cookie names. The __Host- prefix makes the browser refuse the cookie unless it is
// Secure, for the whole host (Path=/) and without Domain: it needs HTTPS.
const (
	cookieSecure   = "__Host-tokenfleet_session"
	cookiePlain    = "tokenfleet_session"
	flashCookie    = "tokenfleet_flash"
	flashMaxAge    = 60 // seconds: a flash is read by the page the redirect leads to
	signinPath     = Prefix + "signin"
	maxFlashLength = 1000
	maxFormBytes   = 256 << 10 // the largest form is a profile being edited
)

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// noStore marks a response as not to be kept by the browser or any cache: every page
// shows what the signed-in user may see.
func noStore(h http.Header) { h.Set("Cache-Control", "no-store") }

type sessionKey struct{}

// SessionFrom returns the signed-in session the session middleware put in ctx.
func SessionFrom(ctx context.Context) (service.Session, bool) {
	s, ok := ctx.Value(sessionKey{}).(service.Session)
	return s, ok
}

// session returns the request's session; only handlers behind view or action call it.
func session(r *http.Request) service.Session {
	s, _ := SessionFrom(r.Context())
	return s
}

func (c *Console) cookieName() string {
	if c.secure {
		return cookieSecure
	}
	return cookiePlain
}

// setCookie sets one of the console's cookies: HttpOnly, SameSite=Lax, and Secure when
// browsers come over HTTPS. maxAge 0 keeps it while the browser runs; -1 deletes it.
func (c *Console) setCookie(w http.ResponseWriter, name, value, path string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: true,
		Secure: c.secure, SameSite: http.SameSiteLaxMode})
}

// setSessionCookie hands the browser the session secret. The cookie lives as long as the
// browser runs (no Max-Age): the service decides when the session ends.
func (c *Console) setSessionCookie(w http.ResponseWriter, secret string) {
	c.setCookie(w, c.cookieName(), secret, "/", 0)
}

func (c *Console) clearSessionCookie(w http.ResponseWriter) {
	c.setCookie(w, c.cookieName(), "", "/", -1)
}

// setFlash leaves a message for the next page the browser shows (after a redirect). It
// travels in a cookie, not the URL, so that nobody can craft a link that shows a message
// of their choosing.
func (c *Console) setFlash(w http.ResponseWriter, msg string) {
	if len(msg) > maxFlashLength {
		msg = msg[:maxFlashLength]
	}
	c.setCookie(w, flashCookie, base64.RawURLEncoding.EncodeToString([]byte(msg)), Prefix, flashMaxAge)
}

// takeFlash reads the flash message, if any, and clears it.
func (c *Console) takeFlash(w http.ResponseWriter, r *http.Request) string {
	ck, err := r.Cookie(flashCookie)
	if err != nil {
		return ""
	}
	c.setCookie(w, flashCookie, "", Prefix, -1)
	b, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil {
		return ""
	}
	return string(b)
}

// signedIn resolves the session cookie through the service. A request without a valid
// session is sent to the sign-in page, with the service's reason (expired, ended) as
// its flash; a GET comes back to where it was after signing in.
func (c *Console) signedIn(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		noStore(w.Header())
		ck, err := r.Cookie(c.cookieName())
		if err != nil || ck.Value == "" {
			c.toSignin(w, r, "")
			return
		}
		s, err := c.svc.Session(r.Context(), ck.Value, source(r))
		if err != nil {
			e := service.AsError(err)
			if e.Code != service.CodeUnauthenticated {
				c.fail(w, r, e)
				return
			}
			c.clearSessionCookie(w)
			c.toSignin(w, r, e.Msg)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, s)))
	})
}

// toSignin redirects to the sign-in page, which then says why.
func (c *Console) toSignin(w http.ResponseWriter, r *http.Request, why string) {
	if why != "" {
		c.setFlash(w, why)
	}
	back := r.URL.RequestURI()
	if r.Method != http.MethodGet || strings.HasSuffix(r.URL.Path, "/events") {
		back = Prefix
	}
	http.Redirect(w, r, signinPath+"?next="+url.QueryEscape(back), http.StatusSeeOther)
}

// safeNext is where to go after signing in: a console path, never another site.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(path.Clean(u.Path)+"/", Prefix) ||
		strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return Prefix
	}
	return u.RequestURI()
}

// view is a signed-in page.
func (c *Console) view(h http.HandlerFunc) http.Handler { return c.signedIn(h) }

// action is a signed-in form submission: same origin, and carrying the session's
// anti-forgery token.
func (c *Console) action(h http.HandlerFunc) http.Handler {
	return c.originChecked(c.signedIn(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := session(r)
		got := r.PostFormValue(CSRFField)
		if got == "" {
			c.forbidden(w, r, "the form was sent without its anti-forgery token: reload the page and send it again")
			return
		}
		if s.CSRF == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) != 1 {
			c.forbidden(w, r, "the form's anti-forgery token is not this session's (the form came from another session or another site): reload the page and send it again")
			return
		}
		h(w, r)
	})))
}

// originChecked refuses a POST that a browser says comes from another site.
func (c *Console) originChecked(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := c.origin.Check(r); err != nil {
			noStore(w.Header())
			c.forbidden(w, r, "the form was sent from another site ("+err.Error()+"): the console takes forms from its own pages only")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		next.ServeHTTP(w, r)
	})
}

// forbidden is a 403 page naming why the request was refused.
func (c *Console) forbidden(w http.ResponseWriter, r *http.Request, why string) {
	c.log.Warn().Str("path", r.URL.Path).Str("source", source(r)).Str("reason", why).Msg("console request refused")
	c.fail(w, r, &service.Error{Code: service.CodeForbidden, Msg: "Refused: " + why})
}
