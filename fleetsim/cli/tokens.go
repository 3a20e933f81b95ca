package cli

import (
	"slices"

	"github.com/tokenfleet/tokenfleet/fleetsim"
)

var profiles = fleetsim.Profiles

func validProfile(p string) bool { return slices.Contains(profiles, p) }
