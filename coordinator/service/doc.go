// Package service is the coordinator's business operations: organisations, people and
// their roles, API tokens, profiles, and jobs with their approval gates, cancellation,
// supersession and expiry. The HTTP API is a thin layer over it.
//
// Every operation takes the authenticated actor and enforces the rules itself, in one
// store transaction together with its audit entries: a change and its audit entry commit
// together or not at all. A refusal by a rule (role, organisation scope, self-approval,
// state) is audited as access.denied with the rule's code, and that entry is committed
// even though the operation fails. Errors are *Error values with a stable Code.
//
// Who reads what (roles are cumulative; the widest wins):
//
//	                  orgs   users     profiles  jobs      agents/tokens  certificates  audit
//	admin             all    all       all       all       all            all           all
//	auditor           all    all       all       all       all            all           all
//	helpdesk          all    all       all       all       all            all           -
//	rollout_owner     all    all       all       all       all            all           -
//	ca_operator       all    all       all       all       -              all           -
//	key_recovery_off. all    all       all       all       -              all           -
//	approver          own    own org   all       own org   -              -             -
//	no role           -      self      -         -         -              -             -
//	custom, read      all    all       all       all       all            all           -
//	  limited to org  org    org       all       org       -              -             -
//	custom, approve   -      -         -         scope     -              -             -
//	read_audit        -      -         -         -         -              -             all
//
// Every rule asks for a permission (jobs.Permission), never for a role: access.can is the
// one check, and the built-in roles are fixed sets of permissions (jobs.RolePermissions).
// A custom role limited to an organisation grants its permissions only on that
// organisation's jobs and holders; "scope" above is the role's organisation, or all.
//
// Everyone may read themselves (whoami, or their own username). The CA-operator gate is
// not scoped to an organisation, so CA operators read every job.
//
// Jobs:
//   - A job is created by a holder of the request permission (helpdesk, admin), always in pending_approval;
//     when the profile needs no approval it moves to approved in the same transaction.
//     The target agent must be enrolled (online or not): jobs wait for offline agents,
//     but an unknown agent ID is refused as the typo it most likely is.
//   - The profile is rendered for the holder when the job is created (a missing holder
//     attribute is refused, naming it) and the binding hash covers kind, holder, profile
//     name and hash, rendered subject, agent and token serial. A decision is refused
//     (binding_mismatch) when the profile changed since the job was queued, or when the
//     approver names a binding hash that is no longer the job's.
//   - A new job supersedes every open job (pending_approval, approved, dispatched) for the
//     same holder, profile, agent and token serial.
//   - The deadline defaults to the profile's approval expiry from now, or
//     DefaultJobDeadline for a profile without approvals. An open job past its deadline
//     expires, as does a request, approval or CA-operator gate that lapsed (jobs.DueForExpiry).
//     The sweeper (RunExpiry) does this with the actor "system:expiry".
//   - State changes are compare-and-set on the job's version; a lost race reads again
//     and decides again, up to a bound, never overwriting.
//
// Seams for later steps: Dispatcher is called inside the transaction that approves or
// withdraws a job (the outbox message will be written there); Issuer is called inside the
// transaction in which the CA-operator gate passes (issuance continues there). Both
// default to doing nothing.
//
// Concurrent approvals: on SQLite transactions are serialised. On PostgreSQL (read
// committed) two approvers deciding at the same moment may each count only their own
// approval; after any decision that leaves the gate pending the service settles the job
// again in a new transaction, and the sweeper does the same, so the job moves on as soon
// as the approvals suffice.
package service
