package metrics

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestPage: the page the agent writes itself follows the text format as Prometheus reads
// it (promtool's checks), with labels in name order, values escaped, and a histogram's
// buckets cumulative up to +Inf.
func TestPage(t *testing.T) {
	m := New()
	m.SetBroker(func() bool { return false })
	m.SetJournal(t.TempDir() + "/none")
	m.JobFinished("issue", "succeeded")
	m.JobFinished("issue", "succeeded")
	m.JobFinished("renew", "failed")
	model := `Card "X" \ v2`
	m.TokenOperation("generate_key", " "+model+" ", 300*time.Millisecond)
	m.TokenOperation("generate_key", model, 100*time.Millisecond)
	m.TokenOperation("generate_key", model, 3*time.Minute)
	m.TokenOperation("sign", "", time.Millisecond)

	var b strings.Builder
	w := bufio.NewWriter(&b)
	m.write(w)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	const h = "tokenfleet_agent_token_operation_duration_seconds"
	esc := `Card \"X\" \\ v2`
	for series, want := range map[string]float64{
		`tokenfleet_agent_jobs_finished_total{kind="issue",outcome="succeeded"}`: 2,
		`tokenfleet_agent_jobs_finished_total{kind="renew",outcome="failed"}`:    1,
		h + `_bucket{model="` + esc + `",operation="generate_key",le="0.05"}`:    0,
		h + `_bucket{model="` + esc + `",operation="generate_key",le="0.1"}`:     1, // le is inclusive
		h + `_bucket{model="` + esc + `",operation="generate_key",le="0.5"}`:     2,
		h + `_bucket{model="` + esc + `",operation="generate_key",le="120"}`:     2,
		h + `_bucket{model="` + esc + `",operation="generate_key",le="+Inf"}`:    3,
		h + `_count{model="` + esc + `",operation="generate_key"}`:               3,
		h + `_sum{model="` + esc + `",operation="generate_key"}`:                 180.4,
		h + `_count{model="unknown",operation="sign"}`:                           1,
		`tokenfleet_agent_broker_up`:                                             0,
		`tokenfleet_agent_journal_size_bytes`:                                    0,
	} {
		if v, found := testenv.MetricValue(page, series); !found || v != want {
			t.Errorf("%s = %v (found %v), want %v\n%s", series, v, found, want, page)
		}
	}
	for _, series := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_start_time_seconds", "process_resident_memory_bytes"} {
		if v, found := testenv.MetricValue(page, series); !found || v <= 0 {
			t.Errorf("%s = %v (found %v)", series, v, found)
		}
	}
	testenv.PromtoolCheck(t, page)
}
