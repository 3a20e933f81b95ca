package ctl

import (
	"testing"
	"time"
)

func TestClean(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"accents: Zoë, 東京", "accents: Zoë, 東京"},
		{"tab\there", `tab\there`},
		{"new\nline", `new\nline`},
		{"\x1b[2Jclear", `\x1b[2Jclear`},
		{"bidi \u202eevil", `bidi \u202eevil`},
		{"bad \xff byte", `bad \xff byte`},
		{"real \ufffd replacement", "real \ufffd replacement"},
	}
	for _, tt := range tests {
		if got := clean(tt.in); got != tt.want {
			t.Errorf("clean(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRelText(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, ""},
		{now, "just now"},
		{now.Add(-59 * time.Second), "59s ago"},
		{now.Add(-90 * time.Second), "2m ago"},
		{now.Add(-59*time.Minute - 50*time.Second), "1h ago"},
		{now.Add(-71*time.Hour - 59*time.Minute), "3d ago"},
		{now.Add(-5 * time.Hour), "5h ago"},
		{now.Add(-47 * time.Hour), "47h ago"},
		{now.Add(-72 * time.Hour), "3d ago"},
		{now.Add(30 * time.Minute), "in 30m"},
	}
	for _, tt := range tests {
		if got := relText(tt.t, now); got != tt.want {
			t.Errorf("relText(%v) = %q, want %q", tt.t, got, tt.want)
		}
	}
}

func TestTake(t *testing.T) {
	seq := func(n int) func(func(int, error) bool) {
		return func(yield func(int, error) bool) {
			for i := range n {
				if !yield(i, nil) {
					return
				}
			}
		}
	}
	tests := []struct {
		n, max   int
		wantLen  int
		wantMore bool
	}{
		{0, 5, 0, false},
		{5, 5, 5, false},
		{6, 5, 5, true},
		{100, 0, 100, false},
	}
	for _, tt := range tests {
		got, more, err := take(seq(tt.n), tt.max)
		if err != nil || len(got) != tt.wantLen || more != tt.wantMore {
			t.Errorf("take(%d items, max %d) = %d, %v, %v", tt.n, tt.max, len(got), more, err)
		}
	}
}
