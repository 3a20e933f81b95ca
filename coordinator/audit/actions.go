package audit

import "slices"

// Actions. The names are stored in the log: never rename one, add new ones.
const (
	ActionJobCreated     = "job.created"
	ActionJobEdited      = "job.edited" // binding changed while pending; approvals voided
	ActionJobTransition  = "job.transition"
	ActionJobApproved    = "job.approved"
	ActionJobRejected    = "job.rejected"
	ActionJobCancelled   = "job.cancelled"
	ActionJobSuperseded  = "job.superseded"
	ActionJobExpired     = "job.expired"
	ActionJobRetried     = "job.retried"
	ActionJobResultStale = "job.result_ignored" // a result for an old attempt, fenced off
	ActionJobWaiting     = "job.waiting"        // an approved job cannot be dispatched yet, and why

	ActionCertificateIssued  = "certificate.issued"
	ActionCertificateRevoked = "certificate.revoked"
	ActionCSRRejected        = "csr.rejected"        // bad signature, wrong key, wrong key type
	ActionPINRevealed        = "pin.revealed"        // a PIN shown to its user (at most once)
	ActionPINsReplaced       = "pin.replaced"        // a job that re-initialised a token replaced the PINs kept for it
	ActionPINsRefused        = "pin.refused"         // PINs in a result not kept: the attempt had no right to change them
	ActionTokenClaimRefused  = "token.claim_refused" // an agent reported a token another agent holds
	// The token life cycle (package tokenlife); Target is "token:SERIAL".
	ActionTokenStateChanged       = "token.state_changed"       // suspended, reinstated, lost, ...; details: from, to, certificates
	ActionTokenRequested          = "token.requested"           // a temporary token or a replacement requested for the token
	ActionCertificateHoldReleased = "certificate.hold_released" // a certificate on hold is valid again (its token reinstated)

	ActionAccessDenied    = "access.denied"
	ActionTokenUsed       = "token.used" // an API token was used
	ActionTokenCreated    = "token.created"
	ActionTokenRevoked    = "token.revoked"
	ActionMessageRejected = "message.rejected" // malformed, forged or unknown message dead-lettered

	ActionConfigChanged  = "config.changed"
	ActionProfileApplied = "profile.applied"
	ActionProfileDeleted = "profile.deleted"
	ActionUserCreated    = "user.created"
	ActionUserUpdated    = "user.updated"
	ActionUserDisabled   = "user.disabled"
	ActionRolesChanged   = "user.roles_changed"
	ActionOrgCreated     = "org.created"
	ActionOrgUpdated     = "org.updated"

	ActionRecoveryCertAdded   = "recovery_certificate.added"
	ActionRecoveryCertRetired = "recovery_certificate.retired"
	// Escrowed keys: made and archived (details: key id, certificate, recovery keys), a
	// previous attempt's archive superseded, an encryption key recorded for a holder
	// (escrowed or registered) or refused, and the steps of a recovery: queued, the archive
	// taken by an officer, delivered (to a token, or as a PKCS#12 to the officer).
	ActionKeyEscrowed           = "escrowed_key.archived"
	ActionKeySuperseded         = "escrowed_key.superseded"
	ActionEncryptionKeyRecorded = "encryption_key.recorded"
	ActionEncryptionKeyRefused  = "encryption_key.refused"
	ActionKeyRecoveryRequested  = "key_recovery.requested"
	ActionKeyRecoveryOpened     = "key_recovery.archive_taken"
	ActionKeyRecoveryDelivered  = "key_recovery.delivered"

	ActionAgentEnrolled       = "agent.enrolled"
	ActionAgentApproved       = "agent.approved"
	ActionAgentRevoked        = "agent.revoked"
	ActionAgentDuplicateID    = "agent.duplicate_id"  // a second agent tried a taken ID
	ActionAgentKeySet         = "agent.key_set"       // the seal key of the agent's first hello was recorded
	ActionAgentKeyReset       = "agent.key_reset"     // an admin cleared the seal key: the next hello sets it
	ActionAgentEnrolRefused   = "agent.enrol_refused" // a self-enrolment refused: bad, used, expired or revoked code, taken ID, plain HTTP
	ActionAgentRejected       = "agent.rejected"      // a pending agent refused by an administrator
	ActionAgentDisabled       = "agent.disabled"
	ActionAgentEnabled        = "agent.enabled"
	ActionAgentRemoved        = "agent.removed"
	ActionAgentCredentials    = "agent.credentials" // broker credentials provisioned, rotated or revoked
	ActionEnrolmentKeyCreated = "enrolment_key.created"
	ActionEnrolmentKeyRevoked = "enrolment_key.revoked"

	ActionAuditVerified = "audit.verified"

	ActionUserEnabled = "user.enabled"
	ActionRoleCreated = "role.created" // a custom role
	ActionRoleUpdated = "role.updated"
	ActionRoleDeleted = "role.deleted"

	// Fleet rollouts. Each names the rollout in Target ("rollout:ID").
	ActionRolloutCreated      = "rollout.created"  // stored pending approval: target count, binding hash, wave sizes
	ActionRolloutApproved     = "rollout.approved" // one approval (of the rollout, or of a resume after a brake trip)
	ActionRolloutRejected     = "rollout.rejected"
	ActionRolloutStarted      = "rollout.started" // the engine took an approved rollout up
	ActionRolloutWaveStarted  = "rollout.wave_started"
	ActionRolloutBrakeTripped = "rollout.brake_tripped" // paused by its failure brake; details carry the trip
	ActionRolloutPaused       = "rollout.paused"        // by an operator, or by the engine when its profile changed
	ActionRolloutResumed      = "rollout.resumed"
	ActionRolloutPromoted     = "rollout.promoted" // past the pause after a wave
	ActionRolloutAborted      = "rollout.aborted"
	ActionRolloutCompleted    = "rollout.completed"
	ActionRolloutTargetsAdded = "rollout.targets_added" // a standing rollout took up certificates entering their renewal window
	ActionRolloutExpired      = "rollout.expired"       // not approved in time

	// Signing in to the web console.
	ActionSignIn         = "signin.succeeded" // a password or an identity provider's word accepted
	ActionSignInFailed   = "signin.failed"    // a wrong username or password, an identity matching no user, a disabled user
	ActionSignInLocked   = "signin.locked"    // too many wrong passwords: sign-in locked for a while
	ActionSessionStarted = "session.started"
	ActionSessionEnded   = "session.ended"   // signed out, or ended by a password change or a disabled user
	ActionSessionExpired = "session.expired" // idle too long, or past its absolute end
	ActionPasswordSet    = "user.password_set"
	ActionOIDCLinked     = "oidc.linked"   // an identity provider's subject linked to a user at its first sign-in
	ActionOIDCUnlinked   = "oidc.unlinked" // a user's links to identity providers' subjects removed by an administrator
)

