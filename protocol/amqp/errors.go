package amqp

import (
	"errors"
	"fmt"
	"strings"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Sentinels for errors.Is. The typed errors below match them.
var (
	// ErrClosed: the Conn was closed (or its context ended).
	ErrClosed = errors.New("amqp: connection manager closed")

	// ErrUnconfirmed: the message was handed to the broker but its confirm
	// never came (connection or channel lost, or the caller's context ended
	// first). It may or may not have been delivered: republish it with the
	// same message ID; receivers dedupe on it.
	ErrUnconfirmed = errors.New("publish not confirmed by the broker; republish it with the same message ID")

	// ErrNacked: the broker refused the message (basic.nack), for instance
	// a quorum queue at its length limit with overflow=reject-publish.
	// Nothing was enqueued; republish later.
	ErrNacked = errors.New("broker refused the message (nack)")

	// ErrReturned: the message was mandatory and no queue was bound to take
	// it (see *ReturnedError). Republishing the same way fails the same way
	// until the topology changes.
	ErrReturned = errors.New("message returned by the broker: no queue takes it")

	// ErrQueueInUse: another connection consumes the queue exclusively
	// (see *QueueInUseError).
	ErrQueueInUse = errors.New("queue is consumed exclusively by another connection")

	// ErrQueueNotFound: the queue does not exist (see *QueueNotFoundError).
	ErrQueueNotFound = errors.New("queue does not exist")

	// ErrNotEnrolled: an agent's command queue does not exist, which means
	// the coordinator has not enrolled the agent (or removed it).
	ErrNotEnrolled = errors.New("agent is not enrolled")

	// ErrLoginRefused: the broker refused the connection's user at login
	// (wrong password, unknown user) or refused it the vhost (see
	// *LoginRefusedError). Retrying with the same credentials fails the same
	// way, unless the broker's users are being changed right then.
	ErrLoginRefused = errors.New("the broker refused the login")

	// ErrTopologyMismatch: an exchange or queue exists with other
	// properties than the protocol's. Redeclaring cannot fix it: an operator
	// must migrate it (deleting a queue loses its messages).
	ErrTopologyMismatch = errors.New("broker topology differs from the protocol's")
)

// ReturnedError is a mandatory publish the broker returned as unroutable.
type ReturnedError struct {
	MessageID  string
	Exchange   string
	RoutingKey string
	ReplyCode  uint16
	ReplyText  string
}

func (e *ReturnedError) Error() string {
	if e.Exchange == protocol.DefaultExchange {
		return fmt.Sprintf("message %s returned by the broker (%d %s): there is no queue %s (an agent's queue is declared when the agent is enrolled)",
			e.MessageID, e.ReplyCode, e.ReplyText, e.RoutingKey)
	}
	return fmt.Sprintf("message %s returned by the broker (%d %s): nothing bound to exchange %q takes routing key %q",
		e.MessageID, e.ReplyCode, e.ReplyText, e.Exchange, e.RoutingKey)
}

// Is matches ErrReturned.
func (e *ReturnedError) Is(target error) bool { return target == ErrReturned }

// QueueInUseError is the broker's refusal of a consumer on a queue another
// connection consumes exclusively. For an agent's command queue that is the
// duplicate-agent-ID detection.
type QueueInUseError struct {
	Queue   string
	AgentID string // set when Queue is an agent's command queue
	Cause   error  // the broker's ACCESS_REFUSED
}

func (e *QueueInUseError) Error() string {
	if e.AgentID != "" {
		return fmt.Sprintf("agent ID %s is already in use by another connected agent (queue %s has an exclusive consumer)", e.AgentID, e.Queue)
	}
	return fmt.Sprintf("queue %s is already consumed exclusively by another connection", e.Queue)
}

// Is matches ErrQueueInUse.
func (e *QueueInUseError) Is(target error) bool { return target == ErrQueueInUse }

func (e *QueueInUseError) Unwrap() error { return e.Cause }

// QueueNotFoundError is a queue the broker does not have.
type QueueNotFoundError struct {
	Queue   string
	AgentID string // set when Queue is an agent's command queue
	Cause   error  // the broker's NOT_FOUND
}

func (e *QueueNotFoundError) Error() string {
	if e.AgentID != "" {
		return fmt.Sprintf("queue %s does not exist: the agent is not enrolled", e.Queue)
	}
	return fmt.Sprintf("queue %s does not exist", e.Queue)
}

// Is matches ErrQueueNotFound, and ErrNotEnrolled for an agent's queue.
func (e *QueueNotFoundError) Is(target error) bool {
	return target == ErrQueueNotFound || (target == ErrNotEnrolled && e.AgentID != "")
}

func (e *QueueNotFoundError) Unwrap() error { return e.Cause }

// LoginRefusedError is the broker refusing a connection's user during the
// handshake: its credentials (403 ACCESS_REFUSED) or its access to the vhost
// (530 NOT_ALLOWED).
type LoginRefusedError struct {
	User  string
	Vhost string
	// VhostDenied: the credentials were taken but the user may not use the
	// vhost (or the vhost does not exist).
	VhostDenied bool
	Cause       error // the broker's reply
}

func (e *LoginRefusedError) Error() string {
	if e.VhostDenied {
		return fmt.Sprintf("the broker refused user %q access to vhost %q: %v", e.User, e.Vhost, e.Cause)
	}
	return fmt.Sprintf("the broker refused the login of user %q (wrong password or no such user): %v", e.User, e.Cause)
}

// Is matches ErrLoginRefused.
func (e *LoginRefusedError) Is(target error) bool { return target == ErrLoginRefused }

func (e *LoginRefusedError) Unwrap() error { return e.Cause }

// dialError classifies a failed handshake: a refused login or vhost is a
// *LoginRefusedError, anything else (connection refused, a timeout, TLS) is
// returned as it is.
func dialError(user, vhost string, err error) error {
	ae, ok := brokerError(err)
	if !ok {
		return err
	}
	switch {
	case ae.Code == amqp091.AccessRefused:
		return &LoginRefusedError{User: user, Vhost: vhost, Cause: err}
	// 530 NOT_ALLOWED also reports a connection limit reached, which passes;
	// only a vhost refused or missing is a question of configuration.
	case ae.Code == amqp091.NotAllowed && strings.Contains(ae.Reason, "vhost"):
		return &LoginRefusedError{User: user, Vhost: vhost, VhostDenied: true, Cause: err}
	}
	return err
}

// agentOfQueue returns the agent ID named by an agent command queue, or "".
func agentOfQueue(queue string) string {
	id, ok := strings.CutPrefix(queue, protocol.AgentQueuePrefix)
	if !ok || protocol.ValidateAgentID(id) != nil {
		return ""
	}
	return id
}

// brokerError returns the AMQP error in err's chain, if any.
func brokerError(err error) (*amqp091.Error, bool) {
	var ae *amqp091.Error
	if errors.As(err, &ae) {
		return ae, true
	}
	return nil, false
}

// refusal reports whether err is the broker refusing an operation on a
// channel (a soft error: access refused, not found, precondition failed).
// Unlike a lost connection, retrying at once will fail the same way.
func refusal(err error) bool {
	ae, ok := brokerError(err)
	if !ok {
		return false
	}
	switch ae.Code {
	case amqp091.AccessRefused, amqp091.NotFound, amqp091.PreconditionFailed, amqp091.ResourceLocked:
		return true
	}
	return false
}

// consumeError turns the broker's answer to basic.consume into the typed
// errors above.
func consumeError(queue string, err error) error {
	ae, ok := brokerError(err)
	if !ok {
		return fmt.Errorf("consuming %s: %w", queue, err)
	}
	switch {
	// RabbitMQ says "ACCESS_REFUSED - queue '...' in vhost '...' in
	// exclusive use"; other ACCESS_REFUSED replies are missing
	// permissions. The text is the only way to tell them apart.
	case ae.Code == amqp091.AccessRefused && strings.Contains(ae.Reason, "exclusive use"):
		return &QueueInUseError{Queue: queue, AgentID: agentOfQueue(queue), Cause: err}
	case ae.Code == amqp091.NotFound:
		return &QueueNotFoundError{Queue: queue, AgentID: agentOfQueue(queue), Cause: err}
	}
	return fmt.Errorf("consuming %s: %w", queue, err)
}
