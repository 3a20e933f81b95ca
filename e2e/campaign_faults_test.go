//go:build cgo && linux

package e2e_test

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// Fault kinds, as the summary counts them.
const (
	faultCoordinatorKill = "coordinator SIGKILL + restart"
	faultBothKilled      = "both coordinators SIGKILL + restart"
	faultAgentKill       = "agent SIGKILL + restart"
	faultConnsClosed     = "broker connections of the vhost closed"
	faultBrokerRestart   = "broker node restarted (stop_app/start_app)"
)

// injector draws and injects the faults, one at a time, each followed by the repair an
// operator or a service manager makes (a restart). It runs in the test's goroutine.
type injector struct {
	c   *campaign
	rng *rand.Rand
}

func newInjector(c *campaign) *injector {
	return &injector{c: c, rng: rand.New(rand.NewPCG(c.seed, 2))} //nolint:gosec // a replayable plan
}

// injectFaults fires the faults as the jobs they were drawn for get created, until the
// lanes are done. A fault waits a drawn moment first, so that it lands at any step of the
// jobs under way.
func (c *campaign) injectFaults(inj *injector, lanesDone <-chan struct{}) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if int(c.faultsRun.Load()) < c.faultsDue() {
			delay := time.Duration(inj.rng.IntN(400)) * time.Millisecond
			select {
			case <-time.After(delay):
			case <-lanesDone:
			case r := <-c.restarts:
				c.serveRestart(r)
			}
			inj.one()
			c.faultsRun.Add(1)
			continue
		}
		select {
		case <-lanesDone:
			return
		case r := <-c.restarts:
			c.serveRestart(r)
		case <-tick.C:
		}
	}
}

// one draws a fault and injects it.
func (inj *injector) one() {
	c := inj.c
	r := inj.rng.IntN(100)
	var kind string
	switch {
	case c.plan.name == variantBrokerRestart && r < 25:
		kind = faultBrokerRestart
	case r < 35:
		kind = faultAgentKill
	case r < 65:
		kind = faultCoordinatorKill
		if len(c.coords) > 1 && inj.rng.IntN(4) == 0 {
			kind = faultBothKilled
		}
	default:
		kind = faultConnsClosed
	}
	switch kind {
	case faultAgentKill:
		inj.killAgent(c.agents[inj.rng.IntN(len(c.agents))])
	case faultCoordinatorKill:
		inj.killCoordinators(c.coords[inj.rng.IntN(len(c.coords))])
	case faultBothKilled:
		inj.killCoordinators(c.coords...)
	case faultConnsClosed:
		c.broker.CloseConnections(c.t, "fault campaign: connections closed")
	case faultBrokerRestart:
		inj.restartBroker()
	}
	c.mu.Lock()
	c.faults[kind]++
	c.mu.Unlock()
}

// killCoordinators kills the coordinators with SIGKILL and starts them again on the same
// data, database and address, as a service manager does.
func (inj *injector) killCoordinators(cs ...*coordProc) {
	c := inj.c
	for _, co := range cs {
		co.kill()
	}
	for _, co := range cs {
		if err := co.startAndWait(3 * time.Minute); err != nil {
			c.t.Fatalf("restarting %s after SIGKILL: %v (seed %d)", co.name, err, c.seed)
		}
	}
}

// killAgent kills the agent with SIGKILL and starts it again on its journal once the
// broker dropped the dead one's consumer (its exclusive consumer would refuse the new one).
func (inj *injector) killAgent(a *agentProc) {
	c := inj.c
	a.kill()
	queue := agentQueue(c.t, a.id)
	eventually(c.t, "the broker to drop the killed agent's consumer", func() (bool, string) {
		_, consumers := c.broker.QueueCounts(c.t, queue)
		return consumers == 0, fmt.Sprintf("%d consumers on %s", consumers, queue)
	})
	if err := a.start(); err != nil {
		c.t.Fatalf("restarting agent %s: %v (seed %d)", a.id, err, c.seed)
	}
}

// restartBroker stops and starts the RabbitMQ application of the broker's node: every
// connection of every vhost drops. Only the broker-restart variant does it (make soak).
func (inj *injector) restartBroker() {
	c := inj.c
	for _, args := range [][]string{{"stop_app"}, {"start_app"}} {
		if out, err := exec.Command("rabbitmqctl", args...).CombinedOutput(); err != nil {
			c.t.Fatalf("rabbitmqctl %s: %v\n%s (seed %d)", args[0], err, out, c.seed)
		}
	}
	// await_startup fails while the node comes up: ask again until it answers.
	eventually(c.t, "the broker node to be up again", func() (bool, string) {
		out, err := exec.Command("rabbitmqctl", "await_startup", "--timeout", "30").CombinedOutput()
		return err == nil, fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(out)))
	})
}

// restoreAll makes sure every child runs once the faults are over: the checks look at a
// system that is up.
func (c *campaign) restoreAll() {
	for _, co := range c.coords {
		if ended, why := co.exited(); ended {
			c.problem("%s ended by itself (%v)", co.name, why)
		}
		if !co.running() {
			if err := co.startAndWait(3 * time.Minute); err != nil {
				c.t.Fatalf("%v (seed %d)", err, c.seed)
			}
		}
	}
	for _, a := range c.agents {
		if ended, why := a.exited(); ended {
			c.problem("agent %s ended by itself (%v)", a.id, why)
			if err := a.start(); err != nil {
				c.t.Fatal(err)
			}
		}
	}
}

// running says whether the child is running.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// deadTap keeps a copy of every dead-lettered message of the vhost: a queue bound to the
// dead-letter exchange, declared before anything runs.
type deadTap struct {
	url   string
	queue string
}

func newDeadTap(t *testing.T, b *testenv.Broker) *deadTap {
	t.Helper()
	d := &deadTap{url: b.URL, queue: "campaign.dead-letters"}
	conn, err := amqp091.Dial(b.URL)
	if err != nil {
		t.Fatalf("dead-letter tap: %v", err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("dead-letter tap: %v", err)
	}
	for _, x := range protocol.SharedTopology().Exchanges {
		if err := ch.ExchangeDeclare(x.Name, x.Kind, x.Durable, false, false, false, nil); err != nil {
			t.Fatalf("dead-letter tap: declaring exchange %s: %v", x.Name, err)
		}
	}
	if _, err := ch.QueueDeclare(d.queue, true, false, false, false, amqp091.Table{"x-queue-type": "classic"}); err != nil {
		t.Fatalf("dead-letter tap: %v", err)
	}
	if err := ch.QueueBind(d.queue, "", protocol.DeadLetterExchange, false, nil); err != nil {
		t.Fatalf("dead-letter tap: %v", err)
	}
	return d
}

// deadLetter is one dead-lettered message.
type deadLetter struct {
	messageID, typ, jobID string
	reason                string // the broker's x-death reason, or what the headers say
}

// drain reads every message the tap holds.
func (d *deadTap) drain() ([]deadLetter, error) {
	conn, err := amqp091.Dial(d.url)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	var out []deadLetter
	for {
		m, ok, err := ch.Get(d.queue, true)
		if err != nil {
			return out, err
		}
		if !ok {
			return out, nil
		}
		dl := deadLetter{messageID: m.MessageId, typ: m.Type, jobID: m.CorrelationId, reason: fmt.Sprint(m.Headers)}
		if env, err := protocol.Decode(m.Body); err == nil {
			dl.jobID = env.JobID
		}
		out = append(out, dl)
	}
}
