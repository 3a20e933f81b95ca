package ctl

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// tokenCommand is the token life cycle: show, the help desk's moves, and the requests for
// a temporary token or a replacement.
func tokenCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "A token's life cycle: show, suspend, reinstate, lost, stolen, found, damaged, retire, replace, temporary",
		Long: `A token's life cycle, by its serial. A token the help desk never moved is active.

  suspend    left at home, temporarily lost: its certificates are put on hold (CRL reason
             certificateHold); it cannot be issued to
  reinstate  back from suspended: the hold is lifted (the certificates leave the CRL) and
             its temporary tokens are retired, their certificates revoked
  lost, stolen
             its certificates are revoked (keyCompromise); a suspended token may move on
             to lost or stolen; their open jobs are cancelled (suspend, damaged and
             retire too; a wipe goes on for a damaged or retired token)
  found      a lost or stolen token back: its certificates stay revoked; it takes only a
             wipe job, whose success makes it a blank active token to issue again, or
             it is retired
  damaged, retire
             its certificates are revoked (cessationOfOperation)
  replace    queue an issue job for a new token for its holder; when it succeeds, this
             token becomes replaced and its certificates are revoked (superseded)
  temporary  queue an issue job for a temporary token standing in for a suspended token,
             with a profile that has temporary.validity

Every move needs --reason, kept in the audit log (the manage_tokens permission: help desk,
admin). replace and temporary need the request permission, like issue.`,
	}
	move := func(use, state, short string) *cobra.Command {
		var (
			reason string
			asJSON bool
		)
		c := &cobra.Command{
			Use:   use + " SERIAL --reason R",
			Short: short,
			Args:  exactArgs("SERIAL"),
			RunE: run(func(cmd *cobra.Command, args []string) error {
				if strings.TrimSpace(reason) == "" {
					return usageErrorf("say why: pass --reason (it goes into the audit log)")
				}
				c, err := e.newClient(e.conn)
				if err != nil {
					return err
				}
				l, err := c.SetTokenState(cmd.Context(), args[0], state, reason)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(e.stdout, l)
				}
				_, err = fmt.Fprintf(e.stdout, "token %s is %s\n", clean(l.Serial), clean(l.State))
				return err
			}),
		}
		c.Flags().StringVar(&reason, "reason", "", "why (required; kept in the audit log)")
		c.Flags().BoolVar(&asJSON, "json", false, "print the token's life cycle as JSON")
		return c
	}
	cmd.AddCommand(
		tokenShowCommand(e),
		move("suspend", "suspended", "Suspend a token (left at home): its certificates go on hold"),
		move("reinstate", "active", "Reinstate a suspended token: the hold is lifted, its temporary tokens end"),
		move("lost", "lost", "Declare a token lost: its certificates are revoked (keyCompromise)"),
		move("stolen", "stolen", "Declare a token stolen: its certificates are revoked (keyCompromise)"),
		move("found", "found", "Declare a lost or stolen token found: it takes only a wipe, which makes it blank and active again"),
		move("damaged", "damaged", "Declare a token damaged: its certificates are revoked (cessationOfOperation)"),
		move("retire", "retired", "Retire a token: its certificates are revoked (cessationOfOperation)"),
		tokenIssueCommand(e, "replace", "Queue a new token for the holder; on success the old one is replaced and its certificates revoked"),
		tokenIssueCommand(e, "temporary", "Queue a temporary token standing in for a suspended one"),
	)
	return cmd
}

func tokenShowCommand(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show SERIAL",
		Short: "Show where a token is in its life cycle, with its history",
		Args:  exactArgs("SERIAL"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			l, err := c.TokenLife(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, l)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "token %s: %s\n", clean(l.Serial), clean(l.State))
			if l.Holder != "" {
				fmt.Fprintf(&b, "holder: %s\n", clean(l.Holder))
			}
			if l.TemporaryFor != "" {
				fmt.Fprintf(&b, "temporary token for: %s\n", clean(l.TemporaryFor))
			}
			if l.ReplacedBy != "" {
				fmt.Fprintf(&b, "replaced by: %s\n", clean(l.ReplacedBy))
			}
			for _, t := range l.Temporary {
				fmt.Fprintf(&b, "temporary token: %s (%s)\n", clean(t.Serial), clean(t.State))
			}
			for _, h := range l.History {
				from := h.From
				if from == "" {
					from = "active"
				}
				fmt.Fprintf(&b, "%s  %s -> %s  by %s: %s", timeText(h.At), clean(from), clean(h.To), clean(h.Actor), clean(h.Reason))
				if h.JobID != "" {
					fmt.Fprintf(&b, " (job %s)", clean(h.JobID))
				}
				b.WriteByte('\n')
			}
			_, err = fmt.Fprint(e.stdout, b.String())
			return err
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the token's life cycle as JSON")
	return cmd
}

func tokenIssueCommand(e *env, what, short string) *cobra.Command {
	var (
		req      client.TokenIssue
		deadline string
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   what + " SERIAL --holder H --agent A --profile P [--new-token SERIAL]",
		Short: short,
		Args:  exactArgs("SERIAL"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if deadline != "" {
				t, err := e.parseDeadline(deadline)
				if err != nil {
					return err
				}
				req.Deadline = t
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			var j client.Job
			if what == "replace" {
				j, err = c.RequestReplacement(cmd.Context(), args[0], req)
			} else {
				j, err = c.RequestTemporaryToken(cmd.Context(), args[0], req)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, j)
			}
			_, err = fmt.Fprintln(e.stdout, j.ID)
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Holder, "holder", "", "the token's holder (required)")
	f.StringVar(&req.Agent, "agent", "", "agent ID of the workstation the new token is in (required)")
	f.StringVar(&req.Profile, "profile", "", "profile name (required)")
	f.StringVar(&req.TokenSerial, "new-token", "", "serial of the new token (default: any token the profile allows)")
	f.StringVar(&deadline, "deadline", "", "deadline: RFC 3339 time or a span from now (72h, 3d)")
	f.BoolVar(&asJSON, "json", false, "print the created job as JSON instead of its ID")
	for _, name := range []string{"holder", "agent", "profile"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}
