package rollout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// State is where a rollout is in its lifecycle.
type State string

// Rollout states.
const (
	StatePendingApproval State = "pending_approval"
	StateApproved        State = "approved"
	StateRunning         State = "running"
	StatePaused          State = "paused"
	StateCompleted       State = "completed"
	StateRejected        State = "rejected"
	StateExpired         State = "expired"
	StateAborted         State = "aborted"
)

// States lists every state, the lifecycle order first, then the final ones.
func States() []State {
	return []State{StatePendingApproval, StateApproved, StateRunning, StatePaused,
		StateCompleted, StateRejected, StateExpired, StateAborted}
}

// Valid reports whether s is a known state.
func (s State) Valid() bool { return slices.Contains(States(), s) }

// Final reports whether s ends the rollout: nothing leaves it.
func (s State) Final() bool {
	return s == StateCompleted || s == StateRejected || s == StateExpired || s == StateAborted
}

// PauseKind says why a rollout is paused, or waits.
type PauseKind string

// Pause kinds.
const (
	PauseNone           PauseKind = ""
	PauseOperator       PauseKind = "operator"        // someone paused it; resume undoes it
	PauseBrake          PauseKind = "brake"           // the brake tripped; resuming needs approvals
	PausePromote        PauseKind = "promote"         // waiting for a promote past the pause between waves
	PauseProfileChanged PauseKind = "profile_changed" // the profile changed since the approval; a new rollout is needed
)

// Limits of a spec.
const (
	MaxNameLength = 100
	// MaxWaves bounds the waves after the canary: a plan of more is a typo, and every
	// view of the rollout shows each wave.
	MaxWaves = 100
)

// Spec is what a rollout does, to whom, and how fast: what its approval binds (with the
// target list).
type Spec struct {
	Name     string   `json:"name" yaml:"name"`
	Template Template `json:"template" yaml:"template"`
	Selector Selector `json:"selector" yaml:"selector"`
	Plan     Plan     `json:"plan" yaml:"plan"`
	Brake    Brake    `json:"brake" yaml:"brake"`
	Standing bool     `json:"standing,omitempty" yaml:"standing,omitempty"`
}

// Template is the job every target gets.
type Template struct {
	Kind        jobs.Kind `json:"kind" yaml:"kind"` // issue, renew, install_certificate, unblock_pin, wipe, inventory
	Profile     string    `json:"profile" yaml:"profile"`
	ProfileHash string    `json:"profile_hash" yaml:"profile_hash,omitempty"`   // set by the service, bound by the hash
	Deadline    Duration  `json:"deadline,omitempty" yaml:"deadline,omitempty"` // per job, from its creation; 0: the service default
	Holder      string    `json:"holder,omitempty" yaml:"holder,omitempty"`     // username for targets that have no certificate holder
}

// Selector chooses the targets; every part given must match.
type Selector struct {
	Agents       AgentSelector       `json:"agents,omitzero" yaml:"agents,omitempty"`
	Tokens       TokenSelector       `json:"tokens,omitzero" yaml:"tokens,omitempty"`
	Certificates CertificateSelector `json:"certificates,omitzero" yaml:"certificates,omitempty"`
	Holders      HolderSelector      `json:"holders,omitzero" yaml:"holders,omitempty"`
}

// AgentSelector chooses agents.
type AgentSelector struct {
	Organizations []string `json:"organizations,omitempty" yaml:"organizations,omitempty"` // names
	Tags          []string `json:"tags,omitempty" yaml:"tags,omitempty"`                   // every tag must be on the agent
	HostPattern   string   `json:"host_pattern,omitempty" yaml:"host_pattern,omitempty"`   // path.Match glob on the host name, case-insensitive
	IDs           []string `json:"ids,omitempty" yaml:"ids,omitempty"`
	States        []string `json:"states,omitempty" yaml:"states,omitempty"` // agent states; default ["active"]
}

// TokenSelector chooses tokens.
type TokenSelector struct {
	Models   []string `json:"models,omitempty" yaml:"models,omitempty"`
	Firmware []string `json:"firmware,omitempty" yaml:"firmware,omitempty"`
}

// CertificateSelector chooses certificates (renewals).
type CertificateSelector struct {
	Profile       string   `json:"profile,omitempty" yaml:"profile,omitempty"`               // default: the template's profile for renew
	ExpiresWithin Duration `json:"expires_within,omitempty" yaml:"expires_within,omitempty"` // not_after - now <= this; 0: any
}

