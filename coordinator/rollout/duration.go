package rollout

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time span written as whole days ("30d") or a Go duration ("12h", "1h30m",
// "90s"), the same forms as the profile's durations. It is re-implemented here so that the
// rules stay free of the profile package.
type Duration time.Duration

// maxDays is the most days a Duration holds (about 292 years).
const maxDays = math.MaxInt64 / int64(24*time.Hour)

// ParseDuration reads "<n>d" or a Go duration. A bare number is refused: its unit would
// be a guess.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("duration %q: days must be a whole number, e.g. 30d", s)
		}
		if n > maxDays || n < -maxDays {
			// Beyond it the span would wrap around time.Duration's range.
			return 0, fmt.Errorf("duration %q: at most %d days", s, maxDays)
		}
		return Duration(time.Duration(n) * 24 * time.Hour), nil
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, fmt.Errorf("duration %s needs a unit, e.g. %sd, %sh or %sm", s, s, s, s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a whole number of days (30d) or a duration like 12h, 1h30m or 90s", s)
	}
	return Duration(d), nil
}

// String gives whole days as "<n>d" and anything else as a Go duration without its
// trailing zero units ("12h", "1h30m", "1m30s").
func (d Duration) String() string {
	const day = 24 * time.Hour
	td := time.Duration(d)
	if td != 0 && td%day == 0 {
		return strconv.FormatInt(int64(td/day), 10) + "d"
	}
	s := td.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalJSON writes the String form.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads the String form; null and "" are zero.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s *string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration like \"30d\" or \"12h\" as text: %w", err)
	}
	if s == nil || strings.TrimSpace(*s) == "" {
		*d = 0
		return nil
	}
	v, err := ParseDuration(*s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML writes the String form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads the String form; a mapping or a list is refused.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration like 30d or 12h", n.Line)
	}
	if n.Tag == "!!null" || strings.TrimSpace(n.Value) == "" {
		*d = 0
		return nil
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}
