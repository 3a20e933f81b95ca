package dispatch

import (
	"time"

	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// Observer hears what the dispatcher refuses, dead-letters and has the CA sign, for
// metrics; service.Metrics implements it. Its methods must return quickly.
type Observer interface {
	// EventRefused: an agent's message was refused with code (and dead-lettered).
	EventRefused(code protocol.ErrorCode)
	// DeadLettered: a message of queue went to the dead-letter queue with code.
	DeadLettered(queue string, code protocol.ErrorCode)
	// Signed: the CA took this long to sign a certificate, or to fail to.
	Signed(took time.Duration, err error)
	// EventsTogether: n agent events were handled in one transaction.
	EventsTogether(n int)
}

type nopObserver struct{}

func (nopObserver) EventRefused(protocol.ErrorCode)         {}
func (nopObserver) DeadLettered(string, protocol.ErrorCode) {}
func (nopObserver) Signed(time.Duration, error)             {}
func (nopObserver) EventsTogether(int)                      {}

// BrokerUp reports whether the dispatcher is connected to the broker right now.
func (d *Dispatcher) BrokerUp() bool {
	c := d.brokerConn()
	return c != nil && c.Status().State == amqp.StateConnected
}

// reject refuses a message the handler judged: it is dead-lettered with err's code, and
// counted.
func (d *Dispatcher) reject(err error) amqp.Outcome {
	d.opts.Observer.EventRefused(protocol.CodeOf(err))
	return amqp.Reject(err)
}
