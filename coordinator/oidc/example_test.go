package oidc_test

import (
	"errors"
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/oidc"
)

// The console's two handlers: the flow travels in a short-lived cookie of its own, and a
// refusal is told by its cause.
func ExampleProvider_FinishCallback() {
	var rp *oidc.Provider // from oidc.New at start
	const cookie = "__Host-tokenfleet-oidc"

	start := func(w http.ResponseWriter, r *http.Request) {
		flow, authURL, err := rp.Start()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: cookie, Value: flow.Encode(), Path: "/",
			MaxAge: int(oidc.FlowTTL.Seconds()), HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, authURL, http.StatusSeeOther)
	}
	callback := func(w http.ResponseWriter, r *http.Request) {
		// The flow is spent whatever happens next.
		http.SetCookie(w, &http.Cookie{Name: cookie, Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
		var value string
		if c, err := r.Cookie(cookie); err == nil {
			value = c.Value
		}
		flow, err := oidc.DecodeFlow(value)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, err := rp.FinishCallback(r.Context(), flow, r.URL.Query())
		switch {
		case errors.Is(err, oidc.ErrDenied):
			http.Error(w, err.Error(), http.StatusForbidden) // the person declined: say so
		case errors.Is(err, oidc.ErrUnreachable):
			http.Error(w, err.Error(), http.StatusBadGateway)
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnauthorized)
		default:
			_ = id // service.SignInOIDC(ctx, service.OIDCIdentity(id), source), then StartSession
		}
	}
	_, _ = start, callback
}
