package coordinator

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/checkpoint"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// setupCheckpoints loads (or creates on first start) the checkpoint key and makes the
// checkpointer, with its syslog sink when one is configured.
func (s *Server) setupCheckpoints() error {
	path := filepath.Join(s.cfg.DataDir, checkpoint.KeyFile)
	key, created, err := checkpoint.LoadOrCreateKey(path)
	if err != nil {
		return err
	}
	if created {
		s.log.Warn().Str("file", path).Msg("first start: created the key that signs audit checkpoints; " +
			"give its public key (tokenfleetctl audit key) to the auditors, and the same file to every coordinator sharing this database")
	}
	var sinks []checkpoint.Sink
	if addr := s.cfg.Audit.CheckpointSyslog; addr != "" {
		sink, err := checkpoint.DialSyslog(addr)
		if err != nil {
			return &FieldError{Field: "audit.checkpoint_syslog", Msg: err.Error()}
		}
		s.syslog = sink
		sinks = append(sinks, sink)
	}
	s.cps, err = checkpoint.New(checkpoint.Options{Store: s.st, Key: key, Interval: s.cfg.checkpointInterval(), Sinks: sinks,
		Logger: s.base.With().Str("component", "checkpoint").Logger()})
	if err != nil {
		return fmt.Errorf("audit checkpoints: %w", err)
	}
	return nil
}

// Checkpoints returns the server's checkpointer.
func (s *Server) Checkpoints() *checkpoint.Checkpointer { return s.cps }

// apiCheckpoints is the checkpointer as the HTTP API takes it: pages are the service's,
// since the API knows nothing of the store.
type apiCheckpoints struct{ *checkpoint.Checkpointer }

func (c apiCheckpoints) List(ctx context.Context, p service.Page) ([]audit.Checkpoint, string, error) {
	return c.Checkpointer.List(ctx, store.Page{Limit: p.Limit, Cursor: p.Cursor})
}
