package executor

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/agent/metrics"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestMetrics: an issue on SoftHSM2 shows in the agent's metrics, served on a real
// listener: the job by outcome, each token step's latency by operation and model, the
// journal's size; and the page passes promtool's checks.
func TestMetrics(t *testing.T) {
	m := metrics.New()
	a := newAgent(t, agentOptions{obs: m})
	m.SetJournal(filepath.Join(a.dir, journal.FileName))
	m.SetBroker(func() bool { return true })

	ref := protocol.JobRef{JobID: "issue-metrics", Attempt: 1}
	if rc := a.submit(issueBlank(a, ref, newLabel(t), protocol.KeyP256)); rc.Disposition != journal.Accepted {
		t.Fatalf("disposition %s", rc.Disposition)
	}
	wantSuccess(t, a.result(ref))

	ctx, cancel := context.WithCancel(context.Background())
	ln, err := metrics.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve(ctx, ln, a.ex.log) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v", resp.Status, err)
	}
	page := string(body)

	model := strings.TrimSpace(a.slotOfModel(t))
	for series, ok := range map[string]func(float64) bool{
		`tokenfleet_agent_jobs_finished_total{kind="issue",outcome="succeeded"}`:                                  func(v float64) bool { return v == 1 },
		`tokenfleet_agent_token_operation_duration_seconds_count{model="` + model + `",operation="generate_key"}`: func(v float64) bool { return v == 1 },
		`tokenfleet_agent_token_operation_duration_seconds_count{model="` + model + `",operation="verify"}`:       func(v float64) bool { return v == 1 },
		`tokenfleet_agent_token_operation_duration_seconds_sum{model="` + model + `",operation="initialise"}`:     func(v float64) bool { return v > 0 },
		`tokenfleet_agent_broker_up`:          func(v float64) bool { return v == 1 },
		`tokenfleet_agent_journal_size_bytes`: func(v float64) bool { return v > 0 },
	} {
		v, found := testenv.MetricValue(page, series)
		if !found || !ok(v) {
			t.Errorf("%s is %v (present: %v)\n%s", series, v, found, page)
		}
	}

	testenv.PromtoolCheck(t, page)
}

// slotOfModel is the model SoftHSM2 gives its tokens, as the metrics label them.
func (a *agent) slotOfModel(t *testing.T) string {
	t.Helper()
	slots, err := a.mod.Slots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if s.Token != nil {
			return s.Token.Model
		}
	}
	t.Fatal("no token in any slot")
	return ""
}
