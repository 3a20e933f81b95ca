package protocol

import "sort"

// MessageType names a message on the wire: the envelope's "type", the AMQP
// "type" property, and the first word of an event's routing key. Types are
// single lowercase words, so "<type>.<agentID>" has exactly two words.
type MessageType string

// Coordinator → agent, to the agent's queue (protocol.CommandRoute).
const (
	// TypeDispatch hands an attempt of a job to an agent (JobDispatch).
	TypeDispatch MessageType = "dispatch"
	// TypeCertificate delivers the certificate the CA signed for the CSR of
	// an attempt (CertificateDelivery).
	TypeCertificate MessageType = "certificate"
	// TypeCancel stops an attempt (Cancel).
	TypeCancel MessageType = "cancel"
)

// Agent → coordinator, on the events exchange.
const (
	// TypeHello is sent when an agent starts and after each reconnection
	// (Hello).
	TypeHello MessageType = "hello"
	// TypeHeartbeat says the agent is alive (Heartbeat).
	TypeHeartbeat MessageType = "heartbeat"
	// TypeProgress reports a step of a running attempt (Progress).
	TypeProgress MessageType = "progress"
	// TypeCSR submits the CSR of an attempt (CSRSubmission).
	TypeCSR MessageType = "csr"
	// TypeResult ends an attempt (Result).
	TypeResult MessageType = "result"
	// TypeInventory reports the tokens an agent sees, unprompted: when a
	// token is inserted or removed (Inventory). An inventory job is
	// answered with a result instead.
	TypeInventory MessageType = "inventory"
)

// Direction says who sends a message type.
type Direction int

const (
	ToAgent Direction = iota + 1
	ToCoordinator
)

func (d Direction) String() string {
	switch d {
	case ToAgent:
		return "coordinator→agent"
	case ToCoordinator:
		return "agent→coordinator"
	}
	return "unknown direction"
}

// Body is implemented by every message body type.
type Body interface {
	// MessageType is the type of message the body travels in.
	MessageType() MessageType
	// Validate checks the body on its own (the envelope is checked
	// separately); errors are *Error with a field path.
	Validate() error
}

type typeInfo struct {
	dir Direction
	// job: the envelope must name a job and attempt; otherwise it must not.
	job bool
	// persistent: delivered with delivery mode 2. Heartbeats are not: one
	// lost in a broker restart is replaced by the next.
	persistent bool
	maxSize    int
	decode     func(raw []byte) (Body, error)
}

var messageTypes = map[MessageType]typeInfo{
	// A dispatch may carry a certificate chain for install_certificate:
	// MaxChainLength+1 certificates of MaxCertificateSize, base64, fit.
	TypeDispatch:    {dir: ToAgent, job: true, persistent: true, maxSize: 256 << 10, decode: decodeAs[JobDispatch]},
	TypeCertificate: {dir: ToAgent, job: true, persistent: true, maxSize: 256 << 10, decode: decodeAs[CertificateDelivery]},
	TypeCancel:      {dir: ToAgent, job: true, persistent: true, maxSize: 8 << 10, decode: decodeAs[Cancel]},

	TypeHello:     {dir: ToCoordinator, persistent: true, maxSize: MaxMessageSize, decode: decodeAs[Hello]},
	TypeHeartbeat: {dir: ToCoordinator, persistent: false, maxSize: 4 << 10, decode: decodeAs[Heartbeat]},
	TypeProgress:  {dir: ToCoordinator, job: true, persistent: true, maxSize: 16 << 10, decode: decodeAs[Progress]},
	TypeCSR:       {dir: ToCoordinator, job: true, persistent: true, maxSize: 64 << 10, decode: decodeAs[CSRSubmission]},
	// A result of an inventory job carries the inventory.
	TypeResult:    {dir: ToCoordinator, job: true, persistent: true, maxSize: MaxMessageSize, decode: decodeAs[Result]},
	TypeInventory: {dir: ToCoordinator, persistent: true, maxSize: MaxMessageSize, decode: decodeAs[Inventory]},
}

// MessageTypes lists every message type, sorted.
func MessageTypes() []MessageType {
	out := make([]MessageType, 0, len(messageTypes))
	for t := range messageTypes {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Valid reports whether t is a known message type.
func (t MessageType) Valid() bool {
	_, ok := messageTypes[t]
	return ok
}

// Direction says who sends t; 0 for an unknown type.
func (t MessageType) Direction() Direction { return messageTypes[t].dir }

// JobScoped reports whether messages of type t name a job and attempt.
func (t MessageType) JobScoped() bool { return messageTypes[t].job }

// Persistent reports whether t is published with persistent delivery.
func (t MessageType) Persistent() bool { return messageTypes[t].persistent }

// MaxSize is the largest encoded message of type t; 0 for an unknown type.
func (t MessageType) MaxSize() int { return messageTypes[t].maxSize }

// eventTypes are the agent → coordinator types except heartbeats, which go
// to their own queue.
func eventTypes() []MessageType {
	var out []MessageType
	for _, t := range MessageTypes() {
		if t.Direction() == ToCoordinator && t != TypeHeartbeat {
			out = append(out, t)
		}
	}
	return out
}
