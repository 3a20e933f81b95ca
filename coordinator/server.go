// Package coordinator wires the coordinator together: configuration, the store, the
// service, the HTTP API with TLS, the dispatcher on the broker, the built-in CA and its
// CRL, the expiry sweeper and the first-start bootstrap. The main in
// cmd/tokenfleet-coordinator parses flags, calls New and Run, and cancels Run's context on
// SIGINT or SIGTERM: that is the only shutdown path.
//
// Decisions:
//   - The data directory defaults to /var/lib/tokenfleet (the service's state directory);
//     it is created with mode 0700 and holds the SQLite database coordinator.db, unless
//     the database is PostgreSQL, and the bootstrap token file.
//   - First start: when the database holds no user at all, an administrator "admin" is
//     created with an API token written to DATA/admin.token (0600, never replaced, never
//     logged), in the same transaction and audited as system:bootstrap. Later starts,
//     and starts on a used database whose token file was removed, create nothing.
//   - Transport: TLS with the configured certificate and key (TLS 1.2 or later). Plain
//     HTTP only on a loopback address (127.0.0.0/8, ::1, localhost); anywhere else it is
//     refused unless insecure_http is set, and then a warning is logged at start.
//   - /metrics is served without authentication on the API's listener, so the listener's
//     reach is the metrics' reach.
//   - Broker (broker.url, --broker; default guest on loopback): the coordinator starts and
//     serves without it; messages wait in the outbox until it answers (package dispatch).
//     broker.agent_users says whether agents have their own broker users (per_agent: an
//     event whose user_id is not its agent's is refused and audited) or share one
//     (shared: the coordinator warns at start that sender checks rely on it). Unset, it
//     is shared for a loopback broker, the development default, and per_agent otherwise.
//   - CA: the built-in CA is created on first start in DATA/ca (or loaded from
//     ca.cert_file and ca.key_file). Its CRL is served without authentication at the path
//     of ca.crl_url, the URL every certificate names; the default is the API's own
//     listener, http(s)://LISTEN/crl. The key agents seal PINs to is DATA/result-key.pem
//     (0600), created on first start.
//   - Audit checkpoints: the chain head is signed at start, every
//     audit.checkpoint_interval and on demand, with DATA/audit-checkpoint-key.pem (Ed25519,
//     0600, created on first start); audit.checkpoint_syslog also sends each to syslog.
package coordinator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/brokeradmin"
	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	_ "github.com/tokenfleet/tokenfleet/coordinator/ca/builtin" // registers the built-in CA
	"github.com/tokenfleet/tokenfleet/coordinator/checkpoint"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/httpapi"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Timeouts.
const (
	// Opening and migrating the store, and bootstrap: it bounds a hang, not a migration
	// that a large database or a busy machine makes slow; the unit's TimeoutStartSec
	// matches it.
	openTimeout     = 5 * time.Minute
	shutdownTimeout = 10 * time.Second // in-flight requests at shutdown
)

