package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"
)

// Defaults for Config.
const (
	DefaultHeartbeat   = 10 * time.Second
	DefaultDialTimeout = 15 * time.Second
	DefaultName        = "tokenfleet"
)

// closeTimeout bounds the connection.close handshake when the Conn closes.
const closeTimeout = 2 * time.Second

// Config configures a Conn.
type Config struct {
	// URL is amqp://user:password@host:port/vhost, or amqps:// for TLS.
	URL string
	// TLS configures amqps:// connections (nil: system roots, server name
	// from the URL). Setting it with an amqp:// URL is an error rather than
	// a silently clear-text connection.
	TLS *tls.Config
	// Name is the connection_name client property the broker's tools show,
	// e.g. "tokenfleet-agent ws-01@host". Default DefaultName.
	Name string
	// Password, if set, gives the password of each connection attempt in place of the
	// URL's: refused says the broker refused the previous attempt's login, so that a
	// renewed password may be fetched (an agent whose credentials were rotated). An error
	// counts as a failed attempt, retried with the backoff.
	Password func(ctx context.Context, refused bool) (string, error)
	// UserID is the user_id property of every publish, which RabbitMQ
	// checks against the connection's user. Default: the URL's user
	// ("guest" if it names none). Set it when the broker user is not the
	// URL's, as with EXTERNAL authentication by client certificate.
	UserID string
	// Heartbeat is the AMQP heartbeat interval; a dead peer is noticed
	// after about two. Default DefaultHeartbeat.
	Heartbeat time.Duration
	// DialTimeout bounds the TCP, TLS and AMQP handshakes of one attempt.
	// Default DefaultDialTimeout.
	DialTimeout time.Duration
	// Backoff paces reconnection attempts. Default 500ms to 30s.
	Backoff Backoff
	// Topology runs on a fresh channel after every connection, before the
	// connection is used: DeclareShared for a coordinator, CheckAgentQueue
	// for an agent. An error ends the connection and counts as a failed
	// attempt, so an agent that is not enrolled yet keeps retrying (and
	// reports why) until it is.
	Topology func(ch Declarer) error
	// OnStatus, if set, is called with every status change, from the
	// connection's own goroutine: it must return quickly and must not call
	// Close.
	OnStatus func(Status)
	// Logger receives the connection's log. The zero value logs nothing.
	Logger zerolog.Logger
}

// State is the connection's state.
type State int

const (
	// StateConnecting: an attempt is under way.
	StateConnecting State = iota + 1
	// StateConnected: connected, topology declared; publishes and
	// consumers run.
	StateConnected
	// StateDisconnected: the last attempt failed or the connection was
	// lost; the next attempt starts after Status.RetryIn.
	StateDisconnected
	// StateClosed: Close was called or the Conn's context ended.
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// Status is a snapshot of the connection, for logs and health reports.
type Status struct {
	State State
	// Err is why the connection was lost or the last attempt failed.
	Err error
	// RetryIn is the wait before the next attempt (StateDisconnected).
	RetryIn time.Duration
	// Failures counts consecutive failed attempts.
	Failures int
	// Since is when the state was entered.
	Since time.Time
}

// Conn is a connection to the broker that reconnects by itself: after a
// loss it waits (Config.Backoff), dials again, re-runs Config.Topology, and
// its consumers subscribe again, until Close or the context given to Open
// ends.
//
// It uses its own loop, not amqp091-go's opt-in recovery: that recovery is
// experimental, re-subscribes consumers and re-declares topology out of
// sight (an exclusive consumer refused after a reconnection, or an agent
// whose queue was deleted, would go unreported), and brings nothing for
// publishes, whose confirms are lost with the connection either way.
type Conn struct {
	cfg      Config
	endpoint string // the URL without password, for logs and errors
	user     string // the URL's user and vhost, for a refused login
	vhost    string
	userID   string
	log      zerolog.Logger

	ctx    context.Context // ends when the Conn closes
	cancel context.CancelFunc
	wg     sync.WaitGroup // the supervisor, confirm readers and consumers

	sharedUserWarning sync.Once
	loginRefused      bool // the last dial's login was refused; only the supervisor touches it

	mu      sync.Mutex // guards the fields below
	closing bool       // no goroutine may start once set
	sess    *session   // nil while not connected
	status  Status
	changed chan struct{} // closed and replaced on every change of sess or status
}

// session is one AMQP connection, from a successful dial to its loss.
type session struct {
	conn   *amqp091.Connection
	closes chan *amqp091.Error
	done   chan struct{} // closed when the connection is gone
	err    error         // why; written before done is closed

	pubMu sync.Mutex // guards pub; held while a publishing channel opens
	pub   *confirmChannel

	blockMu   sync.Mutex    // guards unblocked
	unblocked chan struct{} // non-nil while the broker blocks publishing; closed when it stops
}

// setBlocked records the broker's connection.blocked / unblocked.
func (s *session) setBlocked(blocked bool) {
	s.blockMu.Lock()
	defer s.blockMu.Unlock()
	switch {
	case blocked && s.unblocked == nil:
		s.unblocked = make(chan struct{})
	case !blocked && s.unblocked != nil:
		close(s.unblocked)
		s.unblocked = nil
	}
}

// waitUnblocked waits while the broker blocks publishing. A publish sent
// then would sit in a socket write that no context can interrupt.
func (s *session) waitUnblocked(ctx context.Context) error {
	s.blockMu.Lock()
	ch := s.unblocked
	s.blockMu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-s.done:
		return errNotSent
	case <-ctx.Done():
		return fmt.Errorf("the broker blocks publishing (resource alarm): %w", ctx.Err())
	}
}

