package cli

import (
	"context"
	"errors"
	"io"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/agent/config"
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
is flushed for up to --shutdown-grace. A second one ends the process at once.

A broker that refuses the agent's login or vhost, or has no queue for it (the agent is
not enrolled), is a configuration error: at the first connection the agent stops at once
saying what fixes it; once it has been connected it retries such refusals for a minute
(a broker restarting) before it stops.

Exit status: 0 after a clean shutdown, 1 on failure, 2 for a configuration error,
3 when another connected agent holds the agent ID.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := o.resolve(cmd, e.logLevel)
			if err != nil {
				return err
			}
			out, closeOut, err := logOutput(r.Agent.DataDir, e.stderr)
			if err != nil {
				return err
			}
			defer closeOut()
			log := newLogger(out, r)
			for _, w := range r.Warnings {
				log.Warn().Msg(w)
			}
			cfg := r.Agent
			cfg.Ready = func() { notify(log, sdnotify.Ready, sdnotify.Status("running; connecting to the broker")) }
			cfg.Status = func(line string) { notify(log, sdnotify.Status(line)) }
			a, err := agent.New(cfg, log)
			if err != nil {
				return configError{err}
			}
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

// newLogger logs JSON for services and log collectors, and for people on a terminal.
func newLogger(w io.Writer, r *config.Resolved) zerolog.Logger {
	format := r.LogFormat
	if format == "" {
		format = "json"
		if isTerminal(w) {
			format = "console"
		}
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, NoColor: !isTerminal(w)}
	}
	return zerolog.New(w).Level(r.LogLevel).With().Timestamp().Logger()
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
