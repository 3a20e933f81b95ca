// Package ctl is tokenfleetctl, the coordinator's command line: organisations, people,
// profiles, jobs and their approvals, the fleet, and client-side verification of the audit
// log. The main only calls Main, so every command runs in tests with its own arguments,
// input, output, environment and exit status.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/internal/buildinfo"
)

// Exit statuses.
const (
	ExitOK       = 0
	ExitError    = 1 // the command ran and failed: refused by the coordinator, unreachable, bad input
	ExitUsage    = 2 // the command line is wrong
	ExitTampered = 3 // audit verify found the audit chain broken, or contradicting a kept checkpoint
	ExitGaveUp   = 4 // job watch: --timeout passed before the job ended
	// ExitBrake: rollout watch --exit-on-pause saw the brake pause the rollout. It shares 3
	// with ExitTampered: no command ends with both.
	ExitBrake = 3
)

// Env is what a run gets from outside.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads an environment variable; nil reads none.
	Getenv func(string) string
	// Now is the clock for relative times; nil is time.Now.
	Now func() time.Time
	// IsTerminal reports whether Stdin is a terminal, where approve asks for
	// confirmation; nil checks the file behind Stdin.
	IsTerminal func(io.Reader) bool
}

// env is the run's state shared by the commands.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	isTerminal     func(io.Reader) bool
	conn           connFlags
	resolved       connection // the connection of the last client made, for hints on its errors
	tlsSeen        tlsRoot    // the root of the coordinator's TLS chain, once a connection verified it
}

func (e *env) warnf(format string, args ...any) {
	fmt.Fprintf(e.stderr, "tokenfleetctl: warning: "+format+"\n", args...)
}

// usageError marks a wrong command line.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// runError marks an error returned by a command's own work, as opposed to cobra's
// errors about the command line, which are all usage errors.
type runError struct{ err error }

func (r runError) Error() string { return r.err.Error() }
func (r runError) Unwrap() error { return r.err }

// run adapts a command body: errors it returns are run errors unless they say otherwise.
func run(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		var ue usageError
		if err == nil || errors.As(err, &ue) {
			return err
		}
		return runError{err}
	}
}

// Main runs tokenfleetctl with args (without the program name) and returns the exit
// status. Errors are reported on one line of e.Stderr.
func Main(ctx context.Context, args []string, e Env) int {
	en := &env{stdin: e.Stdin, stdout: e.Stdout, stderr: e.Stderr, getenv: e.Getenv, now: e.Now, isTerminal: e.IsTerminal}
	if en.stdin == nil {
		en.stdin = strings.NewReader("")
	}
	if en.stdout == nil {
		en.stdout = io.Discard
	}
	if en.stderr == nil {
		en.stderr = io.Discard
	}
	if en.getenv == nil {
		en.getenv = func(string) string { return "" }
	}
	if en.now == nil {
		en.now = time.Now
	}
	if en.isTerminal == nil {
		en.isTerminal = isTerminal
	}

	root := newRoot(en)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	name := strings.TrimSpace(strings.TrimPrefix(cmd.CommandPath(), root.Name()))
	prefix := "tokenfleetctl: "
	if name != "" {
		prefix += name + ": "
	}
	var re runError
	if errors.As(err, &re) {
		err = en.explain(err)
	}
	msg := oneLine(err.Error())
	var (
		gaveUp gaveUpError
		brake  brakeError
	)
	switch {
	case errors.As(err, &re):
		fmt.Fprintln(en.stderr, prefix+msg)
		if errors.Is(err, audit.ErrTampered) {
			return ExitTampered
		}
		if errors.As(err, &gaveUp) {
			return ExitGaveUp
		}
		if errors.As(err, &brake) {
			return ExitBrake
		}
		return ExitError
	default:
		help := "tokenfleetctl --help"
		if name != "" {
			help = "tokenfleetctl " + name + " --help"
		}
		fmt.Fprintf(en.stderr, "%s%s (see %s)\n", prefix, msg, help)
		return ExitUsage
	}
}

// oneLine keeps an error on one line whatever the server or a library put in it.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "tokenfleetctl",
		Short: "Command line of the tokenfleet coordinator",
		Long: `tokenfleetctl manages a tokenfleet coordinator: organisations, people and their API
tokens, issuance profiles, jobs and their approvals, fleet rollouts, agents and the codes
and keys they enrol with, tokens and certificates, and verifies the audit log's hash
chain on this machine.

` + connectionHelp + `

Output: aligned tables by default; --json on listings and on job show, whoami and the
decision commands prints the API's objects. Times are UTC (RFC 3339).

Exit status: 0 success, 1 the command failed (the coordinator refused it, could not be
reached, or the input is wrong), 2 the command line is wrong, 3 audit verify found the
audit log tampered with (a broken chain, or a log or checkpoint contradicting a kept
checkpoint), or rollout watch --exit-on-pause saw the brake pause the rollout, 4 job
watch gave up at its --timeout before the job ended.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	pf := root.PersistentFlags()
	pf.StringVar(&e.conn.config, "config", "", "config file (default $XDG_CONFIG_HOME/tokenfleet/ctl.yaml or ~/.config/tokenfleet/ctl.yaml)")
	pf.StringVar(&e.conn.url, "url", "", "coordinator URL (overrides $TOKENFLEET_URL and the config file)")
	pf.StringVar(&e.conn.token, "token", "", "API token (overrides $TOKENFLEET_TOKEN and the config file; visible to other local users in the process list, prefer --token-file)")
	pf.StringVar(&e.conn.tokenFile, "token-file", "", "file holding the API token, - for standard input")
	pf.StringVar(&e.conn.caFile, "ca-file", "", "PEM file of the CA certificates to trust for the coordinator")
	pf.DurationVar(&e.conn.timeout, "timeout", 60*time.Second, "time limit of each request")

	root.AddCommand(
		orgCommand(e),
		userCommand(e),
		roleCommand(e),
		recoveryCertCommand(e),
		escrowCommand(e),
		encryptionKeyCommand(e),
		recoveryCommand(e),
		profileCommand(e),
		issueCommand(e),
		jobsCommand(e),
		jobCommand(e),
		decisionCommand(e, "approve"),
		decisionCommand(e, "reject"),
		decisionCommand(e, "cancel"),
		retryCommand(e),
		withSubcommands(agentCommand(e), append(agentLifeCommands(e), agentResetKeyCommand(e))...),
		agentsCommand(e),
		enrolmentKeyCommand(e),
		tokensCommand(e),
		tokenCommand(e),
		certsCommand(e),
		revokeCommand(e),
		rolloutCommand(e),
		caCommand(e),
		whoamiCommand(e),
		auditCommand(e),
		notificationsCommand(e),
		registerCommand(e),
	)
	buildinfo.AddTo(root)
	return root
}

// exactArgs is cobra.ExactArgs with the arguments named, as a usage error.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != len(names) {
			if len(names) == 0 {
				return usageErrorf("takes no arguments, got %q", strings.Join(args, " "))
			}
			return usageErrorf("want %s, got %d argument(s)", strings.Join(names, " "), len(args))
		}
		for i, a := range args {
			if strings.TrimSpace(a) == "" {
				return usageErrorf("%s is empty", names[i])
			}
		}
		return nil
	}
}