func (s *session) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return !s.conn.IsClosed()
	}
}

// Open validates cfg and starts connecting in the background; it does not
// wait for the broker (see Ready). The Conn runs until Close is called or
// ctx ends.
func Open(ctx context.Context, cfg Config) (*Conn, error) {
	uri, err := amqp091.ParseURI(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("broker URL: %w", err)
	}
	if cfg.TLS != nil && uri.Scheme != "amqps" {
		return nil, fmt.Errorf("broker URL: a TLS configuration is set but the URL scheme is %s, not amqps", uri.Scheme)
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = defaultBackoff
	}
	if !cfg.Backoff.valid() {
		return nil, fmt.Errorf("backoff: want 0 < Min <= Max, got %v and %v", cfg.Backoff.Min, cfg.Backoff.Max)
	}
	c := &Conn{
		cfg:      cfg,
		endpoint: fmt.Sprintf("%s://%s@%s:%d/%s", uri.Scheme, uri.Username, uri.Host, uri.Port, url.PathEscape(uri.Vhost)),
		userID:   cfg.UserID,
		user:     uri.Username,
		vhost:    uri.Vhost,
		changed:  make(chan struct{}),
	}
	if c.userID == "" {
		c.userID = uri.Username
	}
	c.log = cfg.Logger.With().Str("broker", c.endpoint).Str("connection_name", cfg.Name).Logger()
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.status = Status{State: StateConnecting, Since: time.Now()}
	c.wg.Add(1)
	go c.run()
	return c, nil
}

// Close closes the connection and waits until every goroutine of the Conn
// and of its consumers has ended. Publishes waiting for a confirm return
// ErrUnconfirmed. Close may be called more than once, but not from a
// consumer's handler.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return nil
}

// Status returns the connection's current status.
func (c *Conn) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// UserID is the user_id property this Conn publishes with.
func (c *Conn) UserID() string { return c.userID }

// Ready waits until the Conn is connected with its topology declared. When
// ctx ends first, the error says why the Conn is not connected.
func (c *Conn) Ready(ctx context.Context) error {
	_, err := c.session(ctx)
	return err
}

// Declare runs fn on a fresh channel of the current connection, waiting for
// one while ctx allows. The coordinator uses it to declare an agent's queue
// when it enrols the agent (DeclareAgent).
func (c *Conn) Declare(ctx context.Context, fn func(ch Declarer) error) error {
	s, err := c.session(ctx)
	if err != nil {
		return err
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return fmt.Errorf("opening a channel: %w", err)
	}
	defer func() { _ = ch.Close() }() // fails harmlessly if a refusal closed it
	return fn(ch)
}

// session returns the live session, waiting for one while ctx allows.
func (c *Conn) session(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		s, st, changed := c.sess, c.status, c.changed
		c.mu.Unlock()
		if s != nil && s.alive() {
			return s, nil
		}
		select {
		case <-changed:
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-ctx.Done():
			if st.Err != nil {
				return nil, fmt.Errorf("not connected to the broker (%s: %w): %w", st.State, st.Err, ctx.Err())
			}
			return nil, fmt.Errorf("not connected to the broker (%s): %w", st.State, ctx.Err())
		}
	}
}

// goroutine starts fn as a goroutine the Conn waits for on Close, unless the
// Conn is closing. Not a bare wg.Go: consumers and confirm readers start from
// callers' goroutines at any time, and none may be added once Close waits.
func (c *Conn) goroutine(fn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.wg.Go(fn)
	return true
}

func (c *Conn) setStatus(st Status) {
	st.Since = time.Now()
	c.mu.Lock()
	c.status = st
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	if c.cfg.OnStatus != nil {
		c.cfg.OnStatus(st)
	}
}

func (c *Conn) setSession(s *session) {
	c.mu.Lock()
	c.sess = s
	c.mu.Unlock()
	c.setStatus(Status{State: StateConnected})
}

func (c *Conn) endSession(s *session, why error) {
	s.err = why
	close(s.done)
	c.mu.Lock()
	if c.sess == s {
		c.sess = nil
	}
	c.mu.Unlock()
}

