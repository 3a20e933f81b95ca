package coordinator

// ConsoleConfig is the web console's section (console:).
type ConsoleConfig struct {
	// Enabled serves the console under /ui on the API's listener.
	Enabled bool `yaml:"enabled"`
}
