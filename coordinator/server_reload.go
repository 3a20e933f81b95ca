package coordinator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
)

// What a reload (SIGHUP) changes without a restart: the TLS certificate and key (read
// again even when their file names did not change: that is how a renewed certificate is
// taken), the log level (the main sets it) and the CRL URL. Other settings need a restart;
// a reload that changes them says so and leaves them as they are.

// certHolder is the API's TLS certificate, swapped by a reload; handshakes read it.
type certHolder struct {
	p atomic.Pointer[tls.Certificate]
}

func (h *certHolder) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return h.p.Load(), nil }

// loadCert reads the certificate and key the configuration names.
func loadCert(c TLSConfig) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, &FieldError{Field: "tls", Msg: fmt.Sprintf("cannot load certificate %s and key %s: %v", c.CertFile, c.KeyFile, err)}
	}
	return &cert, nil
}

// swapCA is the CA the dispatcher signs with: a reload that changes the CRL URL replaces
// the back end behind it (the same CA files, certificates naming the new URL).
type swapCA struct{ p atomic.Pointer[ca.CA] }

func newSwapCA(c ca.CA) *swapCA {
	s := &swapCA{}
	s.p.Store(&c)
	return s
}

func (s *swapCA) current() ca.CA { return *s.p.Load() }

func (s *swapCA) Sign(ctx context.Context, req ca.SignRequest) (*x509.Certificate, error) {
	return s.current().Sign(ctx, req)
}

func (s *swapCA) Revoke(ctx context.Context, serial *big.Int, reason int, at time.Time) error {
	return s.current().Revoke(ctx, serial, reason, at)
}

func (s *swapCA) CACertificates() []*x509.Certificate { return s.current().CACertificates() }

// CRL implements ca.CRLSource when the back end does.
func (s *swapCA) CRL(ctx context.Context) ([]byte, error) {
	src, ok := s.current().(ca.CRLSource)
	if !ok {
		return nil, errors.New("the CA does not publish a CRL through the coordinator")
	}
	return src.CRL(ctx)
}

// ReleaseHold implements ca.HoldReleaser when the back end does.
func (s *swapCA) ReleaseHold(ctx context.Context, serial *big.Int) error {
	hr, ok := s.current().(ca.HoldReleaser)
	if !ok {
		return ca.Errorf(ca.CodeConfig, "this CA cannot lift a certificate hold")
	}
	return hr.ReleaseHold(ctx, serial)
}

// crlMux serves the CRL at the path of the CRL URL of the moment, and the API elsewhere.
type crlMux struct {
	path atomic.Pointer[string]
	crl  http.Handler
	api  http.Handler
}

func (m *crlMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == *m.path.Load() {
		m.crl.ServeHTTP(w, r)
		return
	}
	m.api.ServeHTTP(w, r)
}

// Reload applies what can change without a restart from cfg: the TLS certificate and key,
// and the CRL URL. It validates cfg first; on any error nothing changes and the error
// names the problem. Settings that need a restart are logged, not applied. The log level
// is the main's to set (NewLogger's level), once Reload succeeded.
func (s *Server) Reload(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.running
	if cfg.TLSEnabled() != old.TLSEnabled() {
		return &FieldError{Field: "tls", Msg: "switching between HTTP and HTTPS needs a restart"}
	}
	var cert *tls.Certificate
	if cfg.TLSEnabled() {
		var err error
		if cert, err = loadCert(cfg.TLS); err != nil {
			return err
		}
	}
	oldURL, newURL := old.crlURL(s.Addr()), cfg.crlURL(s.Addr())
	var authority ca.CA
	if newURL != oldURL {
		path, err := crlPath(newURL)
		if err != nil {
			return err
		}
		if authority, err = s.openCA(ctx, cfg, newURL); err != nil {
			return err
		}
		if s.crl != nil {
			s.crl.path.Store(&path)
		}
		s.caSwap.p.Store(&authority)
		s.warnLocalCRL(newURL)
	}
	if cert != nil {
		s.cert.p.Store(cert)
	}
	restart := needsRestart(old, cfg)
	// What was applied is now in force; the rest stays as it started.
	s.running.TLS, s.running.CA.CRLURL, s.running.Log = cfg.TLS, cfg.CA.CRLURL, cfg.Log
	ev := s.log.Info().Str("log_level", cfg.Log.Level).Str("crl_url", newURL)
	if cfg.TLSEnabled() {
		ev = ev.Str("tls_cert_file", cfg.TLS.CertFile)
	}
	ev.Msg("configuration reloaded")
	if len(restart) > 0 {
		s.log.Warn().Strs("fields", restart).Msg("reload: these settings changed but take effect only at the next start")
	}
	return nil
}

// needsRestart lists the settings that differ between a and b and that a reload does not
// apply.
func needsRestart(a, b Config) []string {
	var out []string
	diff := func(field string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			out = append(out, field)
		}
	}
	diff("listen", a.Listen, b.Listen)
	diff("data_dir", a.DataDir, b.DataDir)
	diff("database", a.Database, b.Database)
	diff("insecure_http", a.InsecureHTTP, b.InsecureHTTP)
	diff("log.format", a.Log.Format, b.Log.Format)
	diff("expiry_sweep_interval", a.ExpirySweepInterval, b.ExpirySweepInterval)
	diff("broker", a.Broker, b.Broker)
	ca, cb := a.CA, b.CA
	ca.CRLURL, cb.CRLURL = "", ""
	diff("ca", ca, cb)
	diff("audit", a.Audit, b.Audit)
	diff("api_tokens", a.APITokens, b.APITokens)
	diff("rollouts", a.Rollouts, b.Rollouts)
	diff("notifications", a.Notifications, b.Notifications)
	diff("console", a.Console, b.Console)
	return out
}

// warnLocalCRL warns when the CRL URL every certificate names can only be fetched on this
// machine: relying parties elsewhere would fail revocation checks on every certificate.
func (s *Server) warnLocalCRL(crlURL string) {
	u, err := url.Parse(crlURL)
	if err != nil {
		return
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	local := host == "" || host == "localhost" || (ip != nil && (ip.IsLoopback() || ip.IsUnspecified()))
	if !local {
		return
	}
	s.log.Warn().Str("crl_url", crlURL).
		Msg("the CRL URL named in every certificate this CA issues is a loopback or unspecified address, which relying parties on other machines cannot reach: " +
			"set ca.crl_url (--crl-url) to the CRL's public URL, e.g. https://pki.example.org/crl")
}
