// Package agent is the tokenfleet workstation agent as a running service: it wires the
// journal, the executor, the token watcher and the broker connection together, and owns
// every goroutine that keeps them going.
//
// Start-up, in this order (the executor's rules): lock the data directory (one agent per
// journal), load the sealing key pair, open the journal, load the PKCS#11 modules, make
// the executor and resume the jobs the journal left unfinished, then start the loops:
//
//   - the executor, which runs jobs whether or not the broker is reachable;
//   - the consumer of the agent's command queue, with an exclusive consumer: the broker
//     refuses a second agent with the same ID, which is how duplicate IDs are caught.
//     Dispatches, certificates and cancels are journalled by the executor and acked
//     then; a message the executor refuses as bad is dead-lettered, one it could not
//     journal is requeued. Nothing ever waits for a token while holding a delivery;
//   - the stock, which takes stock of the tokens (the hello's inventory) at start, on
//     every reconnection and whenever the watcher reports a change, off the send path;
//   - the sender, which publishes a hello (inventory, seal key, versions) first on every
//     connection, then the journal's outbox oldest first, marking each message sent once
//     the broker confirmed it, and a hello again when the stock changed; what jobs
//     produce while the broker is away waits in the outbox;
//   - heartbeats, jittered around protocol.HeartbeatInterval;
//   - the token watcher, whose reports ask the stock for a new stocktaking.
//
// Shutdown has one path, whatever asks for it (SIGTERM, SIGINT, the Windows service
// manager, the caller's context): the context given to Run ends. The consumer stops (an
// unacked delivery goes back to the queue), the executor brings each job to a safe point,
// the sender publishes what it can within Config.ShutdownGrace, and the connection closes.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent/executor"
	"github.com/tokenfleet/tokenfleet/agent/inventory"
	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/usb"
	"github.com/tokenfleet/tokenfleet/drivers/watch"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// Defaults for zero Config fields.
const (
	DefaultPollInterval  = executor.DefaultPollInterval
	DefaultShutdownGrace = 10 * time.Second
)

// QueueMode says how the agent makes sure its command queue exists.
type QueueMode string

const (
	// QueueAuto declares the queue on every connection, as QueueDeclare does, until the
	// broker refuses it for lack of the configure permission; from then on it checks the
	// queue passively, as QueueCheck does. An enrolled agent's broker user may not
	// configure anything, so it costs such an agent one refused attempt per start.
	QueueAuto QueueMode = "auto"
	// QueueDeclare declares the queue, on every connection: for development
	// brokers where agents share a user with configure rights (guest).
	QueueDeclare QueueMode = "declare"
	// QueueCheck only checks passively that the queue exists, which needs no permission:
	// for production, where the coordinator declares an agent's queue when it enrols it.
	// A missing queue is reported as "not enrolled" while the agent keeps retrying.
	QueueCheck QueueMode = "check"
)

// Valid reports whether m is a known mode.
func (m QueueMode) Valid() bool {
	switch m {
	case QueueAuto, QueueDeclare, QueueCheck:
		return true
	}
	return false
}

// Broker says how to reach the broker.
type Broker struct {
	// URL is amqp://user:password@host:port/vhost, or amqps:// for TLS.
	URL string
	// TLS configures amqps:// (nil: system roots).
	TLS *tls.Config
	// Heartbeat is the AMQP heartbeat interval; 0 means amqp.DefaultHeartbeat.
	Heartbeat time.Duration
	// Backoff paces reconnections; zero means the transport's default (0.5 s to 30 s).
	Backoff amqp.Backoff
	// Queue is how the command queue is made sure of; empty means QueueAuto.
	Queue QueueMode
	// CoordinatorUsers, if set, are the only broker users commands are accepted from.
	CoordinatorUsers []string
	// Password, if set, gives each connection attempt's password in place of the URL's
	// (an enrolled agent's, fetched anew when the broker refuses it: enrol.Password).
	// The agent then retries refusals for RefusedGrace from the first attempt on.
	Password func(ctx context.Context, refused bool) (string, error)
	// RefusedGrace is how long the agent, once it has been connected, keeps retrying
	// while the broker refuses its login or has no queue for it, before Run ends with a
	// *BrokerConfigError; at the first connection such a refusal ends Run at once. 0
	// means DefaultRefusedGrace.
	RefusedGrace time.Duration
}

