package coordinator

// WithoutSource returns c without the record of where its settings came from, so that
// tests can compare configurations by their settings alone.
func WithoutSource(c Config) Config {
	c.src = nil
	return c
}
