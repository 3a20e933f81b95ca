package coordinator

import "github.com/tokenfleet/tokenfleet/coordinator/service"

// WithoutSource returns c without the record of where its settings came from, so that
// tests can compare configurations by their settings alone.
func WithoutSource(c Config) Config {
	c.src = nil
	return c
}

// SignInOptions is what the coordinator gives its service of the console section.
func (c Config) SignInOptions() service.SignInOptions { return c.signInOptions() }
