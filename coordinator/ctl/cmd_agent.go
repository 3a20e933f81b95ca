package ctl

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

func agentCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "Agents: enrol one before it first connects"}

	var (
		in     client.AgentEnrolment
		asJSON bool
	)
	add := &cobra.Command{
		Use:   "add ID [--hostname H] [--broker-user U]",
		Short: "Enrol an agent (admin), so that jobs can be queued for it",
		Long: `Enrol a workstation agent by the ID it runs with (tokenfleet-agent --id). Jobs for it are
accepted from then on and wait in its broker queue until it connects. An ID already taken
is refused, naming the host that holds it.

--broker-user is the agent's own broker user, against which the coordinator checks the
sender of its messages; the default is agent-ID.`,
		Args: exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			in.ID = args[0]
			a, err := c.EnrolAgent(cmd.Context(), in)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, a)
			}
			_, err = fmt.Fprintf(e.stdout, "agent %s enrolled\n", clean(a.ID))
			return err
		}),
	}
	add.Flags().StringVar(&in.Hostname, "hostname", "", "the workstation's host name (informational until the agent reports its own)")
	add.Flags().StringVar(&in.BrokerUser, "broker-user", "", "the agent's own broker user (default agent-ID)")
	add.Flags().BoolVar(&asJSON, "json", false, "print the enrolled agent as JSON")
	cmd.AddCommand(add)
	return cmd
}
