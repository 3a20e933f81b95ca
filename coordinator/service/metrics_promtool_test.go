package service

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestMetricsPromtool: every family the coordinator's service and fleet collector
// export, each with a value, passes `promtool check metrics` (make lint runs it). Values
// after real actions are checked by the dispatch package's TestMetrics.
func TestMetricsPromtool(t *testing.T) {
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st, err := store.Open(context.Background(), store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(t.TempDir(), "s.db")}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := NewFleetCollector(FleetOptions{Store: st, BrokerUp: func() bool { return true }, Logger: log,
		CRL: func(context.Context) ([]byte, error) { return nil, errors.New("no CRL here") }})
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(fc)
	m.JobTransition(jobs.StateApproved, jobs.StateDispatched)
	m.Decision(jobs.GateRequest, jobs.VerdictApprove)
	m.Denial(CodeForbidden)
	m.EventRefused(protocol.CodeForgedSender)
	m.DeadLettered(protocol.EventsQueue, protocol.CodeForgedSender)
	m.Signed(3*time.Millisecond, nil)
	m.RolloutJobsCreated(3)
	m.RolloutBrakeTripped()
	m.RolloutEnginePass()

	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/metrics", nil))
	page := rec.Body
	for _, want := range []string{"tokenfleet_coordinator_jobs{", "tokenfleet_coordinator_fleet_stats_up 1",
		"tokenfleet_coordinator_broker_up 1", "tokenfleet_coordinator_certificates{", "tokenfleet_coordinator_outbox_messages 0",
		`tokenfleet_coordinator_rollouts{state="running"} 0`, "tokenfleet_coordinator_rollout_jobs_created_total 3",
		"tokenfleet_coordinator_rollout_brake_trips_total 1", "tokenfleet_coordinator_rollout_engine_passes_total 1"} {
		if !strings.Contains(page.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	testenv.PromtoolCheck(t, page.String())
}
