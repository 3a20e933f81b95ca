package coordinator

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// registerFleetMetrics adds to reg the gauges read at each scrape: the fleet's state from
// the store, the broker connection and the CRL's next update.
func (s *Server) registerFleetMetrics(reg prometheus.Registerer) error {
	o := service.FleetOptions{Store: s.st, BrokerUp: s.disp.BrokerUp,
		Logger: s.base.With().Str("component", "metrics").Logger()}
	if src, ok := s.ca.(ca.CRLSource); ok {
		o.CRL = src.CRL
	}
	fc, err := service.NewFleetCollector(o)
	if err != nil {
		return err
	}
	if err := reg.Register(fc); err != nil {
		return err
	}
	return s.registerPresenceMetrics(reg)
}

// registerPresenceMetrics adds what the dispatcher did with heartbeats: they are held in
// memory and written in batches, so a failing or slow write shows here first (the
// heartbeats held grow), long before agents are shown offline.
func (s *Server) registerPresenceMetrics(reg prometheus.Registerer) error {
	name := func(n string) string { return prometheus.BuildFQName("tokenfleet", "coordinator", n) }
	stat := func(f func(dispatch.PresenceStats) float64) func() float64 {
		return func() float64 { return f(s.disp.PresenceStats()) }
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name("heartbeats_total"),
			Help: "Agent heartbeats taken since the coordinator started."},
			stat(func(p dispatch.PresenceStats) float64 { return float64(p.Heartbeats) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name("presence_flushes_total"),
			Help: "Transactions that wrote the heartbeats held in memory."},
			stat(func(p dispatch.PresenceStats) float64 { return float64(p.Flushes) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name("presence_flush_errors_total"),
			Help: "Writes of held heartbeats that failed; their heartbeats wait for the next write."},
			stat(func(p dispatch.PresenceStats) float64 { return float64(p.FlushErrors) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("presence_pending"),
			Help: "Heartbeats held in memory, not written yet."},
			stat(func(p dispatch.PresenceStats) float64 { return float64(p.Pending) })),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
