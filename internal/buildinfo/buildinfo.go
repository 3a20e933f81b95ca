// Package buildinfo says which build of tokenfleet is running: the release stamped at
// link time, else the module version and the commit the go tool recorded. All three
// programs print it for --version and `version`, and the agent announces it in hello.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version is the release, stamped at link time with
// -ldflags "-X github.com/tokenfleet/tokenfleet/internal/buildinfo.Version=1.4.0".
// It wins over what the build info says: a release is built from a tagged tree, but
// perhaps not with module versioning (a vendored or distribution build).
var Version = ""

// Info is what is known of this build.
type Info struct {
	// Version is the stamped release, the module version (a tag or a pseudo-version),
	// or "dev" for a build of a working tree.
	Version string
	// Revision is the VCS commit the build came from, when the go tool recorded it.
	Revision string
	// Modified says the working tree had changes that are not in Revision.
	Modified bool
	// GoVersion is the toolchain the program was built with.
	GoVersion string
}

// Read returns this program's build information.
func Read() Info {
	return fromBuildInfo(Version, debug.ReadBuildInfo)
}

// fromBuildInfo is Read with its sources given, for tests.
func fromBuildInfo(stamped string, read func() (*debug.BuildInfo, bool)) Info {
	in := Info{Version: stamped, GoVersion: runtime.Version()}
	bi, ok := read()
	if !ok {
		if in.Version == "" {
			in.Version = "dev"
		}
		return in
	}
	if bi.GoVersion != "" {
		in.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	if in.Version == "" {
		in.Version = bi.Main.Version
	}
	// "(devel)" is what the go tool records for a build of a working tree.
	if in.Version == "" || in.Version == "(devel)" {
		in.Version = "dev"
	}
	return in
}

// Short is the version with the commit: "1.4.0", "dev-0123456789ab", "dev-0123456789ab+dirty".
// The agent sends it in hello, so it fits the protocol's short text fields.
func (in Info) Short() string {
	v := in.Version
	rev := in.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && v == "dev" {
		v += "-" + rev
		if in.Modified {
			v += "+dirty"
		}
	}
	return v
}

// Line is the --version output of program: its name, version, commit and toolchain.
func (in Info) Line(program string) string {
	rev := in.Revision
	if rev == "" {
		rev = "unknown"
	}
	if in.Modified {
		rev += " (modified)"
	}
	return fmt.Sprintf("%s %s (commit %s, %s)", program, in.Version, rev, in.GoVersion)
}

// AddTo gives a cobra root command --version and a `version` subcommand, both printing
// Line to the command's output.
func AddTo(root *cobra.Command) {
	in := Read()
	root.Version = in.Short()
	root.SetVersionTemplate(in.Line(root.Name()) + "\n")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version, the commit it was built from and the Go toolchain",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), in.Line(root.Name()))
			return err
		},
	})
}
