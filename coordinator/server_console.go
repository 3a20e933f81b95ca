package coordinator

import (
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/console"
)

// setupConsole builds the web console when console.enabled; nil otherwise. Its cookies
// are Secure when the coordinator serves TLS. Its live streams end when the HTTP server
// shuts down (stop is closed then): an open job page must not hold the shutdown.
func (s *Server) setupConsole(stop <-chan struct{}) (http.Handler, error) {
	if !s.cfg.Console.Enabled {
		return nil, nil
	}
	h, err := console.New(console.Options{Service: s.svc, Logger: s.base.With().Str("component", "console").Logger(),
		SecureCookies: s.cfg.TLSEnabled(), Stop: stop})
	if err != nil {
		return nil, err
	}
	s.log.Info().Msg("web console enabled under /ui/")
	return h, nil
}
