package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestVersionSources(t *testing.T) {
	info := func(version string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: version}, Settings: settings}, true
		}
	}
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "0123456789abcdef0123"}
	dirty := debug.BuildSetting{Key: "vcs.modified", Value: "true"}
	for _, tc := range []struct {
		name      string
		stamped   string
		read      func() (*debug.BuildInfo, bool)
		short     string
		lineParts []string
	}{
		{"stamped wins", "1.4.0", info("v1.3.0", rev), "1.4.0", []string{"x 1.4.0 (commit 0123456789abcdef0123, go1.26.0)"}},
		{"module version", "", info("v1.3.0", rev), "v1.3.0", []string{"x v1.3.0 (commit 0123456789abcdef0123"}},
		{"working tree", "", info("(devel)", rev), "dev-0123456789ab", []string{"x dev (commit 0123456789abcdef0123, go1.26.0)"}},
		{"modified tree", "", info("(devel)", rev, dirty), "dev-0123456789ab+dirty", []string{"(commit 0123456789abcdef0123 (modified), "}},
		{"no vcs", "", info("(devel)"), "dev", []string{"x dev (commit unknown, go1.26.0)"}},
		{"no build info", "", func() (*debug.BuildInfo, bool) { return nil, false }, "dev", []string{"x dev (commit unknown, go"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := fromBuildInfo(tc.stamped, tc.read)
			if got := in.Short(); got != tc.short {
				t.Errorf("Short() = %q, want %q", got, tc.short)
			}
			line := in.Line("x")
			for _, p := range tc.lineParts {
				if !strings.Contains(line, p) {
					t.Errorf("Line() = %q, lacks %q", line, p)
				}
			}
		})
	}
}

func TestAddTo(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		root := &cobra.Command{Use: "prog", RunE: func(*cobra.Command, []string) error { return nil }}
		AddTo(root)
		var out strings.Builder
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if want := Read().Line("prog") + "\n"; out.String() != want {
			t.Errorf("%v printed %q, want %q", args, out.String(), want)
		}
	}
}
