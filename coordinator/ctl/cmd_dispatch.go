package ctl

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// withSubcommands adds subs to a command group.
func withSubcommands(c *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	c.AddCommand(subs...)
	return c
}

func retryCommand(e *env) *cobra.Command {
	var (
		reason, deadline string
		asJSON           bool
	)
	cmd := &cobra.Command{
		Use:   "retry ID [--reason R] [--deadline T]",
		Short: "Retry a failed job as a new attempt (its requester, help desk or admin)",
		Long: `Retry a failed job: a new attempt of the same job is dispatched to its agent, which
reuses the token, key and PINs the job already made. The job's approvals must still be
valid; otherwise file a new request. Results of the failed attempt no longer count.

Without --deadline the job keeps its deadline, or, when that has passed, gets as long again
as it had at first.`,
		Args: exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			req := client.RetryRequest{Reason: reason}
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
			d, err := c.Retry(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, d)
			}
			_, err = fmt.Fprintf(e.stdout, "job %s retried: attempt %d, state %s\n", clean(d.ID), d.Attempt, d.State)
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the job's history and the audit log)")
	cmd.Flags().StringVar(&deadline, "deadline", "", "new deadline: RFC 3339 time or a span from now (72h, 3d)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the job as JSON")
	return cmd
}

func revokeCommand(e *env) *cobra.Command {
	var (
		reason, comment string
		asJSON          bool
	)
	cmd := &cobra.Command{
		Use:   "revoke SERIAL --reason R [--comment C]",
		Short: "Revoke a certificate (admin or CA operator); the CRL lists it from then on",
		Long: `Revoke a certificate the coordinator issued, by its serial number (hexadecimal, as
tokenfleetctl certs shows it). The reason is an RFC 5280 CRL reason: unspecified,
key_compromise, ca_compromise, affiliation_changed, superseded, cessation_of_operation,
privilege_withdrawn or aa_compromise. The revocation is final and audited.`,
		Args: exactArgs("SERIAL"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usageErrorf("a revocation needs a reason: pass --reason (for example key_compromise or superseded)")
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			cert, err := c.RevokeCertificate(cmd.Context(), args[0], reason, comment)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, cert)
			}
			_, err = fmt.Fprintf(e.stdout, "certificate %s revoked at %s (%s)\n", clean(cert.Serial), timeText(cert.RevokedAt), clean(cert.Subject))
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "RFC 5280 reason (required), e.g. key_compromise, superseded")
	cmd.Flags().StringVar(&comment, "comment", "", "why, in words (kept in the audit log)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the certificate as JSON")
	return cmd
}

func caCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The coordinator's CA: its certificate for relying parties"}
	var asJSON bool
	certCmd := &cobra.Command{
		Use:   "cert",
		Short: "Print the CA certificate (PEM, the issuing CA first) for relying parties",
		Args:  exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			chain, err := c.CACertificates(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, chain)
			}
			_, err = io.WriteString(e.stdout, chain.PEM)
			return err
		}),
	}
	certCmd.Flags().BoolVar(&asJSON, "json", false, "print the certificates' details and PEM as JSON")
	cmd.AddCommand(certCmd)
	return cmd
}

func agentResetKeyCommand(e *env) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "reset-key ID [--reason R]",
		Short: "Forget an agent's seal key (admin), so that its next hello records a new one",
		Long: `Forget the seal key an agent presented at its first hello. A reinstalled agent has a new
key, which the coordinator refuses until an administrator resets the recorded one: this is
the agent's re-enrolment. The reset is audited.`,
		Args: exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			a, err := c.ResetAgentKey(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "agent %s: seal key reset; its next hello records a new one\n", clean(a.ID))
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the audit log)")
	return cmd
}
