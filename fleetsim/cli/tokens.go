package cli

import (
	"slices"

	"github.com/tokenfleet/tokenfleet/fleetsim"
)

var profiles = fleetsim.Profiles

func validProfile(p string) bool { return slices.Contains(profiles, p) }

// tokens gives agents simulated tokens, or none (nil) when perAgent is 0.
func tokens(profile string, perAgent int) (*fleetsim.SimTokens, error) {
	if perAgent == 0 {
		return nil, nil
	}
	return fleetsim.NewSimTokens(profile, perAgent, nil, 1)
}
