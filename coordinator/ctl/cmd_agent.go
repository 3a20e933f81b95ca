package ctl

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

func agentCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "Agents: enrol, approve or reject, disable, enable, remove, rotate credentials"}

	var (
		in     client.AgentEnrolment
		from   string
		asJSON bool
	)
	add := &cobra.Command{
		Use:   "add ID [--hostname H] [--broker-user U] | add --from FILE",
		Short: "Enrol an agent, or every agent of a CSV file (admin), so that jobs can be queued for them",
		Long: `Enrol a workstation agent by the ID it runs with (tokenfleet-agent --id). Jobs for it are
accepted from then on and wait in its broker queue until it connects. An ID already taken
is refused, naming the host that holds it.

--broker-user is the agent's own broker user, against which the coordinator checks the
sender of its messages; the default is agent-ID.

--from FILE enrols every agent of a CSV file (- for standard input): a header line naming
the columns id and hostname, and optionally broker_user, in any order; then one agent a
line. Empty lines and lines starting with # are skipped. For example:

  id,hostname,broker_user
  ws-0042,ws-0042.example.org,
  ws-0043,ws-0043.example.org,agent-ws-0043

The agents are sent 1,000 to a request, each request all or nothing. A file that cannot
be read as such is refused before anything is sent, naming the line and column. When the
coordinator refuses a request, each refused line is printed with its field and what is
wrong, nothing of that request is enrolled, and the command stops: the requests before it
stay enrolled, and the message says from which line to go on.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if from == "" {
				return exactArgs("ID")(cmd, args)
			}
			if len(args) > 0 || in.Hostname != "" || in.BrokerUser != "" {
				return usageErrorf("--from takes the agents from the file: give no ID, --hostname or --broker-user with it")
			}
			return nil
		},
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			if from != "" {
				return e.enrolFromFile(cmd, c, from, asJSON)
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
	add.Flags().StringVar(&from, "from", "", "enrol every agent of this CSV file (- for standard input)")
	add.Flags().BoolVar(&asJSON, "json", false, "print the enrolled agent (with --from: the list of them) as JSON")
	cmd.AddCommand(add)
	return cmd
}
