package ctl

import (
	"context"
	"fmt"
	"strings"
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
	"key_imported":        "key imported onto the token",
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

// gaveUpError is job watch reaching its --timeout before the job ended (ExitGaveUp).
type gaveUpError struct{ msg string }

func (g gaveUpError) Error() string { return g.msg }

// presenceText says what the job waits for when its agent is not connected; "" when the
// agent is connected or the job does not wait on it.
func presenceText(d client.JobDetail, now time.Time) string {
	switch d.State {
	case jobs.StateApproved, jobs.StateDispatched, jobs.StateRunning, jobs.StateInstalling:
	default:
		return ""
	}
	switch d.AgentPresence {
	case "offline":
	case "never_connected":
		return fmt.Sprintf("agent %s has never connected: the job waits until tokenfleet-agent runs with --id %s and reaches the broker", d.Agent, d.Agent)
	default:
		return "" // online, or a coordinator that does not say
	}
	return fmt.Sprintf("agent %s is offline (last seen %s): the job waits until it reconnects", d.Agent, relText(d.AgentLastSeen, now))
}

// waitText is a duration for people: "300ms", "45s", "2m", "1m30s", "1h5m".
func waitText(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func jobWatchCommand(e *env) *cobra.Command {
	var (
		interval time.Duration
		timeout  time.Duration
		remind   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch ID [--interval 1s] [--timeout 0] [--remind 30s]",
		Short: "Follow a job live until it ends: exit 0 when it succeeded, 1 otherwise, 4 at --timeout",
		Long: `Print a job's state changes and progress steps as they happen ("waiting for the token:
insert it", "key pair generated on the token", ...) until the job ends. When the job waits
on an agent that is offline or has never connected, it says so at once. While the job
waits, it says again every --remind how long it has been watched and what it waits for.

The exit status is 0 when the job succeeded and 1 when it failed, was rejected,
cancelled, superseded or expired; 4 when --timeout passed first (the job goes on).`,
		Args: exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if interval < 100*time.Millisecond {
				return usageErrorf("--interval %s: want at least 100ms", interval)
			}
			if remind <= 0 {
				return usageErrorf("--remind %s: want a positive duration such as 30s", remind)
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			parent := cmd.Context()
			ctx := parent
			if timeout > 0 {
				var cancel func()
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			var (
				last         client.JobDetail
				seenSteps    int
				lastPresence string
				start        = e.now()
				lastSaid     = start
			)
			// gaveUp is the end at --timeout, in words.
			gaveUp := func() error {
				msg := fmt.Sprintf("gave up after %s: job %s", waitText(timeout), args[0])
				if last.State != "" {
					msg += " is still " + stateText(last)
					if p := presenceText(last, e.now()); p != "" {
						msg += "; " + p
					}
				}
				return gaveUpError{msg + "; the job goes on: watch it again with tokenfleetctl job watch " + args[0]}
			}
			timedOut := func() bool { return timeout > 0 && ctx.Err() != nil && parent.Err() == nil }
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				d, err := c.GetJob(ctx, args[0])
				if err != nil {
					if timedOut() {
						return gaveUp()
					}
					return err
				}
				nowT := e.now()
				now := nowT.UTC().Format(time.TimeOnly)
				say := func(format string, a ...any) {
					fmt.Fprintf(e.stdout, "%s  %s\n", now, clean(fmt.Sprintf(format, a...)))
					lastSaid = nowT
				}
				// Steps came before the state they led to when the job ended in between.
				printState := func() {
					if d.State != last.State {
						say("%s", stateText(d))
						last.State = d.State
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
					say("  attempt %d: %s", s.Attempt, text)
				}
				seenSteps = max(seenSteps, len(d.Steps))
				printState()
				if jobs.Terminal(d.State) {
					if d.State == jobs.StateSucceeded {
						return nil
					}
					return watchError{d}
				}
				presence := presenceText(d, nowT)
				switch {
				case presence != "" && presence != lastPresence:
					say("%s", presence)
				case presence == "" && lastPresence != "" && d.AgentPresence == "online":
					say("agent %s is online", d.Agent)
				case nowT.Sub(lastSaid) >= remind:
					msg := fmt.Sprintf("watched for %s: still %s", waitText(nowT.Sub(start)), stateText(d))
					if presence != "" {
						msg += "; " + presence
					}
					say("%s", msg)
				}
				lastPresence = presence
				last = d
				select {
				case <-ctx.Done():
					if timedOut() {
						return gaveUp()
					}
					return ctx.Err()
				case <-tick.C:
				}
			}
		}),
	}
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "how often to ask the coordinator")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long, with exit status 4 (0: never)")
	cmd.Flags().DurationVar(&remind, "remind", 30*time.Second, "while the job waits, say again this often how long it has waited and for what")
	return cmd
}
