package service

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// Metrics counts job transitions, decisions and denials for Prometheus (it is an
// Observer), and what the dispatcher refuses, dead-letters and has signed (it is the
// dispatcher's observer too). Gauges read from the database are FleetCollector's.
type Metrics struct {
	transitions *prometheus.CounterVec
	decisions   *prometheus.CounterVec
	denials     *prometheus.CounterVec
	refused     *prometheus.CounterVec
	dead        *prometheus.CounterVec
	signing     *prometheus.HistogramVec
	together    prometheus.Histogram
	rolloutJobs prometheus.Counter
	brakeTrips  prometheus.Counter
	passes      prometheus.Counter
}

// NewMetrics registers the service's and the dispatcher's counters with reg.
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
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "events_refused_total",
			Help: "Agent messages refused (dead-lettered and audited as message.rejected), by error code.",
		}, []string{"code"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "messages_dead_lettered_total",
			Help: "Messages the coordinator moved to the dead-letter queue, by the queue they came from and error code.",
		}, []string{"queue", "code"}),
		signing: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "ca_signing_duration_seconds",
			Help:    "Time the CA took to sign a certificate, by result (ok or error).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"result"}),
		together: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "event_transaction_size",
			Help:    "Agent events handled in one database transaction: bursts that arrive together share one.",
			Buckets: []float64{1, 2, 4, 8, 16, 32},
		}),
		rolloutJobs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "rollout_jobs_created_total",
			Help: "Jobs the rollout engine of this coordinator created.",
		}),
		brakeTrips: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "rollout_brake_trips_total",
			Help: "Rollouts this coordinator's engine paused because their failure brake tripped.",
		}),
		passes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "rollout_engine_passes_total",
			Help: "Passes of this coordinator's rollout engine over the rollouts that may move.",
		}),
	}
	for _, c := range []prometheus.Collector{m.transitions, m.decisions, m.denials, m.refused, m.dead, m.signing, m.together,
		m.rolloutJobs, m.brakeTrips, m.passes} {
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

// EventRefused counts an agent message refused with code.
func (m *Metrics) EventRefused(code protocol.ErrorCode) {
	m.refused.WithLabelValues(string(code)).Inc()
}

// DeadLettered counts a message moved from queue to the dead-letter queue.
func (m *Metrics) DeadLettered(queue string, code protocol.ErrorCode) {
	m.dead.WithLabelValues(queue, string(code)).Inc()
}

// Signed records how long the CA took to sign a certificate, or to fail to.
func (m *Metrics) Signed(took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.signing.WithLabelValues(result).Observe(took.Seconds())
}

// EventsTogether records n agent events handled in one transaction.
func (m *Metrics) EventsTogether(n int) { m.together.Observe(float64(n)) }

// RolloutJobsCreated counts jobs the rollout engine created.
func (m *Metrics) RolloutJobsCreated(n int) { m.rolloutJobs.Add(float64(n)) }

// RolloutBrakeTripped counts a rollout paused by its brake.
func (m *Metrics) RolloutBrakeTripped() { m.brakeTrips.Inc() }

// RolloutEnginePass counts one pass of the rollout engine.
func (m *Metrics) RolloutEnginePass() { m.passes.Inc() }
