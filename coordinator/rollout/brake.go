package rollout

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Example is one failed job shown with a trip.
type Example struct {
	JobID   string `json:"job_id"`
	AgentID string `json:"agent_id"`
	Message string `json:"message"`
}

// CodeCount is how many counted failures had one error code, with a few examples.
type CodeCount struct {
	Code     string    `json:"code"`
	Count    int       `json:"count"`
	Examples []Example `json:"examples,omitempty"`
}

// MaxExamples is how many examples a trip shows per error code.
const MaxExamples = 3

// Trip records why the brake stopped a rollout.
type Trip struct {
	Scope     string      `json:"scope"` // "overall" or "wave 2"
	Wave      int         `json:"wave"`  // -1 for overall
	Executed  int         `json:"executed"`
	Failed    int         `json:"failed"`
	Percent   float64     `json:"percent"`
	Threshold float64     `json:"threshold_percent"`
	ByCode    []CodeCount `json:"by_code"` // examples filled by the service
	At        time.Time   `json:"at"`      // set by the service
}

// Summary is the trip in one line: "brake tripped in wave 0 (canary): 3 of 10 executed
// failed (30%, threshold 20%): token.device_error ×2, csr_rejected ×1".
func (t Trip) Summary() string {
	var b strings.Builder
	b.WriteString("brake tripped ")
	switch {
	case t.Wave < 0:
		b.WriteString("overall")
	case t.Wave == 0:
		b.WriteString("in wave 0 (canary)")
	default:
		b.WriteString("in wave " + strconv.Itoa(t.Wave))
	}
	fmt.Fprintf(&b, ": %d of %d executed failed (%s%%, threshold %s%%)", t.Failed, t.Executed, formatPercent(t.Percent), formatPercent(t.Threshold))
	for i, c := range t.ByCode {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		code := c.Code
		if code == "" {
			code = "no error code"
		}
		fmt.Fprintf(&b, "%s ×%d", code, c.Count)
	}
	return b.String()
}

// formatPercent writes whole percentages without decimals and others with at most one.
func formatPercent(p float64) string {
	if p == float64(int64(p)) {
		return strconv.FormatInt(int64(p), 10)
	}
	return strconv.FormatFloat(p, 'f', 1, 64)
}

// CheckBrake returns the trip (nil when none): the overall tally first, then each wave's
// when PerWave, counting only b.Outcomes (the defaults where b leaves them out). A tally
// trips when it has executed at least MinExecuted jobs and failed*100/executed reaches
// ThresholdPercent (equal trips). The trip's ByCode lists the counted failures' codes, most
// frequent first; the service adds the examples and the time.
func CheckBrake(b Brake, overall Tally, perWave []Tally) *Trip {
	if b.Disabled {
		return nil
	}
	b = b.normalized()
	if t := tripOf(b, overall, -1); t != nil {
		return t
	}
	if b.PerWave {
		for w, tally := range perWave {
			if t := tripOf(b, tally, w); t != nil {
				return t
			}
		}
	}
	return nil
}

func tripOf(b Brake, t Tally, wave int) *Trip {
	executed, failed := t.Executed(), t.Failed(b.Outcomes)
	if executed == 0 || executed < b.MinExecuted {
		return nil
	}
	percent := float64(failed) * 100 / float64(executed)
	if failed == 0 || percent < b.ThresholdPercent {
		return nil
	}
	trip := &Trip{Scope: "overall", Wave: wave, Executed: executed, Failed: failed, Percent: percent, Threshold: b.ThresholdPercent, ByCode: []CodeCount{}}
	if wave >= 0 {
		trip.Scope = "wave " + strconv.Itoa(wave)
	}
	for code, n := range t.ByCode {
		if n > 0 && slices.Contains(b.Outcomes, codeOutcome(code)) {
			trip.ByCode = append(trip.ByCode, CodeCount{Code: code, Count: n})
		}
	}
	slices.SortFunc(trip.ByCode, func(a, b CodeCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Code, b.Code))
	})
	return trip
}
