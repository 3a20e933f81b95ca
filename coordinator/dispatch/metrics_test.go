package dispatch_test

import (
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestMetrics: what /metrics says follows what happens: the broker connection, agents
// coming online and heartbeating, a job queued and dispatched, an event refused and dead-lettered, a
// certificate signed, the CRL; and the page passes promtool's checks.
func TestMetrics(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "per_agent")
	w.waitMetric(`tokenfleet_coordinator_broker_up`, func(v float64) bool { return v == 1 })
	w.waitMetric(`tokenfleet_coordinator_fleet_stats_up`, func(v float64) bool { return v == 1 })

	a := w.agent("ws-metrics", w.agentUser("ws-metrics"))
	other := w.agent("ws-intruder", w.agentUser("ws-intruder"))
	w.waitMetric(`tokenfleet_coordinator_agents{presence="offline"}`, func(v float64) bool { return v == 2 })
	a.Hello()
	w.waitMetric(`tokenfleet_coordinator_agents{presence="online"}`, func(v float64) bool { return v == 1 })
	// A heartbeat is held in memory, then written with the others in one flush.
	flushes := w.metric(`tokenfleet_coordinator_presence_flushes_total`)
	a.Heartbeat()
	w.waitMetric(`tokenfleet_coordinator_heartbeats_total`, func(v float64) bool { return v >= 1 })
	w.waitMetric(`tokenfleet_coordinator_presence_flushes_total`, func(v float64) bool { return v > flushes })
	w.waitMetric(`tokenfleet_coordinator_presence_pending`, func(v float64) bool { return v == 0 })
	w.waitMetric(`tokenfleet_coordinator_presence_flush_errors_total`, func(v float64) bool { return v == 0 })

	j := w.job(jobs.KindIssue, "ws-metrics", "blank-issue", "")
	dispatch := a.Next(protocol.TypeDispatch, j.ID)
	w.waitState(j.ID, jobs.StateDispatched)
	w.waitMetric(`tokenfleet_coordinator_jobs{kind="issue",state="dispatched"}`, func(v float64) bool { return v == 1 })
	w.waitMetric(`tokenfleet_coordinator_jobs{kind="wipe",state="running"}`, func(v float64) bool { return v == 0 })

	// Another agent's broker user reports on this job: refused, dead-lettered.
	ref := dispatch.Job()
	refused := w.metric(`tokenfleet_coordinator_events_refused_total{code="forged_sender"}`)
	forged := other.Send(ref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "M1"})
	waitRejected(t, w, forged.ID)
	w.waitMetric(`tokenfleet_coordinator_events_refused_total{code="forged_sender"}`, func(v float64) bool { return v == refused+1 })
	w.waitMetric(`tokenfleet_coordinator_messages_dead_lettered_total{code="forged_sender",queue="`+protocol.EventsQueue+`"}`,
		func(v float64) bool { return v >= 1 })

	// The agent's own CSR is signed: the CA's latency is recorded and the certificate
	// counts, 30 days of validity falling in the 7-to-30-day bucket once a moment passed.
	is := a.IssueUntilCSR(dispatch, "M1")
	w.waitState(j.ID, jobs.StateInstalling)
	w.waitMetric(`tokenfleet_coordinator_ca_signing_duration_seconds_count{result="ok"}`, func(v float64) bool { return v == 1 })
	w.waitMetric(`tokenfleet_coordinator_certificates{expires_in="7d_to_30d"}`, func(v float64) bool { return v == 1 })
	w.waitMetric(`tokenfleet_coordinator_certificates{expires_in="under_7d"}`, func(v float64) bool { return v == 0 })
	a.Finish(is)
	w.waitState(j.ID, jobs.StateSucceeded)
	w.waitMetric(`tokenfleet_coordinator_jobs{kind="issue",state="succeeded"}`, func(v float64) bool { return v == 1 })
	w.waitMetric(`tokenfleet_coordinator_jobs{kind="issue",state="dispatched"}`, func(v float64) bool { return v == 0 })
	// The outbox drains once the broker confirmed everything.
	w.waitMetric(`tokenfleet_coordinator_outbox_messages`, func(v float64) bool { return v == 0 })
	w.waitMetric(`tokenfleet_coordinator_outbox_oldest_age_seconds`, func(v float64) bool { return v == 0 })

	now := float64(time.Now().Unix())
	if next := w.metric(`tokenfleet_coordinator_crl_next_update_timestamp_seconds`); next <= now {
		t.Errorf("CRL next update %v is not after now (%v)", next, now)
	}
	testenv.PromtoolCheck(t, w.metrics())
}

// metric is the value of one series on the coordinator's /metrics page, 0 when absent.
func (w *world) metric(series string) float64 {
	w.t.Helper()
	v, _ := testenv.MetricValue(w.metrics(), series)
	return v
}

// waitMetric polls /metrics until the series is present and ok accepts its value.
func (w *world) waitMetric(series string, ok func(float64) bool) {
	w.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		v, found := testenv.MetricValue(w.metrics(), series)
		if found && ok(v) {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("metric %s is %v (present: %v) after %s", series, v, found, waitTimeout)
		}
		<-tick.C
	}
}
