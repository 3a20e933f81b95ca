package rollout

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func targets(models ...string) []Target {
	ts := make([]Target, len(models))
	for i, m := range models {
		ts[i] = Target{Seq: i + 1, AgentID: fmt.Sprintf("agent-%d", i+1), TokenModel: m}
	}
	return ts
}

func nTargets(n int) []Target { return targets(make([]string, n)...) }

func wavesOf(ts []Target) []int {
	out := make([]int, len(ts))
	for i, t := range ts {
		out[i] = t.Wave
	}
	return out
}

func TestAssignWaves(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		plan  Plan
		ts    []Target
		sizes []int
		waves []int // per target, when given
	}{
		{"count canary, one wave", Plan{Canary: Canary{Count: 2}, Waves: []float64{100}}, nTargets(5), []int{2, 3}, []int{0, 0, 1, 1, 1}},
		{"no targets", Plan{Canary: Canary{Count: 2}, Waves: []float64{50, 100}}, nil, []int{0, 0, 0}, []int{}},
		{"canary larger than the list", Plan{Canary: Canary{Count: 10}, Waves: []float64{100}}, nTargets(3), []int{3, 0}, []int{0, 0, 0}},
		{"canary at least 1", Plan{Waves: []float64{100}}, nTargets(3), []int{1, 2}, []int{0, 1, 1}},
		{"percent canary rounds up", Plan{Canary: Canary{Percent: 10}, Waves: []float64{100}}, nTargets(11), []int{2, 9}, nil},
		{"percent canary exact", Plan{Canary: Canary{Percent: 10}, Waves: []float64{100}}, nTargets(30), []int{3, 27}, nil},
		{"cumulative waves", Plan{Canary: Canary{Count: 10}, Waves: []float64{25, 50, 100}}, nTargets(110), []int{10, 25, 25, 50}, nil},
		{"waves round up", Plan{Canary: Canary{Count: 1}, Waves: []float64{10, 50, 100}}, nTargets(12), []int{1, 2, 4, 5}, []int{0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3}},
		{"missing 100 appended", Plan{Canary: Canary{Count: 1}, Waves: []float64{50}}, nTargets(5), []int{1, 2, 2}, []int{0, 1, 1, 2, 2}},
		{"few targets leave a wave empty", Plan{Canary: Canary{Count: 1}, Waves: []float64{10, 20, 100}}, nTargets(3), []int{1, 1, 0, 1}, []int{0, 1, 3}},
		{"exponential", Plan{Canary: Canary{Count: 1}, Exponential: &Exponential{Start: 2, Factor: 2}}, nTargets(20), []int{1, 2, 4, 8, 5}, nil},
		{"exponential rounds up", Plan{Canary: Canary{Count: 1}, Exponential: &Exponential{Start: 1, Factor: 1.5}}, nTargets(9), []int{1, 1, 2, 3, 2}, []int{0, 1, 2, 2, 3, 3, 3, 4, 4}},
		{"exponential with nothing after the canary", Plan{Canary: Canary{Count: 1}, Exponential: &Exponential{Start: 2, Factor: 2}}, nTargets(1), []int{1}, []int{0}},
		{"per model first", Plan{Canary: Canary{Count: 1, PerModel: true}, Waves: []float64{100}},
			targets("a", "a", "b", "a", "c", "b"), []int{3, 3}, []int{0, 1, 0, 1, 0, 1}},
		{"per model then fill", Plan{Canary: Canary{Count: 4, PerModel: true}, Waves: []float64{100}},
			targets("a", "a", "b", "a", "b"), []int{4, 1}, []int{0, 0, 0, 0, 1}},
		{"per model with percent", Plan{Canary: Canary{Percent: 50, PerModel: true}, Waves: []float64{50, 100}},
			targets("a", "a", "a", "a", "b", "c"), []int{3, 2, 1}, []int{0, 1, 1, 2, 0, 0}},
		{"standing plan: canary and one wave", Plan{Canary: Canary{Count: 2}}, nTargets(4), []int{2, 2}, []int{0, 0, 1, 1}},
	} {
		ts := slices.Clone(tt.ts)
		sizes := AssignWaves(tt.plan, ts)
		if !slices.Equal(sizes, tt.sizes) {
			t.Errorf("%s: sizes %v, want %v", tt.name, sizes, tt.sizes)
		}
		if tt.waves != nil && !slices.Equal(wavesOf(ts), tt.waves) {
			t.Errorf("%s: waves %v, want %v", tt.name, wavesOf(ts), tt.waves)
		}
		// The sizes add up and match the assignment; the same input gives the same waves.
		count := make([]int, len(sizes))
		for _, x := range ts {
			count[x.Wave]++
		}
		if !slices.Equal(count, sizes) {
			t.Errorf("%s: assigned %v, sizes %v", tt.name, count, sizes)
		}
		again := slices.Clone(tt.ts)
		AssignWaves(tt.plan, again)
		if !slices.Equal(wavesOf(again), wavesOf(ts)) {
			t.Errorf("%s: not deterministic", tt.name)
		}
	}
}

