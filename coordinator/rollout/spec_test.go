package rollout

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// The names are the design's and go on the wire: a rename must fail here.
func TestNames(t *testing.T) {
	t.Parallel()
	states := []State{"pending_approval", "approved", "running", "paused", "completed", "rejected", "expired", "aborted"}
	outcomes := []Outcome{"succeeded", "failed", "timed_out", "refused", "token_absent", "cancelled", "open", "pending"}
	if !slices.Equal(States(), states) || !slices.Equal(Outcomes(), outcomes) {
		t.Fatalf("names drifted: %v %v", States(), Outcomes())
	}
	for _, s := range states {
		final := s == "completed" || s == "rejected" || s == "expired" || s == "aborted"
		if !s.Valid() || s.Final() != final {
			t.Errorf("%s: valid %v final %v", s, s.Valid(), s.Final())
		}
	}
	if State("").Valid() || State("done").Valid() || Outcome("").Valid() {
		t.Error("an unknown name is valid")
	}
	for _, k := range []PauseKind{PauseNone, PauseOperator, PauseBrake, PausePromote, PauseProfileChanged} {
		if !slices.Contains([]PauseKind{"", "operator", "brake", "promote", "profile_changed"}, k) {
			t.Errorf("pause kind %q drifted", k)
		}
	}
	if slices.Contains(RolloutKinds(), jobs.KindRevoke) || !slices.Contains(RolloutKinds(), jobs.KindRenew) {
		t.Errorf("rollout kinds %v", RolloutKinds())
	}
}

func validSpec() Spec {
	return Spec{
		Name:     "renew vpn 2026",
		Template: Template{Kind: jobs.KindRenew, Profile: "vpn-user", Deadline: Duration(7 * 24 * time.Hour)},
		Selector: Selector{Agents: AgentSelector{Tags: []string{"paris", "desk"}, HostPattern: "ws-*"}},
		Plan: Plan{
			Canary:        Canary{Count: 5},
			Waves:         []float64{25, 50},
			MaxConcurrent: 50,
			Pause:         Pause{After: Duration(time.Hour)},
			Windows:       []Window{{Days: []string{"Mon", "tue"}, Start: "22:00", End: "06:00", TimeZone: "Europe/Paris"}},
		},
		Brake: Brake{ThresholdPercent: 20},
	}
}

func standingSpec() Spec {
	return Spec{
		Name:     "standing vpn renewals",
		Template: Template{Kind: jobs.KindRenew, Profile: "vpn-user"},
		Plan:     Plan{Canary: Canary{Count: 3}, MaxConcurrent: 20},
		Standing: true,
	}
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	s := validSpec()
	waves := make([]float64, 2, 8)
	copy(waves, s.Plan.Waves)
	s.Plan.Waves = waves
	s.Normalize()
	if !slices.Equal(s.Plan.Waves, []float64{25, 50, 100}) || waves[:3][2] != 0 {
		t.Errorf("waves %v (the caller's array %v must not change)", s.Plan.Waves, waves[:3])
	}
	if !slices.Equal(s.Brake.Outcomes, DefaultBrakeOutcomes()) || s.Brake.ThresholdPercent != 20 || s.Brake.MinExecuted != 5 {
		t.Errorf("brake %+v", s.Brake)
	}
	if !slices.Equal(s.Selector.Agents.States, []string{"active"}) || s.Selector.Certificates.Profile != "vpn-user" {
		t.Errorf("selector %+v", s.Selector)
	}
	if !slices.Equal(s.Plan.Windows[0].Days, []string{"mon", "tue"}) {
		t.Errorf("days %v", s.Plan.Windows[0].Days)
	}

	var empty Spec
	empty.Normalize()
	if empty.Plan.Canary.Count != 1 || !slices.Equal(empty.Plan.Waves, []float64{100}) || empty.Brake.ThresholdPercent != 10 || empty.Brake.MinExecuted != 5 {
		t.Errorf("defaults %+v", empty)
	}
	if empty.Selector.Certificates.Profile != "" {
		t.Error("a non-renewal got a certificate profile")
	}

	exp := Spec{Plan: Plan{Exponential: &Exponential{Start: 10, Factor: 2}}}
	exp.Normalize()
	if exp.Plan.Waves != nil {
		t.Errorf("exponential plan got waves %v", exp.Plan.Waves)
	}
	st := standingSpec()
	st.Normalize()
	if st.Plan.Waves != nil {
		t.Errorf("standing plan got waves %v", st.Plan.Waves)
	}
	off := Spec{Brake: Brake{Disabled: true}}
	off.Normalize()
	if off.Brake.ThresholdPercent != 0 || off.Brake.Outcomes != nil {
		t.Errorf("a disabled brake got defaults: %+v", off.Brake)
	}
	// Normalizing twice changes nothing.
	again := s
	again.Normalize()
	if string(CanonicalJSON(again)) != string(CanonicalJSON(s)) {
		t.Error("Normalize is not idempotent")
	}
}

