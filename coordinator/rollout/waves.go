package rollout

import "math"

// Target is one job to create: who and what it runs for. At most one job per target, ever.
type Target struct {
	Seq               int    `json:"seq"`  // 1.. in the frozen order
	Wave              int    `json:"wave"` // 0 = canary
	AgentID           string `json:"agent_id"`
	TokenSerial       string `json:"token_serial,omitempty"`
	HolderID          string `json:"holder_id,omitempty"`
	CertificateSerial string `json:"certificate_serial,omitempty"`
	TokenModel        string `json:"token_model,omitempty"`
	OrganizationID    string `json:"organization_id,omitempty"`
}

// percentOf is p% of n, rounded up; the small slack keeps float noise (10% of 30 is
// 3.0000000000000004) from adding a target.
func percentOf(n int, p float64) int {
	v := int(math.Ceil(float64(n)*p/100 - 1e-9))
	return min(max(v, 0), n)
}

// canarySize is the canary's size for n targets, before per-model additions: the count or
// the percentage (rounded up), at least 1 when there are targets, at most n.
func canarySize(c Canary, n int) int {
	if n == 0 {
		return 0
	}
	size := c.Count
	if size <= 0 && c.Percent > 0 {
		size = percentOf(n, c.Percent)
	}
	return min(max(size, 1), n)
}

// waveSizes splits rest non-canary targets into the plan's waves (wave 1 first).
func waveSizes(p Plan, rest int) []int {
	if e := p.Exponential; e != nil && len(p.Waves) == 0 {
		var sizes []int
		size := float64(max(e.Start, 1))
		for left := rest; left > 0; {
			n := min(int(math.Ceil(size-1e-9)), left)
			sizes = append(sizes, n)
			left -= n
			if e.Factor > 1 {
				size = math.Min(size*e.Factor, float64(rest))
			}
		}
		return sizes
	}
	waves := p.Waves
	if len(waves) == 0 || waves[len(waves)-1] < 100 {
		waves = append(waves[:len(waves):len(waves)], 100)
	}
	sizes := make([]int, len(waves))
	done := 0
	for i, w := range waves {
		cut := max(percentOf(rest, w), done)
		if i == len(waves)-1 {
			cut = rest
		}
		sizes[i] = cut - done
		done = cut
	}
	return sizes
}

// AssignWaves sets Target.Wave for every target (in place, deterministic) and returns the
// size of each wave. PerModel: the first target of each distinct TokenModel (in order) joins
// the canary first, then the canary fills up to its count/percent (at least 1 when there are
// targets). Percent sizes round up. The targets after the canary fill the waves in order:
// Waves are cumulative percentages of them (a wave may be empty when there are few), an
// exponential plan has as many waves as it takes.
func AssignWaves(p Plan, ts []Target) []int {
	n := len(ts)
	canary := canarySize(p.Canary, n)
	inCanary := make([]bool, n)
	size := 0
	if p.Canary.PerModel {
		seen := map[string]bool{}
		for i, t := range ts {
			if !seen[t.TokenModel] {
				seen[t.TokenModel] = true
				inCanary[i] = true
				size++
			}
		}
	}
	for i := 0; i < n && size < canary; i++ {
		if !inCanary[i] {
			inCanary[i] = true
			size++
		}
	}
	sizes := append([]int{size}, waveSizes(p, n-size)...)
	wave, left := 1, 0
	if len(sizes) > 1 {
		left = sizes[1]
	}
	for i := range ts {
		if inCanary[i] {
			ts[i].Wave = 0
			continue
		}
		for left == 0 && wave < len(sizes)-1 {
			wave++
			left = sizes[wave]
		}
		ts[i].Wave = wave
		left--
	}
	return sizes
}

// LastWave is the index of the plan's last wave when it has rest targets after the canary
// (a standing rollout's, whose plan has no waves: 1).
func LastWave(p Plan, rest int) int {
	if p.Exponential != nil && len(p.Waves) == 0 {
		return max(len(waveSizes(p, rest)), 1)
	}
	if n := len(p.Waves); n > 0 && p.Waves[n-1] < 100 {
		return n + 1 // AssignWaves appends the 100 that Normalize would have
	}
	return max(len(p.Waves), 1)
}

// NextWave is the wave a target added later to a standing rollout joins: the canary (0)
// until it holds its count (at least 1), then the last wave (1: a standing rollout's plan
// has a canary and one open wave).
func NextWave(p Plan, canarySoFar int) int {
	if canarySoFar < standingCanary(p) {
		return 0
	}
	return LastWave(p, 0)
}

// standingCanary is the size a standing rollout's canary reaches before later targets go
// to the last wave: its count, at least 1 (a percentage, which Validate refuses there,
// counts as 1).
func standingCanary(p Plan) int { return max(p.Canary.Count, 1) }
