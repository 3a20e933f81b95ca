package agent_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// countingTransport is a Transport over a real connection that counts what goes through.
type countingTransport struct {
	*amqp.Conn
	published atomic.Int64
	consumed  atomic.Int64
}

func (c *countingTransport) PublishEvent(ctx context.Context, env *protocol.Envelope) error {
	c.published.Add(1)
	return c.Conn.PublishEvent(ctx, env)
}

func (c *countingTransport) PublishEvents(ctx context.Context, envs []*protocol.Envelope) []error {
	c.published.Add(int64(len(envs)))
	return c.Conn.PublishEvents(ctx, envs)
}

func (c *countingTransport) Consume(ctx context.Context, queue string, opts amqp.ConsumeOptions, h amqp.Handler) (*amqp.Consumer, error) {
	c.consumed.Add(1)
	return c.Conn.Consume(ctx, queue, opts, h)
}

// TestSeams: an agent given Config.Dial talks only through the transport it made, with the
// configuration the agent would give amqp.Open; one given Config.OpenModule opens its
// modules (and its inventory's) through it, and with no module named loads none at all
// rather than the default modules.
func TestSeams(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderSharedUser)
	_, serial := initToken(t, "12345678", "87654321")

	var mu sync.Mutex // guards the fields below
	var dialled []amqp.Config
	var transports []*countingTransport
	opened := map[string]int{}
	dial := func(ctx context.Context, cfg amqp.Config) (agent.Transport, error) {
		conn, err := amqp.Open(ctx, cfg)
		if err != nil {
			return nil, err
		}
		tr := &countingTransport{Conn: conn}
		mu.Lock()
		defer mu.Unlock()
		dialled = append(dialled, cfg)
		transports = append(transports, tr)
		return tr, nil
	}
	open := func(path string, opts pkcs11.Options) (*pkcs11.Module, error) {
		mu.Lock()
		opened[path]++
		mu.Unlock()
		return pkcs11.Open(path, opts)
	}

	ra := startAgent(t, b, agentOptions{dial: dial, openModule: open})
	c.hello(ra.id, func(h protocol.Hello) bool { return hasToken(h, serial) })
	c.until("a heartbeat", func() bool { return len(c.heartbeatsOf(ra.id)) >= 1 })
	if err := ra.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	if len(dialled) != 1 || dialled[0].URL != b.URL || dialled[0].Topology == nil || dialled[0].OnStatus == nil {
		t.Errorf("Dial was called %d times (%+v); want once with the broker URL, a topology and a status callback", len(dialled), dialled)
	} else if tr := transports[0]; tr.published.Load() < 2 || tr.consumed.Load() != 1 {
		t.Errorf("through the transport: %d published (want a hello and a heartbeat at least), %d consumers (want 1)",
			tr.published.Load(), tr.consumed.Load())
	}
	// The executor's module, and each stocktaking's.
	if opened[testenv.SoftHSMModule] < 2 || len(opened) != 1 {
		t.Errorf("modules opened through OpenModule: %v; want %s, for the executor and the inventory", opened, testenv.SoftHSMModule)
	}
	mu.Unlock()

	// OpenModule set and no module named: none is loaded, OpenSC's included.
	clear(opened)
	rb := startAgent(t, b, agentOptions{openModule: open, noModules: true})
	h := c.hello(rb.id, func(protocol.Hello) bool { return true })
	if len(h.Tokens) != 0 {
		t.Errorf("an agent with no module reported tokens: %+v", h.Tokens)
	}
	if err := rb.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(opened) != 0 {
		t.Errorf("modules opened with none named: %v", opened)
	}
}
