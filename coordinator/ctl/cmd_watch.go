package ctl

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// stepText says what a progress step means to someone at the help desk.
var stepText = map[string]string{
	"waiting_for_token":   "waiting for the token: insert it at the workstation",
	"token_found":         "token found",
	"initialising":        "initialising the token",
	"key_generated":       "key pair generated on the token",
	"csr_sent":            "certificate request sent",
	"certificate_written": "certificate written to the token",
	"verified":            "key and certificate verified on the token",
}

// stateText says what a job state means while it is watched.
func stateText(d client.JobDetail) string {
	switch d.State {
	case jobs.StatePendingApproval:
		return "waiting for approval (" + d.Approvals + ")"
	case jobs.StateApproved:
		if d.WaitingReason != "" {
			return "approved; not sent to agent " + d.Agent + " yet: " + d.WaitingReason
		}
		return "approved; being sent to agent " + d.Agent
	case jobs.StateDispatched:
		return "sent to agent " + d.Agent + "; waiting for it to start"
	case jobs.StateRunning:
		return "running on agent " + d.Agent
	case jobs.StateAwaitingCertificate:
		return "waiting for the certificate"
	case jobs.StateInstalling:
		return "certificate sent to the agent; installing"
	case jobs.StateSucceeded:
		return "succeeded"
	case jobs.StateFailed:
		return fmt.Sprintf("failed: %s: %s", d.ErrorCode, d.ErrorMessage)
	}
	return string(d.State)
}

// watchError is a job that ended without succeeding: its state is already printed.
type watchError struct{ d client.JobDetail }

func (w watchError) Error() string {
	if w.d.ErrorCode != "" {
		return fmt.Sprintf("job %s ended %s: %s: %s", w.d.ID, w.d.State, w.d.ErrorCode, w.d.ErrorMessage)
	}
	return fmt.Sprintf("job %s ended %s", w.d.ID, w.d.State)
}

func jobWatchCommand(e *env) *cobra.Command {
	var (
		interval time.Duration
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch ID [--interval 1s] [--timeout 0]",
		Short: "Follow a job live until it ends: exit 0 when it succeeded, 1 otherwise",
		Long: `Print a job's state changes and progress steps as they happen ("waiting for the token:
insert it", "key pair generated on the token", ...) until the job ends. The exit status is
0 when it succeeded and 1 when it failed, was rejected, cancelled, superseded or expired,
or when --timeout passed first.`,
		Args: exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if interval < 100*time.Millisecond {
				return usageErrorf("--interval %s: want at least 100ms", interval)
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel func()
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			var (
				lastState jobs.State
				seenSteps int
			)
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				d, err := c.GetJob(ctx, args[0])
				if err != nil {
					if ctx.Err() != nil && lastState != "" {
						return fmt.Errorf("job %s is still %s: %w", args[0], lastState, ctx.Err())
					}
					return err
				}
				now := e.now().UTC().Format(time.TimeOnly)
				// Steps came before the state they led to when the job ended in between.
				printState := func() {
					if d.State != lastState {
						fmt.Fprintf(e.stdout, "%s  %s\n", now, clean(stateText(d)))
						lastState = d.State
					}
				}
				if !jobs.Terminal(d.State) {
					printState()
				}
				for _, s := range d.Steps[min(seenSteps, len(d.Steps)):] {
					text, ok := stepText[string(s.Step)]
					if !ok {
						text = string(s.Step)
					}
					if s.Detail != "" {
						text = s.Detail // the agent's own words say more: which token, which key
					}
					fmt.Fprintf(e.stdout, "%s    attempt %d: %s\n", now, s.Attempt, clean(text))
				}
				seenSteps = max(seenSteps, len(d.Steps))
				printState()
				if jobs.Terminal(d.State) {
					if d.State == jobs.StateSucceeded {
						return nil
					}
					return watchError{d}
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("job %s is still %s: %w", d.ID, d.State, ctx.Err())
				case <-tick.C:
				}
			}
		}),
	}
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "how often to ask the coordinator")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: never)")
	return cmd
}
