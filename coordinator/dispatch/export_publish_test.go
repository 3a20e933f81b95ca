package dispatch

import (
	"context"

	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// PublishPass runs one pass of the outbox publisher on conn, as Run's publisher does
// when woken: the benchmarks time it on an outbox filled while nothing published.
func (d *Dispatcher) PublishPass(ctx context.Context, conn *amqp.Conn) { d.publishPass(ctx, conn) }

// BeforeMark has fn run before each marking of confirmed rows, in the marking's goroutine.
// Call it before Run.
func (d *Dispatcher) BeforeMark(fn func()) { d.beforeMark = fn }
