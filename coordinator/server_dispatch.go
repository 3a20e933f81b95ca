package coordinator

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
)

// setupDispatch loads (or creates on first start) the coordinator's result key and the
// built-in CA, and makes the dispatcher. Nothing connects to the broker before Run.
func (s *Server) setupDispatch(ctx context.Context, crlURL string, obs dispatch.Observer) error {
	keyPath := filepath.Join(s.cfg.DataDir, dispatch.ResultKeyFile)
	key, created, err := dispatch.LoadOrCreateResultKey(keyPath)
	if err != nil {
		return err
	}
	if created {
		s.log.Warn().Str("file", keyPath).Msg("first start: created the result key agents seal the PINs they set to; " +
			"back it up, and give the same file to every coordinator sharing this database")
	}
	authority, err := s.openCA(ctx, s.cfg, crlURL)
	if err != nil {
		return err
	}
	s.caSwap = newSwapCA(authority)
	s.ca = s.caSwap
	host, _ := os.Hostname()
	s.disp, err = dispatch.New(dispatch.Options{Store: s.st, CA: s.ca, ResultKey: key, BrokerURL: s.cfg.Broker.URL,
		ConnectionName: "tokenfleet-coordinator " + host, AgentUsers: s.cfg.agentUsers(), Observer: obs,
		HeartbeatTimeout: time.Duration(s.cfg.Broker.HeartbeatTimeout),
		Logger:           s.base.With().Str("component", "dispatch").Logger()})
	if err != nil {
		return err
	}
	s.log.Info().Str("broker", redactURL(s.cfg.Broker.URL)).Str("agent_users", string(s.cfg.agentUsers())).
		Str("crl_url", crlURL).Msg("dispatch configured")
	return nil
}

// openCA opens the built-in CA (creating it on first start) naming crlURL in what it
// issues.
func (s *Server) openCA(ctx context.Context, cfg Config, crlURL string) (ca.CA, error) {
	dir := cfg.caDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, &FieldError{Field: "ca.dir", Msg: err.Error()}
	}
	authority, err := ca.New(ctx, ca.Options{Type: ca.TypeBuiltin, DataDir: dir, Revocations: dispatch.Revocations{Store: s.st},
		Logger: s.base, Builtin: ca.BuiltinOptions{CertFile: cfg.CA.CertFile, KeyFile: cfg.CA.KeyFile,
			Name: cfg.CA.Name, Organization: cfg.CA.Organization, CRLURL: crlURL}})
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	return authority, nil
}

// withCRL serves the CA's CRL at the CRL URL's path, without authentication, in front of
// the API. A reload may move it (Reload).
func (s *Server) withCRL(api http.Handler, crlURL string) (http.Handler, error) {
	if _, ok := s.caSwap.current().(ca.CRLSource); !ok {
		return api, nil
	}
	path, err := crlPath(crlURL)
	if err != nil {
		return nil, err
	}
	s.crl = &crlMux{crl: ca.CRLHandler(s.caSwap, s.base.With().Str("component", "crl").Logger()), api: api}
	s.crl.path.Store(&path)
	return s.crl, nil
}

// Dispatcher returns the server's dispatcher.
func (s *Server) Dispatcher() *dispatch.Dispatcher { return s.disp }

// loadTrustedIssuers reads escrow.trusted_issuers: PEM files of CA certificates.
func loadTrustedIssuers(files []string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for i, f := range files {
		field := fmt.Sprintf("escrow.trusted_issuers[%d]", i)
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, &FieldError{Field: field, Msg: err.Error()}
		}
		n := 0
		for {
			var b *pem.Block
			if b, data = pem.Decode(data); b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, &FieldError{Field: field, Msg: fmt.Sprintf("%s: a certificate does not parse: %v", f, err)}
			}
			if !c.IsCA {
				return nil, &FieldError{Field: field, Msg: fmt.Sprintf("%s: %q is not a CA certificate (basicConstraints CA:TRUE): name the issuer of the certificates to register", f, c.Subject.CommonName)}
			}
			out, n = append(out, c), n+1
		}
		if n == 0 {
			return nil, &FieldError{Field: field, Msg: f + " holds no PEM certificate (-----BEGIN CERTIFICATE-----)"}
		}
	}
	return out, nil
}
