package agent

import (
	"context"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// Transport is what the agent uses of its broker connection; *amqp.Conn has it. A fleet
// simulator gives many agents logical connections over a few shared physical ones
// (Config.Dial), so that thousands of agents fit in the broker's socket limit.
type Transport interface {
	// Consume subscribes to queue as amqp.Conn.Consume does, waiting for the connection
	// (and its topology) while ctx allows.
	Consume(ctx context.Context, queue string, opts amqp.ConsumeOptions, h amqp.Handler) (*amqp.Consumer, error)
	Status() amqp.Status
	PublishEvent(ctx context.Context, env *protocol.Envelope) error
	// PublishEvents publishes several with their confirms in flight together, as
	// amqp.Conn.PublishEvents does: errs[i] for envs[i].
	PublishEvents(ctx context.Context, envs []*protocol.Envelope) []error
	// Ready waits until the connection is up with its topology declared.
	Ready(ctx context.Context) error
	Close() error
}

// dialAMQP is the default Config.Dial: a connection of the agent's own.
func dialAMQP(ctx context.Context, cfg amqp.Config) (Transport, error) {
	return amqp.Open(ctx, cfg)
}

// openModule opens a PKCS#11 module by path through Config.OpenModule, or pkcs11.Open.
func (a *Agent) openModule(path string, opts pkcs11.Options) (*pkcs11.Module, error) {
	if a.cfg.OpenModule != nil {
		return a.cfg.OpenModule(path, opts)
	}
	return pkcs11.Open(path, opts)
}