func TestValidateAccepts(t *testing.T) {
	t.Parallel()
	for name, s := range map[string]Spec{
		"waves":       validSpec(),
		"standing":    standingSpec(),
		"exponential": {Name: "x", Template: Template{Kind: jobs.KindInventory, Profile: "p"}, Plan: Plan{Canary: Canary{Percent: 1, PerModel: true}, Exponential: &Exponential{Start: 1, Factor: 1.5}}},
		"disabled":    {Name: "x", Template: Template{Kind: jobs.KindWipe, Profile: "p"}, Brake: Brake{Disabled: true, ThresholdPercent: 500}},
		"promote":     {Name: strings.Repeat("é", 100), Template: Template{Kind: jobs.KindIssue, Profile: "p"}, Plan: Plan{Pause: Pause{UntilPromoted: true}, Windows: []Window{{Start: "08:00", End: "18:00"}}}},
	} {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestValidateRefuses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		edit   func(*Spec)
		field  string
		advice string // part of what the message says to write instead
	}{
		{"no name", func(s *Spec) { s.Name = " " }, "name", "name of 1 to 100"},
		{"long name", func(s *Spec) { s.Name = strings.Repeat("n", 101) }, "name", "at most 100"},
		{"no kind", func(s *Spec) { s.Template.Kind = "" }, "template.kind", "write one of issue"},
		{"unknown kind", func(s *Spec) { s.Template.Kind = "enroll" }, "template.kind", "write one of issue, csr, install_certificate, renew, unblock_pin, wipe, inventory"},
		{"coordinator kind", func(s *Spec) { s.Template.Kind = jobs.KindRevoke }, "template.kind", "runs on the coordinator"},
		{"no profile", func(s *Spec) { s.Template.Profile = "" }, "template.profile", "name the certificate profile"},
		{"negative deadline", func(s *Spec) { s.Template.Deadline = -1 }, "template.deadline", "positive duration"},
		{"waves not increasing", func(s *Spec) { s.Plan.Waves = []float64{50, 50} }, "plan.waves[1]", "must increase"},
		{"waves decreasing", func(s *Spec) { s.Plan.Waves = []float64{60, 20, 100} }, "plan.waves[1]", "must increase"},
		{"wave above 100", func(s *Spec) { s.Plan.Waves = []float64{50, 150} }, "plan.waves[1]", "(0,100]"},
		{"wave zero", func(s *Spec) { s.Plan.Waves = []float64{0, 100} }, "plan.waves[0]", "(0,100]"},
		{"waves and exponential", func(s *Spec) { s.Plan.Exponential = &Exponential{Start: 1, Factor: 2} }, "plan", "keep one"},
		{"factor 1", func(s *Spec) { s.Plan.Waves = nil; s.Plan.Exponential = &Exponential{Start: 1, Factor: 1} }, "plan.exponential.factor", "above 1"},
		{"start 0", func(s *Spec) { s.Plan.Waves = nil; s.Plan.Exponential = &Exponential{Start: 0, Factor: 2} }, "plan.exponential.start", "at least 1"},
		{"count and percent", func(s *Spec) { s.Plan.Canary.Percent = 5 }, "plan.canary", "keep one"},
		{"percent above 100", func(s *Spec) { s.Plan.Canary = Canary{Percent: 101} }, "plan.canary.percent", "(0,100]"},
		{"percent negative", func(s *Spec) { s.Plan.Canary = Canary{Percent: -1} }, "plan.canary.percent", "(0,100]"},
		{"count negative", func(s *Spec) { s.Plan.Canary = Canary{Count: -1} }, "plan.canary.count", "number of canary"},
		{"negative max_concurrent", func(s *Spec) { s.Plan.MaxConcurrent = -1 }, "plan.max_concurrent", "0 (or nothing) for no cap"},
		{"negative pause", func(s *Spec) { s.Plan.Pause.After = -1 }, "plan.pause.after", "e.g. 1h"},
		{"pause both", func(s *Spec) { s.Plan.Pause.UntilPromoted = true }, "plan.pause", "keep one"},
		{"bad day", func(s *Spec) { s.Plan.Windows[0].Days = []string{"mon", "funday"} }, "plan.windows[0].days[1]", "write mon, tue"},
		{"bad start", func(s *Spec) { s.Plan.Windows[0].Start = "25:00" }, "plan.windows[0].start", "HH:MM"},
		{"bad end", func(s *Spec) { s.Plan.Windows[0].End = "6pm" }, "plan.windows[0].end", "HH:MM"},
		{"bad zone", func(s *Spec) { s.Plan.Windows[0].TimeZone = "Mars/Olympus" }, "plan.windows[0].time_zone", "IANA name such as Europe/Paris"},
		{"empty window", func(s *Spec) { s.Plan.Windows[0].End = "22:00" }, "plan.windows[0]", "different times"},
		{"threshold 0 is the default, negative is not", func(s *Spec) { s.Brake.ThresholdPercent = -5 }, "brake.threshold_percent", "disabled: true"},
		{"threshold above 100", func(s *Spec) { s.Brake.ThresholdPercent = 100.5 }, "brake.threshold_percent", "(0,100]"},
		{"unknown outcome", func(s *Spec) { s.Brake.Outcomes = []Outcome{"failed", "crashed"} }, "brake.outcomes[1]", "failed, timed_out, refused, token_absent"},
		{"success as failure", func(s *Spec) { s.Brake.Outcomes = []Outcome{"succeeded"} }, "brake.outcomes[0]", "failed, timed_out"},
		{"repeated outcome", func(s *Spec) { s.Brake.Outcomes = []Outcome{"failed", "failed"} }, "brake.outcomes[1]", "once"},
		{"min_executed", func(s *Spec) { s.Brake.MinExecuted = -1 }, "brake.min_executed", "at least 1"},
		{"bad host pattern", func(s *Spec) { s.Selector.Agents.HostPattern = "ws-[a" }, "selector.agents.host_pattern", "closed [...] classes"},
		{"duplicate tag", func(s *Spec) { s.Selector.Agents.Tags = []string{"a", "b", "a"} }, "selector.agents.tags[2]", "each tag once"},
		{"empty tag", func(s *Spec) { s.Selector.Agents.Tags = []string{""} }, "selector.agents.tags[0]", "remove the entry"},
		{"unknown agent state", func(s *Spec) { s.Selector.Agents.States = []string{"active", "online"} }, "selector.agents.states[1]", "pending, active, disabled, removed"},
		{"negative expiry", func(s *Spec) { s.Selector.Certificates.ExpiresWithin = -1 }, "selector.certificates.expires_within", "30d"},
	} {
		s := validSpec()
		tt.edit(&s)
		checkRefused(t, tt.name, s, tt.field, tt.advice)
	}
}

