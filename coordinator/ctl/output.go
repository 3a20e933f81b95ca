package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"
)

// printJSON writes v as indented JSON: the API's objects, for scripts.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns. Every cell is cleaned, so text from the server (a reason,
// a token label) can neither break the layout nor send escape sequences to the terminal.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if i > 0 {
			_, _ = io.WriteString(t.tw, "\t")
		}
		c = clean(c)
		if c == "" {
			c = "-"
		}
		_, _ = io.WriteString(t.tw, c)
	}
	_, _ = io.WriteString(t.tw, "\n")
}

func (t *table) flush() error { return t.tw.Flush() }

// clean escapes control characters, bidirectional overrides and invalid UTF-8, Go-style.
func clean(s string) string {
	ok := true
	for i, r := range s {
		if unsafeRune(r) || (r == utf8.RuneError && !validAt(s, i)) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafeRune(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029'
}

func validAt(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size > 1
}

// timeText is a time for people: UTC, RFC 3339 to the second; "" when unset.
func timeText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Truncate(time.Second).Format(time.RFC3339)
}

// relText is a time relative to now: "3m ago", "in 2d"; "" when unset.
func relText(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + span(-d)
	}
	if d < time.Second {
		return "just now"
	}
	return span(d) + " ago"
}

// span is a rough duration: the largest unit only, rounded to the nearest.
func span(d time.Duration) string {
	in := func(unit time.Duration) string { return strconv.FormatInt(int64(d.Round(unit)/unit), 10) }
	switch {
	case d < time.Minute-time.Second/2:
		return in(time.Second) + "s"
	case d < time.Hour-time.Minute/2:
		return in(time.Minute) + "m"
	case d < 48*time.Hour-time.Hour/2:
		return in(time.Hour) + "h"
	default:
		return in(24*time.Hour) + "d"
	}
}

// bothTimes is "RFC 3339 (relative)".
func bothTimes(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	return timeText(t) + " (" + relText(t, now) + ")"
}

// take reads at most max items of seq (every item when max is 0) and reports whether more
// were left. It reads one item beyond max to know.
func take[T any](seq iter.Seq2[T, error], max int) ([]T, bool, error) {
	var out []T
	for v, err := range seq {
		if err != nil {
			return out, false, err
		}
		if max > 0 && len(out) == max {
			return out, true, nil
		}
		out = append(out, v)
	}
	return out, false, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// joinStrings joins any string-like values.
func joinStrings[S ~string](vs []S, sep string) string {
	ss := make([]string, len(vs))
	for i, v := range vs {
		ss[i] = string(v)
	}
	return strings.Join(ss, sep)
}
