package console

import (
	"testing"
	"time"
)

func TestSafeNext(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/ui/jobs?state=failed":    "/ui/jobs?state=failed",
		"/ui/":                     "/ui/",
		"/ui":                      "/ui",
		"":                         "/ui/",
		"https://evil.example/ui/": "/ui/",
		"//evil.example/ui/":       "/ui/",
		"/\\evil.example/ui/":      "/ui/",
		"/ui/../api/v1/whoami":     "/ui/",
		"/api/v1/whoami":           "/ui/",
		"javascript:alert(1)":      "/ui/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAgo(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		3 * time.Second:      "just now",
		42 * time.Second:     "42 s ago",
		3 * time.Minute:      "3 min ago",
		5 * time.Hour:        "5 h ago",
		3 * 24 * time.Hour:   "3 days ago",
		-90 * time.Minute:    "in 1 h",
		200 * 24 * time.Hour: "21 May 2026",
	} {
		if got := ago(now, now.Add(-d)); got != want {
			t.Errorf("ago(%s) = %q, want %q", d, got, want)
		}
	}
	if ago(now, time.Time{}) != "never" {
		t.Error("the zero time is not never")
	}
}
