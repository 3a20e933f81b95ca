package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// DefaultRefusedGrace is how long an agent that has been connected keeps retrying while
// the broker refuses it for a reason that is otherwise a configuration error.
const DefaultRefusedGrace = time.Minute

// BrokerProblem names what the broker refused.
type BrokerProblem string

// What the broker may refuse that only a change of configuration fixes.
const (
	// ProblemLogin: wrong password, or no such broker user.
	ProblemLogin BrokerProblem = "login_refused"
	// ProblemVhost: the user may not use the URL's vhost, or it does not exist.
	ProblemVhost BrokerProblem = "vhost_refused"
	// ProblemNotEnrolled: the agent's command queue does not exist.
	ProblemNotEnrolled BrokerProblem = "not_enrolled"
	// ProblemPermissions: the user may not consume the agent's queue.
	ProblemPermissions BrokerProblem = "permission_refused"
)

// BrokerConfigError is the broker refusing the agent for a reason that retrying cannot
// fix: a refused login or vhost, a missing queue (the agent is not enrolled), a queue the
// user may not read. Its text says what is wrong and what fixes it.
type BrokerConfigError struct {
	Problem  BrokerProblem
	AgentID  string
	Hostname string
	Broker   string // the broker URL without its password
	User     string // the broker user the agent logs in as
	Vhost    string
	Err      error
}

func (e *BrokerConfigError) Error() string {
	return "configuration error: " + e.What() + ": " + e.Fix()
}

func (e *BrokerConfigError) Unwrap() error { return e.Err }

// What says what is wrong, in one clause.
func (e *BrokerConfigError) What() string {
	switch e.Problem {
	case ProblemLogin:
		return fmt.Sprintf("the broker %s refused user %q (wrong password or no such user)", e.Broker, e.User)
	case ProblemVhost:
		return fmt.Sprintf("the broker %s refused user %q access to vhost %q", e.Broker, e.User, e.Vhost)
	case ProblemNotEnrolled:
		q, _ := protocol.AgentQueue(e.AgentID)
		return fmt.Sprintf("agent %s is not enrolled: the broker %s has no queue %s", e.AgentID, e.Broker, q)
	case ProblemPermissions:
		q, _ := protocol.AgentQueue(e.AgentID)
		return fmt.Sprintf("the broker %s refused user %q the agent's queue %s", e.Broker, e.User, q)
	}
	return fmt.Sprintf("the broker %s refused the agent: %v", e.Broker, e.Err)
}

// Fix says what fixes it, with the commands to run.
func (e *BrokerConfigError) Fix() string {
	switch e.Problem {
	case ProblemLogin:
		return fmt.Sprintf("check the password in broker.password_file (--broker-password-file, the systemd credential broker-password) or in broker.url; if the user does not exist, an administrator creates it: rabbitmqctl add_user %s PASSWORD, then %s",
			e.User, e.permissionsCommand())
	case ProblemVhost:
		return fmt.Sprintf("check the vhost in broker.url; an administrator grants it: %s", e.permissionsCommand())
	case ProblemNotEnrolled:
		cmd := fmt.Sprintf("tokenfleetctl agent add %s --hostname %s", e.AgentID, e.Hostname)
		if def, err := protocol.AgentUser(e.AgentID); err == nil && e.User != "" && e.User != def && e.User != "guest" {
			cmd += " --broker-user " + e.User
		}
		return fmt.Sprintf("an administrator enrols it with: %s (or check the agent ID, id or --id, if it was enrolled under another)", cmd)
	case ProblemPermissions:
		return "an administrator grants it: " + e.permissionsCommand()
	}
	return "check broker.url"
}

// permissionsCommand is the rabbitmqctl command that gives the agent's user what it needs.
func (e *BrokerConfigError) permissionsCommand() string {
	p, err := protocol.AgentPermissions(e.AgentID)
	if err != nil {
		return "see the README, Deploying the coordinator"
	}
	vhost := e.Vhost
	if vhost == "" {
		vhost = "/"
	}
	return fmt.Sprintf("rabbitmqctl set_permissions -p %s %s '%s' '%s' '%s' and rabbitmqctl set_topic_permissions -p %s %s %s '%s' '%s'",
		vhost, e.User, p.Configure, p.Write, p.Read, vhost, e.User, p.TopicExchange, p.TopicWrite, p.TopicRead)
}

// brokerIdentity is what the agent's broker configuration errors name.
type brokerIdentity struct {
	agentID, hostname, endpoint, user, vhost string
}

func newBrokerIdentity(agentID, hostname, endpoint, rawURL string) brokerIdentity {
	id := brokerIdentity{agentID: agentID, hostname: hostname, endpoint: endpoint}
	if u, err := amqp091.ParseURI(rawURL); err == nil {
		id.user, id.vhost = u.Username, u.Vhost
	}
	return id
}

