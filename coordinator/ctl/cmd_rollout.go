package ctl

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
)

func rolloutCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Fleet rollouts: one approved request becomes many jobs, in waves, with a failure brake",
		Long: `A rollout is a job template, a target selector, a wave plan and a failure brake. Its
owner (manage_rollouts) creates it, looks at the dry run, and an approver approves it
once, bound to its binding hash: the hash of the template and the frozen target list.
The coordinator then creates the jobs wave by wave: the canary first, the next wave only
once the previous one has ended (and its pause is over), within the concurrency cap and
the maintenance windows. When too many jobs fail, the brake pauses the rollout; it
resumes only by approvals like its own.`,
	}
	cmd.AddCommand(
		rolloutCreateCommand(e),
		rolloutShowCommand(e),
		rolloutListCommand(e),
		rolloutWatchCommand(e),
		rolloutTargetsCommand(e),
		rolloutApproveCommand(e),
		rolloutRejectCommand(e),
		rolloutActionCommand(e, "pause"),
		rolloutActionCommand(e, "resume"),
		rolloutActionCommand(e, "promote"),
		rolloutActionCommand(e, "abort"),
	)
	return cmd
}

func rolloutCreateCommand(e *env) *cobra.Command {
	var (
		sf     specFlags
		dryRun bool
		asJSON bool
		key    string
	)
	cmd := &cobra.Command{
		Use:   "create [-f rollout.yaml] [flags] [--dry-run] [--idempotency-key K]",
		Short: "Create a rollout from a spec file and/or flags (manage_rollouts); --dry-run creates nothing",
		Long: `Create a rollout: its spec comes from -f FILE (YAML or JSON: name, template, selector,
plan, brake, standing, with snake_case keys; durations as 30d or 1h30m) and from the flags,
each of which replaces what the file says of its field. The coordinator freezes the
targets the selector finds, assigns each a wave, and prints what it found: the targets
by organisation, agent state and token model, the first ones, what it had to skip, the
wave sizes and the binding hash an approval will be bound to. The rollout then waits
for approval (tokenfleetctl rollout approve ID, by someone else).

--dry-run shows the same without creating anything.

Each run sends the request with a random idempotency key, and sends it again with that
key when the connection drops before the answer, so a lost answer never makes two
rollouts. A script that may run the same command again passes its own --idempotency-key
(1 to 255 printable ASCII characters, for example "renew-vpn-2026-12"): a run with a key
used before prints the rollout the first run created, as it is now, and creates nothing;
the same key with another spec is refused.`,
		Args: exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			sp, err := sf.spec(e, cmd)
			if err != nil {
				return err
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			var (
				r        client.Rollout
				replayed bool
			)
			if dryRun {
				r, err = c.DryRunRollout(cmd.Context(), sp)
			} else {
				r, replayed, err = c.CreateRolloutWithKey(cmd.Context(), sp, key)
			}
			if err != nil {
				return err
			}
			if replayed {
				if _, err := fmt.Fprintf(e.stderr, "rollout %s was created by an earlier request with this idempotency key; nothing new was created\n", clean(r.ID)); err != nil {
					return err
				}
			}
			switch {
			case asJSON:
				return printJSON(e.stdout, r)
			case replayed:
				// No preview comes with it: the rollout as it is now.
				return printRollout(e.stdout, r, e.now())
			}
			return printCreated(e.stdout, r, dryRun)
		}),
	}
	sf.add(cmd)
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "show the targets, waves and binding hash; create nothing")
	f.BoolVar(&asJSON, "json", false, "print the rollout as JSON")
	f.StringVar(&key, "idempotency-key", "", "name this request: running again with the same key prints the rollout the first run created (default: a random key per run)")
	return cmd
}

func rolloutShowCommand(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID [--json]",
		Short: "Show a rollout's state, approvals, waves and progress, and why it waits or paused",
		Args:  exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			r, err := c.GetRollout(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, r)
			}
			return printRollout(e.stdout, r, e.now())
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the rollout as JSON")
	return cmd
}