// run is the supervisor: connect, watch, back off, again.
func (c *Conn) run() {
	defer c.wg.Done()
	defer c.setStatus(Status{State: StateClosed, Err: ErrClosed})
	failures := 0
	var last error // the previous attempt's failure: an attempt under way still says why it is needed
	for {
		c.setStatus(Status{State: StateConnecting, Failures: failures, Err: last})
		s, err := c.connect()
		what := "broker unreachable, retrying"
		if err == nil {
			failures = 0
			c.setSession(s)
			c.log.Info().Msg("connected to the broker")
			err = c.watch(s)
			what = "connection to the broker lost, reconnecting"
		}
		if c.ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, ErrLoginRefused):
			what = "the broker refused the login, retrying"
		case errors.Is(err, ErrNotEnrolled):
			what = "the agent's queue does not exist (not enrolled), retrying"
		case errors.Is(err, ErrCommandRouteRefused):
			what = "the broker user may not write to the default exchange (the error says what to grant), retrying"
		}
		delay := c.cfg.Backoff.Delay(failures)
		failures++
		last = err
		c.setStatus(Status{State: StateDisconnected, Err: err, RetryIn: delay, Failures: failures})
		c.log.Warn().Err(err).Int("failures", failures).Dur("retry_in_ms", delay).
			Msgf("%s in %s", what, roundDelay(delay))
		if !sleep(c.ctx, delay) {
			return
		}
	}
}

// roundDelay keeps "retrying in 4s" readable without turning 300ms into 0s.
func roundDelay(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// connect dials once and declares the topology.
func (c *Conn) connect() (*session, error) {
	// The AMQP and TLS handshakes and the topology calls ignore contexts:
	// closing the socket when the Conn closes interrupts them.
	var stopInterrupt func() bool
	defer func() {
		if stopInterrupt != nil {
			stopInterrupt()
		}
	}()
	acfg := amqp091.Config{
		Heartbeat:  c.cfg.Heartbeat,
		Locale:     "en_US",
		Properties: amqp091.NewConnectionProperties(),
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: c.cfg.DialTimeout}
			nc, err := d.DialContext(c.ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// amqp091-go clears the deadline once the AMQP handshake is done.
			if err := nc.SetDeadline(time.Now().Add(c.cfg.DialTimeout)); err != nil {
				_ = nc.Close()
				return nil, err
			}
			stopInterrupt = context.AfterFunc(c.ctx, func() { _ = nc.Close() })
			return nc, nil
		},
	}
	acfg.Properties.SetClientConnectionName(c.cfg.Name)
	if c.cfg.TLS != nil {
		acfg.TLSClientConfig = c.cfg.TLS.Clone() // the library fills in ServerName
	}
	dialURL := c.cfg.URL
	if c.cfg.Password != nil {
		pw, err := c.cfg.Password(c.ctx, c.loginRefused)
		if err != nil {
			return nil, fmt.Errorf("the password for %s: %w", c.endpoint, err)
		}
		u, err := url.Parse(c.cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("broker URL: %w", err)
		}
		u.User = url.UserPassword(c.user, pw)
		dialURL = u.String()
	}
	conn, err := amqp091.DialConfig(dialURL, acfg)
	if err != nil {
		err = dialError(c.user, c.vhost, err)
		var lr *LoginRefusedError
		c.loginRefused = errors.As(err, &lr) && !lr.VhostDenied
		return nil, fmt.Errorf("connecting to %s: %w", c.endpoint, err)
	}
	c.loginRefused = false
	s := &session{
		conn:   conn,
		closes: conn.NotifyClose(make(chan *amqp091.Error, 1)),
		done:   make(chan struct{}),
	}
	if c.cfg.Topology != nil {
		if err := c.declare(conn); err != nil {
			_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
			return nil, err
		}
	}
	return s, nil
}

func (c *Conn) declare(conn *amqp091.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("opening a channel: %w", err)
	}
	defer func() { _ = ch.Close() }() // fails harmlessly if a refusal closed it
	if err := c.cfg.Topology(ch); err != nil {
		return fmt.Errorf("declaring the topology: %w", err)
	}
	return nil
}

// errConnectionClosed is the reason for a connection that ended without
// the broker saying why.
var errConnectionClosed = errors.New("connection closed")

// watch waits until the session's connection ends or the Conn closes.
func (c *Conn) watch(s *session) error {
	blocked := s.conn.NotifyBlocked(make(chan amqp091.Blocking, 1))
	for {
		select {
		case e := <-s.closes:
			why := errConnectionClosed
			if e != nil {
				why = e
			}
			c.endSession(s, why)
			return why
		case b, ok := <-blocked:
			if !ok {
				blocked = nil
				continue
			}
			// A resource alarm: publishes wait until it clears.
			s.setBlocked(b.Active)
			if b.Active {
				c.log.Warn().Str("reason", b.Reason).Msg("broker blocks publishing (resource alarm); publishes wait")
			} else {
				c.log.Info().Msg("broker unblocked publishing")
			}
		case <-c.ctx.Done():
			_ = s.conn.CloseDeadline(time.Now().Add(closeTimeout))
			c.endSession(s, ErrClosed)
			return ErrClosed
		}
	}
}