// HolderSelector chooses holders.
type HolderSelector struct {
	Organizations []string `json:"organizations,omitempty" yaml:"organizations,omitempty"` // names
}

// Plan is how fast: the canary, the waves, the cap, the pauses and the windows.
type Plan struct {
	Canary        Canary       `json:"canary" yaml:"canary,omitempty"`
	Waves         []float64    `json:"waves,omitempty" yaml:"waves,omitempty"`                   // cumulative percentages of the non-canary targets, increasing, last 100 (appended when missing)
	Exponential   *Exponential `json:"exponential,omitempty" yaml:"exponential,omitempty"`       // instead of Waves: sizes Start, Start*Factor, ...
	MaxConcurrent int          `json:"max_concurrent,omitempty" yaml:"max_concurrent,omitempty"` // 0: no cap
	Pause         Pause        `json:"pause,omitzero" yaml:"pause,omitempty"`                    // between waves (after the canary too)
	Windows       []Window     `json:"windows,omitempty" yaml:"windows,omitempty"`               // none: any time
}

// Canary is wave 0: a count or a percentage of the targets (at least 1 when there are
// targets), optionally the first target of every token model.
type Canary struct {
	Count    int     `json:"count,omitempty" yaml:"count,omitempty"`
	Percent  float64 `json:"percent,omitempty" yaml:"percent,omitempty"`
	PerModel bool    `json:"per_model,omitempty" yaml:"per_model,omitempty"`
}

// Exponential sizes the waves Start, Start*Factor, Start*Factor², ... (rounded up).
type Exponential struct {
	Start  int     `json:"start" yaml:"start"`
	Factor float64 `json:"factor" yaml:"factor"`
}

// Pause is the wait between waves: a duration after a wave finished, or until someone
// promotes the rollout.
type Pause struct {
	After         Duration `json:"after,omitempty" yaml:"after,omitempty"`
	UntilPromoted bool     `json:"until_promoted,omitempty" yaml:"until_promoted,omitempty"`
}

// Window is a maintenance window: new jobs start only inside one.
type Window struct {
	Days     []string `json:"days" yaml:"days"`           // mon tue wed thu fri sat sun; the day the window opens; none: every day
	Start    string   `json:"start" yaml:"start"`         // "22:00"
	End      string   `json:"end" yaml:"end"`             // "06:00" (before Start: wraps past midnight)
	TimeZone string   `json:"time_zone" yaml:"time_zone"` // IANA, e.g. "Europe/Paris"; "" = UTC
}

// Brake is the failure brake: when enough of the executed jobs end in one of Outcomes,
// the rollout pauses.
type Brake struct {
	Outcomes         []Outcome `json:"outcomes,omitempty" yaml:"outcomes,omitempty"`         // which count as failures; default failed, timed_out, refused, token_absent
	ThresholdPercent float64   `json:"threshold_percent" yaml:"threshold_percent,omitempty"` // (0,100]; default 10
	MinExecuted      int       `json:"min_executed,omitempty" yaml:"min_executed,omitempty"` // default 5
	PerWave          bool      `json:"per_wave,omitempty" yaml:"per_wave,omitempty"`         // also each wave on its own
	Disabled         bool      `json:"disabled,omitempty" yaml:"disabled,omitempty"`         // explicit opt-out, shown everywhere
}

// agentStates are the store's agent states (written out: this package does not import the
// store).
var agentStates = []string{"pending", "active", "disabled", "removed"}

// Defaults filled by Normalize.
const (
	DefaultThresholdPercent = 10
	DefaultMinExecuted      = 5
	DefaultAgentState       = "active"
)

// DefaultBrakeOutcomes are the outcomes the brake counts when the spec names none.
func DefaultBrakeOutcomes() []Outcome {
	return []Outcome{OutcomeFailed, OutcomeTimedOut, OutcomeRefused, OutcomeTokenAbsent}
}