func rolloutListCommand(e *env) *cobra.Command {
	var (
		state    string
		standing bool
	)
	cmd := &cobra.Command{
		Use:   "list [--state S] [--standing[=false]] [--limit N] [--all] [--json]",
		Short: "List rollouts, newest first, with their progress",
		Long: `List rollouts, newest first. States: ` + joinStrings(rollout.States(), ", ") + `.
--standing lists the standing renewals only, --standing=false the one-off rollouts only.`,
		Args: exactArgs(),
	}
	lf := addListFlags(cmd, "rollouts")
	cmd.Flags().StringVar(&state, "state", "", "only rollouts in this state")
	completeWith(cmd, "state", rollout.States())
	cmd.Flags().BoolVar(&standing, "standing", false, "only standing renewals (--standing=false: only one-off rollouts)")
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		if state != "" && !rollout.State(state).Valid() {
			return usageErrorf("--state %q: want one of %s", state, joinStrings(rollout.States(), ", "))
		}
		f := client.RolloutFilter{State: rollout.State(state)}
		if cmd.Flags().Changed("standing") {
			f.Standing = &standing
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		return list(e, lf, c.AllRollouts(cmd.Context(), f, lf.pageSize()), func(rs []client.Rollout) error {
			t := newTable(e.stdout, "ID", "NAME", "STATE", "KIND", "PROFILE", "TARGETS", "DONE", "FAILED", "WAVE", "APPROVALS", "UPDATED")
			for _, r := range rs {
				st := string(r.State)
				if r.PauseKind != "" {
					st += " (" + string(r.PauseKind) + ")"
				}
				failed := 0
				for _, n := range r.Overall.Failures {
					failed += n
				}
				wave := "-"
				if len(r.Waves) > 0 {
					wave = waveName(r.CurrentWave)
				}
				t.row(r.ID, r.Name, st, string(r.Spec.Template.Kind), r.Spec.Template.Profile, strconv.Itoa(r.TargetCount),
					strconv.Itoa(r.Overall.Executed+r.Overall.Cancelled), strconv.Itoa(failed), wave,
					fmt.Sprintf("%d/%d", r.Approvals, r.Required), timeText(r.Updated))
			}
			return t.flush()
		})
	})
	return cmd
}

func rolloutTargetsCommand(e *env) *cobra.Command {
	var (
		wave    int
		outcome string
	)
	cmd := &cobra.Command{
		Use:   "targets ID [--wave N] [--outcome O] [--limit N] [--all] [--json]",
		Short: "List a rollout's targets in their order, with their jobs and outcomes",
		Long: `List a rollout's targets in their frozen order, each with its job, the job's state and
its outcome. --wave 0 is the canary. Outcomes: ` + joinStrings(rollout.Outcomes(), ", ") + `.`,
		Args: exactArgs("ID"),
	}
	lf := addListFlags(cmd, "targets")
	cmd.Flags().IntVar(&wave, "wave", 0, "only this wave's targets (0: the canary)")
	cmd.Flags().StringVar(&outcome, "outcome", "", "only targets with this outcome")
	completeWith(cmd, "outcome", rollout.Outcomes())
	cmd.RunE = run(func(cmd *cobra.Command, args []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		if outcome != "" && !rollout.Outcome(outcome).Valid() {
			return usageErrorf("--outcome %q: want one of %s", outcome, joinStrings(rollout.Outcomes(), ", "))
		}
		f := client.RolloutTargetFilter{Outcome: rollout.Outcome(outcome)}
		if cmd.Flags().Changed("wave") {
			if wave < 0 {
				return usageErrorf("--wave %d: want 0 (the canary) or more", wave)
			}
			f.Wave = &wave
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		return list(e, lf, c.AllRolloutTargets(cmd.Context(), args[0], f, lf.pageSize()), func(ts []client.RolloutTarget) error {
			return targetsTable(e.stdout, "", ts, true)
		})
	})
	return cmd
}

// errRolloutDeclined is an approval the approver did not confirm.
var errRolloutDeclined = errors.New("not approved: the rollout stays as it was")

func rolloutApproveCommand(e *env) *cobra.Command {
	var (
		reason string
		yes    bool
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "approve ID [--reason R] [--yes]",
		Short: "Approve a rollout, or its resumption after the brake tripped (never your own)",
		Long: `Approve a rollout as you see it: first print what is approved (the template, the
selector, the number of targets, the waves, the brake and the binding hash), then send
the approval bound to that hash, so that a rollout changed in between is refused
(binding_mismatch), never approved unseen. A rollout the brake paused is resumed by
approvals too: the same command, after reading the trip. On a terminal it asks for
confirmation first (on standard error); --yes skips the question.`,
		Args: exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			r, err := c.GetRollout(ctx, args[0])
			if err != nil {
				return err
			}
			ask := !yes && e.isTerminal(e.stdin)
			if ask {
				if _, err := io.WriteString(e.stderr, rolloutApprovalSummary(r)); err != nil {
					return err
				}
				what := "rollout " + clean(r.ID)
				if r.PauseKind == rollout.PauseBrake {
					what = "resuming rollout " + clean(r.ID)
				}
				fmt.Fprintf(e.stderr, "Approve %s? [y/N] ", what)
				ok, err := confirmed(e.stdin)
				if err != nil {
					return err
				}
				if !ok {
					return errRolloutDeclined
				}
			}
			after, err := c.ApproveRollout(ctx, r.ID, r.BindingHash, reason)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, after)
			}
			if !ask {
				if _, err := io.WriteString(e.stdout, rolloutApprovalSummary(r)); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintf(e.stdout, "rollout %s: approval recorded (%d/%d); state %s\n", clean(after.ID), after.Approvals,
				after.Required, after.State)
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the audit log)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "approve without asking for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the rollout as JSON")
	return cmd
}