// Config is what an Agent runs with.
type Config struct {
	// ID is the agent's ID (protocol.ValidateAgentID): its queue, its routing keys.
	ID     string
	Broker Broker
	// DataDir holds the journal, the sealing key and the lock file.
	DataDir string
	// Modules are the PKCS#11 modules to load; each must load. Empty: DefaultModules.
	Modules []string
	// Registry identifies USB token models; nil means the built-in registry.
	Registry *usb.Registry
	// NoUSB turns USB enumeration off (PKCS#11 polling only). Builds without libusb
	// (Windows) never enumerate USB.
	NoUSB bool
	// PollInterval is how often tokens are polled, by the watcher and by jobs waiting for
	// their token; 0 means DefaultPollInterval.
	PollInterval time.Duration
	// HeartbeatInterval is the mean time between heartbeats; 0 means
	// protocol.HeartbeatInterval.
	HeartbeatInterval time.Duration
	// ShutdownGrace bounds how long the outbox is flushed at shutdown; 0 means
	// DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// Ready, if set, is called once the agent works: journal open, jobs resumed, every
	// loop started. The broker may still be unreachable then: the agent works without it.
	Ready func()
	// Status, if set, receives a one-line description of the broker connection whenever
	// it changes (for systemd's STATUS=). It is called from the connection's goroutine and
	// must return quickly.
	Status func(string)
	// PKCS11Wrap, if set, is put in front of every PKCS#11 module the agent loads for its
	// jobs and its token watcher (pkcs11.Options.Wrap). A test seam: end-to-end tests pass
	// a drivers/pkcs11/faults.Injector's Wrap to emulate PIN lockouts or to stop the agent
	// at a chosen PKCS#11 call. Production configurations leave it nil.
	PKCS11Wrap func(pkcs11.Backend) pkcs11.Backend
	// MetricsListen, if set, is the address (host:port) where the agent serves Prometheus
	// metrics at /metrics (package agent/metrics); empty: no listener.
	MetricsListen string
	// Dial, if set, makes the agent's broker connection from the configuration the agent
	// would give amqp.Open (nil: amqp.Open). The fleet simulator's seam: its agents share
	// a few physical connections.
	Dial func(ctx context.Context, cfg amqp.Config) (Transport, error)
	// OpenModule, if set, opens every PKCS#11 module the agent and its inventory load by
	// path (nil: pkcs11.Open). The fleet simulator's seam for simulated tokens. With it
	// set, Modules is taken as it is: an empty list loads no module rather than
	// DefaultModules.
	OpenModule func(path string, opts pkcs11.Options) (*pkcs11.Module, error)
}

// Agent is the workstation agent.
type Agent struct {
	cfg      Config
	log      zerolog.Logger
	endpoint string // the broker URL without its password
	broker   brokerIdentity
	hostname string
	instance string // the hello's instance ID, new at each start
	started  time.Time
	running  atomic.Bool
}

// DuplicateIDError says another connected agent holds this agent's ID: the broker refused
// the exclusive consumer of its queue.
type DuplicateIDError struct {
	AgentID string
	Broker  string // the broker URL without password
	Err     error  // the transport's *amqp.QueueInUseError
}

func (e *DuplicateIDError) Error() string {
	return fmt.Sprintf("agent ID %s is already in use by another connected agent on this broker (%s): stop the other agent or give this one another ID", e.AgentID, e.Broker)
}

func (e *DuplicateIDError) Unwrap() error { return e.Err }

// New checks the configuration and makes an Agent; Run runs it.
func New(cfg Config, log zerolog.Logger) (*Agent, error) {
	if err := protocol.ValidateAgentID(cfg.ID); err != nil {
		return nil, fmt.Errorf("agent ID: %w", err)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("agent: a data directory is required")
	}
	endpoint, err := redactURL(cfg.Broker.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Broker.Queue == "" {
		cfg.Broker.Queue = QueueAuto
	}
	if !cfg.Broker.Queue.Valid() {
		return nil, fmt.Errorf("agent: queue mode %q: want auto, declare or check", cfg.Broker.Queue)
	}
	for name, d := range map[string]time.Duration{"poll interval": cfg.PollInterval, "heartbeat interval": cfg.HeartbeatInterval,
		"shutdown grace": cfg.ShutdownGrace, "AMQP heartbeat": cfg.Broker.Heartbeat, "broker refused grace": cfg.Broker.RefusedGrace} {
		if d < 0 {
			return nil, fmt.Errorf("agent: %s %v is negative", name, d)
		}
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = protocol.HeartbeatInterval
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.Broker.RefusedGrace == 0 {
		cfg.Broker.RefusedGrace = DefaultRefusedGrace
	}
	if cfg.Registry == nil {
		if cfg.Registry, err = usb.DefaultRegistry(); err != nil {
			return nil, fmt.Errorf("agent: built-in token registry: %w", err)
		}
	}
	host := hostname()
	return &Agent{
		cfg: cfg, endpoint: endpoint, hostname: host, instance: protocol.NewMessageID(),
		broker: newBrokerIdentity(cfg.ID, host, endpoint, cfg.Broker.URL),
		log:    log.With().Str("agent_id", cfg.ID).Logger(),
	}, nil
}

// redactURL checks a broker URL and returns it without its password.
func redactURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes the whole URL, password included.
		return "", errors.New("agent: the broker URL does not parse")
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return "", fmt.Errorf("agent: broker URL scheme %q: want amqp or amqps", u.Scheme)
	}
	if u.Host == "" {
		return "", errors.New("agent: the broker URL names no host")
	}
	if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	return u.String(), nil
}

