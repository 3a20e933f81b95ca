// Package cli is the command line of tokenfleet-agent. The main only calls Main, so every
// command can be tested with its own arguments, output and exit status.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/internal/buildinfo"
)

// Exit statuses.
const (
	ExitOK    = 0
	ExitError = 1 // the command ran and failed
	ExitUsage = 2 // the command line or the configuration is wrong
)

// usageError marks errors in the command line itself.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitError carries an exit status for a failure that has already been reported.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// env is what commands get from outside.
type env struct {
	stdout, stderr io.Writer
	logLevel       string
}

func (e *env) logger() zerolog.Logger {
	lvl, err := zerolog.ParseLevel(e.logLevel)
	if err != nil || e.logLevel == "" {
		lvl = zerolog.WarnLevel
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: e.stderr, NoColor: !isTerminal(e.stderr)}).
		Level(lvl).With().Timestamp().Logger()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Main runs tokenfleet-agent with args (without the program name) and returns the exit
// status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "tokenfleet-agent",
		Short:         "tokenfleet workstation agent: detects tokens, initialises them, generates keys, installs certificates",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.PersistentFlags().StringVar(&e.logLevel, "log-level", "warn", "log level: debug, info, warn, error (run: info unless set here or in its configuration)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(tokensCommand(e), runCommand(e), enrolCommand(e), installCommand(e), uninstallCommand(e),
		startCommand(e), stopCommand(e), statusCommand(e), doctorCommand(e))
	buildinfo.AddTo(root)

	err := root.ExecuteContext(ctx)
	var (
		ee exitError
		ue usageError
		ce configError
		xe codedError
	)
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue), errors.As(err, &ce):
		fmt.Fprintf(stderr, "tokenfleet-agent: %v\n", err)
		return ExitUsage
	case errors.As(err, &xe):
		fmt.Fprintf(stderr, "tokenfleet-agent: %v\n", err)
		return xe.code
	default:
		fmt.Fprintf(stderr, "tokenfleet-agent: %v\n", err)
		return ExitError
	}
}
