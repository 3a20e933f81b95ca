// Package amqp is the AMQP 0.9.1 transport shared by the coordinator and
// the agents, on RabbitMQ through github.com/rabbitmq/amqp091-go.
//
// It is the one place in code that declares the topology named in package
// protocol (DeclareShared, DeclareAgent, CheckAgentQueue), and it gives
// both sides the delivery guarantees DESIGN.md asks for:
//
//   - Conn: one connection that reconnects by itself with jittered
//     exponential backoff, re-declares the topology after each connection
//     and reports its state (Status, Config.OnStatus).
//   - Conn.Publish: publisher confirms and mandatory routing; it returns
//     only once the broker has confirmed the message, or with an error that
//     says whether to republish (ErrUnconfirmed, ErrNacked) or not
//     (ErrReturned, a *protocol.Error). Callers keep messages in an outbox
//     until Publish returns nil; receivers dedupe on the message ID.
//   - Conn.Consume: manual acks, bounded prefetch, bounded retries, and
//     dead-lettering with the reason for what cannot be processed, before
//     the handler sees it when it cannot even be decoded or its sender is
//     wrong.
//
// Delivery is at least once: a message whose confirm was lost is published
// again, and a message whose ack was lost is delivered again.
package amqp