func TestValidateRefusesStanding(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		edit   func(*Spec)
		field  string
		advice string
	}{
		{"percent canary", func(s *Spec) { s.Plan.Canary = Canary{Percent: 5} }, "plan.canary.percent", "use count"},
		{"per model", func(s *Spec) { s.Plan.Canary.PerModel = true }, "plan.canary.per_model", "use count"},
		{"waves", func(s *Spec) { s.Plan.Waves = []float64{50, 100} }, "plan.waves", "remove waves"},
		{"exponential", func(s *Spec) { s.Plan.Exponential = &Exponential{Start: 1, Factor: 2} }, "plan.exponential", "remove exponential"},
		{"not renew", func(s *Spec) { s.Template.Kind = jobs.KindIssue }, "template.kind", "write renew"},
		{"other profile", func(s *Spec) { s.Selector.Certificates.Profile = "wifi" }, "selector.certificates.profile", "leave it out"},
	} {
		s := standingSpec()
		tt.edit(&s)
		checkRefused(t, "standing "+tt.name, s, tt.field, tt.advice)
	}
}

func checkRefused(t *testing.T, name string, s Spec, field, advice string) {
	t.Helper()
	err := s.Validate()
	if err == nil {
		t.Errorf("%s: accepted", name)
		return
	}
	var found bool
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Errorf("%s: %T is not a *FieldError", name, e)
			continue
		}
		if fe.Field == field && strings.Contains(fe.Msg, advice) {
			found = true
		}
	}
	if !found {
		t.Errorf("%s: %v\nwant field %s saying %q", name, err, field, advice)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	s := validSpec()
	s.Name, s.Template.Profile, s.Plan.MaxConcurrent = "", "", -1
	err := s.Validate()
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 3 {
		t.Errorf("%d errors, want 3: %v", n, err)
	}
	if !strings.Contains(err.Error(), "plan.max_concurrent: is negative") {
		t.Errorf("message %q", err)
	}
}