// Run runs the agent until ctx ends or it cannot go on (another agent holds its ID:
// *DuplicateIDError), then shuts down as the package documentation says. It returns nil
// after a shutdown asked for by ctx. Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("agent: Run was called before")
	}
	a.started = time.Now()
	unlock, err := lockDataDir(a.cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()

	pair, err := keys.LoadOrCreate(a.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("sealing key: %w", err)
	}
	j, err := journal.Open(ctx, filepath.Join(a.cfg.DataDir, journal.FileName), pair, journal.Options{Log: a.log})
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer func() {
		if err := j.Close(); err != nil {
			a.log.Error().Err(err).Msg("closing the journal")
		}
	}()

	enum := a.openUSB()
	if c, ok := enum.(interface{ Close() error }); ok {
		defer func() { _ = c.Close() }()
	}
	mods, err := a.openModules(ctx, enum)
	if err != nil {
		return err
	}
	defer func() {
		if err := mods.close(); err != nil {
			a.log.Warn().Err(err).Msg("closing PKCS#11 modules")
		}
	}()

	inv := func(context.Context) ([]protocol.Token, error) { return nil, nil }
	if len(mods.mods) > 0 {
		inv = executor.NewInventory(inventory.Options{Modules: mods.paths(), Registry: a.cfg.Registry, USB: enum, Log: a.log,
			Open: a.cfg.OpenModule}, mods, a.log)
	}
	m := a.newMetrics()
	ex, err := executor.New(executor.Config{
		AgentID: a.cfg.ID, Journal: j, Keys: pair, Tokens: mods,
		FactoryPINs: executor.USBFactoryPINs{USB: enum, Registry: a.cfg.Registry},
		Inventory:   inv, PollInterval: a.cfg.PollInterval, Log: a.log, Observer: executorObserver(m),
	})
	if err != nil {
		return err
	}
	n, err := ex.Resume(ctx)
	if err != nil {
		return fmt.Errorf("resuming jobs: %w", err)
	}
	if n > 0 {
		a.log.Info().Int("jobs", n).Msg("resuming unfinished jobs")
	}

	// The stock of tokens the hello carries, taken off the send path.
	tokenStock := newStock(a.stocktaking(inv), a.log.With().Str("component", "stock").Logger(), retryBackoff(a.cfg.Broker.Backoff))
	// Signals from the connection to the sender; one pending is enough.
	connected := make(chan struct{}, 1)
	var generation atomic.Uint64 // counts successful connections
	queue := &queueCheck{mode: a.cfg.Broker.Queue, agentID: a.cfg.ID, log: a.log}
	// Room for the connection's refusal and the consumer's error: neither send blocks.
	fatal := make(chan error, 2)
	// An enrolled agent's refused login is a password to fetch anew, from the first
	// attempt on.
	refusals := &refusalWatch{id: a.broker, grace: a.cfg.Broker.RefusedGrace, now: time.Now, connected: a.cfg.Broker.Password != nil}
	var refusedOnce sync.Once
	// The connection outlives ctx: the sender flushes the outbox after ctx ended.
	dial := a.cfg.Dial
	if dial == nil {
		dial = dialAMQP
	}
	conn, err := dial(context.WithoutCancel(ctx), amqp.Config{
		URL: a.cfg.Broker.URL, TLS: a.cfg.Broker.TLS, Password: a.cfg.Broker.Password,
		Name:      fmt.Sprintf("tokenfleet-agent %s@%s", a.cfg.ID, a.hostname),
		Heartbeat: a.cfg.Broker.Heartbeat, Backoff: a.cfg.Broker.Backoff,
		Topology: queue.declare,
		OnStatus: func(st amqp.Status) {
			if st.State == amqp.StateConnected {
				generation.Add(1)
				// Each connection hears the latest stock at once, then a fresh one if it
				// differs: certificates written while the broker was away are no token
				// change the watcher reports.
				tokenStock.request()
				signal(connected)
			}
			a.connectionStatus(st)
			if e := refusals.status(st); e != nil {
				refusedOnce.Do(func() { fatal <- e })
			}
		},
		Logger: a.log,
	})
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	defer func() { _ = conn.Close() }()
	stopMetrics, err := a.serveMetrics(ctx, m, conn, filepath.Join(a.cfg.DataDir, journal.FileName))
	if err != nil {
		return err
	}
	defer stopMetrics()

	w := watch.New(watch.Config{PollInterval: a.cfg.PollInterval, Registry: a.cfg.Registry}, watchUSB(enum), mods, a.log)
	s := &sender{
		conn: conn, journal: j, log: a.log.With().Str("component", "sender").Logger(), stock: tokenStock,
		hello:      func(toks []protocol.Token) (*protocol.Envelope, error) { return a.hello(toks, pair) },
		generation: &generation, connected: connected,
		backoff: retryBackoff(a.cfg.Broker.Backoff),
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	var execDone, consDone sync.WaitGroup
	execDone.Go(func() { _ = ex.Run(runCtx) }) // returns nil once its jobs are at a safe point
	// Nothing is said on the broker before the exclusive consumer holds the queue: until
	// then another agent may own this ID, and a hello would hand the coordinator this
	// agent's seal key in its name.
	subscribed := make(chan struct{})
	consDone.Go(func() {
		if err := a.consume(runCtx, conn, ex, func() { close(subscribed) }); err != nil {
			fatal <- err
		}
	})
	afterSubscribed := func(fn func()) func() {
		return func() {
			select {
			case <-subscribed:
				fn()
			case <-runCtx.Done():
			}
		}
	}
	wg.Go(func() { _ = w.Run(runCtx) })
	wg.Go(func() { a.watchTokens(w.Events(), tokenStock.request) })
	// Taking stock says nothing on the broker: it starts at once, beside the subscription.
	wg.Go(func() { tokenStock.run(runCtx) })
	wg.Go(afterSubscribed(func() { a.heartbeats(runCtx, conn, ex) }))
	wg.Go(afterSubscribed(func() { s.run(runCtx) }))

	a.log.Info().Str("broker", a.endpoint).Str("data_dir", a.cfg.DataDir).Strs("modules", mods.paths()).
		Str("version", version()).Msg("agent started")
	if a.cfg.Ready != nil {
		a.cfg.Ready()
	}

	var runErr error
	select {
	case <-ctx.Done():
		a.log.Info().Msg("shutting down")
	case runErr = <-fatal:
		// Run returns the error and its caller reports it (the command line on stderr, the
		// Windows service in its log): logged here too, it would be said twice.
		a.log.Info().Msg("cannot go on; shutting down")
	}
	stop()
	execDone.Wait() // every job at a safe point, its messages in the outbox
	wg.Wait()

	// What is left is bounded by the grace period: a broker that stopped answering must not
	// hold the shutdown (closing the consumer's channel waits for the broker).
	graceCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownGrace)
	defer cancel()
	if !waitGroup(graceCtx, &consDone) {
		a.log.Warn().Msg("the consumer did not stop within the grace period; closing the connection under it")
	}
	select {
	case <-subscribed:
		if err := s.flush(graceCtx); err != nil {
			a.log.Warn().Err(err).Msg("outbox not flushed within the grace period; it is sent on the next start")
		}
	default:
		// Never held the queue (another agent holds the ID): nothing goes out in its name.
	}
	_ = conn.Close() // bounded: it drops a connection that does not answer
	consDone.Wait()
	a.log.Info().Msg("agent stopped")
	return runErr
}

