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
//   - Cancel (requester or admin) is allowed while the agent does no token work: in
//     pending_approval, approved and dispatched; in running while the agent waits for the
//     token (no step yet, or waiting_for_token last); in awaiting_certificate, while it
//     waits for the CA operator. The agent is told and stops at its next safe point; its
//     late reports meet a cancelled job, which the event table refuses (AcceptEvent). Once
//     the agent works on the token (token_found and after, installing) nothing cancels
//     the job.
//   - An agent's event is taken only as AcceptEvent says for the job's kind and state.
//   - approved → failed: the coordinator cannot build the attempt's dispatch.
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
