package service

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// Metrics counts job transitions, decisions and denials for Prometheus. It is an Observer.
type Metrics struct {
	transitions *prometheus.CounterVec
	decisions   *prometheus.CounterVec
	denials     *prometheus.CounterVec
}

// NewMetrics registers the service's counters with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "job_transitions_total",
			Help: "Job state transitions made by the coordinator's API and sweeper.",
		}, []string{"from", "to"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "approval_decisions_total",
			Help: "Approval decisions recorded, by gate and verdict.",
		}, []string{"gate", "verdict"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "access_denials_total",
			Help: "Requests refused by a rule, by error code.",
		}, []string{"code"}),
	}
	for _, c := range []prometheus.Collector{m.transitions, m.decisions, m.denials} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) JobTransition(from, to jobs.State) {
	m.transitions.WithLabelValues(string(from), string(to)).Inc()
}

func (m *Metrics) Decision(gate jobs.Gate, verdict jobs.Verdict) {
	m.decisions.WithLabelValues(string(gate), string(verdict)).Inc()
}

func (m *Metrics) Denial(code Code) { m.denials.WithLabelValues(string(code)).Inc() }