// Normalize fills the defaults, so that two specs that mean the same have the same form
// (and the same binding hash): the brake's outcomes, threshold and minimum (unless it is
// disabled), the agent states (active), the certificates' profile for a renewal (the
// template's), a canary of 1 when none is given, the waves ([100] when neither waves nor
// an exponential plan is given, and 100 appended when the last is below), days in lower
// case. It never shares a slice with the spec it was given.
func (s *Spec) Normalize() {
	s.Name = strings.TrimSpace(s.Name)
	s.Template.Profile = strings.TrimSpace(s.Template.Profile)

	a := &s.Selector.Agents
	if len(a.States) == 0 {
		a.States = []string{DefaultAgentState}
	} else {
		a.States = slices.Clone(a.States)
	}
	if s.Template.Kind == jobs.KindRenew && s.Selector.Certificates.Profile == "" {
		s.Selector.Certificates.Profile = s.Template.Profile
	}

	p := &s.Plan
	if p.Canary.Count == 0 && p.Canary.Percent == 0 {
		p.Canary.Count = 1
	}
	p.Waves = slices.Clone(p.Waves)
	if p.Exponential == nil && !s.Standing {
		if len(p.Waves) == 0 || p.Waves[len(p.Waves)-1] < 100 {
			p.Waves = append(p.Waves, 100)
		}
	}
	if p.Exponential != nil {
		e := *p.Exponential
		p.Exponential = &e
	}
	p.Windows = slices.Clone(p.Windows)
	for i := range p.Windows {
		w := &p.Windows[i]
		days := make([]string, len(w.Days))
		for j, d := range w.Days {
			days[j] = strings.ToLower(strings.TrimSpace(d))
		}
		w.Days = days
		w.Start, w.End, w.TimeZone = strings.TrimSpace(w.Start), strings.TrimSpace(w.End), strings.TrimSpace(w.TimeZone)
	}

	s.Brake = s.Brake.normalized()
}

// normalized fills the brake's defaults unless it is disabled.
func (b Brake) normalized() Brake {
	b.Outcomes = slices.Clone(b.Outcomes)
	if b.Disabled {
		return b
	}
	if len(b.Outcomes) == 0 {
		b.Outcomes = DefaultBrakeOutcomes()
	}
	if b.ThresholdPercent == 0 {
		b.ThresholdPercent = DefaultThresholdPercent
	}
	if b.MinExecuted == 0 {
		b.MinExecuted = DefaultMinExecuted
	}
	return b
}

// FieldError is one thing wrong with a spec: the field (a JSON path such as
// "plan.waves[1]") and what is wrong, with what to write instead.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// fieldErrors collects the problems of one spec.
type fieldErrors []error

