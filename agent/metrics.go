package agent

import (
	"context"

	"github.com/tokenfleet/tokenfleet/agent/executor"
	"github.com/tokenfleet/tokenfleet/agent/metrics"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// newMetrics makes the agent's metrics when Config.MetricsListen asks for them, else nil.
func (a *Agent) newMetrics() *metrics.Metrics {
	if a.cfg.MetricsListen == "" {
		return nil
	}
	return metrics.New()
}

// executorObserver is the executor's observer: m, or none when metrics are off.
func executorObserver(m *metrics.Metrics) executor.Observer {
	if m == nil {
		return nil
	}
	return m
}

// serveMetrics binds Config.MetricsListen and serves m there until the returned function
// is called, which stops the listener and waits for it. With metrics off it does nothing.
func (a *Agent) serveMetrics(ctx context.Context, m *metrics.Metrics, conn Transport, journalPath string) (func(), error) {
	if m == nil {
		return func() {}, nil
	}
	m.SetBroker(func() bool { return conn.Status().State == amqp.StateConnected })
	m.SetJournal(journalPath)
	ln, err := metrics.Listen(ctx, a.cfg.MetricsListen)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.Serve(ctx, ln, a.log.With().Str("component", "metrics").Logger()); err != nil {
			a.log.Error().Err(err).Msg("metrics listener stopped")
		}
	}()
	return func() {
		cancel()
		<-done
	}, nil
}
