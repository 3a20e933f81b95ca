package agent

import "github.com/tokenfleet/tokenfleet/internal/buildinfo"

// version is what the hello announces: the release stamped at link time (see package
// buildinfo), or "dev" and the commit the agent was built from.
func version() string { return buildinfo.Read().Short() }
