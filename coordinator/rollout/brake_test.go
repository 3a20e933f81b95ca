package rollout

import (
	"slices"
	"testing"
)

func tally(succeeded int, failures map[Outcome]int, byCode map[string]int) Tally {
	t := Tally{Succeeded: succeeded, Failures: failures, ByCode: byCode}
	t.Targets = t.Executed()
	return t
}

func TestCheckBrake(t *testing.T) {
	t.Parallel()
	fail := func(n int) map[Outcome]int { return map[Outcome]int{OutcomeFailed: n} }
	codes := func(n int) map[string]int { return map[string]int{"token.device_error": n} }
	for _, tt := range []struct {
		name    string
		brake   Brake
		overall Tally
		perWave []Tally
		want    *Trip // only Scope, Wave, Executed, Failed, Percent, Threshold compared
	}{
		{"nothing executed", Brake{}, Tally{}, nil, nil},
		{"below the threshold", Brake{ThresholdPercent: 20}, tally(9, fail(2), codes(2)), nil, nil},
		{"exactly at the threshold trips", Brake{ThresholdPercent: 20}, tally(8, fail(2), codes(2)), nil,
			&Trip{Scope: "overall", Wave: -1, Executed: 10, Failed: 2, Percent: 20, Threshold: 20}},
		{"default threshold 10 at the boundary", Brake{}, tally(9, fail(1), codes(1)), nil,
			&Trip{Scope: "overall", Wave: -1, Executed: 10, Failed: 1, Percent: 10, Threshold: 10}},
		{"just under the default", Brake{}, tally(10, fail(1), codes(1)), nil, nil},
		{"below min_executed", Brake{ThresholdPercent: 10, MinExecuted: 5}, tally(0, fail(4), codes(4)), nil, nil},
		{"at min_executed", Brake{ThresholdPercent: 10, MinExecuted: 5}, tally(0, fail(5), codes(5)), nil,
			&Trip{Scope: "overall", Wave: -1, Executed: 5, Failed: 5, Percent: 100, Threshold: 10}},
		{"default min_executed 5", Brake{}, tally(0, fail(4), codes(4)), nil, nil},
		{"disabled", Brake{Disabled: true, ThresholdPercent: 1}, tally(0, fail(50), codes(50)), nil, nil},
		{"uncounted outcome", Brake{Outcomes: []Outcome{OutcomeFailed}, ThresholdPercent: 10},
			tally(5, map[Outcome]int{OutcomeTokenAbsent: 5}, map[string]int{"no_matching_token": 5}), nil, nil},
		{"uncounted outcomes still count as executed", Brake{Outcomes: []Outcome{OutcomeFailed}, ThresholdPercent: 25},
			tally(0, map[Outcome]int{OutcomeTokenAbsent: 4, OutcomeFailed: 1}, map[string]int{"no_matching_token": 4, "x": 1}), nil, nil},
		{"per wave off: a bad wave hides in the whole", Brake{ThresholdPercent: 30},
			tally(18, fail(2), codes(2)), []Tally{tally(0, fail(2), codes(2)), tally(18, nil, nil)}, nil},
		{"per wave trips the wave", Brake{ThresholdPercent: 30, PerWave: true, MinExecuted: 2},
			tally(18, fail(2), codes(2)), []Tally{tally(18, nil, nil), tally(0, fail(2), codes(2))},
			&Trip{Scope: "wave 1", Wave: 1, Executed: 2, Failed: 2, Percent: 100, Threshold: 30}},
		{"per wave respects min_executed", Brake{ThresholdPercent: 30, PerWave: true, MinExecuted: 3},
			tally(18, fail(2), codes(2)), []Tally{tally(18, nil, nil), tally(0, fail(2), codes(2))}, nil},
		{"overall first", Brake{ThresholdPercent: 10, PerWave: true},
			tally(5, fail(5), codes(5)), []Tally{tally(0, fail(5), codes(5))},
			&Trip{Scope: "overall", Wave: -1, Executed: 10, Failed: 5, Percent: 50, Threshold: 10}},
	} {
		got := CheckBrake(tt.brake, tt.overall, tt.perWave)
		switch {
		case got == nil && tt.want == nil:
		case got == nil || tt.want == nil:
			t.Errorf("%s: trip %+v, want %+v", tt.name, got, tt.want)
		default:
			g, w := *got, *tt.want
			if g.Scope != w.Scope || g.Wave != w.Wave || g.Executed != w.Executed || g.Failed != w.Failed ||
				g.Percent != w.Percent || g.Threshold != w.Threshold {
				t.Errorf("%s: trip %+v, want %+v", tt.name, g, w)
			}
		}
	}
}

func TestTripByCode(t *testing.T) {
	t.Parallel()
	overall := tally(7, map[Outcome]int{OutcomeFailed: 2, OutcomeRefused: 1, OutcomeTokenAbsent: 3},
		map[string]int{"token.device_error": 2, "csr_rejected": 1, "no_matching_token": 3})
	trip := CheckBrake(Brake{Outcomes: []Outcome{OutcomeFailed, OutcomeRefused}, ThresholdPercent: 20}, overall, nil)
	if trip == nil {
		t.Fatal("no trip")
	}
	want := []CodeCount{{Code: "token.device_error", Count: 2}, {Code: "csr_rejected", Count: 1}}
	if !slices.EqualFunc(trip.ByCode, want, func(a, b CodeCount) bool { return a.Code == b.Code && a.Count == b.Count }) {
		t.Errorf("by code %+v, want %+v (token absence is not counted)", trip.ByCode, want)
	}
	if trip.Failed != 3 || trip.Executed != 13 {
		t.Errorf("trip %+v", trip)
	}
}

func TestTripSummary(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		trip Trip
		want string
	}{
		{Trip{Scope: "wave 0", Wave: 0, Executed: 10, Failed: 3, Percent: 30, Threshold: 20,
			ByCode: []CodeCount{{Code: "token.device_error", Count: 2}, {Code: "csr_rejected", Count: 1}}},
			"brake tripped in wave 0 (canary): 3 of 10 executed failed (30%, threshold 20%): token.device_error ×2, csr_rejected ×1"},
		{Trip{Scope: "overall", Wave: -1, Executed: 3, Failed: 1, Percent: 100.0 / 3, Threshold: 12.5, ByCode: []CodeCount{{Count: 1}}},
			"brake tripped overall: 1 of 3 executed failed (33.3%, threshold 12.5%): no error code ×1"},
		{Trip{Scope: "wave 2", Wave: 2, Executed: 5, Failed: 5, Percent: 100, Threshold: 10},
			"brake tripped in wave 2: 5 of 5 executed failed (100%, threshold 10%)"},
	} {
		if got := tt.trip.Summary(); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}
