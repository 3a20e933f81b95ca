package dispatch

import (
	"context"

	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// PublishPass runs one pass of the outbox publisher on conn, as Run's publisher does
// when woken: the benchmarks time it on an outbox filled while nothing published.
func (d *Dispatcher) PublishPass(ctx context.Context, conn *amqp.Conn) { d.publishPass(ctx, conn) }
