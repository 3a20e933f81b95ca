package rollout

import (
	"strings"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC) // a Wednesday
	pending := func(n int) Tally { return Tally{Targets: n, Pending: n} }
	open := func(n int) Tally { return Tally{Targets: n, Open: n} }
	done := func(n int) Tally { return Tally{Targets: n, Succeeded: n} }
	plan := Plan{Canary: Canary{Count: 2}, Waves: []float64{50, 100}}
	for _, tt := range []struct {
		name    string
		run     Run
		want    Step
		waiting string // part of Waiting
	}{
		{"create the canary", Run{Plan: plan, WaveSizes: []int{2, 4, 4}, Tallies: []Tally{pending(2), pending(4), pending(4)}, Now: now},
			Step{Create: 2}, ""},
		{"the cap", Run{Plan: Plan{MaxConcurrent: 5}, WaveSizes: []int{10}, Tallies: []Tally{{Targets: 10, Pending: 7, Open: 3}}, Open: 3, Now: now},
			Step{Create: 2}, "max_concurrent 5 reached"},
		{"the cap counts every wave's open jobs", Run{Plan: Plan{MaxConcurrent: 5}, CurrentWave: 1, WaveSizes: []int{1, 10}, Tallies: []Tally{done(1), pending(10)}, Open: 5, Now: now},
			Step{}, "max_concurrent 5 reached"},
		{"under the cap", Run{Plan: Plan{MaxConcurrent: 50}, WaveSizes: []int{10}, Tallies: []Tally{pending(10)}, Now: now},
			Step{Create: 10}, ""},
		{"targets the counts do not know yet", Run{Plan: plan, Standing: true, CurrentWave: 1, WaveSizes: []int{2, 5}, Tallies: []Tally{done(2), done(3)}, Now: now},
			Step{Create: 2}, ""},
		{"waiting for open jobs", Run{Plan: plan, WaveSizes: []int{2, 4, 4}, Tallies: []Tally{open(2)}, Open: 2, Now: now},
			Step{}, "waiting for 2 open jobs of the canary to end"},
		{"outside the windows", Run{Plan: Plan{Windows: []Window{{Days: []string{"wed"}, Start: "22:00", End: "06:00", TimeZone: "Europe/Paris"}}},
			WaveSizes: []int{1, 1}, Tallies: []Tally{pending(1)}, Now: now},
			Step{WakeAt: time.Date(2026, 3, 4, 21, 0, 0, 0, time.UTC)}, "outside the maintenance windows until 22:00 Europe/Paris"},
		{"outside the windows until another day", Run{Plan: Plan{Windows: []Window{{Days: []string{"sat"}, Start: "10:00", End: "11:00"}}},
			WaveSizes: []int{1}, Tallies: []Tally{pending(1)}, Now: now},
			Step{WakeAt: time.Date(2026, 3, 7, 10, 0, 0, 0, time.UTC)}, "until Sat 10:00 UTC"},
		{"outside the windows, open jobs are what is waited for", Run{Plan: Plan{Windows: []Window{{Days: []string{"sat"}, Start: "10:00", End: "11:00"}}},
			WaveSizes: []int{1}, Tallies: []Tally{open(1)}, Open: 1, Now: now},
			Step{}, "waiting for 1 open job of the canary to end"},
		{"windows do not hold back a finished wave", Run{Plan: Plan{Windows: []Window{{Days: []string{"sat"}, Start: "10:00", End: "11:00"}}, Waves: []float64{100}},
			WaveSizes: []int{1, 1}, Tallies: []Tally{done(1), pending(1)}, Now: now},
			Step{Finished: true, NextWave: true}, ""},
		{"an empty wave is finished at once", Run{Plan: plan, CurrentWave: 1, WaveSizes: []int{2, 0, 4}, Tallies: []Tally{done(2), {}, pending(4)}, Now: now},
			Step{Finished: true, NextWave: true}, ""},
		{"failures and cancellations finish a wave too", Run{Plan: plan, WaveSizes: []int{2, 4, 4},
			Tallies: []Tally{{Targets: 2, Cancelled: 1, Failures: map[Outcome]int{OutcomeFailed: 1}}}, Now: now},
			Step{Finished: true, NextWave: true}, ""},
		{"the last wave completes", Run{Plan: plan, CurrentWave: 2, WaveSizes: []int{2, 4, 4}, Tallies: []Tally{done(2), done(4), done(4)}, Now: now},
			Step{Finished: true, Complete: true}, ""},
		{"no targets at all", Run{Plan: plan, WaveSizes: []int{0}, Now: now}, Step{Finished: true, Complete: true}, ""},
		{"wait for a promote", Run{Plan: Plan{Pause: Pause{UntilPromoted: true}}, WaveSizes: []int{1, 1}, Tallies: []Tally{done(1)}, WaveFinishedAt: now, Now: now},
			Step{Finished: true, WaitFor: PausePromote}, "waiting for a promote to start wave 1"},
		{"promoted", Run{Plan: Plan{Pause: Pause{UntilPromoted: true}}, WaveSizes: []int{1, 1}, Tallies: []Tally{done(1)}, WaveFinishedAt: now, Promoted: true, Now: now},
			Step{Finished: true, NextWave: true}, ""},
		{"the last wave needs no promote", Run{Plan: Plan{Pause: Pause{UntilPromoted: true}}, CurrentWave: 1, WaveSizes: []int{1, 1}, Tallies: []Tally{done(1), done(1)}, Now: now},
			Step{Finished: true, Complete: true}, ""},
		{"a timed pause starts when the wave finished", Run{Plan: Plan{Pause: Pause{After: Duration(time.Hour)}}, WaveSizes: []int{1, 1}, Tallies: []Tally{done(1)}, Now: now},
			Step{Finished: true, WakeAt: now.Add(time.Hour)}, "pause after the canary until 2026-03-04 13:00 UTC"},
		{"a timed pause runs on", Run{Plan: Plan{Pause: Pause{After: Duration(time.Hour)}}, CurrentWave: 1, WaveSizes: []int{1, 1, 1}, Tallies: []Tally{done(1), done(1)},
			WaveFinishedAt: now.Add(-59 * time.Minute), Now: now},
			Step{Finished: true, WakeAt: now.Add(time.Minute)}, "pause after wave 1 until"},
		{"a timed pause is over", Run{Plan: Plan{Pause: Pause{After: Duration(time.Hour)}}, WaveSizes: []int{1, 1}, Tallies: []Tally{done(1)},
			WaveFinishedAt: now.Add(-time.Hour), Now: now},
			Step{Finished: true, NextWave: true}, ""},
		{"a promote cuts a timed pause short", Run{Plan: Plan{Pause: Pause{After: Duration(time.Hour)}}, WaveSizes: []int{1, 1}, Tallies: []Tally{done(1)},
			WaveFinishedAt: now, Promoted: true, Now: now},
			Step{Finished: true, NextWave: true}, ""},
		{"standing: the last wave stays open", Run{Plan: Plan{Canary: Canary{Count: 1}}, Standing: true, CurrentWave: 1, WaveSizes: []int{1, 3}, Tallies: []Tally{done(1), done(3)}, Now: now},
			Step{Finished: true}, "waiting for certificates to enter the renewal window"},
		{"standing: an empty canary waits to fill", Run{Plan: Plan{Canary: Canary{Count: 2}}, Standing: true, WaveSizes: []int{0}, Now: now},
			Step{}, "the canary has 0 of 2 targets"},
		{"standing: a partly filled canary waits too", Run{Plan: Plan{Canary: Canary{Count: 2}}, Standing: true, WaveSizes: []int{1, 0}, Tallies: []Tally{done(1)}, Now: now},
			Step{}, "the canary has 1 of 2 targets"},
		{"standing: a full canary advances", Run{Plan: Plan{Canary: Canary{Count: 2}}, Standing: true, WaveSizes: []int{2, 0}, Tallies: []Tally{done(2)}, Now: now},
			Step{Finished: true, NextWave: true}, ""},
		{"standing: a full canary advances before the open wave has a target", Run{Plan: Plan{Canary: Canary{Count: 2}}, Standing: true, WaveSizes: []int{2}, Tallies: []Tally{done(2)}, Now: now},
			Step{Finished: true, NextWave: true}, ""},
		{"standing: an empty open wave waits", Run{Plan: Plan{Canary: Canary{Count: 2}}, Standing: true, CurrentWave: 1, WaveSizes: []int{2}, Tallies: []Tally{done(2)}, Now: now},
			Step{Finished: true}, "waiting for certificates"},
		{"standing: create in the canary", Run{Plan: Plan{Canary: Canary{Count: 2}}, Standing: true, WaveSizes: []int{1}, Tallies: []Tally{pending(1)}, Now: now},
			Step{Create: 1}, ""},
	} {
		got := Next(tt.run)
		waiting, wake, wantWake := got.Waiting, got.WakeAt, tt.want.WakeAt
		got.Waiting, got.WakeAt, tt.want.WakeAt = "", time.Time{}, time.Time{}
		if got != tt.want || !wake.Equal(wantWake) {
			t.Errorf("%s: %+v (wake at %s), want %+v", tt.name, got, wake, tt.want)
		}
		if (tt.waiting == "" && waiting != "") || !strings.Contains(waiting, tt.waiting) {
			t.Errorf("%s: waiting %q, want it to say %q", tt.name, waiting, tt.waiting)
		}
		if tt.want.Create == 0 && !tt.want.Finished && waiting == "" {
			t.Errorf("%s: nothing created and no reason given", tt.name)
		}
	}
}

func TestETA(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		remaining, done int
		span            time.Duration
		want            time.Duration
	}{
		{100, 10, time.Minute, 10 * time.Minute},
		{5, 10, time.Minute, 30 * time.Second},
		{1, 3, time.Minute, 20 * time.Second},
		{10, 0, time.Minute, 0},
		{0, 10, time.Minute, 0},
		{10, 10, 0, 0},
		{1 << 40, 1, 1 << 40, time.Duration(1<<63 - 1)},
	} {
		if got := ETA(tt.remaining, tt.done, tt.span); got != tt.want {
			t.Errorf("ETA(%d, %d, %s) = %s, want %s", tt.remaining, tt.done, tt.span, got, tt.want)
		}
	}
	if r := RatePerMinute(30, 30*time.Second); r != 60 {
		t.Errorf("rate %g", r)
	}
	if r := RatePerMinute(30, 0); r != 0 {
		t.Errorf("rate without a span %g", r)
	}
}
