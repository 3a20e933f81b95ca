package cli

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/agent/config"
	"github.com/tokenfleet/tokenfleet/agent/enrol"
	"github.com/tokenfleet/tokenfleet/internal/logging"
	"github.com/tokenfleet/tokenfleet/internal/sdnotify"
)

// ExitInUse is run's exit status when another connected agent holds the agent ID. A
// service manager restarts the agent after a while (the units do), so a service keeps
// trying, with the error in its log each time, while the other agent holds the ID.
const ExitInUse = 3

func runCommand(e *env) *cobra.Command {
	var o agentFlags
	cmd := &cobra.Command{
		Use:   "run [--config FILE] [flags]",
		Short: "Run the agent in the foreground (what the service runs)",
		Long: `Run the agent until SIGTERM or SIGINT (or the Windows service manager's stop): it connects
to the broker, takes jobs from its queue, carries them out on the tokens and reports.

Settings come from --config FILE (YAML) with the flags over it. The broker password is
best kept off the command line: in the configuration file (mode 0600, or 0640 with the
agent's group), in --broker-password-file, or in the systemd credential broker-password.

The first SIGTERM or SIGINT shuts down cleanly: jobs stop at a safe point and the outbox
is flushed for up to --shutdown-grace. A second one ends the process at once. SIGHUP reads
the configuration again and applies the log level and the broker TLS client certificate
(read again from its files; the next connection presents it); other changes need a restart.

A start that fails before the agent ever connected removes the data directory it created.

A broker that refuses the agent's login or vhost, or has no queue for it (the agent is
not enrolled), is a configuration error: at the first connection the agent stops at once
saying what fixes it; once it has been connected it retries such refusals for a minute
(a broker restarting) before it stops.

Exit status: 0 after a clean shutdown, 1 on failure, 2 for a configuration error,
3 when another connected agent holds the agent ID.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			r, err := o.resolve(cmd, e.logLevel)
			if err != nil {
				return err
			}
			// A start that fails leaves no data directory behind it did not find.
			fresh := !dirExists(r.Agent.DataDir)
			var connected atomic.Bool
			defer func() {
				if err != nil && fresh && !connected.Load() {
					_ = os.RemoveAll(r.Agent.DataDir)
				}
			}()
			out, closeOut, err := logOutput(r.Agent.DataDir, e.stderr)
			if err != nil {
				return err
			}
			defer closeOut()
			log, level := newLogger(out, r)
			for _, w := range r.Warnings {
				log.Warn().Msg(w)
			}
			if err := applyEnrolment(cmd.Context(), r, log); err != nil {
				return err
			}
			if _, err := enrol.Load(r.Agent.DataDir); err == nil {
				// The data directory holds the agent's identity now: never remove it.
				connected.Store(true)
			}
			cfg := r.Agent
			cfg.Ready = func() { notify(log, sdnotify.Ready, sdnotify.Status("running; connecting to the broker")) }
			cfg.Status = func(line string) {
				// The agent's own word that the broker took it: from then on the data
				// directory may hold what the broker gave it.
				if strings.HasPrefix(line, agent.StatusConnected) {
					connected.Store(true)
				}
				notify(log, sdnotify.Status(line))
			}
			a, err := agent.New(cfg, log)
			if err != nil {
				return configError{err}
			}
			stopReloads := handleReloads(cmd.Context(), log, func() {
				next, err := o.resolve(cmd, e.logLevel)
				if err != nil {
					log.Error().Err(err).Msg("reload failed: the running settings stay")
					return
				}
				restart := r.Reload(next)
				level.Set(next.LogLevel)
				log.Info().Str("log_level", next.LogLevel.String()).Bool("client_certificate", r.ClientCert != nil).
					Msg("configuration reloaded")
				if len(restart) > 0 {
					log.Warn().Strs("fields", restart).Msg("reload: these settings changed but take effect only at the next start")
				}
			})
			defer stopReloads()
			err = runService(cmd.Context(), log, func(ctx context.Context) error {
				stop := context.AfterFunc(ctx, func() { notify(log, sdnotify.Stopping) })
				defer stop()
				return a.Run(ctx)
			})
			var dup *agent.DuplicateIDError
			if errors.As(err, &dup) {
				return codedError{err: err, code: ExitInUse}
			}
			var refused *agent.BrokerConfigError
			if errors.As(err, &refused) {
				return codedError{err: err, code: ExitUsage}
			}
			return err
		},
	}
	o.register(cmd.Flags())
	return cmd
}

// newLogger logs JSON for services and log collectors, and for people on a terminal
// (colour only there). The level it returns is the logger's: a reload sets it.
func newLogger(w io.Writer, r *config.Resolved) (zerolog.Logger, *logging.Level) {
	level := logging.NewLevel(r.LogLevel)
	return logging.New(w, r.LogFormat, level), level
}

// handleReloads calls reload on each reload signal (SIGHUP; none on Windows) until the
// returned stop is called.
func handleReloads(ctx context.Context, log zerolog.Logger, reload func()) (stop func()) {
	sigs := make(chan os.Signal, 1)
	if len(reloadSignals) == 0 {
		return func() {}
	}
	signal.Notify(sigs, reloadSignals...)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				log.Info().Str("signal", sig.String()).Msg("reloading the configuration")
				reload()
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		cancel()
		<-done
	}
}

func dirExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

func notify(log zerolog.Logger, states ...string) {
	if _, err := sdnotify.Notify(states...); err != nil {
		log.Warn().Err(err).Msg("telling systemd the service state")
	}
}

// codedError is a failure with its own exit status, reported like any other.
type codedError struct {
	err  error
	code int
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }
