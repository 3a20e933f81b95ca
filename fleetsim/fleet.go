package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/usb"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// Defaults of FleetConfig.
const (
	// DefaultPollInterval is the simulated agents' token polling: simulated tokens do not
	// come and go by themselves, so polling them every second as a workstation does would
	// only spend the simulator's CPU.
	DefaultPollInterval = 30 * time.Second
	// DefaultShutdownGrace bounds each simulated agent's outbox flush at shutdown, as a
	// workstation's does.
	DefaultShutdownGrace = agent.DefaultShutdownGrace
	// DefaultRestartAfter is how long a crashed agent stays down before it starts again.
	DefaultRestartAfter = 2 * time.Second
	// crashGrace is the shutdown grace of the agents of a fleet that crashes them: a
	// crash sends nothing more (no outbox flush), and an agent's grace is fixed when it
	// is made, before anyone knows whether it will crash or stop.
	crashGrace = time.Millisecond
	// stopWave is how many agents stop at once: a thousand journals closing together
	// would wait for the disk longer than their grace period.
	stopWave = 100
)

// Tokens gives each simulated agent its PKCS#11 modules: their names, and how one is
// opened (agent.Config.OpenModule). nil: agents with no module at all.
type Tokens interface {
	Modules(agentID string) []string
	Open(path string, opts pkcs11.Options) (*pkcs11.Module, error)
}

// FleetConfig describes a fleet of simulated agents run in this process.
type FleetConfig struct {
	// BrokerURL is the broker, with a user that may declare agent queues (the agents
	// declare theirs, as a development agent does).
	BrokerURL string
	// Prefix and the index make each agent's ID: Prefix followed by the index on five
	// digits (sim-00000). First is the first index; Count how many agents.
	Prefix       string
	First, Count int
	// DataDir holds one directory per agent (its journal, sealing key and lock).
	DataDir string
	// Heartbeat is the agents' heartbeat interval; 0 means the production rate (15s).
	Heartbeat time.Duration
	// Ramp is how many agents start a second; 0 starts them as fast as they can.
	Ramp float64
	// PerConnection is how many agents share a physical broker connection; 0 means
	// DefaultAgentsPerConnection.
	PerConnection int
	// PollInterval is the agents' token polling; 0 means DefaultPollInterval.
	PollInterval time.Duration
	// Tokens gives agents simulated tokens; nil: none.
	Tokens Tokens
	// Log is every agent's log (each adds its agent_id); the zero value logs nothing.
	Log zerolog.Logger

	// CrashEvery is the mean time between crashes across the fleet (0: none). Crashes
	// come at random (exponential intervals), each to a random running agent: it stops at
	// once, as SIGKILL would stop it (its broker connection drops first, its outbox is not
	// flushed), and starts again RestartAfter later on the same data directory, resuming
	// from its journal. Unlike SIGKILL, its executor still brings a running job to its
	// next safe point: the agent stops through its context, the only way in. The agents of
	// a fleet that crashes them flush nothing at any shutdown: their unsent messages stay
	// in their journals.
	CrashEvery time.Duration
	// RestartAfter is how long a crashed agent stays down; 0 restarts it at once.
	RestartAfter time.Duration
	// Seed seeds which agent crashes, and when.
	Seed uint64
}

// AgentID is the ID of the simulated agent with index i.
func AgentID(prefix string, i int) string { return fmt.Sprintf("%s%05d", prefix, i) }

// Fleet runs simulated agents: real agent.Agents (journal, executor, stock, sender,
// heartbeats, consumer) with a data directory each, sharing a few broker connections.
type Fleet struct {
	cfg       FleetConfig
	transport *SharedTransport
	counters  *Counters
	registry  *usb.Registry

	started  atomic.Int64 // agents whose Run reported ready (a restart is not counted again)
	failed   atomic.Int64 // agents whose Run ended with an error
	crashes  atomic.Int64
	restarts atomic.Int64
	readied  []atomic.Bool // by index - First: the agent was ready once

	mu      sync.Mutex // guards the fields below
	running []*simAgent
	errs    []error
	closed  bool

	stopRamp context.CancelFunc
	rampDone chan struct{}
	// crashing holds the crash loop and every crashed agent's restart.
	crashing    sync.WaitGroup
	stopCrashes context.CancelFunc
}

type simAgent struct {
	id     string
	index  int
	cancel context.CancelFunc
	done   chan struct{}

	killed atomic.Bool // by a crash, not stopped

	mu   sync.Mutex      // guards conn
	conn agent.Transport // the agent's broker connection, once dialled
}

// kill stops the agent as SIGKILL would: its broker connection drops (unacked deliveries
// go back to its queue, nothing more is published), then its context ends.
func (sa *simAgent) kill() {
	sa.killed.Store(true)
	sa.mu.Lock()
	conn := sa.conn
	sa.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
	sa.cancel()
}

// NewFleet checks cfg and makes a fleet; Start starts it.
func NewFleet(cfg FleetConfig) (*Fleet, error) {
	if cfg.BrokerURL == "" {
		return nil, errors.New("fleetsim: a broker URL is required")
	}
	if cfg.Count < 0 || cfg.First < 0 {
		return nil, fmt.Errorf("fleetsim: %d agents from index %d: want counts of zero or more", cfg.Count, cfg.First)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("fleetsim: a data directory is required")
	}
	if cfg.Ramp < 0 {
		return nil, fmt.Errorf("fleetsim: ramp %v agents a second is negative", cfg.Ramp)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.CrashEvery < 0 || cfg.RestartAfter < 0 {
		return nil, fmt.Errorf("fleetsim: crashes every %s, restarts after %s: want durations of zero or more", cfg.CrashEvery, cfg.RestartAfter)
	}
	reg, err := usb.DefaultRegistry()
	if err != nil {
		return nil, fmt.Errorf("fleetsim: token registry: %w", err)
	}
	counters := &Counters{}
	backoff := amqp.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second}
	return &Fleet{
		cfg: cfg, counters: counters, registry: reg, readied: make([]atomic.Bool, cfg.Count),
		transport: NewSharedTransport(cfg.BrokerURL, cfg.PerConnection, backoff, counters, cfg.Log.With().Str("component", "fleetsim").Logger()),
	}, nil
}

// FaultSetter is the optional capability of a fleet's Tokens whose injected failures can
// change while the fleet runs (*SimTokens).
type FaultSetter interface {
	SetFaults(faults []TokenFault) error
}

// SetTokenFaults replaces the failures the fleet's simulated tokens inject, from their
// next operation on (nil: none), while the agents run: a test breaks the tokens, then
// "fixes" them. Safe for concurrent use.
func (f *Fleet) SetTokenFaults(faults []TokenFault) error {
	fs, ok := f.cfg.Tokens.(FaultSetter)
	if !ok {
		return errors.New("fleetsim: the fleet's agents have no simulated tokens whose failures can be set (FleetConfig.Tokens: a *SimTokens)")
	}
	return fs.SetFaults(faults)
}

// Counters counts what the fleet's agents published.
func (f *Fleet) Counters() *Counters { return f.counters }

// Started is how many agents are working (ready) so far, Failed how many ended with an
// error.
func (f *Fleet) Started() int { return int(f.started.Load()) }

// Failed is how many agents ended with an error; Errors returns the first few.
func (f *Fleet) Failed() int { return int(f.failed.Load()) }

// Errors returns the first errors agents ended with.
func (f *Fleet) Errors() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]error(nil), f.errs...)
}

// Connections is how many physical broker connections the fleet holds.
func (f *Fleet) Connections() int { return f.transport.Connections() }

// Crashes is how many agents crashed.
func (f *Fleet) Crashes() int { return int(f.crashes.Load()) }

// Restarts is how many crashed agents started again.
func (f *Fleet) Restarts() int { return int(f.restarts.Load()) }

// Start starts the agents at the configured ramp in the background and returns at once,
// and the crashes if any; ctx bounds the ramp and the crashes (Close stops the agents).
func (f *Fleet) Start(ctx context.Context) {
	rctx, cancel := context.WithCancel(ctx)
	f.stopRamp, f.rampDone = cancel, make(chan struct{})
	if f.cfg.CrashEvery > 0 {
		cctx, stop := context.WithCancel(ctx)
		f.stopCrashes = stop
		f.crashing.Go(func() { f.crash(cctx) })
	}
	go func() {
		defer close(f.rampDone)
		begin := time.Now()
		for i := range f.cfg.Count {
			if f.cfg.Ramp > 0 {
				at := begin.Add(time.Duration(float64(i) / f.cfg.Ramp * float64(time.Second)))
				if d := time.Until(at); d > 0 {
					t := time.NewTimer(d)
					select {
					case <-rctx.Done():
						t.Stop()
						return
					case <-t.C:
					}
				}
			}
			if rctx.Err() != nil {
				return
			}
			if _, err := f.startAgent(f.cfg.First + i); err != nil {
				f.fail(err)
			}
		}
	}()
}

func (f *Fleet) fail(err error) {
	f.failed.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.errs) < 10 {
		f.errs = append(f.errs, err)
	}
}

