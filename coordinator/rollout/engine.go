package rollout

import (
	"fmt"
	"time"
)

// Run is what the engine knows of a running rollout at one pass.
type Run struct {
	Plan           Plan
	Standing       bool
	CurrentWave    int
	WaveSizes      []int     // targets per wave as frozen (standing: as known now)
	Tallies        []Tally   // per wave
	Open           int       // non-terminal jobs of the rollout, every wave
	WaveFinishedAt time.Time // when CurrentWave finished; zero while it has not
	Promoted       bool      // someone promoted past the pause after CurrentWave
	Now            time.Time
}

// Step is the engine's decision for one pass.
type Step struct {
	Create   int       // jobs to create now in CurrentWave (targets without a job, in seq order)
	NextWave bool      // CurrentWave finished and may advance: move to CurrentWave+1
	Finished bool      // CurrentWave finished now (record WaveFinishedAt = Now if zero)
	Complete bool      // every wave finished (never for Standing)
	WaitFor  PauseKind // "promote" when waiting for a promote
	Waiting  string    // why nothing (or less than the wave's rest) is created now, for progress
	WakeAt   time.Time // when a pass should look again without news (window opens, pause ends); zero: on news only
}

// WaveName names a wave for people: "the canary", "wave 2".
func WaveName(w int) string {
	if w == 0 {
		return "the canary"
	}
	return fmt.Sprintf("wave %d", w)
}

// Next decides one pass of a running rollout (the caller checks the brake, pauses and the
// profile first): see the package documentation for the rules.
func Next(r Run) Step {
	w := r.CurrentWave
	var t Tally
	if w >= 0 && w < len(r.Tallies) {
		t = r.Tallies[w]
	}
	pending := t.Pending
	// Targets the counts do not know yet (a standing rollout's newest) have no job either.
	if w >= 0 && w < len(r.WaveSizes) && r.WaveSizes[w] > t.Targets {
		pending += r.WaveSizes[w] - t.Targets
	}
	size := 0
	if w >= 0 && w < len(r.WaveSizes) {
		size = r.WaveSizes[w]
	}

	if pending > 0 || t.Open > 0 {
		return createIn(r, w, pending, t.Open)
	}

	// The wave is finished: every target has a job that ended (or it has none).
	last := w >= len(r.WaveSizes)-1
	if r.Standing {
		// A standing rollout has its canary and one open wave, whether or not a target
		// has reached that wave yet.
		last = w >= LastWave(r.Plan, 0)
		if w == 0 && size < standingCanary(r.Plan) {
			// The canary fills up as certificates enter the renewal window; the wave after
			// it starts only once it is full and done.
			return Step{Waiting: fmt.Sprintf("standing: the canary has %d of %d targets; waiting for certificates to enter the renewal window", size, standingCanary(r.Plan))}
		}
		if last {
			return Step{Finished: true, Waiting: "standing: every target so far is done; waiting for certificates to enter the renewal window"}
		}
	}
	s := Step{Finished: true}
	if last {
		s.Complete = true
		return s
	}
	finishedAt := r.WaveFinishedAt
	if finishedAt.IsZero() {
		finishedAt = r.Now
	}
	switch pause := r.Plan.Pause; {
	case pause.UntilPromoted && !r.Promoted:
		s.WaitFor = PausePromote
		s.Waiting = fmt.Sprintf("%s is done; waiting for a promote to start %s", capitalize(WaveName(w)), WaveName(w+1))
	case pause.After > 0 && r.Now.Before(finishedAt.Add(time.Duration(pause.After))) && !r.Promoted:
		s.WakeAt = finishedAt.Add(time.Duration(pause.After))
		s.Waiting = fmt.Sprintf("pause after %s until %s UTC", WaveName(w), s.WakeAt.UTC().Format("2006-01-02 15:04"))
	default:
		s.NextWave = true
	}
	return s
}

// createIn decides how many jobs to create in the unfinished wave w.
func createIn(r Run, w, pending, open int) Step {
	if pending == 0 {
		// Windows only hold back new jobs; the running ones end when they end.
		return Step{Waiting: fmt.Sprintf("waiting for %d open %s of %s to end", open, plural(open, "job", "jobs"), WaveName(w))}
	}
	inside, opens, cw := inWindows(r.Plan.Windows, r.Now)
	if !inside {
		s := Step{Waiting: "outside the maintenance windows"}
		if !opens.IsZero() {
			s.WakeAt = opens
			s.Waiting += " until " + cw.describeOpening(opens, r.Now)
		}
		return s
	}
	create := pending
	if m := r.Plan.MaxConcurrent; m > 0 {
		create = min(pending, max(m-r.Open, 0))
	}
	s := Step{Create: create}
	if create < pending {
		s.Waiting = fmt.Sprintf("max_concurrent %d reached", r.Plan.MaxConcurrent)
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func capitalize(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
