//go:build windows

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kardianos/service"
	"github.com/rs/zerolog"
)

// platformOptions: start at boot; after a failure (another agent holds the ID, a crash),
// restart in 30 s, every time.
func platformOptions() (service.KeyValue, error) {
	return service.KeyValue{
		service.StartType:              service.ServiceStartAutomatic,
		"DelayedAutoStart":             true,
		service.OnFailure:              service.OnFailureRestart,
		service.OnFailureDelayDuration: "30s",
		service.OnFailureResetPeriod:   86400,
	}, nil
}

// runService runs the agent under the service manager when it started this process, and
// in the foreground otherwise. The manager's stop request ends the agent's context: the
// same shutdown path as a signal.
func runService(ctx context.Context, log zerolog.Logger, run func(context.Context) error) error {
	if service.Interactive() {
		return run(ctx)
	}
	p := newProgram(ctx, run)
	cfg, err := serviceConfig(nil)
	if err != nil {
		return err
	}
	s, err := service.New(p, cfg)
	if err != nil {
		return fmt.Errorf("service manager: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run() }()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
		return p.err
	case <-p.ended:
		if p.stopping() {
			return <-done
		}
		// The agent ended by itself. Exiting with its error lets the service manager see a
		// failure and apply the recovery action (restart in 30 s).
		log.Error().Err(p.err).Msg("the agent stopped by itself")
		if p.err == nil {
			return errors.New("the agent stopped by itself")
		}
		return p.err
	}
}

// stopping reports whether the service manager asked the agent to stop.
func (p *program) stopping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

// maxLogSize is when the log file is rotated, at start.
const maxLogSize = 32 << 20

// logOutput: a service has no console; it logs to agent.log in its data directory (one
// older file kept as agent.log.1).
func logOutput(dataDir string, stderr io.Writer) (io.Writer, func(), error) {
	if service.Interactive() {
		return stderr, func() {}, nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dataDir, "agent.log")
	if st, err := os.Stat(path); err == nil && st.Size() > maxLogSize {
		_ = os.Rename(path, path+".1")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("log file: %w", err)
	}
	return f, func() { _ = f.Close() }, nil
}

// reloadSignals: Windows has no SIGHUP; a restart of the service applies a new
// configuration.
var reloadSignals []os.Signal