// Server is a coordinator: New prepares everything (store open, bootstrap done, listener
// bound), Run serves until its context ends.
type Server struct {
	cfg     Config
	log     zerolog.Logger // the coordinator's own messages
	base    zerolog.Logger // what components add their name to
	st      store.Store
	svc     *service.Service
	disp    *dispatch.Dispatcher
	ca      ca.CA      // caSwap
	caSwap  *swapCA    // the CA behind ca, replaced by a reload that moves the CRL URL
	cert    certHolder // the API's TLS certificate, when it serves TLS
	crl     *crlMux    // nil when the CA publishes no CRL here
	cps     *checkpoint.Checkpointer
	syslog  *checkpoint.SyslogSink // nil without audit.checkpoint_syslog
	mgmt    *brokeradmin.Client    // nil without broker.management
	notify  *notifications         // nil when notifications are off
	handler http.Handler
	ln      net.Listener
	http    *http.Server

	mu      sync.Mutex // guards started
	started bool

	reloadMu sync.Mutex // guards running
	running  Config     // the configuration in force: cfg with what reloads applied

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg, creates the data directory, opens the store, creates the bootstrap
// administrator on first start, and binds the listener.
func New(cfg Config, log zerolog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.checkTransport(); err != nil {
		return nil, err
	}
	base := log
	log = log.With().Str("component", "coordinator").Logger()
	s := &Server{cfg: cfg, running: cfg, log: log, base: base}
	var tlsConf *tls.Config
	if cfg.TLSEnabled() {
		cert, err := loadCert(cfg.TLS)
		if err != nil {
			return nil, err
		}
		s.cert.p.Store(cert)
		// Read at every handshake, so that a reload's certificate serves new connections.
		tlsConf = &tls.Config{GetCertificate: s.cert.get, MinVersion: tls.VersionTLS12}
	} else if !IsLoopback(cfg.Listen) {
		log.Warn().Str("listen", cfg.Listen).
			Msg("INSECURE: serving plain HTTP on a non-loopback address (--insecure-http); API tokens cross the network in clear")
	}
	if err := prepareDataDir(cfg.DataDir, log); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	st, err := store.Open(ctx, cfg.storeConfig(), base)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.st = st
	if err := s.setup(ctx, tlsConf); err != nil {
		_ = st.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) setup(ctx context.Context, tlsConf *tls.Config) (err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := service.NewMetrics(reg)
	if err != nil {
		return err
	}
	// Bound first: the default CRL URL, named in every certificate, is on this listener.
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return &FieldError{Field: "listen", Msg: err.Error()}
	}
	defer func() {
		if err != nil {
			_ = ln.Close()
		}
	}()
	crlURL := s.cfg.crlURL(ln.Addr().String())
	s.warnLocalCRL(crlURL)
	if err := s.setupDispatch(ctx, crlURL, m); err != nil {
		return err
	}
	if err := s.registerFleetMetrics(reg); err != nil {
		return err
	}
	broker, err := s.setupManagement(ctx)
	if err != nil {
		return err
	}
	if s.notify, err = s.setupNotifications(); err != nil {
		return err
	}
	// Before the service: it verifies kept checkpoints with the checkpointer's key.
	if err := s.setupCheckpoints(); err != nil {
		return err
	}
	outside, err := loadTrustedIssuers(s.cfg.Escrow.TrustedIssuers)
	if err != nil {
		return err
	}
	s.svc, err = service.New(service.Options{Store: s.disp.Store(s.st), Logger: s.base.With().Str("component", "service").Logger(),
		Observer: m, Dispatcher: s.disp, Issuer: s.disp, AgentHook: s.disp, Broker: broker, Notifier: s.notify.notifier(),
		APITokenTTL: time.Duration(s.cfg.APITokens.DefaultTTL), APITokenMaxTTL: time.Duration(s.cfg.APITokens.MaxTTL),
		SignIn: s.cfg.signInOptions(), CheckpointKey: s.cps.PublicKey(), RecoveryApprovals: s.cfg.Escrow.RecoveryApprovals,
		EncryptionIssuers: func() []*x509.Certificate { return append(s.ca.CACertificates(), outside...) }})
	if err != nil {
		return err
	}
	s.disp.Bind(s.svc)
	if err := s.bootstrap(ctx); err != nil {
		return err
	}
	consoleStop := make(chan struct{})
	ui, err := s.setupConsole(ctx, consoleStop)
	if err != nil {
		return err
	}
	api, err := httpapi.New(httpapi.Options{Service: s.svc, Logger: s.base.With().Str("component", "httpapi").Logger(), Registry: reg,
		Checkpoints: apiCheckpoints{s.cps}, Enrolment: httpapi.Enrolment{BrokerURL: s.cfg.agentBrokerURL(),
			ResultKey: s.disp.ResultPublicKey(), TrustForwardedProto: s.cfg.InsecureHTTP}, Console: ui})
	if err != nil {
		return err
	}
	if s.handler, err = s.withCRL(api, crlURL); err != nil {
		return err
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	s.ln = ln
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(logWriter{s.log}, "", 0),
	}
	var stopOnce sync.Once
	s.http.RegisterOnShutdown(func() { stopOnce.Do(func() { close(consoleStop) }) })
	return nil
}

// prepareDataDir creates the data directory private to the service, and warns when an
// existing one is open to others.
func prepareDataDir(dir string, log zerolog.Logger) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return &FieldError{Field: "data_dir", Msg: err.Error()}
		}
		return nil
	case err != nil:
		return &FieldError{Field: "data_dir", Msg: err.Error()}
	case !st.IsDir():
		return &FieldError{Field: "data_dir", Msg: dir + " is not a directory"}
	}
	if st.Mode().Perm()&0o077 != 0 {
		log.Warn().Str("data_dir", dir).Str("mode", st.Mode().Perm().String()).
			Msg("data directory is open to other users; chmod 700 it")
	}
	return nil
}

// bootstrap creates the first administrator when the store has no user, with its API
// token in DataDir/admin.token (0600). The token is never logged.
func (s *Server) bootstrap(ctx context.Context) error {
	path := filepath.Join(s.cfg.DataDir, AdminTokenFile)
	wrote := false
	created, err := s.svc.Bootstrap(ctx, func(token string) error {
		if err := writeSecret(path, token+"\n"); err != nil {
			return err
		}
		wrote = true
		return nil
	})
	if err != nil {
		if wrote {
			// The transaction did not commit: the token in the file authenticates nobody.
			_ = os.Remove(path)
		}
		if e := service.AsError(err); e.Err != nil {
			err = e.Err
		}
		return fmt.Errorf("bootstrap administrator: %w", err)
	}
	if created {
		s.log.Info().Str("username", service.BootstrapUsername).Str("token_file", path).
			Msg("first start: created the bootstrap administrator; its API token is in the token file")
	}
	return nil
}

