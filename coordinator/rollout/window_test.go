package rollout

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func at(t *testing.T, zone, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestInWindow(t *testing.T) {
	t.Parallel()
	utc := func(s string) time.Time { return at(t, "UTC", s) }
	paris := func(s string) time.Time { return at(t, "Europe/Paris", s) }
	office := []Window{{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: "09:00", End: "17:00"}}
	night := []Window{{Days: []string{"mon"}, Start: "22:00", End: "06:00", TimeZone: "Europe/Paris"}}
	for _, tt := range []struct {
		name   string
		ws     []Window
		now    time.Time
		inside bool
		opens  time.Time
	}{
		{"no windows: any time", nil, utc("2026-03-04 03:00"), true, time.Time{}},
		{"inside", office, utc("2026-03-04 10:00"), true, time.Time{}},
		{"start is inside", office, utc("2026-03-04 09:00"), true, time.Time{}},
		{"end is outside", office, utc("2026-03-04 17:00"), false, utc("2026-03-05 09:00")},
		{"before it opens today", office, utc("2026-03-04 08:59"), false, utc("2026-03-04 09:00")},
		{"friday evening waits for monday", office, utc("2026-03-06 18:00"), false, utc("2026-03-09 09:00")},
		{"saturday", office, utc("2026-03-07 12:00"), false, utc("2026-03-09 09:00")},
		{"wraps past midnight: monday night", night, paris("2026-03-02 23:00"), true, time.Time{}},
		{"wraps past midnight: tuesday early", night, paris("2026-03-03 05:59"), true, time.Time{}},
		{"wraps past midnight: ends at 06:00", night, paris("2026-03-03 06:00"), false, paris("2026-03-09 22:00")},
		{"the day is the day it opens", night, paris("2026-03-02 05:00"), false, paris("2026-03-02 22:00")},
		{"zone, not UTC", night, utc("2026-03-02 21:30"), true, time.Time{}}, // 22:30 in Paris
		{"every day when no days", []Window{{Start: "01:00", End: "02:00"}}, utc("2026-03-07 03:00"), false, utc("2026-03-08 01:00")},
		{"the earliest of several", append(slices.Clone(office), Window{Days: []string{"sat"}, Start: "10:00", End: "11:00"}),
			utc("2026-03-06 18:00"), false, utc("2026-03-07 10:00")},
		{"inside any of several", append(slices.Clone(office), Window{Days: []string{"sat"}, Start: "10:00", End: "11:00"}),
			utc("2026-03-07 10:30"), true, time.Time{}},
		{"an invalid window never opens", []Window{{Start: "9", End: "17:00"}}, utc("2026-03-04 10:00"), false, time.Time{}},

		// Spring forward in Paris: 2026-03-29 02:00 CET becomes 03:00 CEST.
		{"DST spring: a night window is an hour shorter", []Window{{Days: []string{"sat"}, Start: "22:00", End: "06:00", TimeZone: "Europe/Paris"}},
			utc("2026-03-29 03:59"), true, time.Time{}},
		{"DST spring: and ends at 06:00 summer time", []Window{{Days: []string{"sat"}, Start: "22:00", End: "06:00", TimeZone: "Europe/Paris"}},
			utc("2026-03-29 04:00"), false, paris("2026-04-04 22:00")},
		{"DST spring: a start in the skipped hour falls after the gap", []Window{{Days: []string{"sun"}, Start: "02:30", End: "05:00", TimeZone: "Europe/Paris"}},
			utc("2026-03-29 00:45"), false, utc("2026-03-29 01:30")},
		{"DST spring: open after the gap", []Window{{Days: []string{"sun"}, Start: "02:30", End: "05:00", TimeZone: "Europe/Paris"}},
			paris("2026-03-29 03:45"), true, time.Time{}},
		// Fall back in Paris: 2026-10-25 03:00 CEST becomes 02:00 CET.
		{"DST autumn: a window an hour longer", []Window{{Days: []string{"sun"}, Start: "01:00", End: "04:00", TimeZone: "Europe/Paris"}},
			utc("2026-10-25 02:30"), true, time.Time{}}, // 03:30 CET, the fourth hour
		{"DST autumn: ends at 04:00 winter time", []Window{{Days: []string{"sun"}, Start: "01:00", End: "04:00", TimeZone: "Europe/Paris"}},
			utc("2026-10-25 03:00"), false, paris("2026-11-01 01:00")},
		{"DST autumn: a night window across the change", []Window{{Days: []string{"sat"}, Start: "22:00", End: "06:00", TimeZone: "Europe/Paris"}},
			utc("2026-10-25 04:59"), true, time.Time{}},
		{"US zone", []Window{{Days: []string{"sun"}, Start: "01:00", End: "03:00", TimeZone: "America/New_York"}},
			utc("2026-03-08 06:30"), true, time.Time{}}, // 01:30 EST, before the 02:00 jump
	} {
		inside, opens := InWindow(tt.ws, tt.now)
		if inside != tt.inside || !opens.Equal(tt.opens) {
			t.Errorf("%s: inside %v opens %v, want %v %v", tt.name, inside, opens.UTC(), tt.inside, tt.opens.UTC())
		}
	}
}

func TestParseWindow(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want Window
	}{
		{"mon-fri 22:00-06:00 Europe/Paris", Window{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: "22:00", End: "06:00", TimeZone: "Europe/Paris"}},
		{"fri-mon 01:00-02:00", Window{Days: []string{"fri", "sat", "sun", "mon"}, Start: "01:00", End: "02:00"}},
		{"mon,wed,Friday 8:00-12:30 UTC", Window{Days: []string{"mon", "wed", "fri"}, Start: "8:00", End: "12:30", TimeZone: "UTC"}},
		{"daily 00:00-23:59", Window{Start: "00:00", End: "23:59"}},
		{"sun 10:00-11:00", Window{Days: []string{"sun"}, Start: "10:00", End: "11:00"}},
	} {
		got, err := ParseWindow(tt.in)
		if err != nil || !slices.Equal(got.Days, tt.want.Days) || got.Start != tt.want.Start || got.End != tt.want.End || got.TimeZone != tt.want.TimeZone {
			t.Errorf("%q: %+v %v, want %+v", tt.in, got, err, tt.want)
		}
	}
	for in, want := range map[string]string{
		"22:00-06:00":                    "DAYS HH:MM-HH:MM",
		"mon-fri 22:00":                  "START-END",
		"mon-xyz 22:00-06:00":            "a range such as mon-fri",
		"mon 22:00-22:00":                "different times",
		"mon 22:00-6pm":                  "HH:MM",
		"mon 22:00-06:00 Europe/Nowhere": "IANA",
		"mon 22:00-06:00 Europe/Paris x": "DAYS HH:MM-HH:MM",
	} {
		if _, err := ParseWindow(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", in, err, want)
		}
	}
}

