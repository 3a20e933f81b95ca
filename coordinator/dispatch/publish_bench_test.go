package dispatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// benchJobs is how many approved jobs one iteration dispatches, one per agent.
const benchJobs = 1000

// refInFlight is how many confirms the reference publisher keeps in flight: as many as
// the outbox publisher reads in one pass.
const refInFlight = 200

// BenchmarkDispatch: each iteration approves benchJobs jobs (one per agent, no-approval
// profile) while nothing publishes, so that their dispatches wait in the outbox; then it
// times a plain confirmed publisher (amqp091-go, refInFlight confirms in flight) sending
// the same bodies to the same agent queues, and the dispatcher's publisher sending the
// outbox until every dispatch is confirmed, marked sent and its job dispatched. The queues
// are emptied before each iteration.
// Reported: msg/s of the dispatcher, ref_msg/s of the reference, and ratio = msg/s ÷
// ref_msg/s (goal ≥ 0.5).
func BenchmarkDispatch(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		benchDispatch(b, store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(b.TempDir(), "c.db")})
	})
	b.Run("postgres", func(b *testing.B) {
		benchDispatch(b, store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(b)})
	})
}

func benchDispatch(b *testing.B, cfg store.Config) {
	f := newDispatchFixture(b, cfg, benchJobs)
	ctx := f.ctx
	var ref, disp time.Duration
	var iter int
	for b.Loop() {
		b.StopTimer()
		iter++
		f.approveJobs(b, fmt.Sprintf("holder-%d", iter), f.agents)
		rows, err := f.st.ListUnsentOutbox(ctx, store.MaxPageLimit)
		if err != nil {
			b.Fatal(err)
		}
		if len(rows) != benchJobs {
			b.Fatalf("%d unsent outbox rows, want %d", len(rows), benchJobs)
		}
		f.purge(b)
		b.StartTimer()

		// The two take turns going first, so that neither always meets the broker just
		// after the purge.
		if iter%2 == 1 {
			ref += timed(func() { f.publishRaw(b, rows) })
			disp += timed(func() { f.d.PublishPass(ctx, f.conn) })
		} else {
			disp += timed(func() { f.d.PublishPass(ctx, f.conn) })
			ref += timed(func() { f.publishRaw(b, rows) })
		}

		b.StopTimer()
		f.checkDispatched(b, fmt.Sprintf("holder-%d", iter), benchJobs)
		b.StartTimer()
	}
	n := float64(iter * benchJobs)
	refRate, rate := n/ref.Seconds(), n/disp.Seconds()
	b.ReportMetric(rate, "msg/s")
	b.ReportMetric(refRate, "ref_msg/s")
	b.ReportMetric(rate/refRate, "ratio")
}

func timed(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}

// dispatchFixture is a dispatcher that is not running, its service, enrolled agents that
// said hello with one blank token each, and their queues on a private vhost.
type dispatchFixture struct {
	ctx    context.Context
	st     store.Store
	svc    *service.Service
	d      *dispatch.Dispatcher
	admin  service.Actor
	conn   *amqp.Conn
	raw    *amqp091.Channel
	agents []string
}