func (fe *fieldErrors) add(field, format string, args ...any) {
	*fe = append(*fe, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// RolloutKinds lists the kinds a rollout may run: every kind an agent executes.
func RolloutKinds() []jobs.Kind {
	var out []jobs.Kind
	for _, k := range jobs.Kinds() {
		if jobs.OnAgent(k) {
			out = append(out, k)
		}
	}
	return out
}

func kindList() string {
	var names []string
	for _, k := range RolloutKinds() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

// Validate checks the spec as Normalize would complete it and returns every problem at
// once (errors.Join of *FieldError), each naming the field and what to write instead.
func (s Spec) Validate() error {
	s.Normalize()
	var fe fieldErrors

	switch n := utf8.RuneCountInString(s.Name); {
	case n == 0:
		fe.add("name", "is empty: give the rollout a name of 1 to %d characters, e.g. \"renew vpn certificates 2026\"", MaxNameLength)
	case n > MaxNameLength:
		fe.add("name", "has %d characters: shorten it to at most %d", n, MaxNameLength)
	case strings.IndexFunc(s.Name, unicode.IsControl) >= 0:
		// The name goes into job reasons, audit entries, logs and terminal tables.
		fe.add("name", "holds control characters (a line break, a tab...): write it on one line of plain text")
	}
	s.Template.validate(&fe, s.Standing)
	s.Selector.validate(&fe, s)
	s.Plan.validate(&fe, s.Standing)
	s.Brake.validate(&fe)
	return errors.Join(fe...)
}

func (t Template) validate(fe *fieldErrors, standing bool) {
	switch {
	case t.Kind == "":
		fe.add("template.kind", "is empty: write one of %s", kindList())
	case !jobs.KnownKind(t.Kind):
		fe.add("template.kind", "%q is not a job kind: write one of %s", t.Kind, kindList())
	case !jobs.OnAgent(t.Kind):
		fe.add("template.kind", "%q runs on the coordinator, not on agents, so a rollout cannot run it: write one of %s", t.Kind, kindList())
	case standing && t.Kind != jobs.KindRenew:
		fe.add("template.kind", "a standing rollout renews certificates as they near expiry: write renew, or drop standing for a one-off %s rollout", t.Kind)
	}
	if t.Profile == "" {
		fe.add("template.profile", "is empty: name the certificate profile the jobs use, e.g. \"vpn-user\"")
	}
	if t.Deadline < 0 {
		fe.add("template.deadline", "is negative (%s): write a positive duration such as 7d, or leave it out for the default", t.Deadline)
	}
}

func (sel Selector) validate(fe *fieldErrors, s Spec) {
	a := sel.Agents
	noEmpty(fe, "selector.agents.organizations", a.Organizations, "an organisation name")
	noEmpty(fe, "selector.agents.ids", a.IDs, "an agent ID")
	for i, st := range a.States {
		switch {
		case !slices.Contains(agentStates, st):
			fe.add(fmt.Sprintf("selector.agents.states[%d]", i), "%q is not an agent state: write one of %s (default active)", st, strings.Join(agentStates, ", "))
		case st == "disabled" || st == "removed":
			fe.add(fmt.Sprintf("selector.agents.states[%d]", i), "%s agents take no job (each would fail at once and count against the brake): select active or pending agents, or re-enable the agents first", st)
		}
	}
	noEmpty(fe, "selector.agents.tags", a.Tags, "a tag")
	seen := map[string]int{}
	for i, tag := range a.Tags {
		if j, ok := seen[tag]; ok && tag != "" {
			fe.add(fmt.Sprintf("selector.agents.tags[%d]", i), "repeats tag %q (already at [%d]): list each tag once", tag, j)
			continue
		}
		seen[tag] = i
	}
	if a.HostPattern != "" {
		if _, err := path.Match(strings.ToLower(a.HostPattern), ""); err != nil {
			fe.add("selector.agents.host_pattern", "%q is not a valid pattern (%v): use * and ? wildcards and closed [...] classes, e.g. \"ws-*.paris.example\"", a.HostPattern, err)
		}
	}
	noEmpty(fe, "selector.tokens.models", sel.Tokens.Models, "a token model")
	noEmpty(fe, "selector.tokens.firmware", sel.Tokens.Firmware, "a firmware version such as 5.4")
	noEmpty(fe, "selector.holders.organizations", sel.Holders.Organizations, "an organisation name")
	if sel.Certificates.ExpiresWithin < 0 {
		fe.add("selector.certificates.expires_within", "is negative (%s): write a positive duration such as 30d, or leave it out for any expiry", sel.Certificates.ExpiresWithin)
	}
	if sel.Certificates != (CertificateSelector{}) && !SelectsCertificates(s.Template.Kind) {
		// Left in, it would be ignored, and the rollout would reach every agent the
		// other filters let through.
		fe.add("selector.certificates", "a %s rollout selects agents and tokens, not certificates: remove selector.certificates, or write kind renew to renew the certificates it selects", s.Template.Kind)
	}
	if s.Standing && sel.Certificates.ExpiresWithin != 0 {
		fe.add("selector.certificates.expires_within", "a standing rollout takes each certificate up when it enters the profile's renew_before window: remove expires_within (set renew_before in the profile instead)")
	}
	if s.Standing && sel.Certificates.Profile != "" && sel.Certificates.Profile != s.Template.Profile {
		fe.add("selector.certificates.profile", "%q differs from template.profile %q: a standing rollout renews the certificates of its own profile; leave it out", sel.Certificates.Profile, s.Template.Profile)
	}
}

// SelectsCertificates reports whether a rollout of kind finds its targets by certificate
// (one per selected certificate) rather than by agent and token.
func SelectsCertificates(k jobs.Kind) bool {
	return k == jobs.KindRenew || k == jobs.KindInstallCertificate
}

func noEmpty(fe *fieldErrors, field string, list []string, what string) {
	for i, v := range list {
		if strings.TrimSpace(v) == "" {
			fe.add(fmt.Sprintf("%s[%d]", field, i), "is empty: write %s or remove the entry", what)
		}
	}
}

func (p Plan) validate(fe *fieldErrors, standing bool) {
	c := p.Canary
	switch {
	case c.Count < 0:
		fe.add("plan.canary.count", "is negative (%d): write the number of canary targets, e.g. 5", c.Count)
	case c.Count > 0 && c.Percent != 0:
		fe.add("plan.canary", "gives both count (%d) and percent (%g): keep one of them", c.Count, c.Percent)
	case c.Percent != 0 && (c.Percent < 0 || c.Percent > 100 || math.IsNaN(c.Percent)):
		fe.add("plan.canary.percent", "%g is outside (0,100]: write a percentage such as 5, or use count", c.Percent)
	case standing && c.Percent != 0:
		fe.add("plan.canary.percent", "a standing rollout's targets arrive over time, so a percentage has nothing to count from: use count instead, e.g. count: 5")
	}
	if standing && c.PerModel {
		fe.add("plan.canary.per_model", "a standing rollout's targets arrive over time, so there is no list of models to pick from: remove per_model and use count")
	}

	switch {
	case standing && len(p.Waves) > 0:
		fe.add("plan.waves", "a standing rollout has a canary and then one open wave that new targets join: remove waves (keep canary.count and max_concurrent)")
	case standing && p.Exponential != nil:
		fe.add("plan.exponential", "a standing rollout has a canary and then one open wave that new targets join: remove exponential (keep canary.count and max_concurrent)")
	case len(p.Waves) > 0 && p.Exponential != nil:
		fe.add("plan", "gives both waves and exponential: keep one (waves: cumulative percentages such as [25, 50, 100]; exponential: start and factor)")
	}
	if len(p.Waves) > MaxWaves {
		fe.add("plan.waves", "lists %d waves: write at most %d cumulative percentages, e.g. [10, 50, 100]", len(p.Waves), MaxWaves)
	}
	if !standing {
		prev := 0.0
		for i, w := range p.Waves {
			field := fmt.Sprintf("plan.waves[%d]", i)
			switch {
			case math.IsNaN(w) || w <= 0 || w > 100:
				fe.add(field, "%g is outside (0,100]: waves are cumulative percentages of the targets after the canary, e.g. [10, 50, 100]", w)
			case w <= prev:
				fe.add(field, "%g is not above the wave before (%g): waves are cumulative and must increase, e.g. [10, 50, 100]", w, prev)
			}
			if w > prev {
				prev = w
			}
		}
	}
	if e := p.Exponential; e != nil && !standing {
		if e.Start < 1 {
			fe.add("plan.exponential.start", "is %d: the first wave needs at least 1 target, e.g. start: 10", e.Start)
		}
		if !(e.Factor > 1) || math.IsInf(e.Factor, 0) {
			fe.add("plan.exponential.factor", "is %g: waves must grow, write a factor above 1, e.g. factor: 2", e.Factor)
		}
	}

	if p.MaxConcurrent < 0 {
		fe.add("plan.max_concurrent", "is negative (%d): write the most jobs that may run at once, or 0 (or nothing) for no cap", p.MaxConcurrent)
	}
	if p.Pause.After < 0 {
		fe.add("plan.pause.after", "is negative (%s): write how long to wait after each wave, e.g. 1h, or leave it out", p.Pause.After)
	}
	if p.Pause.After > 0 && p.Pause.UntilPromoted {
		fe.add("plan.pause", "gives both after (%s) and until_promoted: keep one (a fixed wait, or a wait until someone promotes)", p.Pause.After)
	}
	for i, w := range p.Windows {
		w.validate(fe, fmt.Sprintf("plan.windows[%d]", i))
	}
}

func (b Brake) validate(fe *fieldErrors) {
	if b.Disabled {
		return
	}
	if t := b.ThresholdPercent; math.IsNaN(t) || t <= 0 || t > 100 {
		fe.add("brake.threshold_percent", "%g is outside (0,100]: write the failure percentage that pauses the rollout, e.g. 10, or set disabled: true to run without a brake", t)
	}
	if b.MinExecuted < 1 {
		fe.add("brake.min_executed", "is %d: write how many jobs must have ended before the brake can trip, at least 1 (default %d)", b.MinExecuted, DefaultMinExecuted)
	}
	seen := map[Outcome]bool{}
	for i, o := range b.Outcomes {
		field := fmt.Sprintf("brake.outcomes[%d]", i)
		switch {
		case !o.Failure():
			fe.add(field, "%q is not a failure outcome: write one of failed, timed_out, refused, token_absent", o)
		case seen[o]:
			fe.add(field, "repeats %q: list each outcome once", o)
		}
		seen[o] = true
	}
}

// DecodeSpec reads a spec written as JSON or YAML (the CLI's rollout file), refusing
// unknown fields: a misspelt field would otherwise be silently left at its default.
func DecodeSpec(data []byte) (Spec, error) {
	var s Spec
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		d := json.NewDecoder(bytes.NewReader(t))
		d.DisallowUnknownFields()
		if err := d.Decode(&s); err != nil {
			return Spec{}, fmt.Errorf("rollout spec (JSON): %w", err)
		}
		if d.More() {
			return Spec{}, errors.New("rollout spec (JSON): more than one object: write one spec per file")
		}
		return s, nil
	}
	d := yaml.NewDecoder(bytes.NewReader(data))
	d.KnownFields(true)
	if err := d.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return Spec{}, errors.New("rollout spec: the file is empty: write the spec as YAML or JSON")
		}
		return Spec{}, fmt.Errorf("rollout spec (YAML): %w", err)
	}
	return s, nil
}
