package ctl

import (
	"fmt"

	"github.com/spf13/cobra"
)

func jobPINCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "pin ID",
		Short: "Show the user PIN a job set on its token, once (the job's requester or an admin)",
		Long: `Print the user PIN the agent generated and set on the token of a succeeded job, for
the person who hands the token over. The coordinator shows it once and records who asked;
a second request is refused (an unblock_pin job sets a new PIN). Only the PIN is printed,
on standard output.`,
		Args: exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			pin, err := c.RevealUserPIN(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.stdout, pin)
			return err
		}),
	}
}
