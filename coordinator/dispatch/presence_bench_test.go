package dispatch_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// Heartbeat benchmark sizes: heartbeatAgents agents, each iteration heartbeatsPerOp
// heartbeats spread over them.
const (
	heartbeatAgents  = 1000
	heartbeatsPerOp  = 250
	heartbeatSenders = 8 // publishing goroutines
)

// productionHeartbeatRate is 10,000 agents at one heartbeat every 15 s.
const productionHeartbeatRate = 10_000.0 / 15

// BenchmarkHeartbeats: heartbeats of heartbeatAgents agents, published to the broker
// while no coordinator consumes, then taken by a dispatcher started for them; measured
// from its start until every heartbeat is taken and written, the process's CPU time
// (getrusage: nothing else runs in the process meanwhile) and the store's transactions.
// The same run measures both ways of recording them: held in memory and written in
// batches (the default), and the reference, one transaction per heartbeat
// (PresenceFlushInterval < 0), as every heartbeat cost before, on a fifth as many
// heartbeats. Both include the dispatcher's start (connection, one queue declared per
// agent), which makes the figures per heartbeat a little high.
// Reported: cpu-µs/beat and ref-cpu-µs/beat, cpu-ratio (batched ÷ reference), beats/s
// and ref-beats/s, tx/1000beats and ref-tx/1000beats, and core-%@10k: the share of one
// core the batched way's CPU per heartbeat comes to at 10,000 agents' production rate
// (667 a second; goal < 10).
func BenchmarkHeartbeats(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		benchHeartbeats(b, store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(b.TempDir(), "c.db")})
	})
	b.Run("postgres", func(b *testing.B) {
		benchHeartbeats(b, store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(b)})
	})
}

func benchHeartbeats(b *testing.B, cfg store.Config) {
	ctx := testenv.Context(b)
	// Errors only: each dispatcher's start warns of the shared broker user.
	log := zerolog.New(zerolog.NewTestWriter(b)).Level(zerolog.ErrorLevel)
	st, err := store.Open(ctx, cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	ids := make([]string, heartbeatAgents)
	err = st.InTx(ctx, func(tx store.Tx) error {
		for i := range ids {
			ids[i] = fmt.Sprintf("ws-%05d", i)
			if _, err := tx.CreateAgent(ctx, store.Agent{ID: ids[i], Hostname: ids[i] + ".test"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	authority, key := signers(b, ctx, st, dir, log)
	broker := testenv.NewBroker(b)
	pub, err := amqp.Open(ctx, amqp.Config{URL: broker.URL, Name: "heartbeat-bench", Topology: amqp.DeclareShared, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pub.Close() })

	total := b.N * heartbeatsPerOp
	var seq atomic.Uint64
	instance := protocol.NewMessageID()
	// The reference takes a fifth as many: at a few hundred a second, all of them would
	// outlive the heartbeats' time to live in the queue before it took the last.
	refTotal := max(total/5, heartbeatsPerOp)
	// run publishes total heartbeats, then records them with a dispatcher of flush
	// interval flush, and returns its CPU time, wall time and transactions.
	run := func(flush time.Duration, total int) (cpu, wall time.Duration, txs int64) {
		publishHeartbeats(ctx, b, pub, ids, total, instance, &seq)
		counted := &countingStore{Store: st}
		d, err := dispatch.New(dispatch.Options{Store: counted, CA: authority, ResultKey: key, BrokerURL: broker.URL,
			AgentUsers: dispatch.AgentUsersShared, Logger: log, PresenceFlushInterval: flush})
		if err != nil {
			b.Fatal(err)
		}
		svc, err := service.New(service.Options{Store: d.Store(counted), Logger: log, Dispatcher: d, Issuer: d})
		if err != nil {
			b.Fatal(err)
		}
		d.Bind(svc)
		cpu0, start := processCPU(b), time.Now()
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- d.Run(runCtx) }()
		deadline := time.Now().Add(waitTimeout)
		tick := time.NewTicker(5 * time.Millisecond)
		for {
			s := d.PresenceStats()
			if s.Heartbeats >= uint64(total) && s.Pending == 0 && (flush < 0 || s.Flushes > 0) {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d heartbeats taken, %d held, within %s", s.Heartbeats, total, s.Pending, waitTimeout)
			}
			<-tick.C
		}
		tick.Stop()
		wall = time.Since(start)
		stop()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		return processCPU(b) - cpu0, wall, counted.txs.Load()
	}

	b.ResetTimer()
	refCPU, refWall, refTx := run(-1, refTotal)
	cpu, wall, tx := run(0, total)
	b.StopTimer()

	perBeat := func(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }
	b.ReportMetric(perBeat(cpu, total), "cpu-µs/beat")
	b.ReportMetric(perBeat(refCPU, refTotal), "ref-cpu-µs/beat")
	b.ReportMetric(perBeat(cpu, total)/perBeat(refCPU, refTotal), "cpu-ratio")
	b.ReportMetric(float64(total)/wall.Seconds(), "beats/s")
	b.ReportMetric(float64(refTotal)/refWall.Seconds(), "ref-beats/s")
	b.ReportMetric(float64(tx)*1000/float64(total), "tx/1000beats")
	b.ReportMetric(float64(refTx)*1000/float64(refTotal), "ref-tx/1000beats")
	b.ReportMetric(perBeat(cpu, total)*productionHeartbeatRate/1e6*100, "core-%@10k")
}

// publishHeartbeats publishes n heartbeats, one agent after another, from
// heartbeatSenders goroutines, each confirmed by the broker.
func publishHeartbeats(ctx context.Context, b *testing.B, pub *amqp.Conn, ids []string, n int, instance string, seq *atomic.Uint64) {
	b.Helper()
	var next atomic.Int64
	errs := make(chan error, heartbeatSenders)
	var wg sync.WaitGroup
	for range heartbeatSenders {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				env, err := protocol.NewEnvelope(ids[int(i)%len(ids)], protocol.JobRef{}, protocol.Heartbeat{InstanceID: instance, Seq: seq.Add(1)})
				if err == nil {
					err = pub.PublishEvent(ctx, env)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// processCPU is the process's user and system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countingStore counts the transactions run on the store.
type countingStore struct {
	store.Store
	txs atomic.Int64
}

func (c *countingStore) InTx(ctx context.Context, fn func(tx store.Tx) error) error {
	c.txs.Add(1)
	return c.Store.InTx(ctx, fn)
}
