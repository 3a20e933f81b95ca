// Package protocol defines what the coordinator and agents say to each other
// over AMQP: the envelope, one body type per message type, job kinds, states
// and steps, error codes, size limits, sealed secrets and the names of the
// broker topology.
//
// It is a leaf: it imports only the standard library (a test enforces it),
// so every part of the project, and tools outside it, can depend on it
// without dragging anything else in.
//
// Message flow of a job attempt (see the design document for the states):
//
//	coordinator → agent   dispatch      JobDispatch (kind, token, key, sealed PINs)
//	agent → coordinator   progress      Progress (steps; the public key at key_generated)
//	agent → coordinator   csr           CSRSubmission
//	coordinator → agent   certificate   CertificateDelivery (after approval and signing)
//	agent → coordinator   result        Result (outcome, error code, outputs, sealed PINs)
//	coordinator → agent   cancel        Cancel (at any time: cancelled, superseded,
//	                                    expired, rejected, or failed by the coordinator)
//
// Outside jobs, agents send hello (at start and reconnection), heartbeat and
// inventory (when tokens come and go).
//
// Sending: build with NewEnvelope, then Encode. Receiving: Decode, then
// DecodeBody[T] or Envelope.Payload. Every error is an *Error with a stable
// ErrorCode (CodeOf) that the receiver dead-letters the message with.
package protocol
