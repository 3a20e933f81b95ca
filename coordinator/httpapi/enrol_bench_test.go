package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/httpapi"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// Enrolment benchmark sizes: each iteration enrols enrolBatch agents in one request to
// the batch endpoint and, as the reference, enrolSingle agents one request each to the
// single endpoint (a tenth as many: at a few hundred a second a thousand would make an
// iteration long, and a rate needs no more).
const (
	enrolBatch  = 1000
	enrolSingle = 100
)

// BenchmarkEnrol: agents enrolled through the API over HTTP (the real handler, service and
// store, on a loopback server), by the batch endpoint and by the single endpoint one
// agent a request, the two taking turns going first. The agent hook is off: declaring
// queues is the broker's time, which BenchmarkEnrolQueues adds.
// Reported: agents/s (batch), ref-agents/s (single endpoint) and ratio (batch ÷ single).
func BenchmarkEnrol(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		benchEnrol(b, store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(b.TempDir(), "c.db")})
	})
	b.Run("postgres", func(b *testing.B) {
		benchEnrol(b, store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(b)})
	})
}

// Sizes of BenchmarkEnrolQueues: a batch as large as the endpoint takes, as an operator
// enrolling thousands sends (and tokenfleet-fleetsim enrol does), so that its queues
// spread over every declaring channel; creating a queue costs the broker milliseconds, so
// fewer single enrolments.
const (
	enrolQueuesBatch  = api.MaxAgentBatch
	enrolQueuesSingle = 25
)

// BenchmarkEnrolQueues is BenchmarkEnrol through the whole coordinator with a broker:
// each enrolment answers once its agents' command queues are declared, the batch's
// pipelined on a few channels, the single endpoint's one at a time, as in production.
// The broker's time to create queues bounds both; the store is SQLite.
func BenchmarkEnrolQueues(b *testing.B) {
	inst := coordinatortest.Start(b, coordinatortest.Options{BrokerURL: testenv.NewBroker(b).URL, Log: io.Discard})
	ctx := testenv.Context(b)
	measureEnrol(ctx, b, inst.DirectURL, inst.AdminToken, enrolQueuesBatch, enrolQueuesSingle, inst.Store)
}

func benchEnrol(b *testing.B, cfg store.Config) {
	ctx := testenv.Context(b)
	log := zerolog.New(zerolog.NewTestWriter(b)).Level(zerolog.ErrorLevel)
	st, err := store.Open(ctx, cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	svc, err := service.New(service.Options{Store: st, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Options{Service: svc, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	var token string
	if _, err := svc.Bootstrap(ctx, func(tok string) error { token = tok; return nil }); err != nil {
		b.Fatal(err)
	}
	measureEnrol(ctx, b, srv.URL, token, enrolBatch, enrolSingle, st)
}

// measureEnrol runs the iterations of an enrolment benchmark against the API at url and
// reports the rates.
func measureEnrol(ctx context.Context, b *testing.B, url, token string, enrolBatch, enrolSingle int, st store.Store) {
	client := &http.Client{}
	post := func(path string, body []byte) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+path, bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		data, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusCreated {
			b.Fatalf("POST %s: %d %s %v", path, resp.StatusCode, data, err)
		}
	}
	agent := func(prefix string, iter, i int) map[string]string {
		id := fmt.Sprintf("%s%03d-%04d", prefix, iter, i)
		return map[string]string{"id": id, "hostname": id + ".bench.example"}
	}
	mustJSON := func(v any) []byte {
		data, err := json.Marshal(v)
		if err != nil {
			b.Fatal(err)
		}
		return data
	}

	var batchTime, singleTime time.Duration
	b.ResetTimer()
	for iter := range b.N {
		b.StopTimer()
		batch := make([]map[string]string, enrolBatch)
		for i := range batch {
			batch[i] = agent("b", iter, i)
		}
		batchBody := mustJSON(map[string]any{"agents": batch})
		singles := make([][]byte, enrolSingle)
		for i := range singles {
			singles[i] = mustJSON(agent("s", iter, i))
		}
		b.StartTimer()
		runBatch := func() {
			start := time.Now()
			post("/api/v1/agents/batch", batchBody)
			batchTime += time.Since(start)
		}
		runSingles := func() {
			start := time.Now()
			for _, body := range singles {
				post("/api/v1/agents", body)
			}
			singleTime += time.Since(start)
		}
		if iter%2 == 0 {
			runBatch()
			runSingles()
		} else {
			runSingles()
			runBatch()
		}
	}
	b.StopTimer()
	batchRate := float64(b.N*enrolBatch) / batchTime.Seconds()
	singleRate := float64(b.N*enrolSingle) / singleTime.Seconds()
	b.ReportMetric(batchRate, "agents/s")
	b.ReportMetric(singleRate, "ref-agents/s")
	b.ReportMetric(batchRate/singleRate, "ratio")
	b.ReportMetric(0, "ns/op") // an iteration is two measurements; the rates say it
	if n, err := countAgents(ctx, st); err != nil || n != b.N*(enrolBatch+enrolSingle) {
		b.Fatalf("%d agents stored, want %d: %v", n, b.N*(enrolBatch+enrolSingle), err)
	}
}

// countAgents counts the stored agents.
func countAgents(ctx context.Context, st store.Store) (int, error) {
	n := 0
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		as, next, err := st.ListAgents(ctx, store.AgentFilter{}, p)
		if err != nil {
			return 0, err
		}
		n += len(as)
		if next == "" {
			return n, nil
		}
		p.Cursor = next
	}
}
