// Command tokenfleet-coordinator runs the tokenfleet coordinator: the HTTP API, the job
// store and the approval gates.
//
//	tokenfleet-coordinator serve [--config FILE] [--data DIR] [--listen ADDR] ...
//
// Flags override the configuration file. SIGINT and SIGTERM shut it down gracefully;
// SIGHUP reloads what can change without a restart.
//
// Exit status: 0 after a clean shutdown, 1 on failure, 2 for a usage or configuration
// error (the systemd unit does not restart on it: restarting does not fix it).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/internal/buildinfo"
	"github.com/tokenfleet/tokenfleet/internal/logging"
	"github.com/tokenfleet/tokenfleet/internal/sdnotify"
)

// Exit statuses.
const (
	exitError = 1 // it ran and failed
	exitUsage = 2 // the command line or the configuration is wrong
)

func main() {
	if err := newRootCommand().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "tokenfleet-coordinator:", err)
		var re runError
		if errors.As(err, &re) {
			os.Exit(exitError)
		}
		os.Exit(exitUsage)
	}
}

// runError is a failure of the coordinator at work, as opposed to a usage or
// configuration error: everything else the commands return.
type runError struct{ err error }

func (e runError) Error() string { return e.err.Error() }
func (e runError) Unwrap() error { return e.err }

// classify marks err as a run error unless it is about the configuration.
func classify(err error) error {
	var fe *coordinator.FieldError
	if err == nil || errors.As(err, &fe) {
		return err
	}
	return runError{err}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "tokenfleet-coordinator",
		Short:         "The tokenfleet coordinator: job queue, approval gates and HTTP API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCommand())
	buildinfo.AddTo(root)
	return root
}

// serveFlags are serve's command line: the configuration file and the settings over it.
type serveFlags struct {
	configFile string
	flags      coordinator.Config
}

// load reads the configuration file, if any, and sets the flags given over it. A reload
// calls it again: the same file, read anew, under the same flags.
func (sf *serveFlags) load(f *pflag.FlagSet) (coordinator.Config, error) {
	cfg := coordinator.DefaultConfig()
	if sf.configFile != "" {
		var err error
		if cfg, err = coordinator.LoadConfig(sf.configFile); err != nil {
			return cfg, err
		}
	}
	flags := sf.flags
	// A flag's value is blamed on the flag, not on the file it overrides.
	set := func(name, field string, dst *string, v string) {
		if f.Changed(name) {
			*dst = v
			cfg.SetBy(field, "--"+name)
		}
	}
	set("data", "data_dir", &cfg.DataDir, flags.DataDir)
	set("listen", "listen", &cfg.Listen, flags.Listen)
	set("db-driver", "database.driver", &cfg.Database.Driver, flags.Database.Driver)
	set("db-dsn", "database.dsn", &cfg.Database.DSN, flags.Database.DSN)
	set("tls-cert", "tls.cert_file", &cfg.TLS.CertFile, flags.TLS.CertFile)
	set("tls-key", "tls.key_file", &cfg.TLS.KeyFile, flags.TLS.KeyFile)
	set("log-level", "log.level", &cfg.Log.Level, flags.Log.Level)
	set("log-format", "log.format", &cfg.Log.Format, flags.Log.Format)
	set("broker", "broker.url", &cfg.Broker.URL, flags.Broker.URL)
	set("agent-users", "broker.agent_users", &cfg.Broker.AgentUsers, flags.Broker.AgentUsers)
	set("crl-url", "ca.crl_url", &cfg.CA.CRLURL, flags.CA.CRLURL)
	if f.Changed("insecure-http") {
		cfg.InsecureHTTP = flags.InsecureHTTP
		cfg.SetBy("insecure_http", "--insecure-http")
	}
	return cfg, nil
}