// writeSecret creates path with mode 0600 and writes data, refusing to replace a file.
func writeSecret(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists but the database holds no user: remove the file (it authenticates nobody) or point the coordinator at the database it belongs to", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(data); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	return f.Close()
}

// Addr returns the address the API listens on (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL returns the API's base URL.
func (s *Server) URL() string {
	scheme := "http"
	if s.cfg.TLSEnabled() {
		scheme = "https"
	}
	return scheme + "://" + s.Addr()
}

// Handler returns the API's handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Store returns the server's store (for tests and tools in the same process).
func (s *Server) Store() store.Store { return s.st }

// Service returns the server's service.
func (s *Server) Service() *service.Service { return s.svc }

// Run serves the API and runs the expiry sweeper and the rollout engine until ctx is done,
// then shuts down gracefully (in-flight requests get shutdownTimeout), stops them and
// closes the store. It returns nil after a shutdown asked for by ctx, or the error that stopped it.
// Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("coordinator: Run called twice")
	}
	s.started = true
	s.mu.Unlock()
	defer func() {
		if err := s.Close(); err != nil {
			s.log.Warn().Err(err).Msg("closing the store")
		}
	}()

	sweepCtx, stopSweep := context.WithCancel(ctx)
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		s.svc.RunExpiry(sweepCtx, time.Duration(s.cfg.ExpirySweepInterval))
	}()
	defer func() {
		stopSweep()
		<-sweepDone
	}()
	// The rollout engine stops with the sweeper, before the dispatcher (deferred calls run
	// last first): the jobs it created in its last pass are still sent.
	rolloutCtx, stopRollouts := context.WithCancel(ctx)
	rolloutsDone := make(chan struct{})
	go func() {
		defer close(rolloutsDone)
		s.svc.RunRollouts(rolloutCtx, time.Duration(s.cfg.Rollouts.Interval))
	}()
	defer func() {
		stopRollouts()
		<-rolloutsDone
	}()

	// Notifications stop before the store closes (deferred calls run last first).
	notifyCtx, stopNotify := context.WithCancel(ctx)
	notifyDone := make(chan struct{})
	go func() {
		defer close(notifyDone)
		s.runNotifications(notifyCtx)
	}()
	defer func() {
		stopNotify()
		<-notifyDone
	}()

	// Checkpoints stop before the store closes (deferred calls run last first).
	cpCtx, stopCheckpoints := context.WithCancel(ctx)
	cpDone := make(chan struct{})
	go func() {
		defer close(cpDone)
		s.cps.Run(cpCtx)
	}()
	defer func() {
		stopCheckpoints()
		<-cpDone
	}()

	// The dispatcher stops after the HTTP server (deferred calls run last first), so that
	// what requests in flight queue is still sent.
	dispCtx, stopDisp := context.WithCancel(context.WithoutCancel(ctx))
	dispDone := make(chan error, 1)
	go func() { dispDone <- s.disp.Run(dispCtx) }()
	defer func() {
		stopDisp()
		if err := <-dispDone; err != nil {
			s.log.Warn().Err(err).Msg("dispatcher stopped")
		}
	}()

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.http.Serve(s.ln) }()
	s.log.Info().Str("listen", s.Addr()).Bool("tls", s.cfg.TLSEnabled()).Str("store", s.st.Driver()).Msg("coordinator serving")

	select {
	case err := <-serveErr:
		return fmt.Errorf("coordinator: serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info().Msg("coordinator shutting down")
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := s.http.Shutdown(shutCtx)
	if serr := <-serveErr; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("coordinator: shutdown: %w", err)
	}
	return nil
}

// Close releases the listener and the store. Run calls it; call it yourself only for a
// Server that never ran. Calling it twice is harmless.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.ln != nil {
			if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				s.closeErr = err
			}
		}
		if s.mgmt != nil {
			s.mgmt.Close() // after the API: no enrolment is waiting on it any more
		}
		if err := s.st.Close(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
		if s.syslog != nil {
			if err := s.syslog.Close(); err != nil && s.closeErr == nil {
				s.closeErr = err
			}
		}
	})
	return s.closeErr
}

// logWriter carries the HTTP server's own messages (TLS handshake errors and the like)
// into the injected logger.
type logWriter struct{ log zerolog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Warn().Str("source", "net/http").Msg(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
