// Command tokenfleet-coordinator runs the tokenfleet coordinator: the HTTP API, the job
// store and the approval gates.
//
//	tokenfleet-coordinator serve [--config FILE] [--data DIR] [--listen ADDR] ...
//
// Flags override the configuration file. SIGINT and SIGTERM shut it down gracefully.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/internal/buildinfo"
	"github.com/tokenfleet/tokenfleet/internal/sdnotify"
)

func main() {
	if err := newRootCommand().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "tokenfleet-coordinator:", err)
		os.Exit(1)
	}
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

func newServeCommand() *cobra.Command {
	var (
		configFile string
		flags      coordinator.Config
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the API until SIGINT or SIGTERM",
		Long: `Serve the coordinator's API.

On first start with an empty data directory the coordinator creates its database and a
bootstrap administrator "admin", whose API token it writes to DIR/admin.token (mode 0600).

Plain HTTP is only allowed on a loopback address (127.0.0.0/8, ::1, localhost); elsewhere
give --tls-cert and --tls-key, or --insecure-http behind a TLS-terminating proxy.

Approved jobs go to their agents through the broker (--broker); the coordinator starts
and serves without it, and sends what waits in its outbox once the broker answers. On first
start it also creates its CA in DIR/ca and the key agents seal PINs to, DIR/result-key.pem.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := coordinator.DefaultConfig()
			if configFile != "" {
				var err error
				if cfg, err = coordinator.LoadConfig(configFile); err != nil {
					return err
				}
			}
			f := cmd.Flags()
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

			log := coordinator.NewLogger(cfg.Log, os.Stderr)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := coordinator.New(cfg, log)
			if err != nil {
				return err
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
			err = srv.Run(ctx)
			stop() // ends the wait above when Run failed on its own
			<-stopping
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "configuration file (YAML)")
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