// classify returns the configuration error err is, or nil when it is something retrying
// may fix (a broker down, a lost connection, a refused declaration in auto mode).
func (id brokerIdentity) classify(err error) *BrokerConfigError {
	if err == nil {
		return nil
	}
	e := &BrokerConfigError{AgentID: id.agentID, Hostname: id.hostname, Broker: id.endpoint, User: id.user, Vhost: id.vhost, Err: err}
	var le *amqp.LoginRefusedError
	switch {
	case errors.As(err, &le):
		e.Problem = ProblemLogin
		if le.VhostDenied {
			e.Problem = ProblemVhost
		}
	case errors.Is(err, amqp.ErrNotEnrolled):
		e.Problem = ProblemNotEnrolled
	default:
		return nil
	}
	return e
}

// consumeRefusal returns the configuration error a refused first subscription is: a
// missing queue or a user that may not read it.
func (id brokerIdentity) consumeRefusal(err error) *BrokerConfigError {
	if e := id.classify(err); e != nil {
		return e
	}
	var ae *amqp091.Error
	if errors.As(err, &ae) && ae.Code == amqp091.AccessRefused && !errors.Is(err, amqp.ErrQueueInUse) {
		return &BrokerConfigError{Problem: ProblemPermissions, AgentID: id.agentID, Hostname: id.hostname, Broker: id.endpoint,
			User: id.user, Vhost: id.vhost, Err: err}
	}
	return nil
}

// refusalWatch decides when the broker's refusals end the agent. At the first connection a
// configuration error is fatal at once: nothing suggests it will pass. Once the agent has
// been connected, the same refusals may be a moment's (a broker restarting, a cluster node
// still recovering the agent's queue, a password being rotated): they are retried, and are
// fatal only when they go on for grace.
type refusalWatch struct {
	id    brokerIdentity
	grace time.Duration
	now   func() time.Time

	mu        sync.Mutex // guards the fields below
	connected bool       // connected at least once
	since     time.Time  // start of the current run of refusals; zero when none
}

// status takes a connection status and returns the error that should end the agent, if
// any.
func (w *refusalWatch) status(st amqp.Status) *BrokerConfigError {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch st.State {
	case amqp.StateConnected:
		w.connected, w.since = true, time.Time{}
		return nil
	case amqp.StateDisconnected:
	default:
		return nil
	}
	e := w.id.classify(st.Err)
	if e == nil {
		w.since = time.Time{}
		return nil
	}
	if !w.connected {
		return e
	}
	now := w.now()
	if w.since.IsZero() {
		w.since = now
	}
	if now.Sub(w.since) >= w.grace {
		return e
	}
	return nil
}

// CheckBroker connects to the broker once as the agent would, with cfg's ID and broker
// settings, and checks passively that the agent's queue exists. It returns nil when both
// work, a *BrokerConfigError when the broker refuses the agent for a configuration
// reason, or another error (the broker unreachable) when ctx ends first. It logs nothing:
// the error says it all.
func CheckBroker(ctx context.Context, cfg Config) error {
	if err := protocol.ValidateAgentID(cfg.ID); err != nil {
		return fmt.Errorf("agent ID: %w", err)
	}
	endpoint, err := redactURL(cfg.Broker.URL)
	if err != nil {
		return err
	}
	id := newBrokerIdentity(cfg.ID, hostname(), endpoint, cfg.Broker.URL)
	attempt := make(chan amqp.Status, 1)
	conn, err := amqp.Open(ctx, amqp.Config{
		URL: cfg.Broker.URL, TLS: cfg.Broker.TLS, Name: "tokenfleet-agent doctor " + cfg.ID,
		Heartbeat: cfg.Broker.Heartbeat, Backoff: amqp.Backoff{Min: time.Hour, Max: time.Hour},
		Topology: func(ch amqp.Declarer) error { return amqp.CheckAgentQueue(ch, cfg.ID) },
		OnStatus: func(st amqp.Status) {
			if st.State == amqp.StateConnected || st.State == amqp.StateDisconnected {
				select {
				case attempt <- st:
				default:
				}
			}
		},
		Logger: zerolog.Nop(),
	})
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	defer func() { _ = conn.Close() }()
	select {
	case st := <-attempt:
		if st.State == amqp.StateConnected {
			return nil
		}
		if e := id.classify(st.Err); e != nil {
			return e
		}
		return fmt.Errorf("broker %s unreachable: %w", endpoint, st.Err)
	case <-ctx.Done():
		return fmt.Errorf("broker %s: no answer: %w", endpoint, ctx.Err())
	}
}

// hostname is the host's name as hellos carry it.
func hostname() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return protocol.TruncateText(host, protocol.MaxHostnameLen)
}
