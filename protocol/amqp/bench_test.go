package amqp

import (
	"context"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// Each benchmark iteration moves benchBatch messages through the reference
// (plain amqp091-go doing the same work) and then through this package,
// alternately, so both see the same broker and the same queue depth.
// Reported: msg/s of this package, ref_msg/s of the reference, and ratio =
// msg/s ÷ ref_msg/s (1 = no overhead).
const benchBatch = 200

func reportRates(b *testing.B, ref, wrapped time.Duration, perRun int) {
	n := float64(b.N * perRun)
	refRate, rate := n/ref.Seconds(), n/wrapped.Seconds()
	b.ReportMetric(rate, "msg/s")
	b.ReportMetric(refRate, "ref_msg/s")
	b.ReportMetric(rate/refRate, "ratio")
}

// rawConfirmChannel is the reference publisher: one channel in confirm
// mode, nothing else.
func rawConfirmChannel(b *testing.B, url string) *amqp091.Channel {
	ch := rawChannel(b, url)
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	return ch
}

func BenchmarkPublishConfirmed(b *testing.B) {
	br := testenv.NewBroker(b)
	ctx := testContext(b)
	c := coordinatorConn(b, br, "tokenfleet bench")
	env := progressEnv(b, "ws-01")
	key, _ := protocol.EventRoutingKey(env.Type, env.AgentID)
	msg, err := c.publishing(env)
	if err != nil {
		b.Fatal(err)
	}

	b.Run("sequential", func(b *testing.B) {
		raw := rawConfirmChannel(b, br.URL)
		confirms := raw.NotifyPublish(make(chan amqp091.Confirmation, 1))
		var ref, wrapped time.Duration
		for b.Loop() {
			start := time.Now()
			for range benchBatch {
				if err := raw.PublishWithContext(ctx, protocol.EventsExchange, key, true, false, msg); err != nil {
					b.Fatal(err)
				}
				if cf := <-confirms; !cf.Ack {
					b.Fatal("nack")
				}
			}
			mid := time.Now()
			for range benchBatch {
				if err := c.Publish(ctx, protocol.EventsExchange, key, env); err != nil {
					b.Fatal(err)
				}
			}
			ref += mid.Sub(start)
			wrapped += time.Since(mid)
		}
		reportRates(b, ref, wrapped, benchBatch)
	})

	const workers = 32
	b.Run("concurrent-32", func(b *testing.B) {
		raw := rawConfirmChannel(b, br.URL)
		var ref, wrapped time.Duration
		for b.Loop() {
			start := time.Now()
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range benchBatch / workers {
						dc, err := raw.PublishWithDeferredConfirmWithContext(ctx, protocol.EventsExchange, key, true, false, msg)
						if err != nil {
							b.Error(err)
							return
						}
						if ok, err := dc.WaitContext(ctx); !ok || err != nil {
							b.Error("not acked", err)
							return
						}
					}
				})
			}
			wg.Wait()
			mid := time.Now()
			for range workers {
				wg.Go(func() {
					for range benchBatch / workers {
						if err := c.Publish(ctx, protocol.EventsExchange, key, env); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			ref += mid.Sub(start)
			wrapped += time.Since(mid)
		}
		reportRates(b, ref, wrapped, workers*(benchBatch/workers))
	})
}

// BenchmarkRoundTrip: publish with confirm, then wait until the consumer
// has the message and acked it, one message at a time. The reference is a
// plain publisher and a plain manual-ack consumer on a quorum queue; this
// package adds encoding, decoding, validation and sender checks.
func BenchmarkRoundTrip(b *testing.B) {
	br := testenv.NewBroker(b)
	ctx := testContext(b)
	c := coordinatorConn(b, br, "tokenfleet bench")
	received := make(chan string, 1)
	cons, err := c.Consume(ctx, protocol.EventsQueue, ConsumeOptions{Senders: SenderSharedUser}, func(_ context.Context, d *Delivery) Outcome {
		received <- d.Envelope.ID
		return Ack()
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cons.Close()

	const refQueue = "bench.reference"
	pubCh := rawConfirmChannel(b, br.URL)
	confirms := pubCh.NotifyPublish(make(chan amqp091.Confirmation, 1))
	if _, err := pubCh.QueueDeclare(refQueue, true, false, false, false, amqp091.Table{"x-queue-type": "quorum"}); err != nil {
		b.Fatal(err)
	}
	subCh := rawChannel(b, br.URL)
	if err := subCh.Qos(DefaultPrefetch, 0, false); err != nil {
		b.Fatal(err)
	}
	deliveries, err := subCh.Consume(refQueue, "", false, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	env := progressEnv(b, "ws-01")
	msg, err := c.publishing(env)
	if err != nil {
		b.Fatal(err)
	}

	var ref, wrapped time.Duration
	for b.Loop() {
		start := time.Now()
		for range benchBatch {
			if err := pubCh.PublishWithContext(ctx, "", refQueue, true, false, msg); err != nil {
				b.Fatal(err)
			}
			if cf := <-confirms; !cf.Ack {
				b.Fatal("nack")
			}
			d := <-deliveries
			if err := d.Ack(false); err != nil {
				b.Fatal(err)
			}
		}
		mid := time.Now()
		for range benchBatch {
			if err := c.PublishEvent(ctx, env); err != nil {
				b.Fatal(err)
			}
			if id := <-received; id != env.ID {
				b.Fatalf("received %s", id)
			}
		}
		ref += mid.Sub(start)
		wrapped += time.Since(mid)
	}
	reportRates(b, ref, wrapped, benchBatch)
}
