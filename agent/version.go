package agent

import "runtime/debug"

// Version is the agent's release, stamped at build time with
// -ldflags "-X github.com/tokenfleet/tokenfleet/agent.Version=1.4.0". Unstamped builds
// report "dev" and the commit they were built from.
var Version = ""

// version is what the hello announces.
func version() string {
	if Version != "" {
		return Version
	}
	v := "dev"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += "-" + rev + dirty
	}
	return v
}
