package coordinator

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
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
	return reg.Register(fc)
}
