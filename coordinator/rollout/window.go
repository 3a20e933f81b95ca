package rollout

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	// Windows name IANA zones; the embedded database makes them work on hosts without one
	// (Windows, minimal containers).
	_ "time/tzdata"
)

// dayNames are the window day names, indexed by time.Weekday.
var dayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// compiledWindow is a Window checked and ready to test times against.
type compiledWindow struct {
	days       [7]bool // by time.Weekday; the day the window opens
	start, end int     // minutes after local midnight
	loc        *time.Location
	zone       string // as written, "UTC" for ""
}

// parseDay reads a day name: the three-letter form, or the full English name.
func parseDay(s string) (time.Weekday, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	for i, n := range dayNames {
		if s == n || s == strings.ToLower(time.Weekday(i).String()) {
			return time.Weekday(i), true
		}
	}
	return 0, false
}

// parseClock reads "HH:MM" (24-hour) as minutes after midnight.
func parseClock(s string) (int, bool) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || len(h) < 1 || len(h) > 2 || len(m) != 2 {
		return 0, false
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 || h[0] == '+' || h[0] == '-' || m[0] == '+' || m[0] == '-' {
		return 0, false
	}
	return hh*60 + mm, true
}

// compile checks w and reports each problem to fe (when not nil) under field.
func (w Window) compile(fe *fieldErrors, field string) (compiledWindow, bool) {
	var cw compiledWindow
	ok := true
	bad := func(f, format string, args ...any) {
		ok = false
		if fe != nil {
			fe.add(field+f, format, args...)
		}
	}
	if len(w.Days) == 0 {
		cw.days = [7]bool{true, true, true, true, true, true, true}
	}
	for i, d := range w.Days {
		wd, known := parseDay(d)
		if !known {
			bad(fmt.Sprintf(".days[%d]", i), "%q is not a day: write mon, tue, wed, thu, fri, sat or sun", d)
			continue
		}
		cw.days[wd] = true
	}
	var okStart, okEnd bool
	if cw.start, okStart = parseClock(w.Start); !okStart {
		bad(".start", "%q is not a time of day: write 24-hour HH:MM, e.g. 22:00", w.Start)
	}
	if cw.end, okEnd = parseClock(w.End); !okEnd {
		bad(".end", "%q is not a time of day: write 24-hour HH:MM, e.g. 06:00 (an end before the start wraps past midnight)", w.End)
	}
	if okStart && okEnd && cw.start == cw.end {
		bad("", "starts and ends at %s, which is empty: give different times (an end before the start wraps past midnight, e.g. 22:00 to 06:00), or remove windows to run at any time", w.Start)
	}
	cw.zone = strings.TrimSpace(w.TimeZone)
	if cw.zone == "" {
		cw.loc, cw.zone = time.UTC, "UTC"
	} else if loc, err := time.LoadLocation(cw.zone); err != nil || strings.EqualFold(cw.zone, "local") {
		bad(".time_zone", "%q is not a known time zone: write an IANA name such as Europe/Paris or America/New_York, or leave it empty for UTC", w.TimeZone)
	} else {
		cw.loc = loc
	}
	return cw, ok
}

func (w Window) validate(fe *fieldErrors, field string) { w.compile(fe, field) }

// at reports whether now is inside the window and, when not, when it next opens (zero:
// never, which a valid window does not do).
func (cw compiledWindow) at(now time.Time) (inside bool, next time.Time) {
	y, m, d := now.In(cw.loc).Date()
	// From yesterday (a window that wraps past midnight may still be open) to a week on.
	for off := -1; off <= 8; off++ {
		// Noon names the day safely: some zones skip or repeat midnight.
		if !cw.days[time.Date(y, m, d+off, 12, 0, 0, 0, cw.loc).Weekday()] {
			continue
		}
		// Wall-clock times: across a DST change the window keeps its local hours and is an
		// hour shorter or longer; a start in the skipped hour falls after the gap.
		open := time.Date(y, m, d+off, cw.start/60, cw.start%60, 0, 0, cw.loc)
		endDay := d + off
		if cw.end <= cw.start {
			endDay++
		}
		closes := time.Date(y, m, endDay, cw.end/60, cw.end%60, 0, 0, cw.loc)
		if !now.Before(open) && now.Before(closes) {
			return true, time.Time{}
		}
		if open.After(now) && (next.IsZero() || open.Before(next)) {
			next = open
		}
	}
	return false, next
}

