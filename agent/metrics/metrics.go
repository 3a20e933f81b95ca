// Package metrics is the agent's optional Prometheus endpoint: jobs by outcome, token
// operation latency by operation and token model, the broker connection and the journal's
// size. It is off unless metrics_listen (--metrics-listen) names an address; bind it to
// loopback or a management network: it has no authentication.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Metrics holds the agent's metrics. A nil *Metrics records nothing, so callers need no
// check when metrics are off.
type Metrics struct {
	reg      *prometheus.Registry
	jobs     *prometheus.CounterVec
	tokenOps *prometheus.HistogramVec

	mu          sync.Mutex // guards the fields below
	brokerUp    func() bool
	journalPath string
}

// New makes the agent's metrics in a registry of their own, with the Go runtime's and the
// process's.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tokenfleet", Subsystem: "agent", Name: "jobs_finished_total",
			Help: "Job attempts this agent finished, by kind and outcome (succeeded, failed, cancelled, superseded).",
		}, []string{"kind", "outcome"}),
		tokenOps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "tokenfleet", Subsystem: "agent", Name: "token_operation_duration_seconds",
			Help:    "Time a job step took on the token, by operation (the step) and token model; successful steps only.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"operation", "model"}),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.jobs, m.tokenOps, m)
	return m
}

var (
	brokerDesc = prometheus.NewDesc("tokenfleet_agent_broker_up",
		"1 while the agent is connected to the broker, else 0.", nil, nil)
	journalDesc = prometheus.NewDesc("tokenfleet_agent_journal_size_bytes",
		"Size of the agent's journal on disk (the database and its write-ahead log).", nil, nil)
)

// Describe and Collect report the gauges read at scrape time.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- brokerDesc
	ch <- journalDesc
}

func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	up, path := m.brokerUp, m.journalPath
	m.mu.Unlock()
	if up != nil {
		v := 0.0
		if up() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(brokerDesc, prometheus.GaugeValue, v)
	}
	if path != "" {
		var size int64
		for _, p := range []string{path, path + "-wal"} {
			if st, err := os.Stat(p); err == nil {
				size += st.Size()
			}
		}
		ch <- prometheus.MustNewConstMetric(journalDesc, prometheus.GaugeValue, float64(size))
	}
}

// SetBroker gives the function that says whether the broker connection is up.
func (m *Metrics) SetBroker(up func() bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.brokerUp = up
	m.mu.Unlock()
}

// SetJournal gives the journal's file.
func (m *Metrics) SetJournal(path string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.journalPath = path
	m.mu.Unlock()
}

// JobFinished counts a job attempt that ended with outcome.
func (m *Metrics) JobFinished(kind, outcome string) {
	if m == nil {
		return
	}
	m.jobs.WithLabelValues(kind, outcome).Inc()
}

// TokenOperation records how long a successful operation took on a token of model.
func (m *Metrics) TokenOperation(operation, model string, took time.Duration) {
	if m == nil {
		return
	}
	model = strings.TrimSpace(model)
	if model == "" {
		model = "unknown"
	}
	m.tokenOps.WithLabelValues(operation, model).Observe(took.Seconds())
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Listen binds addr (host:port) for Serve, so that a taken or wrong address is an error
// at start rather than a log line later.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	return ln, nil
}

// Serve serves /metrics on ln until ctx ends, then closes it.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, log zerolog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: time.Minute}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info().Str("listen", ln.Addr().String()).Msg("serving metrics at /metrics")
	select {
	case err := <-done:
		return fmt.Errorf("metrics: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutCtx)
	if serr := <-done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