func TestDecodeSpec(t *testing.T) {
	t.Parallel()
	yamlSpec := `
name: renew vpn
template: {kind: renew, profile: vpn-user, deadline: 7d}
selector:
  agents: {organizations: [paris], tags: [desk], host_pattern: "ws-*"}
  certificates: {expires_within: 30d}
plan:
  canary: {count: 5, per_model: true}
  waves: [25, 50, 100]
  max_concurrent: 50
  pause: {after: 1h30m}
  windows:
    - {days: [mon, tue], start: "22:00", end: "06:00", time_zone: Europe/Paris}
brake: {threshold_percent: 20, min_executed: 10, per_wave: true, outcomes: [failed, timed_out]}
`
	y, err := DecodeSpec([]byte(yamlSpec))
	if err != nil {
		t.Fatal(err)
	}
	if y.Plan.Pause.After != Duration(90*time.Minute) || y.Selector.Certificates.ExpiresWithin != Duration(30*24*time.Hour) ||
		!y.Plan.Canary.PerModel || y.Plan.MaxConcurrent != 50 || y.Brake.MinExecuted != 10 || y.Plan.Windows[0].TimeZone != "Europe/Paris" {
		t.Errorf("yaml: %+v", y)
	}
	if err := y.Validate(); err != nil {
		t.Error(err)
	}
	j, err := DecodeSpec(CanonicalJSON(y))
	if err != nil {
		t.Fatal(err)
	}
	y.Normalize()
	if string(CanonicalJSON(j)) != string(CanonicalJSON(y)) || BindingHash(j, nil) != BindingHash(y, nil) {
		t.Errorf("JSON round trip differs:\n%s\n%s", CanonicalJSON(j), CanonicalJSON(y))
	}
	for in, want := range map[string]string{
		"name: x\nplan: {canary: {cuont: 5}}":  "cuont",
		`{"name": "x", "plan": {"wavs": [1]}}`: "wavs",
		"  ":                                   "empty",
		`{"name": "x"} {"name": "y"}`:          "one spec per file",
		"plan: {pause: {after: 30}}":           "needs a unit",
	} {
		if _, err := DecodeSpec([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %q", in, err, want)
		}
	}
}