// InWindow reports whether now is inside one of the windows (true when there are none), and
// when the next window opens (zero when inside, or none). Invalid windows (which Validate
// refuses) never open.
func InWindow(ws []Window, now time.Time) (inside bool, opens time.Time) {
	inside, opens, _ = inWindows(ws, now)
	return inside, opens
}

// inWindows is InWindow that also returns the window that opens next, for messages.
func inWindows(ws []Window, now time.Time) (inside bool, opens time.Time, next compiledWindow) {
	if len(ws) == 0 {
		return true, time.Time{}, compiledWindow{}
	}
	for _, w := range ws {
		cw, ok := w.compile(nil, "")
		if !ok {
			continue
		}
		in, n := cw.at(now)
		if in {
			return true, time.Time{}, compiledWindow{}
		}
		if !n.IsZero() && (opens.IsZero() || n.Before(opens)) {
			opens, next = n, cw
		}
	}
	return false, opens, next
}

// describeOpening says when a window opens next, in its own zone: "22:00 Europe/Paris",
// or "Mon 22:00 Europe/Paris" when not on now's local day.
func (cw compiledWindow) describeOpening(opens, now time.Time) string {
	lo, ln := opens.In(cw.loc), now.In(cw.loc)
	layout := "15:04"
	if lo.YearDay() != ln.YearDay() || lo.Year() != ln.Year() {
		layout = "Mon 15:04"
	}
	return lo.Format(layout) + " " + cw.zone
}

// ParseWindow reads the short form of a window, "DAYS HH:MM-HH:MM [ZONE]": days as a
// range ("mon-fri", "fri-mon" wraps), a list ("mon,wed,fri"), a single day, or "daily";
// the zone an IANA name (default UTC). Example: "mon-fri 22:00-06:00 Europe/Paris".
func ParseWindow(s string) (Window, error) {
	f := strings.Fields(s)
	if len(f) < 2 || len(f) > 3 {
		return Window{}, fmt.Errorf("window %q: write DAYS HH:MM-HH:MM [ZONE], e.g. \"mon-fri 22:00-06:00 Europe/Paris\"", s)
	}
	var w Window
	days, err := parseDays(f[0])
	if err != nil {
		return Window{}, fmt.Errorf("window %q: %w", s, err)
	}
	w.Days = days
	start, end, ok := strings.Cut(f[1], "-")
	if !ok {
		return Window{}, fmt.Errorf("window %q: hours %q: write START-END, e.g. 22:00-06:00", s, f[1])
	}
	w.Start, w.End = start, end
	if len(f) == 3 {
		w.TimeZone = f[2]
	}
	var fe fieldErrors
	w.validate(&fe, "window")
	if len(fe) > 0 {
		return Window{}, fmt.Errorf("window %q: %w", s, errors.Join(fe...))
	}
	return w, nil
}

func parseDays(s string) ([]string, error) {
	if l := strings.ToLower(s); l == "daily" || l == "*" || l == "every" {
		return nil, nil
	}
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		from, ok1 := parseDay(a)
		to, ok2 := from, true
		if isRange {
			to, ok2 = parseDay(b)
		}
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("days %q: write mon, tue, wed, thu, fri, sat, sun, a range such as mon-fri, a list such as mon,wed,fri, or daily", s)
		}
		for d := from; ; d = (d + 1) % 7 {
			if !slices.Contains(out, dayNames[d]) {
				out = append(out, dayNames[d])
			}
			if d == to {
				break
			}
		}
	}
	return out, nil
}