func newServeCommand() *cobra.Command {
	var sf serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the API until SIGINT or SIGTERM; SIGHUP reloads",
		Long: `Serve the coordinator's API.

On first start with an empty data directory the coordinator creates its database and a
bootstrap administrator "admin", whose API token it writes to DIR/admin.token (mode 0600).

Plain HTTP is only allowed on a loopback address (127.0.0.0/8, ::1, localhost); elsewhere
give --tls-cert and --tls-key, or --insecure-http behind a TLS-terminating proxy.

Approved jobs go to their agents through the broker (--broker); the coordinator starts
and serves without it, and sends what waits in its outbox once the broker answers. On first
start it also creates its CA in DIR/ca and the key agents seal PINs to, DIR/result-key.pem.

SIGHUP reads the configuration file again (under the same flags) and applies what can
change without a restart: the TLS certificate and key (read again from their files, so a
renewed certificate is taken), the log level and the CRL URL. A reload that fails keeps
the running settings and logs why.

Exit status: 0 after a clean shutdown, 1 on failure, 2 for a usage or configuration error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := sf.load(cmd.Flags())
			if err != nil {
				return err // reading the configuration: a configuration error
			}
			log, level := coordinator.NewLogger(cfg.Log, os.Stderr)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// Caught from before READY=1: systemd may reload as soon as the unit is up, and
			// an unhandled SIGHUP ends the process.
			reloads := make(chan os.Signal, 1)
			signal.Notify(reloads, syscall.SIGHUP)
			defer signal.Stop(reloads)
			srv, err := coordinator.New(cfg, log)
			if err != nil {
				return classify(err)
			}
			// The listener is bound and the store open: systemd (Type=notify) may consider
			// the coordinator started. Outside systemd these do nothing.
			if _, err := sdnotify.Notify(sdnotify.Ready, sdnotify.Status("serving on "+srv.Addr())); err != nil {
				log.Warn().Err(err).Msg("telling systemd the coordinator is ready")
			}
			stopping := make(chan struct{})
			go func() {
				defer close(stopping)
				<-ctx.Done()
				_, _ = sdnotify.Notify(sdnotify.Stopping)
			}()
			reloading := make(chan struct{})
			go func() {
				defer close(reloading)
				for {
					select {
					case <-ctx.Done():
						return
					case <-reloads:
						reload(ctx, &sf, cmd.Flags(), srv, level, log)
					}
				}
			}()
			err = srv.Run(ctx)
			stop() // ends the waits above when Run failed on its own
			<-stopping
			<-reloading
			return classify(err)
		},
	}
	f := cmd.Flags()
	flags := &sf.flags
	f.StringVar(&sf.configFile, "config", "", "configuration file (YAML)")
	f.StringVar(&flags.DataDir, "data", coordinator.DefaultDataDir, "data directory (database, admin.token)")
	f.StringVar(&flags.Listen, "listen", coordinator.DefaultListen, "API listen address host:port")
	f.StringVar(&flags.Database.Driver, "db-driver", "sqlite", "store: sqlite or postgres")
	f.StringVar(&flags.Database.DSN, "db-dsn", "", "PostgreSQL URL (or the SQLite file, default DIR/coordinator.db)")
	f.StringVar(&flags.TLS.CertFile, "tls-cert", "", "TLS certificate file (PEM)")
	f.StringVar(&flags.TLS.KeyFile, "tls-key", "", "TLS private key file (PEM)")
	f.BoolVar(&flags.InsecureHTTP, "insecure-http", false, "allow plain HTTP on a non-loopback address")
	f.StringVar(&flags.Log.Level, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&flags.Log.Format, "log-format", "auto", "json, console, or auto (console on a terminal)")
	f.StringVar(&flags.Broker.URL, "broker", coordinator.DefaultBrokerURL, "broker URL amqp://user:password@host:port/vhost")
	f.StringVar(&flags.Broker.AgentUsers, "agent-users", "", "per_agent or shared broker users for agents (default: shared on a loopback broker, else per_agent)")
	f.StringVar(&flags.CA.CRLURL, "crl-url", "", "public URL of the CRL, named in certificates (default http(s)://LISTEN/crl)")
	return cmd
}

// reload is SIGHUP: the configuration read again and what can change applied. On any
// error nothing changes.
func reload(ctx context.Context, sf *serveFlags, f *pflag.FlagSet, srv *coordinator.Server, level *logging.Level, log zerolog.Logger) {
	cfg, err := sf.load(f)
	if err == nil {
		err = srv.Reload(ctx, cfg)
	}
	if err != nil {
		log.Error().Err(err).Msg("reload failed: the running settings stay")
		return
	}
	level.Set(cfg.Log.ParsedLevel())
}
