package ctl

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
)

// printCreated prints a created rollout, or a dry run: what the selector found, the
// waves and the binding hash.
func printCreated(w io.Writer, r client.Rollout, dryRun bool) error {
	if dryRun {
		fmt.Fprintln(w, "Dry run: nothing was created.")
	} else {
		fmt.Fprintf(w, "Rollout %s created: %s, approvals %d/%d.\n", clean(r.ID), r.State, r.Approvals, r.Required)
	}
	t := newTable(w)
	t.row("Name", r.Name)
	t.row("Template", templateText(r.Spec))
	t.row("Selector", selectorText(r.Spec.Selector))
	p := r.Preview
	if p == nil {
		p = &client.RolloutPreview{}
	}
	targets := strconv.Itoa(r.TargetCount)
	if p.SkippedCount > 0 {
		targets += fmt.Sprintf(" (%d skipped)", p.SkippedCount)
	}
	t.row("Targets", targets)
	t.row("Waves", waveSizesText(p.WaveSizes))
	t.row("Plan", planText(r.Spec.Plan, r.Spec.Standing))
	t.row("Brake", brakeText(r.Spec.Brake))
	t.row("Binding hash", r.BindingHash)
	if err := t.flush(); err != nil {
		return err
	}
	for _, g := range []struct {
		title string
		gs    []client.RolloutGroup
	}{{"By organisation", p.ByOrganization}, {"By agent state", p.ByAgentState}, {"By token model", p.ByTokenModel}} {
		if len(g.gs) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", g.title)
		t := newTable(w)
		for _, x := range g.gs {
			key := x.Key
			if key == "" {
				key = "(none)"
			}
			t.row("  "+key, strconv.Itoa(x.Count))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(p.First) > 0 {
		title := "Targets"
		if len(p.First) < r.TargetCount {
			title = fmt.Sprintf("First %d targets", len(p.First))
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		if err := targetsTable(w, "  ", p.First, false); err != nil {
			return err
		}
	}
	if len(p.Skipped) > 0 {
		fmt.Fprintf(w, "\nSkipped (%d):\n", p.SkippedCount)
		t := newTable(w, "  AGENT", "TOKEN", "CERTIFICATE", "WHY")
		for _, s := range p.Skipped {
			t.row("  "+s.AgentID, s.TokenSerial, s.CertificateSerial, s.Reason)
		}
		if err := t.flush(); err != nil {
			return err
		}
		if n := p.SkippedCount - len(p.Skipped); n > 0 {
			fmt.Fprintf(w, "  ... and %d more\n", n)
		}
	}
	if !dryRun && r.State == rollout.StatePendingApproval {
		fmt.Fprintf(w, "\nWaiting for approval: tokenfleetctl rollout approve %s (someone else than you)\n", clean(r.ID))
	}
	return nil
}

func targetsTable(w io.Writer, indent string, ts []client.RolloutTarget, withJobs bool) error {
	header := []string{indent + "SEQ", "WAVE", "AGENT", "HOST", "TOKEN", "MODEL", "HOLDER", "ORG", "CERTIFICATE"}
	if withJobs {
		header = append(header, "JOB", "STATE", "OUTCOME", "ERROR")
	}
	t := newTable(w, header...)
	for _, x := range ts {
		row := []string{indent + strconv.Itoa(x.Seq), waveName(x.Wave), x.AgentID, x.Hostname, x.TokenSerial, x.TokenModel,
			x.Holder, x.Organization, x.CertificateSerial}
		if withJobs {
			row = append(row, x.JobID, string(x.JobState), string(x.Outcome), strings.TrimPrefix(x.ErrorCode+": "+x.ErrorMessage, ": "))
		}
		t.row(row...)
	}
	return t.flush()
}

func waveName(w int) string {
	if w == 0 {
		return "canary"
	}
	return "wave " + strconv.Itoa(w)
}

func waveSizesText(sizes []int) string {
	if len(sizes) == 0 {
		return ""
	}
	parts := make([]string, len(sizes))
	for i, n := range sizes {
		parts[i] = fmt.Sprintf("%s %d", waveName(i), n)
	}
	return strings.Join(parts, ", ")
}

func templateText(s rollout.Spec) string {
	t := s.Template
	out := string(t.Kind) + ", profile " + t.Profile + hashSuffix(t.ProfileHash)
	if t.Deadline > 0 {
		out += ", deadline " + t.Deadline.String() + " per job"
	}
	if t.Holder != "" {
		out += ", holder " + t.Holder
	}
	if s.Standing {
		out += "; standing renewal"
	}
	return out
}

func selectorText(s rollout.Selector) string {
	var parts []string
	add := func(what string, vs ...string) {
		if len(vs) > 0 && strings.Join(vs, "") != "" {
			parts = append(parts, what+" "+strings.Join(vs, ", "))
		}
	}
	a := s.Agents
	add("agents of", a.Organizations...)
	add("agents tagged", a.Tags...)
	add("hosts", a.HostPattern)
	add("agents", a.IDs...)
	add("agent states", a.States...)
	add("token models", s.Tokens.Models...)
	add("firmware", s.Tokens.Firmware...)
	add("certificates of", s.Certificates.Profile)
	if s.Certificates.ExpiresWithin > 0 {
		parts = append(parts, "expiring within "+s.Certificates.ExpiresWithin.String())
	}
	add("holders of", s.Holders.Organizations...)
	if len(parts) == 0 {
		return "every agent"
	}
	return strings.Join(parts, "; ")
}

func planText(p rollout.Plan, standing bool) string {
	var parts []string
	c := p.Canary
	switch {
	case c.Percent > 0:
		parts = append(parts, fmt.Sprintf("canary %g%%", c.Percent))
	default:
		parts = append(parts, fmt.Sprintf("canary %d", c.Count))
	}
	if c.PerModel {
		parts[0] += " (one per token model first)"
	}
	switch {
	case p.Exponential != nil:
		parts = append(parts, fmt.Sprintf("waves of %d×%g^n", p.Exponential.Start, p.Exponential.Factor))
	case len(p.Waves) > 0:
		ws := make([]string, len(p.Waves))
		for i, w := range p.Waves {
			ws[i] = strconv.FormatFloat(w, 'f', -1, 64) + "%"
		}
		parts = append(parts, "waves "+strings.Join(ws, ", "))
	case standing:
		parts = append(parts, "then one open wave")
	}
	if p.MaxConcurrent > 0 {
		parts = append(parts, fmt.Sprintf("at most %d at once", p.MaxConcurrent))
	}
	switch {
	case p.Pause.UntilPromoted:
		parts = append(parts, "each next wave when promoted")
	case p.Pause.After > 0:
		parts = append(parts, p.Pause.After.String()+" between waves")
	}
	for _, w := range p.Windows {
		days := "daily"
		if len(w.Days) > 0 {
			days = strings.Join(w.Days, ",")
		}
		zone := w.TimeZone
		if zone == "" {
			zone = "UTC"
		}
		parts = append(parts, fmt.Sprintf("window %s %s-%s %s", days, w.Start, w.End, zone))
	}
	return strings.Join(parts, "; ")
}

func brakeText(b rollout.Brake) string {
	if b.Disabled {
		return "DISABLED: the rollout never pauses on failures"
	}
	out := fmt.Sprintf("pauses at %g%% failures once %d jobs ended (%s)", b.ThresholdPercent, b.MinExecuted, joinStrings(b.Outcomes, ", "))
	if b.PerWave {
		out += ", overall and per wave"
	}
	return out
}

// printRollout is rollout show: the rollout, its waves table and the brake's trip.
func printRollout(w io.Writer, r client.Rollout, now time.Time) error {
	t := newTable(w)
	t.row("Rollout", r.ID+" ("+r.Name+")")
	state := string(r.State)
	if r.PauseKind != "" {
		state += " (" + string(r.PauseKind) + ")"
	}
	t.row("State", state)
	t.row("Template", templateText(r.Spec))
	t.row("Selector", selectorText(r.Spec.Selector))
	t.row("Plan", planText(r.Spec.Plan, r.Spec.Standing))
	t.row("Brake", brakeText(r.Spec.Brake))
	t.row("Binding hash", r.BindingHash)
	approvals := fmt.Sprintf("%d/%d", r.Approvals, r.Required)
	if len(r.Approvers) > 0 {
		approvals += " (" + strings.Join(r.Approvers, ", ") + ")"
	}
	if r.PauseRound > 0 && r.PauseKind == rollout.PauseBrake {
		approvals += fmt.Sprintf(", to resume after brake trip %d", r.PauseRound)
	}
	t.row("Approvals", approvals)
	t.row("Created", "by "+r.CreatedBy+", "+bothTimes(r.Created, now))
	if !r.ApprovedAt.IsZero() {
		t.row("Approved", bothTimes(r.ApprovedAt, now))
	}
	t.row("Targets", strconv.Itoa(r.TargetCount))
	if len(r.Waves) > 0 && (r.State == rollout.StateRunning || r.State == rollout.StatePaused) {
		t.row("Current wave", waveName(r.CurrentWave))
	}
	rate := "-"
	if r.RatePerMinute > 0 {
		rate = strconv.FormatFloat(r.RatePerMinute, 'f', 1, 64) + " jobs/min"
	}
	t.row("Rate", rate)
	eta := "unknown"
	switch {
	case r.State.Final():
		eta = "-"
	case r.ETASeconds > 0:
		eta = waitText(time.Duration(r.ETASeconds) * time.Second)
	}
	t.row("ETA", eta)
	if r.Waiting != "" {
		t.row("Waiting", r.Waiting)
	}
	if r.PauseKind != "" {
		paused := r.PauseReason
		if r.PausedBy != "" {
			paused += " (by " + r.PausedBy + ", " + relText(r.PausedAt, now) + ")"
		}
		t.row("Paused", strings.TrimSpace(paused))
	}
	if !r.FinishedAt.IsZero() {
		t.row("Finished", bothTimes(r.FinishedAt, now))
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	t = newTable(w, "WAVE", "SIZE", "PENDING", "OPEN", "SUCCEEDED", "FAILED", "TIMED OUT", "REFUSED", "TOKEN ABSENT", "STATUS")
	tally := func(name string, size int, x client.RolloutTally, note string) {
		n := func(v int) string { return strconv.Itoa(v) }
		f := func(o rollout.Outcome) string { return n(x.Failures[o]) }
		t.row(name, n(size), n(x.Pending), n(x.Open), n(x.Succeeded), f(rollout.OutcomeFailed), f(rollout.OutcomeTimedOut),
			f(rollout.OutcomeRefused), f(rollout.OutcomeTokenAbsent), note)
	}
	for _, wv := range r.Waves {
		note := "waiting"
		switch {
		case wv.Finished:
			note = "done"
		case wv.Started:
			note = "started"
		}
		if wv.Tally.Cancelled > 0 {
			note = strings.TrimPrefix(note+fmt.Sprintf(", %d cancelled", wv.Tally.Cancelled), ", ")
		}
		tally(wv.Name, wv.Size, wv.Tally, note)
	}
	note := string(r.State)
	if r.Overall.Cancelled > 0 {
		note += fmt.Sprintf(", %d cancelled", r.Overall.Cancelled)
	}
	tally("overall", r.TargetCount, r.Overall, note)
	if err := t.flush(); err != nil {
		return err
	}
	if len(r.Overall.ByCode) > 0 {
		fmt.Fprintln(w, "\nFailures by code:")
		t = newTable(w)
		for _, code := range sortedByCount(r.Overall.ByCode) {
			t.row("  "+code, strconv.Itoa(r.Overall.ByCode[code]))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if tr := r.Trip; tr != nil {
		fmt.Fprintf(w, "\nBrake trip (%s): %s\n", timeText(tr.At), clean(tr.Summary))
		for _, c := range tr.ByCode {
			fmt.Fprintf(w, "  %s ×%d\n", clean(c.Code), c.Count)
			for _, x := range c.Examples {
				fmt.Fprintf(w, "    job %s on agent %s: %s\n", clean(x.JobID), clean(x.AgentID), clean(x.Message))
			}
		}
		if r.PauseKind == rollout.PauseBrake {
			fmt.Fprintf(w, "Resuming takes approvals: tokenfleetctl rollout approve %s\n", clean(r.ID))
		}
	}
	return nil
}

// sortedByCount lists a count map's keys, the largest count first, then by name.
func sortedByCount(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	return keys
}

// rolloutApprovalSummary is what an approver approves: the jobs, where, how fast, the
// brake, and the hash the approval is bound to.
func rolloutApprovalSummary(r client.Rollout) string {
	var b strings.Builder
	if r.PauseKind == rollout.PauseBrake {
		fmt.Fprintf(&b, "Approving the resumption of rollout %s (%s) after brake trip %d, approvals %d/%d:\n",
			clean(r.ID), clean(r.Name), r.PauseRound, r.Approvals, r.Required)
		if r.Trip != nil {
			fmt.Fprintf(&b, "  %s\n", clean(r.Trip.Summary))
		}
	} else {
		fmt.Fprintf(&b, "Approving rollout %s (%s), approvals %d/%d:\n", clean(r.ID), clean(r.Name), r.Approvals, r.Required)
	}
	t := newTable(&b)
	t.row("  Template", templateText(r.Spec))
	t.row("  Selector", selectorText(r.Spec.Selector))
	sizes := make([]int, len(r.Waves))
	for i, w := range r.Waves {
		sizes[i] = w.Size
	}
	targets := strconv.Itoa(r.TargetCount)
	if len(sizes) > 0 {
		targets += " in " + waveSizesText(sizes)
	}
	t.row("  Targets", targets)
	t.row("  Plan", planText(r.Spec.Plan, r.Spec.Standing))
	t.row("  Brake", brakeText(r.Spec.Brake))
	t.row("  Created by", r.CreatedBy)
	t.row("  Binding hash", r.BindingHash)
	_ = t.flush()
	return b.String()
}
