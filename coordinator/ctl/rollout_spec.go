package ctl

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
)

// specFlags are the flags of rollout create: each one given replaces what the file says
// of its field.
type specFlags struct {
	file                                                  string
	name, kind, profile, holder, deadline, hostPattern    string
	certProfile, expiresWithin, canary, waves, expo       string
	pause, outcomes                                       string
	agentsOrg, agentsTag, tokenModel, firmware, holderOrg []string
	windows                                               []string
	perModel, brakePerWave, standing                      bool
	maxConcurrent, brakeMin                               int
	brakeThreshold                                        float64
}

func (s *specFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&s.file, "file", "f", "", "the rollout's spec, YAML or JSON (- for standard input); flags replace what it says")
	f.StringVar(&s.name, "name", "", "the rollout's name")
	f.StringVar(&s.kind, "kind", "", "job kind: "+joinStrings(rollout.RolloutKinds(), ", "))
	f.StringVar(&s.profile, "profile", "", "the jobs' profile")
	f.StringVar(&s.holder, "holder", "", "holder (username) of targets without a certificate holder")
	f.StringVar(&s.deadline, "deadline", "", "each job's deadline from its creation (7d, 36h)")
	f.StringArrayVar(&s.agentsOrg, "agents-org", nil, "agents of this organisation, repeatable or comma-separated")
	f.StringArrayVar(&s.agentsTag, "agents-tag", nil, "agents with this tag (every one given), repeatable or comma-separated")
	f.StringVar(&s.hostPattern, "host-pattern", "", "agents whose host name matches this glob (ws-*.paris.example)")
	f.StringArrayVar(&s.tokenModel, "token-model", nil, "tokens of this model, repeatable or comma-separated")
	f.StringArrayVar(&s.firmware, "firmware", nil, "tokens with this firmware (5.4), repeatable or comma-separated")
	f.StringVar(&s.certProfile, "cert-profile", "", "certificates of this profile (default for renew: --profile)")
	f.StringVar(&s.expiresWithin, "expires-within", "", "certificates expiring within this span (30d)")
	f.StringArrayVar(&s.holderOrg, "holders-org", nil, "holders of this organisation, repeatable or comma-separated")
	f.StringVar(&s.canary, "canary", "", "the canary: a count (5) or a percentage of the targets (10%)")
	f.BoolVar(&s.perModel, "per-model", false, "the first target of every token model joins the canary")
	f.StringVar(&s.waves, "waves", "", "cumulative percentages of the targets after the canary (25,50,100)")
	f.StringVar(&s.expo, "exponential", "", "instead of --waves, wave sizes START×FACTOR^n (10x2: 10, 20, 40, ...)")
	f.IntVar(&s.maxConcurrent, "max-concurrent", 0, "at most this many of the rollout's jobs open at once (0: no cap)")
	f.StringVar(&s.pause, "pause", "", "between waves: a span (1h), or promote to wait for rollout promote")
	f.StringArrayVar(&s.windows, "window", nil, "maintenance window 'mon-fri 22:00-06:00 Europe/Paris' (days and zone optional), repeatable")
	f.Float64Var(&s.brakeThreshold, "brake-threshold", 0, "the brake trips at this failure percentage (default 10)")
	f.IntVar(&s.brakeMin, "brake-min", 0, "jobs that must have ended before the brake can trip (default 5)")
	f.BoolVar(&s.brakePerWave, "brake-per-wave", false, "the brake also counts each wave on its own")
	f.StringVar(&s.outcomes, "brake-outcomes", "", "failure outcomes the brake counts: "+joinStrings(rollout.FailureOutcomes(), ", "))
	f.BoolVar(&s.standing, "standing", false, "a standing renewal: renew each certificate of --profile as it enters the profile's renew_before window")
	completeWith(cmd, "kind", rollout.RolloutKinds())
	completeWith(cmd, "brake-outcomes", rollout.FailureOutcomes())
}

// completeWith makes the shells complete a flag's value from a fixed list.
func completeWith[S ~string](cmd *cobra.Command, flag string, values []S) {
	choices := make([]cobra.Completion, len(values))
	for i, v := range values {
		choices[i] = string(v)
	}
	_ = cmd.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(choices, cobra.ShellCompDirectiveNoFileComp))
}

