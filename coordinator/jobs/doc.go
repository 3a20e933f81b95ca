// Package jobs holds the coordinator's job rules as pure functions: the kinds, states and
// steps of a job, the transition table every state change is checked against, step
// ordering inside a run, the approval gates (who may approve, when an approval counts,
// when a request or an approval expires), the binding hash that ties an approval to what
// was approved, and the cancel, retry and supersede rules. Nothing here touches storage,
// the clock or the network: callers pass the job as they read it and the current time.
//
// Decisions fixed here (the store, API and dispatcher rely on them):
//
//   - A job is always created in pending_approval. When its policy needs no approval,
//     Evaluate reports it approved at once and the store moves it to approved in the same
//     transaction, so every job's history starts the same way in the audit log.
//   - Edits are only possible while pending_approval. An edit changes the job's binding
//     hash, which voids every decision bound to the old hash (Evaluate ignores them and the
//     approver may decide again). The edit restarts the request's expiry clock (the store
//     resets StateSince). An approved job is never edited: a changed request is a new job
//     that supersedes it. There is no edge back to pending_approval.
//   - Retry is a new attempt of the same job: failed → approved with Attempt+1, allowed
//     while the request-gate approvals are still valid (CanRetry). The dispatcher then
//     dispatches it like any approved job. Step progress starts again from zero.
//     CA-operator approvals belong to one attempt: a retried job passes that gate again.
//     failed → approved is the only exit from a terminal state.
//   - Cancel (requester or admin) is allowed in pending_approval, approved and dispatched.
//     A dispatched job's message may already sit in the agent's queue: the agent receives a
//     cancel and drops it; if it had started, its running report loses the race because
//     cancelled → running is illegal. Once running nothing cancels a job; a job stuck
//     waiting for a token ends as failed (agent or coordinator timeout).
//   - Expiry: a pending request expires ExpiresAfter after it entered pending_approval; an
//     approval lapses ExpiresAfter after it was given, and an approved or dispatched job
//     whose valid approvals drop below the required count expires (it must start running
//     while it is authorised). The CA-operator gate expires ExpiresAfter after the job
//     entered awaiting_certificate.
//   - revoke runs on the coordinator: approved → running → succeeded|failed, it is never
//     dispatched to an agent and is never superseded.
//   - Kinds that produce no certificate (csr, install_certificate, unblock_pin, wipe,
//     inventory) go running → succeeded; issue and renew always pass awaiting_certificate
//     and installing.
//   - Neither the requester nor the holder may decide on a request, and nobody decides
//     twice on one job: whoever approved the request gate cannot also pass the CA-operator
//     gate of the same job.
package jobs
