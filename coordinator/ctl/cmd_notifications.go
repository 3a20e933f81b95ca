package ctl

import (
	"strconv"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

func notificationsCommand(e *env) *cobra.Command {
	var f client.NotificationFilter
	cmd := &cobra.Command{
		Use:   "notifications [--state pending|sent|failed] [--event E] [--channel email|webhook]",
		Short: "The notifications outbox: e-mails and webhook calls, sent, pending or given up (admin)",
		Long: `List the notices the coordinator sent or is sending, newest first: one line per notice,
recipient and channel. A pending notice shows its attempts and when it is tried next
(HELD: the recipient's rate limit holds it for a digest); a failed one was given up after
notifications.max_attempts, with its last error.`,
		Args: exactArgs(),
	}
	lf := addListFlags(cmd, "notifications")
	cmd.Flags().StringVar(&f.State, "state", "", "only notices in this state: pending, sent or failed")
	cmd.Flags().StringVar(&f.Event, "event", "", "only notices of this event, e.g. job.approval_requested")
	cmd.Flags().StringVar(&f.Channel, "channel", "", "only email or webhook")
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		switch f.State {
		case "", "pending", "sent", "failed":
		default:
			return usageErrorf("--state %q: want pending, sent or failed", f.State)
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		return list(e, lf, c.AllNotifications(cmd.Context(), f, lf.pageSize()), func(ns []client.Notification) error {
			t := newTable(e.stdout, "ID", "CREATED", "EVENT", "CHANNEL", "RECIPIENT", "STATE", "ATTEMPTS", "NEXT / SENT", "LAST ERROR")
			for _, n := range ns {
				state, when := n.State, ""
				switch n.State {
				case "sent":
					when = timeText(n.SentAt)
				case "pending":
					when = timeText(n.NextAttempt)
					if n.Held {
						state = "pending (held)"
					}
				}
				t.row(n.ID, timeText(n.Created), n.Event, n.Channel, n.Recipient, state, strconv.Itoa(n.Attempts), when, n.LastError)
			}
			return t.flush()
		})
	})
	return cmd
}
