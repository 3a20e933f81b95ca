package coordinator

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/tokenfleet/tokenfleet/coordinator/console"
	"github.com/tokenfleet/tokenfleet/coordinator/oidc"
)

// setupConsole builds the web console when console.enabled; nil otherwise. Its cookies
// are Secure when browsers reach it over HTTPS (ConsoleOverHTTPS). Its live streams end
// when the HTTP server shuts down (stop is closed then): an open job page must not hold
// the shutdown.
//
// With console.oidc set, the identity provider's discovery document is read now: a
// provider that cannot be reached stops the start with the reason, rather than a console
// that silently offers no single sign-on.
func (s *Server) setupConsole(ctx context.Context, stop <-chan struct{}) (http.Handler, error) {
	if !s.cfg.Console.Enabled {
		return nil, nil
	}
	o := console.Options{Service: s.svc, Logger: s.base.With().Str("component", "console").Logger(),
		SecureCookies: s.cfg.ConsoleOverHTTPS(), Stop: stop}
	if s.cfg.OIDCEnabled() {
		secret, err := s.cfg.OIDCClientSecret()
		if err != nil {
			return nil, err
		}
		k := s.cfg.Console.OIDC
		o.OIDC, err = oidc.New(ctx, k.relyingParty(secret), nil)
		if err != nil {
			return nil, s.cfg.fieldError("console.oidc.issuer", fmt.Sprintf("single sign-on: %v", err))
		}
		o.OIDCName = k.Issuer
		if u, err := url.Parse(k.Issuer); err == nil {
			o.OIDCName = u.Host
		}
	}
	h, err := console.New(o)
	if err != nil {
		return nil, err
	}
	s.log.Info().Bool("oidc", o.OIDC != nil).Bool("secure_cookies", o.SecureCookies).Msg("web console enabled under /ui/")
	return h, nil
}