// At any time, in zones with and without DST: outside, the next opening is later and is
// inside; the minute before it is outside.
func TestInWindowProperties(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	zones := []string{"", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 3000 {
		w := Window{Start: fmt.Sprintf("%02d:%02d", rng.IntN(24), rng.IntN(4)*15), End: fmt.Sprintf("%02d:%02d", rng.IntN(24), rng.IntN(4)*15),
			TimeZone: zones[rng.IntN(len(zones))]}
		for d := range 7 {
			if rng.IntN(3) == 0 {
				w.Days = append(w.Days, dayNames[d])
			}
		}
		if w.Start == w.End {
			continue
		}
		now := start.Add(time.Duration(rng.Int64N(int64(366 * 24 * time.Hour))))
		inside, opens := InWindow([]Window{w}, now)
		if inside {
			continue
		}
		if !opens.After(now) || opens.Sub(now) > 8*24*time.Hour {
			t.Fatalf("%+v at %s: opens %s", w, now, opens)
		}
		if in, _ := InWindow([]Window{w}, opens); !in {
			t.Fatalf("%+v: not inside when it opens at %s", w, opens)
		}
		if in, _ := InWindow([]Window{w}, opens.Add(-time.Minute)); in && opens.Add(-time.Minute).After(now) {
			t.Fatalf("%+v: inside a minute before it opens at %s", w, opens)
		}
	}
}