func TestAssignWavesLarge(t *testing.T) {
	t.Parallel()
	ts := nTargets(10_000)
	sizes := AssignWaves(Plan{Canary: Canary{Percent: 1}, Waves: []float64{10, 30, 60, 100}}, ts)
	if !slices.Equal(sizes, []int{100, 990, 1980, 2970, 3960}) {
		t.Errorf("sizes %v", sizes)
	}
	for i := 1; i < len(ts); i++ {
		if ts[i].Wave < ts[i-1].Wave {
			t.Fatalf("target %d in wave %d after wave %d", i, ts[i].Wave, ts[i-1].Wave)
		}
	}
}

func TestNextWave(t *testing.T) {
	t.Parallel()
	standing := Plan{Canary: Canary{Count: 3}, MaxConcurrent: 10}
	for _, tt := range []struct {
		plan   Plan
		so_far int
		want   int
	}{
		{standing, 0, 0},
		{standing, 2, 0},
		{standing, 3, 1},
		{standing, 50, 1},
		{Plan{}, 0, 0}, // the canary is at least 1
		{Plan{}, 1, 1},
		{Plan{Canary: Canary{Count: 1}, Waves: []float64{50, 100}}, 1, 2},
	} {
		if got := NextWave(tt.plan, tt.so_far); got != tt.want {
			t.Errorf("NextWave(%+v, %d) = %d, want %d", tt.plan, tt.so_far, got, tt.want)
		}
	}
	// Targets added one by one land where AssignWaves puts a list of the same length.
	var added []Target
	for i := range 6 {
		added = append(added, Target{Seq: i + 1, Wave: NextWave(standing, countWave(added, 0))})
	}
	all := nTargets(6)
	AssignWaves(standing, all)
	if !slices.Equal(wavesOf(added), wavesOf(all)) {
		t.Errorf("added one by one %v, assigned at once %v", wavesOf(added), wavesOf(all))
	}
}

func countWave(ts []Target, w int) int {
	n := 0
	for _, t := range ts {
		if t.Wave == w {
			n++
		}
	}
	return n
}

// Whatever the plan and the list: every target has a wave, the sizes add up, the canary
// holds at least one target, and the targets after the canary keep their order.
func TestAssignWavesProperties(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	models := []string{"a", "b", "c", "d"}
	for range 2000 {
		n := rng.IntN(300)
		ts := make([]Target, n)
		for i := range ts {
			ts[i] = Target{Seq: i + 1, TokenModel: models[rng.IntN(len(models))]}
		}
		var p Plan
		switch rng.IntN(3) {
		case 0:
			p.Canary.Count = rng.IntN(20)
		case 1:
			p.Canary.Percent = float64(rng.IntN(1000)+1) / 10
		}
		p.Canary.PerModel = rng.IntN(2) == 0
		if rng.IntN(2) == 0 {
			p.Exponential = &Exponential{Start: rng.IntN(10) + 1, Factor: 1 + float64(rng.IntN(30)+1)/10}
		} else {
			prev := 0.0
			for prev < 100 && rng.IntN(4) > 0 {
				prev = min(prev+float64(rng.IntN(40)+1), 100)
				p.Waves = append(p.Waves, prev)
			}
		}
		sizes := AssignWaves(p, ts)
		sum := 0
		for _, s := range sizes {
			sum += s
		}
		if sum != n || (n > 0 && sizes[0] < 1) {
			t.Fatalf("plan %+v, %d targets: sizes %v", p, n, sizes)
		}
		last := 1
		for _, x := range ts {
			if x.Wave < 0 || x.Wave >= len(sizes) || (x.Wave > 0 && x.Wave < last) {
				t.Fatalf("plan %+v, %d targets: target %d in wave %d (sizes %v)", p, n, x.Seq, x.Wave, sizes)
			}
			if x.Wave > 0 {
				last = x.Wave
			}
		}
		if rest := n - sizes[0]; rest > 0 && LastWave(p, rest) != len(sizes)-1 {
			t.Fatalf("plan %+v, %d targets: last wave %d, sizes %v", p, n, LastWave(p, rest), sizes)
		}
	}
}