// spec reads the file, if any, and applies the flags given.
func (s *specFlags) spec(e *env, cmd *cobra.Command) (rollout.Spec, error) {
	var sp rollout.Spec
	if s.file != "" {
		data, err := e.readInput(s.file)
		if err != nil {
			return sp, err
		}
		if sp, err = rollout.DecodeSpec(data); err != nil {
			return sp, usageErrorf("-f %s: %v", s.file, err)
		}
	}
	changed := cmd.Flags().Changed
	str := func(flag string, v string, dst *string) {
		if changed(flag) {
			*dst = v
		}
	}
	list := func(flag string, v []string, dst *[]string) {
		if changed(flag) {
			*dst = splitList(v)
		}
	}
	dur := func(flag, v string, dst *rollout.Duration) error {
		if !changed(flag) {
			return nil
		}
		d, err := rollout.ParseDuration(v)
		if err != nil {
			return usageErrorf("--%s: %v", flag, err)
		}
		*dst = d
		return nil
	}
	str("name", s.name, &sp.Name)
	if changed("kind") {
		sp.Template.Kind = jobs.Kind(s.kind)
	}
	str("profile", s.profile, &sp.Template.Profile)
	str("holder", s.holder, &sp.Template.Holder)
	sel := &sp.Selector
	list("agents-org", s.agentsOrg, &sel.Agents.Organizations)
	list("agents-tag", s.agentsTag, &sel.Agents.Tags)
	str("host-pattern", s.hostPattern, &sel.Agents.HostPattern)
	list("token-model", s.tokenModel, &sel.Tokens.Models)
	list("firmware", s.firmware, &sel.Tokens.Firmware)
	str("cert-profile", s.certProfile, &sel.Certificates.Profile)
	list("holders-org", s.holderOrg, &sel.Holders.Organizations)
	if err := dur("deadline", s.deadline, &sp.Template.Deadline); err != nil {
		return sp, err
	}
	if err := dur("expires-within", s.expiresWithin, &sel.Certificates.ExpiresWithin); err != nil {
		return sp, err
	}

	p := &sp.Plan
	if changed("canary") {
		c, err := parseCanary(s.canary)
		if err != nil {
			return sp, err
		}
		c.PerModel = p.Canary.PerModel
		p.Canary = c
	}
	if changed("per-model") {
		p.Canary.PerModel = s.perModel
	}
	if changed("waves") {
		ws, err := parseWaves(s.waves)
		if err != nil {
			return sp, err
		}
		p.Waves, p.Exponential = ws, nil
	}
	if changed("exponential") {
		x, err := parseExponential(s.expo)
		if err != nil {
			return sp, err
		}
		p.Exponential, p.Waves = &x, nil
	}
	if changed("waves") && changed("exponential") {
		return sp, usageErrorf("pass --waves or --exponential, not both")
	}
	if changed("max-concurrent") {
		p.MaxConcurrent = s.maxConcurrent
	}
	if changed("pause") {
		pz, err := parsePause(s.pause)
		if err != nil {
			return sp, err
		}
		p.Pause = pz
	}
	if changed("window") {
		p.Windows = nil
		for _, w := range s.windows {
			win, err := parseWindow(w)
			if err != nil {
				return sp, err
			}
			p.Windows = append(p.Windows, win)
		}
	}

	b := &sp.Brake
	if changed("brake-threshold") {
		b.ThresholdPercent = s.brakeThreshold
	}
	if changed("brake-min") {
		b.MinExecuted = s.brakeMin
	}
	if changed("brake-per-wave") {
		b.PerWave = s.brakePerWave
	}
	if changed("brake-outcomes") {
		b.Outcomes = nil
		for _, o := range splitList([]string{s.outcomes}) {
			if !rollout.Outcome(o).Failure() {
				return sp, usageErrorf("--brake-outcomes %q: want some of %s", o, joinStrings(rollout.FailureOutcomes(), ", "))
			}
			b.Outcomes = append(b.Outcomes, rollout.Outcome(o))
		}
	}
	if changed("standing") {
		sp.Standing = s.standing
	}
	if s.file == "" && sp.Name == "" && sp.Template.Profile == "" {
		return sp, usageErrorf("give the rollout's spec with -f FILE, or at least --name, --kind and --profile")
	}
	return sp, nil
}

