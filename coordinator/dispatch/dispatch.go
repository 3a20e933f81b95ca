package dispatch

import (
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/ratelimit"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// AgentUsers says how agents authenticate to the broker, which decides what the sender
// check of their events can rely on.
type AgentUsers string

const (
	// AgentUsersPerAgent: each agent has its own broker user, recorded at enrolment.
	AgentUsersPerAgent AgentUsers = "per_agent"
	// AgentUsersShared: agents share one broker user (development on guest/guest).
	AgentUsersShared AgentUsers = "shared"
)

// Defaults of Options.
const (
	DefaultPublishInterval  = 2 * time.Second
	DefaultWaitingInterval  = 30 * time.Second
	DefaultHeartbeatTimeout = 3 * protocol.HeartbeatInterval
	DefaultPublishTimeout   = 30 * time.Second
	// DefaultOutboxRetention and DefaultInboxRetention bound what the purge keeps. The
	// inbox must outlive any redelivery of a message it deduplicates.
	DefaultOutboxRetention = 7 * 24 * time.Hour
	DefaultInboxRetention  = 30 * 24 * time.Hour
)

// Actors of the dispatcher's own changes in timelines and the audit log.
const (
	ActorDispatch = "system:dispatch"
	ActorCA       = "system:ca"
)

// Options configure a Dispatcher.
type Options struct {
	Store store.Store // required
	// CA signs the certificates of checked CSRs and revokes them. Required.
	CA ca.CA
	// ResultKey is the coordinator's key for the PINs agents return (LoadOrCreateResultKey).
	// Required.
	ResultKey *ecdh.PrivateKey
	// BrokerURL is the broker's AMQP URL. Required for Run.
	BrokerURL string
	// ConnectionName names the broker connection in the broker's tools.
	ConnectionName string
	// AgentUsers is how agents authenticate to the broker; required.
	AgentUsers AgentUsers
	Logger     zerolog.Logger
	Now        func() time.Time // nil: time.Now

	// Zero values take the defaults above.
	PublishInterval  time.Duration // how often the outbox is read when nothing wakes the publisher
	PublishTimeout   time.Duration // bound on one publish waiting for the broker
	WaitingInterval  time.Duration // how often approved jobs that wait are tried again
	HeartbeatTimeout time.Duration // an agent without a heartbeat for this long is offline
	// PresenceFlushInterval is how often heartbeats held in memory are written, in one
	// transaction; zero: DefaultPresenceFlushInterval, and never more than a quarter of
	// HeartbeatTimeout. Negative writes each heartbeat in a transaction of its own (the
	// cost the batches spare, kept to measure against).
	PresenceFlushInterval time.Duration
	// BrokerBackoff paces reconnections; zero: the transport's default.
	BrokerBackoff amqp.Backoff
	// Observer hears of refusals, dead-lettered messages and signatures; nil: nobody.
	Observer Observer
}

// Dispatcher is the coordinator's dispatcher; see the package documentation. It is safe
// for concurrent use. The service calls its seams inside transactions; Run owns the
// goroutines.
type Dispatcher struct {
	st        store.Store
	ca        ca.CA
	resultKey *ecdh.PrivateKey
	resultPub []byte // PKIX DER of resultKey's public key, the dispatches' result_key
	log       zerolog.Logger
	now       func() time.Time
	opts      Options
	profiles  *profileCache

	publishKick chan struct{} // wakes the publisher; buffered 1
	// declaring holds a token for each channel declaring agents' queues, across every
	// batch at once (AgentsEnrolled): batches in parallel share declareChannels, far
	// below a connection's 2,047 channels.
	declaring   chan struct{}
	waitingKick chan struct{} // wakes the waiting sweeper; buffered 1

	mu      sync.Mutex // guards the fields below
	conn    *amqp.Conn // nil until Run connects
	running bool
	owner   JobOwner // set by Bind, before Run

	refusalLog *ratelimit.Limiter // spares the audit log repeated refusals of heartbeats
	// refusalRecord spares the agents' rows the same, at a shorter window: the refusal
	// an operator sees beside an agent should be minutes old at most.
	refusalRecord *ratelimit.Limiter
	backoffs      *rowBackoffs
	early         *earlyCounts
	presence      *presence
	// beforeMark, when set (tests), runs before each marking of confirmed rows.
	beforeMark func()
}

// New checks o and returns a Dispatcher; nothing runs until Run.
func New(o Options) (*Dispatcher, error) {
	switch {
	case o.Store == nil:
		return nil, errors.New("dispatch: no store")
	case o.CA == nil:
		return nil, errors.New("dispatch: no CA")
	case o.ResultKey == nil:
		return nil, errors.New("dispatch: no result key")
	}
	switch o.AgentUsers {
	case AgentUsersPerAgent, AgentUsersShared:
	default:
		return nil, fmt.Errorf("dispatch: agent users %q: want %q or %q", o.AgentUsers, AgentUsersPerAgent, AgentUsersShared)
	}
	pub, err := seal.MarshalPublicKey(o.ResultKey.PublicKey())
	if err != nil {
		return nil, fmt.Errorf("dispatch: result key: %w", err)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.PublishInterval <= 0 {
		o.PublishInterval = DefaultPublishInterval
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.WaitingInterval <= 0 {
		o.WaitingInterval = DefaultWaitingInterval
	}
	if o.HeartbeatTimeout <= 0 {
		o.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if o.PresenceFlushInterval == 0 {
		// The database's last heartbeat lags the agent's by up to one interval: keep
		// that small next to the timeout the offline sweep applies to it.
		o.PresenceFlushInterval = min(DefaultPresenceFlushInterval, max(o.HeartbeatTimeout/4, time.Millisecond))
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.ConnectionName == "" {
		o.ConnectionName = "tokenfleet-coordinator"
	}
	return &Dispatcher{
		st: o.Store, ca: o.CA, resultKey: o.ResultKey, resultPub: pub,
		log: o.Logger, now: o.Now, opts: o, profiles: newProfileCache(),
		publishKick: make(chan struct{}, 1), waitingKick: make(chan struct{}, 1), declaring: make(chan struct{}, declareChannels),
		refusalLog: ratelimit.New(time.Hour, maxLimiterKeys), refusalRecord: ratelimit.New(time.Minute, maxLimiterKeys), backoffs: newRowBackoffs(), early: newEarlyCounts(),
		presence: newPresence(),
	}, nil
}

// JobOwner is the one owner of job state (service.Service): every change the dispatcher
// makes to a job, for an agent's event, a broker confirmation or a dispatch that cannot be
// built, runs in one of its transactions and through its transition table.
type JobOwner interface {
	UpdateJobs(ctx context.Context, fn func(jt *service.JobTx) error) error
}

// Bind gives the dispatcher the owner of job state. Call it once, before Run: the
// service is built with the dispatcher as its seam, so it comes second.
func (d *Dispatcher) Bind(o JobOwner) {
	d.mu.Lock()
	d.owner = o
	d.mu.Unlock()
}

func (d *Dispatcher) jobOwner() JobOwner {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.owner
}

// clock is the current time in store precision.
func (d *Dispatcher) clock() time.Time { return d.now().UTC().Truncate(time.Microsecond) }

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Store wraps st so that every transaction that writes to the outbox wakes the publisher
// once it has committed. Give the service this store: messages caused by approvals,
// cancellations and CA decisions then leave at once instead of at the next poll.
func (d *Dispatcher) Store(st store.Store) store.Store { return notifyingStore{Store: st, d: d} }

type notifyingStore struct {
	store.Store
	d *Dispatcher
}

func (n notifyingStore) InTx(ctx context.Context, fn func(tx store.Tx) error) error {
	var wrote bool
	err := n.Store.InTx(ctx, func(tx store.Tx) error {
		wrote = false
		return fn(outboxWatch{Tx: tx, wrote: &wrote})
	})
	if err == nil && wrote {
		kick(n.d.publishKick)
	}
	return err
}

// outboxWatch notes that the transaction queued a message.
type outboxWatch struct {
	store.Tx
	wrote *bool
}

func (t outboxWatch) AddOutbox(ctx context.Context, m store.OutboxMessage) (store.OutboxMessage, error) {
	*t.wrote = true
	return t.Tx.AddOutbox(ctx, m)
}

// update runs fn in a transaction of the job owner, again after a lost compare-and-set;
// the publisher wakes after a commit that queued messages (the owner's store is the one
// Store wraps).
func (d *Dispatcher) update(ctx context.Context, fn func(jt *service.JobTx) error) error {
	o := d.jobOwner()
	if o == nil {
		return errors.New("dispatch: no owner of job state; call Bind before Run")
	}
	return o.UpdateJobs(ctx, fn)
}

// auditTx appends an entry at the current time.
func (d *Dispatcher) auditTx(ctx context.Context, tx store.Tx, e audit.Entry) error {
	if e.Time.IsZero() {
		e.Time = d.clock()
	}
	_, err := tx.AppendAudit(ctx, e, audit.Seal)
	return err
}

// fail moves a job to failed with a coded error, through the owner's table.
func (d *Dispatcher) fail(ctx context.Context, jt *service.JobTx, j store.Job, actor string, code protocol.ErrorCode, msg string) (store.Job, error) {
	return jt.Transition(ctx, j, jobs.StateFailed, store.JobChange{Actor: actor, Reason: msg,
		Error: &store.JobError{Code: string(code), Message: msg}})
}

// markDispatched moves the job from approved to dispatched when attempt is still its
// attempt, and returns the job as it is now. The broker's confirmation of the dispatch,
// or any report of the agent on the attempt, proves the dispatch reached the agent's
// queue.
func (d *Dispatcher) markDispatched(ctx context.Context, jt *service.JobTx, j store.Job, attempt int, reason string) (store.Job, error) {
	if !awaitsDispatch(j, attempt) {
		return j, nil
	}
	return jt.Transition(ctx, j, jobs.StateDispatched, store.JobChange{Actor: ActorDispatch, Reason: reason})
}

// awaitsDispatch reports whether j waits, approved, for the dispatch of attempt to be
// known to have reached the agent's queue.
func awaitsDispatch(j store.Job, attempt int) bool {
	return j.State == jobs.StateApproved && j.Attempt == attempt
}

func agentActor(id string) string { return service.AgentActor(id) }

// setConn records the broker connection of Run.
func (d *Dispatcher) setConn(c *amqp.Conn) {
	d.mu.Lock()
	d.conn = c
	d.mu.Unlock()
}

func (d *Dispatcher) brokerConn() *amqp.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conn
}

// ResultPublicKey is the PKIX DER public key agents seal PINs to (the dispatches'
// result_key).
func (d *Dispatcher) ResultPublicKey() []byte { return append([]byte(nil), d.resultPub...) }

// maxLimiterKeys bounds the memory of the refusal limiter and of the early counts.
const maxLimiterKeys = 10_000