// startAgent starts the agent of index i (again, after a crash: on the same data
// directory). It reports false when the fleet closed first.
func (f *Fleet) startAgent(i int) (bool, error) {
	id := AgentID(f.cfg.Prefix, i)
	sa := &simAgent{id: id, index: i, done: make(chan struct{})}
	grace := DefaultShutdownGrace
	if f.cfg.CrashEvery > 0 {
		grace = crashGrace
	}
	cfg := agent.Config{
		ID: id, DataDir: filepath.Join(f.cfg.DataDir, id), Registry: f.registry, NoUSB: true,
		Broker:       agent.Broker{URL: f.cfg.BrokerURL, Queue: agent.QueueDeclare, Backoff: f.transport.backoff},
		PollInterval: f.cfg.PollInterval, HeartbeatInterval: f.cfg.Heartbeat, ShutdownGrace: grace,
		Dial: func(ctx context.Context, c amqp.Config) (agent.Transport, error) {
			conn, err := f.transport.Dial(ctx, c)
			if err == nil {
				sa.mu.Lock()
				sa.conn = conn
				sa.mu.Unlock()
			}
			return conn, err
		},
		OpenModule: noModule,
	}
	if f.cfg.Tokens != nil {
		cfg.Modules, cfg.OpenModule = f.cfg.Tokens.Modules(id), f.cfg.Tokens.Open
	}
	cfg.Ready = func() {
		if !f.readied[i-f.cfg.First].Swap(true) {
			f.started.Add(1)
		}
	}
	a, err := agent.New(cfg, f.cfg.Log)
	if err != nil {
		return false, fmt.Errorf("agent %s: %w", id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sa.cancel = cancel
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		cancel()
		return false, nil
	}
	f.running = append(f.running, sa)
	f.mu.Unlock()
	go func() {
		defer close(sa.done)
		err := a.Run(ctx)
		switch {
		case err != nil && sa.killed.Load():
			// Killed part way (opening its journal, say): a killed process says nothing.
			f.cfg.Log.Debug().Err(err).Str("agent_id", id).Msg("the crashed agent ended with an error")
		case err != nil:
			f.fail(fmt.Errorf("agent %s: %w", id, err))
		}
	}()
	return true, nil
}

// crash crashes a random running agent at random intervals of CrashEvery on average,
// until ctx ends; each crashed agent starts again RestartAfter later.
func (f *Fleet) crash(ctx context.Context) {
	rng := rand.New(rand.NewPCG(f.cfg.Seed, uint64(f.cfg.First))) //nolint:gosec // a replayable simulation
	for {
		if sleepCtx(ctx, time.Duration(rng.ExpFloat64()*float64(f.cfg.CrashEvery))) != nil {
			return
		}
		f.mu.Lock()
		if len(f.running) == 0 || f.closed {
			f.mu.Unlock()
			continue
		}
		k := rng.IntN(len(f.running))
		sa := f.running[k]
		f.running = slices.Delete(f.running, k, k+1)
		f.mu.Unlock()
		f.crashes.Add(1)
		f.cfg.Log.Info().Str("agent_id", sa.id).Msg("crashing the agent")
		sa.kill()
		f.crashing.Go(func() {
			<-sa.done // its journal and lock are released
			if sleepCtx(ctx, f.cfg.RestartAfter) != nil {
				return
			}
			started, err := f.startAgent(sa.index)
			if err != nil {
				f.fail(fmt.Errorf("restarting after a crash: %w", err))
				return
			}
			if started {
				f.restarts.Add(1)
			}
		})
	}
}

// noModule is the OpenModule of agents without simulated tokens: they name no module, so
// it is never called; it is set so that an empty module list loads nothing.
func noModule(path string, _ pkcs11.Options) (*pkcs11.Module, error) {
	return nil, fmt.Errorf("fleetsim: no simulated module %q", path)
}

// Stop stops the n agents started last and waits for them; it returns their IDs.
func (f *Fleet) Stop(n int) []string {
	f.mu.Lock()
	n = min(n, len(f.running))
	stopping := f.running[len(f.running)-n:]
	f.running = f.running[:len(f.running)-n]
	f.mu.Unlock()
	ids := make([]string, 0, n)
	for _, sa := range stopping {
		ids = append(ids, sa.id)
	}
	stopAll(stopping)
	return ids
}

// StopAgents stops the running agents with these IDs and waits for them; it returns
// those it stopped. They stay stopped: a test holds a few workstations away while jobs
// are sent to them.
func (f *Fleet) StopAgents(ids []string) []string {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	f.mu.Lock()
	var stopping []*simAgent
	f.running = slices.DeleteFunc(f.running, func(sa *simAgent) bool {
		if want[sa.id] {
			stopping = append(stopping, sa)
			return true
		}
		return false
	})
	f.mu.Unlock()
	out := make([]string, 0, len(stopping))
	for _, sa := range stopping {
		out = append(out, sa.id)
	}
	stopAll(stopping)
	return out
}

// stopAll stops agents in waves of stopWave and waits for them.
func stopAll(agents []*simAgent) {
	for len(agents) > 0 {
		wave := agents[:min(stopWave, len(agents))]
		agents = agents[len(wave):]
		for _, sa := range wave {
			sa.cancel()
		}
		for _, sa := range wave {
			<-sa.done
		}
	}
}

// Close stops the ramp, the crashes (crashed agents stay down) and every agent, then the
// broker connections.
func (f *Fleet) Close() {
	if f.stopRamp != nil {
		f.stopRamp()
		<-f.rampDone
	}
	if f.stopCrashes != nil {
		f.stopCrashes()
	}
	f.crashing.Wait()
	f.mu.Lock()
	f.closed = true
	all := f.running
	f.running = nil
	f.mu.Unlock()
	stopAll(all)
	_ = f.transport.Close()
}
