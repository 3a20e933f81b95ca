package ctl

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// maxPasswordInput bounds what is read as a password: the coordinator refuses more than
// 1024 bytes, and says so; more than that is not read at all.
const maxPasswordInput = 4096

func userPasswordCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "password USERNAME",
		Short: "Set a person's password for the web console (their own, or anyone's with manage_users)",
		Long: `Set a person's password for signing in to the web console. The password is read from
standard input: at a terminal it is asked for twice, without echo; otherwise the first
line of standard input is the password (printf '%s\n' "$PW" | tokenfleetctl user password
alice). It is never taken from the command line, where other users of the machine could
see it. At least 12 characters. Setting it ends that person's console sessions and clears
their failed sign-ins and lock.`,
		Args: exactArgs("USERNAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			pw, err := e.readPassword(args[0])
			if err != nil {
				return err
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			if err := c.SetPassword(cmd.Context(), args[0], pw); err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "password of %s set; their console sessions were ended\n", clean(args[0]))
			return err
		}),
	}
}

// readPassword reads a new password: asked twice without echo at a terminal, else the
// first line of standard input.
func (e *env) readPassword(username string) (string, error) {
	in := bufio.NewReaderSize(io.LimitReader(e.stdin, maxPasswordInput), maxPasswordInput)
	if !e.isTerminal(e.stdin) {
		pw, err := readLine(in)
		if err != nil {
			return "", err
		}
		if pw == "" {
			return "", usageErrorf("no password on standard input: write it on the first line (or run at a terminal to be asked for it)")
		}
		return pw, nil
	}
	restore, err := withoutEcho(e.stdin)
	if err != nil {
		return "", fmt.Errorf("turning the terminal's echo off: %w", err)
	}
	defer restore()
	ask := func(prompt string) (string, error) {
		fmt.Fprint(e.stderr, prompt)
		pw, err := readLine(in)
		fmt.Fprintln(e.stderr) // the Enter typed was not echoed
		return pw, err
	}
	pw, err := ask("New console password for " + clean(username) + ": ")
	if err != nil {
		return "", err
	}
	if pw == "" {
		return "", usageErrorf("no password given")
	}
	again, err := ask("Again: ")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", usageErrorf("the two passwords differ; nothing was changed")
	}
	return pw, nil
}

// readLine reads one line without its line ending.
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	if !strings.HasSuffix(line, "\n") && len(line) >= maxPasswordInput {
		return "", usageErrorf("the password is longer than %d bytes", maxPasswordInput)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func userUnlinkOIDCCommand(e *env) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "unlink-oidc USERNAME --reason R",
		Short: "Remove a person's links to identity provider accounts (manage_users): their next OIDC sign-in links them again",
		Long: `Remove a person's links to identity provider accounts. The console links an account of
the identity provider to the tokenfleet user of the same username at its first sign-in,
and refuses another account of the same provider under that username afterwards (a name
given again to someone else must not take over the first one's access). When it is the
same person with an account made anew at the provider, remove the old link: their next
sign-in links the new account.`,
		Args: exactArgs("USERNAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usageErrorf("--reason is required: say why, for the audit log")
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			n, err := c.UnlinkOIDC(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			links := "links"
			if n == 1 {
				links = "link"
			}
			_, err = fmt.Fprintf(e.stdout, "%d identity provider %s of %s removed\n", n, links, clean(args[0]))
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	return cmd
}
