package protocol

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// AMQP topology. Every name the coordinator and agents use on the broker is
// here; protocol/amqp declares them from SharedTopology and AgentQueueSpec.
//
// Message properties: message_id = Envelope.ID, type = Envelope.Type,
// correlation_id = Envelope.JobID, user_id = the sender's broker user
// (RabbitMQ then checks it against the connection, which is what makes
// CheckSender meaningful), delivery mode persistent per
// MessageType.Persistent, content_type ContentType.
const (
	// CommandsExchange with the agent's ID as routing key is the address of
	// a coordinator → agent message, as the coordinator's outbox stores it.
	// On the broker such a message goes through the default exchange to the
	// agent's queue by its name (CommandRoute): agent queues are not bound,
	// which halves what the broker does to enrol an agent. The exchange is
	// still declared, for coordinators of earlier versions during a rolling
	// upgrade, which publish to it (and bind a queue they find unbound when a
	// command comes back unrouted).
	CommandsExchange     = "tokenfleet.commands"
	CommandsExchangeKind = "direct"

	// DefaultExchange is the broker's default exchange ("", named
	// amq.default in permissions): it routes a message to the queue its
	// routing key names, with no binding.
	DefaultExchange           = ""
	DefaultExchangePermission = "amq.default"

	// EventsExchange (topic) carries agent → coordinator messages, routed
	// by "<type>.<agentID>" (EventRoutingKey).
	EventsExchange     = "tokenfleet.events"
	EventsExchangeKind = "topic"

	// EventsQueue is the durable quorum queue all coordinators consume
	// (competing consumers), bound to every event type but heartbeats.
	EventsQueue = "tokenfleet.events"

	// HeartbeatsQueue holds heartbeats, which expire after HeartbeatTTL:
	// a heartbeat nobody read in time says nothing any more.
	HeartbeatsQueue = "tokenfleet.heartbeats"

	// DeadLetterExchange (fanout) and DeadLetterQueue receive what cannot
	// be processed: rejected messages and, from the events queue, those
	// redelivered EventsDeliveryLimit times.
	DeadLetterExchange     = "tokenfleet.dead"
	DeadLetterExchangeKind = "fanout"
	DeadLetterQueue        = "tokenfleet.dead"

	// AgentQueuePrefix + agent ID is an agent's durable command queue,
	// consumed with an exclusive consumer: a second agent with the same ID
	// is refused by the broker, which is how duplicate IDs are detected.
	AgentQueuePrefix = "tokenfleet.agent."

	// AgentUserPrefix + agent ID is an agent's broker user. The prefix
	// keeps agent users apart from the coordinators' and operators'.
	AgentUserPrefix = "agent-"

	// ContentType is the AMQP content_type of every message.
	ContentType = "application/json"

	// HeartbeatInterval is how often agents send heartbeats (with up to
	// 10% jitter). The coordinator considers an agent offline after
	// 3 intervals without one.
	HeartbeatInterval = 15 * time.Second
	// HeartbeatTTL is the heartbeats queue's message TTL.
	HeartbeatTTL = 2 * HeartbeatInterval
	// HeartbeatsMaxLength bounds the heartbeats queue while no coordinator
	// reads it; the oldest are dropped first. Tens of thousands of agents
	// produce fewer than this within one TTL.
	HeartbeatsMaxLength = 200_000

	// EventsDeliveryLimit is how often the events queue redelivers a
	// message before dead-lettering it: a message that crashes every
	// coordinator must not loop forever.
	EventsDeliveryLimit = 20
)

// ExchangeSpec describes an exchange to declare.
type ExchangeSpec struct {
	Name    string
	Kind    string
	Durable bool
}

// QueueSpec describes a queue to declare and bind. Args values are strings
// and int64s, types every AMQP client's table accepts.
type QueueSpec struct {
	Name     string
	Durable  bool
	Args     map[string]any
	Bindings []Binding
}

// Binding binds a queue to an exchange with a routing key (or pattern).
type Binding struct {
	Exchange   string
	RoutingKey string
}

// Topology is what the coordinator declares once, for all agents.
type Topology struct {
	Exchanges []ExchangeSpec
	Queues    []QueueSpec
}