// waitGroup waits for wg until ctx ends; it reports whether wg finished.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// watchUSB gives the watcher the USB enumerator, or no source at all when there is none
// (a nil interface, not a nil pointer in one).
func watchUSB(enum usb.Enumerator) watch.USBSource {
	if enum == nil {
		return nil
	}
	return enum
}

// openUSB starts USB enumeration, or returns nil when it is off or unavailable.
func (a *Agent) openUSB() usb.Enumerator {
	if a.cfg.NoUSB {
		return nil
	}
	e, err := usb.NewGoUSB(a.log, a.cfg.Registry.Known)
	if err != nil {
		a.log.Info().Err(err).Msg("USB enumeration unavailable: tokens are found by PKCS#11 polling only")
		return nil
	}
	return e
}

// openModules loads the configured modules, every one of which must load, or the
// DefaultModules, skipping those that do not.
func (a *Agent) openModules(ctx context.Context, enum usb.Enumerator) (*modules, error) {
	paths, explicit := a.cfg.Modules, len(a.cfg.Modules) > 0 || a.cfg.OpenModule != nil
	if !explicit {
		paths = DefaultModules(ctx, a.cfg.Registry, enum)
		if len(paths) == 0 {
			a.log.Warn().Msg("no PKCS#11 module configured and none found: no token can be used; install OpenSC or configure modules")
		}
	}
	var mods []*pkcs11.Module
	for _, p := range paths {
		m, err := a.openModule(p, pkcs11.Options{Logger: a.log, Wrap: a.cfg.PKCS11Wrap})
		if err != nil {
			if explicit {
				for _, m := range mods {
					_ = m.Close()
				}
				return nil, fmt.Errorf("PKCS#11 module: %w", err)
			}
			a.log.Warn().Err(err).Str("module", p).Msg("skipping a PKCS#11 module that does not load")
			continue
		}
		mods = append(mods, m)
	}
	return newModules(mods), nil
}

// watchTokens turns the watcher's reports into stocktaking requests, until it stops.
func (a *Agent) watchTokens(events <-chan watch.Event, changed func()) {
	for ev := range events {
		switch ev.Kind {
		case watch.Inserted, watch.Removed, watch.Changed:
			// The watcher logs the change itself.
			changed()
		case watch.SourceError:
			a.log.Warn().Err(ev.Err).Str("source", ev.Source).Str("module", ev.ModulePath).Msg("token polling fails; token presence is held as it was")
		case watch.SourceRecovered:
			a.log.Info().Str("source", ev.Source).Str("module", ev.ModulePath).Msg("token polling works again")
		case watch.DeviceAttached, watch.DeviceDetached:
			a.log.Debug().Str("event", string(ev.Kind)).Msg("USB token device")
		}
	}
}

// StatusConnected begins the status line (Config.Status) of a connection the broker took.
const StatusConnected = "connected to "

// connectionStatus reports the connection's state changes: logs for what the transport
// does not say itself, and the status line for the service manager.
func (a *Agent) connectionStatus(st amqp.Status) {
	var line string
	switch st.State {
	case amqp.StateConnected:
		line = StatusConnected + a.endpoint
	case amqp.StateConnecting:
		return
	case amqp.StateDisconnected:
		if e := a.broker.classify(st.Err); e != nil {
			line = fmt.Sprintf("%s; retrying in %s", e.What(), st.RetryIn.Round(time.Second))
			if e.Problem == ProblemNotEnrolled {
				line = fmt.Sprintf("agent %s is not enrolled: its queue does not exist on %s; retrying in %s", a.cfg.ID, a.endpoint, st.RetryIn.Round(time.Second))
			}
			a.log.Error().Str("broker", a.endpoint).Str("problem", string(e.Problem)).Str("retry_in", st.RetryIn.String()).
				Msgf("%s: %s", e.What(), e.Fix())
		} else {
			line = fmt.Sprintf("broker %s unreachable (%v); retrying in %s", a.endpoint, st.Err, st.RetryIn.Round(time.Second))
		}
	case amqp.StateClosed:
		line = "disconnected from the broker"
	}
	if a.cfg.Status != nil {
		a.cfg.Status(line)
	}
}

// signal sets a one-slot flag channel without blocking.
func signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// retryBackoff paces the sender's retries like the connection's.
func retryBackoff(b amqp.Backoff) amqp.Backoff {
	if b == (amqp.Backoff{}) {
		return amqp.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	}
	return b
}