func newDispatchFixture(b testing.TB, cfg store.Config, agents int) *dispatchFixture {
	b.Helper()
	ctx := testenv.Context(b)
	dir := b.TempDir()
	log := zerolog.New(zerolog.NewTestWriter(b)).Level(zerolog.WarnLevel)
	st, err := store.Open(ctx, cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	authority, key := signers(b, ctx, st, dir, log)
	br := testenv.NewBroker(b)
	d, err := dispatch.New(dispatch.Options{Store: st, CA: authority, ResultKey: key, BrokerURL: br.URL,
		AgentUsers: dispatch.AgentUsersShared, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	svc, err := service.New(service.Options{Store: d.Store(st), Logger: log, Dispatcher: d, Issuer: d})
	if err != nil {
		b.Fatal(err)
	}
	d.Bind(svc)
	f := &dispatchFixture{ctx: ctx, st: st, svc: svc, d: d}

	var token string
	if _, err := svc.Bootstrap(ctx, func(t string) error { token = t; return nil }); err != nil {
		b.Fatal(err)
	}
	if f.admin, err = svc.Authenticate(ctx, token, "bench"); err != nil {
		b.Fatal(err)
	}
	if _, err := svc.CreateOrganization(ctx, f.admin, "Acme"); err != nil {
		b.Fatal(err)
	}
	if _, err := svc.ApplyProfiles(ctx, f.admin, []byte(profiles)); err != nil {
		b.Fatal(err)
	}

	sealKey, err := seal.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	pub, err := seal.MarshalPublicKey(sealKey.PublicKey())
	if err != nil {
		b.Fatal(err)
	}
	err = st.InTx(ctx, func(tx store.Tx) error {
		for i := range agents {
			id := fmt.Sprintf("ws-%04d", i)
			f.agents = append(f.agents, id)
			if _, err := tx.CreateAgent(ctx, store.Agent{ID: id, Hostname: id + ".test", PublicKey: pub}); err != nil {
				return err
			}
			tok := dispatchtest.Token("B"+id, false)
			flags, err := json.Marshal(tok.Flags)
			if err != nil {
				return err
			}
			if _, err := tx.UpsertToken(ctx, store.Token{Serial: tok.Serial, AgentID: id, Label: tok.Label,
				Manufacturer: tok.Manufacturer, Model: tok.Model, Flags: flags, LastSeen: time.Now()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}

	f.conn, err = amqp.Open(ctx, amqp.Config{URL: br.URL, Name: "tokenfleet bench", Topology: amqp.DeclareShared, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = f.conn.Close() })
	if err := f.conn.Ready(ctx); err != nil {
		b.Fatal(err)
	}
	err = f.conn.Declare(ctx, func(ch amqp.Declarer) error {
		for _, id := range f.agents {
			if err := amqp.DeclareAgent(ch, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	conn, err := amqp091.Dial(br.URL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	if f.raw, err = conn.Channel(); err != nil {
		b.Fatal(err)
	}
	if err := f.raw.Confirm(false); err != nil {
		b.Fatal(err)
	}
	return f
}

// approveJobs makes one job per agent for a new holder (so that no job supersedes another
// holder's); the profile needs no approval, so each is approved, with its dispatch in the
// outbox, when created.
func (f *dispatchFixture) approveJobs(b testing.TB, holder string, agents []string) {
	b.Helper()
	if _, err := f.svc.CreateUser(f.ctx, f.admin, service.UserRequest{Username: holder, DisplayName: "Holder " + holder,
		Email: holder + "@acme.example", Organization: "Acme"}); err != nil {
		b.Fatal(err)
	}
	const workers = 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(agents); i += workers {
				j, err := f.svc.CreateJob(f.ctx, f.admin, service.JobRequest{Kind: jobs.KindIssue, Holder: holder,
					Agent: agents[i], Profile: "blank-issue"})
				if err == nil && j.State != jobs.StateApproved {
					err = fmt.Errorf("job %s for %s is %s, want approved", j.ID, agents[i], j.State)
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
	for err := range errs {
		b.Fatal(err)
	}
}

// purge empties the agents' queues, so that both publishers of every iteration meet the
// same queue depths.
func (f *dispatchFixture) purge(b testing.TB) {
	b.Helper()
	for _, id := range f.agents {
		q, err := protocol.AgentQueue(id)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.raw.QueuePurge(q, false); err != nil {
			b.Fatal(err)
		}
	}
}

// publishRaw is the reference: the rows' bodies, with the properties the dispatcher
// gives them, published with refInFlight confirms in flight.
func (f *dispatchFixture) publishRaw(b testing.TB, rows []store.OutboxMessage) {
	b.Helper()
	for start := 0; start < len(rows); start += refInFlight {
		var pending []*amqp091.DeferredConfirmation
		for _, row := range rows[start:min(start+refInFlight, len(rows))] {
			dc, err := f.raw.PublishWithDeferredConfirmWithContext(f.ctx, row.Exchange, row.RoutingKey, true, false, amqp091.Publishing{
				ContentType: protocol.ContentType, DeliveryMode: amqp091.Persistent, MessageId: row.MessageID,
				CorrelationId: row.CorrelationID, Type: row.Type, UserId: "guest", Timestamp: time.Now(), Body: row.Body})
			if err != nil {
				b.Fatal(err)
			}
			pending = append(pending, dc)
		}
		for _, dc := range pending {
			if ok, err := dc.WaitContext(f.ctx); !ok || err != nil {
				b.Fatalf("reference publish not acked: %v", err)
			}
		}
	}
}

// checkDispatched fails unless the pass left nothing unsent and the holder's n jobs are
// dispatched.
func (f *dispatchFixture) checkDispatched(b testing.TB, holder string, n int) {
	b.Helper()
	rows, err := f.st.ListUnsentOutbox(f.ctx, 10)
	if err != nil || len(rows) != 0 {
		b.Fatalf("after the pass: %d unsent outbox rows, %v", len(rows), err)
	}
	f.checkDispatchedOf(b, holder, n)
}

// checkDispatchedOf fails unless n of the holder's jobs are dispatched.
func (f *dispatchFixture) checkDispatchedOf(b testing.TB, holder string, n int) {
	b.Helper()
	js, _, err := f.svc.ListJobs(f.ctx, f.admin, service.JobQuery{Holder: holder, State: jobs.StateDispatched},
		service.Page{Limit: store.MaxPageLimit})
	if err != nil || len(js) != n {
		b.Fatalf("%d of %d jobs of %s dispatched, %v", len(js), n, holder, err)
	}
}
