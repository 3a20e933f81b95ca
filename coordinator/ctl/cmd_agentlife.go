package ctl

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// agentMove is one step of an agent's life cycle, as a subcommand of agent.
type agentMove struct {
	verb, short, long string
	done              string // what the agent is after it: "approved"
	call              func(*client.Client, context.Context, string, string) (client.Agent, error)
}

var agentMoves = []agentMove{
	{verb: "approve", done: "approved", call: (*client.Client).ApproveAgent,
		short: "Approve a pending agent (admin): it becomes active and gets its own broker user",
		long: `Approve an agent that enrolled with a key held for approval (tokenfleetctl agents
--pending lists them). It becomes active; the coordinator creates its broker user and the
agent, which polls, fetches its credentials and connects.`},
	{verb: "reject", done: "rejected", call: (*client.Client).RejectAgent,
		short: "Refuse a pending agent (admin): it is removed, with the reason"},
	{verb: "disable", done: "disabled", call: (*client.Client).DisableAgent,
		short: "Disable an agent (admin; --reason required): its open jobs end, its broker user is deleted",
		long: `Disable an agent: its open jobs end with the reason (cancelled when they had not started,
failed when they had), its broker user is deleted and its connections closed, and what
it still sends is refused. tokenfleetctl agent enable ID makes it active again.`},
	{verb: "enable", done: "enabled", call: (*client.Client).EnableAgent,
		short: "Make a disabled agent active again (admin), with a new broker password"},
	{verb: "remove", done: "removed", call: (*client.Client).RemoveAgent,
		short: "Remove an agent for good (admin; --reason required), as disable does; its ID stays taken",
		long: `Remove an agent for good: as disable, its open jobs end, its broker user is deleted and
its connections closed. Its record stays for its history, and its ID stays taken.`},
	{verb: "rotate-credentials", call: (*client.Client).RotateAgentCredentials,
		short: "Give an active agent a new broker password (admin); no job is interrupted",
		long: `Give an active agent a new broker password. Its open connections stay up, so no job is
interrupted; the agent fetches the new password the next time the broker refuses the
old one.`},
}

// agentLifeCommands are the agent's life-cycle subcommands.
func agentLifeCommands(e *env) []*cobra.Command {
	cmds := make([]*cobra.Command, len(agentMoves))
	for i, m := range agentMoves {
		cmds[i] = agentMoveCommand(e, m)
	}
	return cmds
}

func agentMoveCommand(e *env, m agentMove) *cobra.Command {
	var (
		reason string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   m.verb + " ID [--reason R]",
		Short: m.short,
		Long:  m.long,
		Args:  exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			a, err := m.call(c, cmd.Context(), args[0], reason)
			if client.ErrorCode(err) == "reason_required" {
				return hintError{err, "pass --reason R"}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, a)
			}
			if m.done == "" {
				_, err = fmt.Fprintf(e.stdout, "agent %s: broker credentials rotated; the agent fetches them when the broker refuses its old password\n", clean(a.ID))
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "agent %s %s: state %s\n", clean(a.ID), m.done, clean(a.State))
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the agent's record and the audit log)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the agent as JSON")
	return cmd
}