// confirmed reads a yes or no.
func confirmed(in io.Reader) (bool, error) {
	answer, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("reading the answer: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

func rolloutRejectCommand(e *env) *cobra.Command {
	var (
		reason string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "reject ID --reason R",
		Short: "Reject a rollout, or its resumption after the brake tripped; a reason is required",
		Args:  exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usageErrorf("a rejection needs a reason: pass --reason")
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			r, err := c.GetRollout(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			after, err := c.RejectRollout(cmd.Context(), r.ID, r.BindingHash, reason)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, after)
			}
			_, err = fmt.Fprintf(e.stdout, "rollout %s rejected: state %s\n", clean(after.ID), after.State)
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the rollout is rejected (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the rollout as JSON")
	return cmd
}

// rolloutActionCommand is pause, resume, promote or abort.
func rolloutActionCommand(e *env, verb string) *cobra.Command {
	var (
		reason string
		asJSON bool
	)
	var short, past string
	switch verb {
	case "pause":
		short, past = "Pause a running rollout: no new job; running ones finish", "paused"
	case "resume":
		short, past = "Resume a rollout you paused (after a brake trip: rollout approve)", "resumed"
	case "promote":
		short, past = "Start the next wave now, past the pause after the current one", "promoted"
	default:
		short, past = "Abort a rollout for good: no new job, and its jobs not yet running are cancelled", "aborted"
	}
	cmd := &cobra.Command{
		Use:   verb + " ID [--reason R]",
		Short: short + " (manage_rollouts)",
		Args:  exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			ctx, id := cmd.Context(), args[0]
			var r client.Rollout
			switch verb {
			case "pause":
				r, err = c.PauseRollout(ctx, id, reason)
			case "resume":
				r, err = c.ResumeRollout(ctx, id, reason)
				if client.ErrorCode(err) == "approval_required" {
					err = hintError{err, "after a brake trip, approvers resume it with tokenfleetctl rollout approve " + id}
				}
			case "promote":
				r, err = c.PromoteRollout(ctx, id, reason)
			default:
				r, err = c.AbortRollout(ctx, id, reason)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, r)
			}
			_, err = fmt.Fprintf(e.stdout, "rollout %s %s: state %s\n", clean(r.ID), past, r.State)
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the audit log)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the rollout as JSON")
	return cmd
}

// brakeError is rollout watch --exit-on-pause seeing the brake pause the rollout
// (ExitBrake).
type brakeError struct{ msg string }

func (b brakeError) Error() string { return b.msg }

// clearScreen moves a terminal's cursor home and clears it, so that watch redraws.
const clearScreen = "\x1b[H\x1b[2J"

func rolloutWatchCommand(e *env) *cobra.Command {
	var (
		interval    time.Duration
		once        bool
		exitOnPause bool
	)
	cmd := &cobra.Command{
		Use:   "watch ID [--interval 2s] [--once] [--exit-on-pause]",
		Short: "Follow a rollout's progress until it ends: exit 0 when completed, 1 otherwise, 3 on a brake pause with --exit-on-pause",
		Long: `Show a rollout's progress (as rollout show) again every --interval until it reaches a final
state: on a terminal the screen is redrawn, otherwise each view follows the last. --once
shows it once. The exit status is 0 when the rollout completed (or, with --once, is not
over), 1 when it was aborted, rejected or expired, and, with --exit-on-pause, 3 as soon
as the brake pauses it.`,
		Args: exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if interval < 100*time.Millisecond {
				return usageErrorf("--interval %s: want at least 100ms", interval)
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			out, isTTY := e.stdout, false
			if r, ok := out.(io.Reader); ok {
				isTTY = e.isTerminal(r)
			}
			ctx := cmd.Context()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for first := true; ; first = false {
				r, err := c.GetRollout(ctx, args[0])
				if err != nil {
					return err
				}
				switch {
				case isTTY:
					fmt.Fprint(out, clearScreen)
				case !first:
					fmt.Fprintln(out)
				}
				fmt.Fprintf(out, "%s\n", e.now().UTC().Format(time.TimeOnly))
				if err := printRollout(out, r, e.now()); err != nil {
					return err
				}
				if err := watchEnd(r, exitOnPause); err != nil || r.State.Final() || once {
					return err
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-tick.C:
				}
			}
		}),
	}
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often to redraw")
	cmd.Flags().BoolVar(&once, "once", false, "show the progress once and exit")
	cmd.Flags().BoolVar(&exitOnPause, "exit-on-pause", false, "exit with status 3 when the brake pauses the rollout")
	return cmd
}

// watchEnd is the error a watch ends with for r: a final state other than completed, or a
// brake pause when asked.
func watchEnd(r client.Rollout, exitOnPause bool) error {
	switch {
	case exitOnPause && r.State == rollout.StatePaused && r.PauseKind == rollout.PauseBrake:
		msg := "rollout " + r.ID + " paused by the brake"
		if r.Trip != nil {
			msg += ": " + r.Trip.Summary
		}
		return brakeError{msg + "; approvers resume it with tokenfleetctl rollout approve " + r.ID}
	case r.State.Final() && r.State != rollout.StateCompleted:
		msg := "rollout " + r.ID + " ended " + string(r.State)
		if r.PauseReason != "" {
			msg += ": " + r.PauseReason
		}
		return errors.New(msg)
	}
	return nil
}