// splitList takes repeated and comma-separated values.
func splitList(vs []string) []string {
	out := []string{}
	for _, v := range vs {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// parseCanary reads "5" (a count) or "10%" (a percentage).
func parseCanary(s string) (rollout.Canary, error) {
	s = strings.TrimSpace(s)
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if err != nil || f <= 0 || f > 100 {
			return rollout.Canary{}, usageErrorf("--canary %q: want a count (5) or a percentage in (0,100] (10%%)", s)
		}
		return rollout.Canary{Percent: f}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return rollout.Canary{}, usageErrorf("--canary %q: want a count of at least 1 (5) or a percentage (10%%)", s)
	}
	return rollout.Canary{Count: n}, nil
}

// parseWaves reads cumulative percentages: "25,50,100".
func parseWaves(s string) ([]float64, error) {
	var out []float64
	for _, p := range splitList([]string{s}) {
		f, err := strconv.ParseFloat(strings.TrimSuffix(p, "%"), 64)
		if err != nil {
			return nil, usageErrorf("--waves %q: %q is not a percentage; want cumulative percentages such as 25,50,100", s, p)
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, usageErrorf("--waves is empty: want cumulative percentages such as 25,50,100")
	}
	return out, nil
}

// parseExponential reads "STARTxFACTOR": "10x2".
func parseExponential(s string) (rollout.Exponential, error) {
	start, factor, ok := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "x")
	n, err1 := strconv.Atoi(strings.TrimSpace(start))
	f, err2 := strconv.ParseFloat(strings.TrimSpace(factor), 64)
	if !ok || err1 != nil || err2 != nil {
		return rollout.Exponential{}, usageErrorf("--exponential %q: want STARTxFACTOR such as 10x2 (waves of 10, 20, 40, ...)", s)
	}
	return rollout.Exponential{Start: n, Factor: f}, nil
}

// parsePause reads a span ("1h") or "promote".
func parsePause(s string) (rollout.Pause, error) {
	if strings.EqualFold(strings.TrimSpace(s), "promote") {
		return rollout.Pause{UntilPromoted: true}, nil
	}
	d, err := rollout.ParseDuration(s)
	if err != nil || d <= 0 {
		return rollout.Pause{}, usageErrorf("--pause %q: want a span such as 1h or 2d, or promote", s)
	}
	return rollout.Pause{After: d}, nil
}

var dayNames = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}

// parseWindow reads "[DAYS] HH:MM-HH:MM [ZONE]", days as "mon-fri", "sat,sun" or
// "mon-wed,fri".
func parseWindow(s string) (rollout.Window, error) {
	bad := func(why string) (rollout.Window, error) {
		return rollout.Window{}, usageErrorf("--window %q: %s; want '[DAYS] HH:MM-HH:MM [ZONE]' such as 'mon-fri 22:00-06:00 Europe/Paris'", s, why)
	}
	fields := strings.Fields(s)
	var w rollout.Window
	if len(fields) > 0 && !strings.Contains(fields[0], ":") {
		for part := range strings.SplitSeq(strings.ToLower(fields[0]), ",") {
			from, to, isRange := strings.Cut(part, "-")
			i, j := dayIndex(from), dayIndex(to)
			switch {
			case i < 0 || isRange && j < 0:
				return bad(fmt.Sprintf("%q is not a day (%s)", part, strings.Join(dayNames, " ")))
			case !isRange:
				w.Days = append(w.Days, dayNames[i])
			default:
				for k := i; ; k = (k + 1) % 7 {
					w.Days = append(w.Days, dayNames[k])
					if k == j {
						break
					}
				}
			}
		}
		fields = fields[1:]
	}
	if len(fields) == 0 || len(fields) > 2 {
		return bad("no hours")
	}
	start, end, ok := strings.Cut(fields[0], "-")
	if !ok {
		return bad("hours are START-END")
	}
	w.Start, w.End = start, end
	if len(fields) == 2 {
		w.TimeZone = fields[1]
	}
	return w, nil
}

func dayIndex(d string) int {
	for i, n := range dayNames {
		if d == n {
			return i
		}
	}
	return -1
}