// SharedTopology returns the exchanges and shared queues.
//
// The heartbeats queue is durable although DESIGN.md calls for a
// non-durable one: RabbitMQ deprecates non-durable queues that are not
// exclusive (transient_nonexcl_queues) and 4.3 refuses them by default,
// and several coordinators must share this queue, so it cannot be
// exclusive. Heartbeats are published non-persistent and expire after
// HeartbeatTTL, so nothing of them survives a broker restart, which was the
// point.
func SharedTopology() Topology {
	var eventBindings []Binding
	for _, t := range eventTypes() {
		eventBindings = append(eventBindings, Binding{Exchange: EventsExchange, RoutingKey: string(t) + ".*"})
	}
	return Topology{
		Exchanges: []ExchangeSpec{
			{Name: DeadLetterExchange, Kind: DeadLetterExchangeKind, Durable: true},
			{Name: CommandsExchange, Kind: CommandsExchangeKind, Durable: true},
			{Name: EventsExchange, Kind: EventsExchangeKind, Durable: true},
		},
		Queues: []QueueSpec{
			{
				Name:    DeadLetterQueue,
				Durable: true,
				Args:    map[string]any{"x-queue-type": "quorum"},
				Bindings: []Binding{
					{Exchange: DeadLetterExchange, RoutingKey: ""},
				},
			},
			{
				Name:    EventsQueue,
				Durable: true,
				Args: map[string]any{
					"x-queue-type":           "quorum",
					"x-dead-letter-exchange": DeadLetterExchange,
					"x-delivery-limit":       int64(EventsDeliveryLimit),
					"x-dead-letter-strategy": "at-least-once",
					"x-overflow":             "reject-publish",
				},
				Bindings: eventBindings,
			},
			{
				Name:    HeartbeatsQueue,
				Durable: true,
				Args: map[string]any{
					"x-queue-type":  "classic",
					"x-message-ttl": HeartbeatTTL.Milliseconds(),
					"x-max-length":  int64(HeartbeatsMaxLength),
					"x-overflow":    "drop-head",
				},
				Bindings: []Binding{
					{Exchange: EventsExchange, RoutingKey: string(TypeHeartbeat) + ".*"},
				},
			},
		},
	}
}

// AgentQueueSpec returns the command queue of one agent, declared by the
// coordinator when the agent enrols (the agent itself may only
// passive-declare it: see AgentPermissions). Classic, not quorum: thousands
// of quorum queues are heavy, and a command lost with a broker node is
// re-sent from the coordinator's outbox. Unbound: commands reach it through
// the default exchange (CommandRoute), and a binding is as much work for the
// broker as the queue itself.
func AgentQueueSpec(agentID string) (QueueSpec, error) {
	q, err := AgentQueue(agentID)
	if err != nil {
		return QueueSpec{}, err
	}
	return QueueSpec{
		Name:    q,
		Durable: true,
		Args: map[string]any{
			"x-queue-type":           "classic",
			"x-dead-letter-exchange": DeadLetterExchange,
		},
	}, nil
}

// CommandRoute returns where a message addressed to exchange with routing key
// goes on the broker: a command (CommandsExchange, the agent's ID) goes to
// the agent's queue through the default exchange; any other address is its
// own route.
func CommandRoute(exchange, key string) (string, string, error) {
	if exchange != CommandsExchange {
		return exchange, key, nil
	}
	q, err := AgentQueue(key)
	if err != nil {
		return "", "", err
	}
	return DefaultExchange, q, nil
}

// AgentQueue returns the name of an agent's command queue.
func AgentQueue(agentID string) (string, error) {
	if err := ValidateAgentID(agentID); err != nil {
		return "", err
	}
	return AgentQueuePrefix + agentID, nil
}

// CommandRoutingKey returns the routing key of commands for an agent.
func CommandRoutingKey(agentID string) (string, error) {
	if err := ValidateAgentID(agentID); err != nil {
		return "", err
	}
	return agentID, nil
}

// EventRoutingKey returns "<type>.<agentID>", the routing key an agent
// publishes a message of type t with.
func EventRoutingKey(t MessageType, agentID string) (string, error) {
	if !t.Valid() {
		return "", NewError(CodeUnknownType, "type %q", t)
	}
	if t.Direction() != ToCoordinator {
		return "", NewError(CodeBadRequest, "type %s is sent %s, not on the events exchange", t, t.Direction())
	}
	if err := ValidateAgentID(agentID); err != nil {
		return "", err
	}
	return string(t) + "." + agentID, nil
}

