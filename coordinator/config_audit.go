package coordinator

import (
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/checkpoint"
)

// AuditConfig configures the signed checkpoints of the audit chain head.
type AuditConfig struct {
	// CheckpointInterval is how often the head is signed (and once at start); default 1h.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
	// CheckpointSyslog also sends every checkpoint to syslog, where it is kept out of the
	// database's reach: unixgram:///dev/log, udp://host:514 or tcp://host:514. Empty: no
	// syslog.
	CheckpointSyslog string `yaml:"checkpoint_syslog"`
}

// Bounds of audit.checkpoint_interval.
const (
	minCheckpointInterval = time.Second
	maxCheckpointInterval = 7 * 24 * time.Hour
)

// validateAudit checks the audit section.
func (c Config) validateAudit(bad func(field, format string, args ...any)) {
	if d := time.Duration(c.Audit.CheckpointInterval); d != 0 && (d < minCheckpointInterval || d > maxCheckpointInterval) {
		bad("audit.checkpoint_interval", "%s is outside %s..%s", d, minCheckpointInterval, maxCheckpointInterval)
	}
	if a := c.Audit.CheckpointSyslog; a != "" {
		if _, _, err := checkpoint.ParseSyslogAddress(a); err != nil {
			bad("audit.checkpoint_syslog", "%v", err)
		}
	}
}

// checkpointInterval resolves audit.checkpoint_interval.
func (c Config) checkpointInterval() time.Duration {
	if d := time.Duration(c.Audit.CheckpointInterval); d != 0 {
		return d
	}
	return checkpoint.DefaultInterval
}
