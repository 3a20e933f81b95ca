package coordinator

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
)

// setupDispatch loads (or creates on first start) the coordinator's result key and the
// built-in CA, and makes the dispatcher. Nothing connects to the broker before Run.
func (s *Server) setupDispatch(ctx context.Context, crlURL string) error {
	keyPath := filepath.Join(s.cfg.DataDir, dispatch.ResultKeyFile)
	key, created, err := dispatch.LoadOrCreateResultKey(keyPath)
	if err != nil {
		return err
	}
	if created {
		s.log.Warn().Str("file", keyPath).Msg("first start: created the result key agents seal the PINs they set to; " +
			"back it up, and give the same file to every coordinator sharing this database")
	}
	dir := s.cfg.caDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return &FieldError{Field: "ca.dir", Msg: err.Error()}
	}
	authority, err := ca.New(ctx, ca.Options{Type: ca.TypeBuiltin, DataDir: dir, Revocations: dispatch.Revocations{Store: s.st},
		Logger: s.base, Builtin: ca.BuiltinOptions{CertFile: s.cfg.CA.CertFile, KeyFile: s.cfg.CA.KeyFile,
			Name: s.cfg.CA.Name, Organization: s.cfg.CA.Organization, CRLURL: crlURL}})
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	s.ca = authority
	host, _ := os.Hostname()
	s.disp, err = dispatch.New(dispatch.Options{Store: s.st, CA: authority, ResultKey: key, BrokerURL: s.cfg.Broker.URL,
		ConnectionName: "tokenfleet-coordinator " + host, AgentUsers: s.cfg.agentUsers(),
		Logger: s.base.With().Str("component", "dispatch").Logger()})
	if err != nil {
		return err
	}
	s.log.Info().Str("broker", redactURL(s.cfg.Broker.URL)).Str("agent_users", string(s.cfg.agentUsers())).
		Str("crl_url", crlURL).Msg("dispatch configured")
	return nil
}

// withCRL serves the CA's CRL at the CRL URL's path, without authentication, in front of
// the API.
func (s *Server) withCRL(api http.Handler, crlURL string) (http.Handler, error) {
	src, ok := s.ca.(ca.CRLSource)
	if !ok {
		return api, nil
	}
	path, err := crlPath(crlURL)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(path, ca.CRLHandler(src, s.base.With().Str("component", "crl").Logger()))
	mux.Handle("/", api)
	return mux, nil
}

// Dispatcher returns the server's dispatcher.
func (s *Server) Dispatcher() *dispatch.Dispatcher { return s.disp }