// ParseEventRoutingKey splits an event routing key into type and agent ID.
func ParseEventRoutingKey(key string) (MessageType, string, error) {
	typ, agentID, ok := strings.Cut(key, ".")
	if !ok {
		return "", "", NewError(CodeBadRequest, "routing key %q: want <type>.<agentID>", key)
	}
	t := MessageType(typ)
	if !t.Valid() || t.Direction() != ToCoordinator {
		return "", "", NewError(CodeUnknownType, "routing key %q: %q is not an agent → coordinator type", key, typ)
	}
	if err := ValidateAgentID(agentID); err != nil {
		var pe *Error
		errors.As(err, &pe) // ValidateAgentID only returns *Error
		return "", "", &Error{Code: pe.Code, Message: fmt.Sprintf("routing key %q: %s", key, pe.Message), cause: err}
	}
	return t, agentID, nil
}

// AgentUser returns an agent's broker user name.
func AgentUser(agentID string) (string, error) {
	if err := ValidateAgentID(agentID); err != nil {
		return "", err
	}
	return AgentUserPrefix + agentID, nil
}

// CheckSender checks an agent → coordinator message against what the
// broker vouches for: the user_id property (validated by RabbitMQ against
// the publishing connection, and required here because RabbitMQ checks it
// only when present) and the routing key (restricted by the agent's topic
// permissions). A mismatch is forged_sender.
func CheckSender(e *Envelope, userID, routingKey string) error {
	if e.Type.Direction() != ToCoordinator {
		return NewError(CodeForgedSender, "type %s is never sent by agents", e.Type)
	}
	want, err := AgentUser(e.AgentID)
	if err != nil {
		return err
	}
	if userID == "" {
		return NewError(CodeForgedSender, "user_id property missing; agent %s must publish as %s", e.AgentID, want)
	}
	if userID != want {
		return NewError(CodeForgedSender, "envelope claims agent %s but the broker user is %q", e.AgentID, userID)
	}
	key, err := EventRoutingKey(e.Type, e.AgentID)
	if err != nil {
		return err
	}
	if routingKey != key {
		return NewError(CodeForgedSender, "routing key %q does not match %s from agent %s (want %q)", routingKey, e.Type, e.AgentID, key)
	}
	return nil
}

// Permissions are a broker user's permission regexes in one vhost.
type Permissions struct {
	// Configure, Write and Read are the resource permissions.
	Configure, Write, Read string
	// TopicExchange, TopicWrite and TopicRead are the topic permissions on
	// the events exchange, matched against routing keys.
	TopicExchange, TopicWrite, TopicRead string
}

// CoordinatorPermissions returns the permissions a coordinator's broker user
// needs: configure, write and read every tokenfleet.* exchange and queue, and
// write to the default exchange, through which commands reach agents' queues
// (CommandRoute).
func CoordinatorPermissions() Permissions {
	own := "^" + regexp.QuoteMeta("tokenfleet.")
	return Permissions{
		Configure: own,
		Write:     "^(" + regexp.QuoteMeta("tokenfleet.") + ".*|" + regexp.QuoteMeta(DefaultExchangePermission) + ")$",
		Read:      own,
	}
}

// AgentPermissions returns the permissions of an agent's broker user:
// consume its own queue, publish events under its own ID, nothing else.
// It may not configure anything (its queue is declared by the coordinator;
// a passive declare needs no permission): binding rights would let it bind
// its queue to another agent's routing key on an exchange of earlier
// versions and read that agent's commands. It may not write to the default
// exchange either: that would let it put messages in any queue by name.
func AgentPermissions(agentID string) (Permissions, error) {
	q, err := AgentQueue(agentID)
	if err != nil {
		return Permissions{}, err
	}
	var types []string
	for _, t := range MessageTypes() {
		if t.Direction() == ToCoordinator {
			types = append(types, regexp.QuoteMeta(string(t)))
		}
	}
	return Permissions{
		Configure:     "^$",
		Write:         "^" + regexp.QuoteMeta(EventsExchange) + "$",
		Read:          "^" + regexp.QuoteMeta(q) + "$",
		TopicExchange: EventsExchange,
		TopicWrite:    "^(" + strings.Join(types, "|") + ")\\." + regexp.QuoteMeta(agentID) + "$",
		TopicRead:     "^$",
	}, nil
}
