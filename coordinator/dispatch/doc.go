// Package dispatch is the coordinator's side of the broker: it turns approved jobs into
// messages for their agents, takes in what agents report, has CSRs checked and signed,
// sends certificates out, and keeps agent presence and inventory.
//
// The Dispatcher implements the service's seams: service.Dispatcher (JobApproved,
// JobWithdrawn), service.Issuer (CAGatePassed), service.AgentHook (AgentEnrolled), and the
// Issuer's optional capabilities for revocation and the CA chain. Its Run owns every
// goroutine: the broker connection, the outbox publisher, the two consumers (events and
// heartbeats), three sweepers (waiting jobs, offline agents, inbox and outbox purge) and
// the writer of heartbeats held in memory.
//
// # One owner of job state
//
// The dispatcher has no lifecycle of its own. Every change it makes to a job (for an
// agent's event, a broker confirmation, a dispatch that cannot be built) runs in a
// transaction of the job owner (service.Service.UpdateJobs, given with Bind) and goes
// through service.JobTx.Transition: the same transition table, audit entry, seams and
// counters as the API's changes. The dispatcher translates wire messages into those
// calls.
//
// # The event table
//
// jobs.AcceptEvent says, for each kind and state, which agent events are taken (which
// progress steps, a CSR, a result) and what each does; the README shows it as a table.
// Before it: the sender check (below), the job must target the sending agent, and the
// event must be of the current attempt (an older attempt's is ignored, a result audited).
// After it: ownership — a token serial the event names must be the job's, the one the
// attempt already works on (recorded at the first event that names one), or one the agent
// reported holding or that no agent holds. A refused event is rolled back (nothing it
// would have changed is stored, not even the agent's last-seen time), dead-lettered with
// its code (job_not_dispatched, job_ended, event_not_allowed, token_not_owned, or the
// protocol's) and reason, and audited (message.rejected) in a transaction of its own; it
// is never handed back.
//
// # Tokens and PINs belong to their job
//
// A hello or an inventory records the tokens the agent reports as its own, except one
// another agent holds (audited, token.claim_refused), and releases those it no longer
// reports, so that a token moved to another workstation is claimed there. The PINs of a
// result are kept only from an attempt that reported re-initialising its token (both), or
// from an unblock (the user PIN); replacing PINs another job set is audited
// (pin.replaced), PINs without that right are not kept (pin.refused).
//
// # The agent hears every outcome
//
// When the coordinator ends a job the agent was sent (cancelled, superseded, expired,
// rejected by the CA operator, failed by the coordinator), JobWithdrawn queues a cancel
// naming the state and the reason. The agent's answer (a failed result with
// job_cancelled) is taken as its last word: it moves nothing, its PINs are kept under the
// rules above, and job show shows it.
//
// # Delivery: at-least-once transport, exactly-once effects
//
//   - Messages to agents are written to the outbox in the transaction of the change that
//     causes them (a job approved, cancelled, a certificate signed). The publisher sends
//     the outbox oldest first with publisher confirms and mandatory routing, and marks a row
//     sent only once the broker confirmed it. A dispatch becomes dispatched in the
//     transaction that marks it sent: when the broker holds it in the agent's durable
//     queue, whether or not the agent is connected. A coordinator stopped between the
//     commit and the confirm (crash, SIGKILL, broker away) sends the row after it starts
//     again, with the same message ID; agents drop duplicates by ID.
//   - The publisher sends rows in rounds of at most one row per agent, each round's
//     confirms in flight together, and marks a round's confirmed rows sent (and their
//     jobs dispatched) in one transaction, committed while the next round is sent. That
//     transaction works on the round as a set, in a handful of statements whatever its
//     size: the rows marked sent in one UPDATE, their jobs read in one query, and the
//     jobs still approved at the dispatch's attempt moved to dispatched through the job
//     owner as one set (store.UpdateJobStates, their audit entries chained under one
//     lock of the chain head). Per
//     agent, rows go out in order: an agent's next row leaves only once the one before
//     it was confirmed, and after a row of an agent fails, its later rows wait for the
//     next pass. Rows of other agents go on.
//   - A returned (unroutable) row means the agent's queue is missing: the failure and its
//     reason are recorded on the row, the queue of an enrolled agent is declared, and the
//     row is sent again after a backoff. Nothing is dropped.
//   - With several coordinators on PostgreSQL, two publishers may send the same row;
//     receivers dedupe on the message ID and the dispatched transition is compare-and-set,
//     so that costs a duplicate message, never a duplicate effect.
//   - Every event from an agent is handled in one transaction that records its message ID
//     in the inbox; a redelivered message finds its ID there and changes nothing. Job
//     events carry the attempt: one for an older attempt is recorded as stale (a result
//     also in the audit log) and changes nothing.
//   - Several coordinators consume the events queue in competition, so one agent's events
//     may be handled out of order. What depends on an earlier event waits for it: a CSR
//     handled before its key_generated report, a csr job's result before its CSR, or a
//     result carrying PINs before its attempt's initialising step (without which the PINs
//     would be refused), goes back to the queue (a few times, then it is taken as it is: a
//     csr job's success then waits in the store, and the job succeeds when its CSR is
//     taken); the reported key is recorded whatever the step bookkeeping says; a job's
//     agent reporting on the attempt moves it to dispatched and running if the
//     confirmation or first step is still on its way. A progress step older than one
//     already recorded is not recorded.
//
// # Who sent it
//
// broker.agent_users per_agent: each agent has its own broker user (recorded at enrolment,
// default agent-ID), RabbitMQ validates the user_id property against the publishing
// connection, and an event whose user_id is missing or is not its agent's user is refused:
// dead-lettered with forged_sender and audited (message.rejected). A job event from an
// agent the job does not target is refused the same way. shared: agents share one broker
// user (development on guest/guest); only direction and routing key are checked, and the
// coordinator says so in its log at start. Messages refused before they are decoded
// (malformed, unknown type, wrong version) are audited too.
//
// # Dispatching, and jobs that wait
//
// A dispatch is built from the job and the profile version it was approved under: key type
// and CKA_ID (protocol.DeriveKeyID of the job), the token selector (the job's token serial;
// else any blank token when the profile says so; else the profile's model; else the one
// token the agent reports), initialise with label, PIN policy and the coordinator's result
// key when the profile initialises, and the token's current PINs the kind needs, opened
// with the coordinator's result key and sealed again to the agent's seal key for this job
// and attempt. An approved job whose dispatch cannot be built yet, for a reason that goes
// away by itself, stays approved; the reason is recorded on its attempt (job show and job
// watch say it) and audited once (job.waiting):
//
//   - the agent never said hello, so its seal key is unknown: dispatched when the hello
//     arrives;
//   - the request names no token and the agent reports none, or names one the agent has
//     not reported yet: dispatched when an inventory brings it.
//
// A dispatch that can never be built as the job stands fails the job (approved → failed)
// with the reason: a PIN the kind needs that no tokenfleet job set (pins_unknown), a token
// that cannot be chosen (the agent reports several, or a model selector for a kind that
// needs the serial), a profile or holder record that no longer renders, no certificate to
// install. What can be known when the job is requested is refused then (the service).
//
// The waiting sweeper tries waiting jobs again after every hello, inventory and result,
// and every WaitingInterval. A job that waits past its deadline expires (the service's
// expiry sweep), as does a dispatched job whose agent stays offline.
//
// # CSRs and certificates
//
// The public key reported at key_generated is recorded for the attempt. A CSR is checked
// by the RA (package ra) against the job's profile and that key, one CSR per attempt (the
// event table refuses a CSR once the job left running), and
// its CKA_ID must be the job's. A refusal (bad signature, other key, second CSR, weak or
// disallowed key) fails the job with the RA's code and is audited (csr.rejected). An
// accepted CSR of an issue or renew job moves it to awaiting_certificate; when the profile
// asks for the CA-operator gate it waits there for tokenfleetctl approve, otherwise it is
// signed at once: names from the approved request and the holder (refused if the holder's
// record no longer renders what was approved), the certificate recorded, delivered through
// the outbox, and the job moves to installing. A csr job's CSR is signed and recorded as
// well (unless its profile has the CA-operator gate, which a csr job never passes); an
// install_certificate job later installs that certificate.
//
// # Agents
//
// A hello records hostname, OS, version and the agent's seal key: the first hello sets
// the key; a later hello with another key is refused and audited until an administrator
// resets the recorded key (service.ResetAgentKey, tokenfleetctl agent reset-key), which
// is the re-enrolment of a reinstalled agent. Hello and inventory replace the agent's
// tokens. Heartbeats keep agents online; an agent without a heartbeat for
// HeartbeatTimeout (three intervals) is marked offline. A heartbeat costs no transaction
// of its own: it is held in memory and written with the others every
// PresenceFlushInterval (presence.go).
//
// # PINs
//
// PINs in results are kept at rest exactly as the agent sealed them to the coordinator's
// result key (store.TokenPIN); the key file (ResultKeyFile in the data directory, 0600)
// never leaves the coordinator. Several coordinators sharing a database must share that
// file. OpenTokenPIN opens a kept PIN, for the dispatcher (to seal it again to an agent)
// and for the one-time reveal of a user PIN.
package dispatch