var actions = map[string]bool{
	ActionAgentEnrolRefused: true, ActionAgentRejected: true, ActionAgentDisabled: true, ActionAgentEnabled: true,
	ActionAgentRemoved: true, ActionAgentCredentials: true, ActionEnrolmentKeyCreated: true, ActionEnrolmentKeyRevoked: true,
	ActionJobCreated: true, ActionJobEdited: true, ActionJobTransition: true, ActionJobApproved: true,
	ActionJobRejected: true, ActionJobCancelled: true, ActionJobSuperseded: true, ActionJobExpired: true,
	ActionJobRetried: true, ActionJobResultStale: true, ActionJobWaiting: true,
	ActionCertificateIssued: true, ActionCertificateRevoked: true, ActionCSRRejected: true, ActionPINRevealed: true,
	ActionPINsReplaced: true, ActionPINsRefused: true, ActionTokenClaimRefused: true,
	ActionTokenStateChanged: true, ActionTokenRequested: true, ActionCertificateHoldReleased: true,
	ActionAccessDenied: true, ActionTokenUsed: true, ActionTokenCreated: true, ActionTokenRevoked: true,
	ActionMessageRejected: true,
	ActionConfigChanged:   true, ActionProfileApplied: true, ActionProfileDeleted: true,
	ActionUserCreated: true, ActionUserUpdated: true, ActionUserDisabled: true, ActionRolesChanged: true,
	ActionOrgCreated: true, ActionOrgUpdated: true,
	ActionRecoveryCertAdded: true, ActionRecoveryCertRetired: true,
	ActionKeyEscrowed: true, ActionKeySuperseded: true, ActionEncryptionKeyRecorded: true, ActionEncryptionKeyRefused: true,
	ActionKeyRecoveryRequested: true, ActionKeyRecoveryOpened: true, ActionKeyRecoveryDelivered: true,
	ActionAgentEnrolled: true, ActionAgentApproved: true, ActionAgentRevoked: true, ActionAgentDuplicateID: true,
	ActionAgentKeySet: true, ActionAgentKeyReset: true,
	ActionAuditVerified: true,
	ActionUserEnabled:   true, ActionRoleCreated: true, ActionRoleUpdated: true, ActionRoleDeleted: true,
	ActionRolloutCreated: true, ActionRolloutApproved: true, ActionRolloutRejected: true, ActionRolloutStarted: true,
	ActionRolloutWaveStarted: true, ActionRolloutBrakeTripped: true, ActionRolloutPaused: true, ActionRolloutResumed: true,
	ActionRolloutPromoted: true, ActionRolloutAborted: true, ActionRolloutCompleted: true, ActionRolloutTargetsAdded: true,
	ActionRolloutExpired: true,
	ActionSignIn:         true, ActionSignInFailed: true, ActionSignInLocked: true, ActionSessionStarted: true,
	ActionSessionEnded: true, ActionSessionExpired: true, ActionPasswordSet: true, ActionOIDCLinked: true,
	ActionOIDCUnlinked: true,
}

// KnownAction reports whether a is one of the actions above. Verification never depends
// on it: a log written by a newer version with more actions still verifies.
func KnownAction(a string) bool { return actions[a] }

// Actions lists the actions above, sorted, for choosing one to filter by.
func Actions() []string {
	out := make([]string, 0, len(actions))
	for a := range actions {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}
