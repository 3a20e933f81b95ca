package jobs

import (
	"regexp"
	"slices"
)

// Permission is one thing a role allows. The built-in roles are fixed sets of
// permissions (RolePermissions); a custom role is a named set an administrator defines,
// optionally limited to one organisation. Every check of who may do what asks for a
// permission, never for a role, so a custom role means the same thing everywhere.
type Permission string

// Permissions.
const (
	PermRequest        Permission = "request"         // queue jobs; retry anyone's failed job
	PermApprove        Permission = "approve"         // decide at a request gate naming one's role; read the jobs one may decide on
	PermCAOperator     Permission = "ca_operator"     // decide at the CA-operator gate; revoke certificates
	PermManageJobs     Permission = "manage_jobs"     // cancel anyone's job; see the PIN of anyone's job
	PermManageAgents   Permission = "manage_agents"   // enrol agents, reset their keys
	PermManageProfiles Permission = "manage_profiles" // apply profiles
	PermManageUsers    Permission = "manage_users"    // organisations, people, API tokens, custom roles
	PermReadAudit      Permission = "read_audit"      // read and verify the audit log
	PermRead           Permission = "read"            // list and show jobs, people, agents, tokens, certificates
	// PermManageRollouts: create fleet rollouts, and pause, resume, promote and abort them.
	// Approving one is the approve permission's, under the rollout profile's gate rules.
	PermManageRollouts Permission = "manage_rollouts"
	// PermManageTokens: move tokens in their life cycle (suspend, reinstate, lost,
	// stolen, damaged, retire), which holds, releases or revokes their certificates.
	PermManageTokens Permission = "manage_tokens"
	// PermRecoverKeys: take an approved recovery's archive to open it with a recovery key,
	// and deliver the result (to the target token, or as a PKCS#12 to oneself). Approving
	// a recovery is the key_recovery_officer role's, at the recovery gate.
	PermRecoverKeys Permission = "recover_keys"
)

var permissions = []Permission{PermRequest, PermApprove, PermCAOperator, PermManageJobs, PermManageAgents,
	PermManageProfiles, PermManageUsers, PermReadAudit, PermRead, PermManageRollouts, PermManageTokens, PermRecoverKeys}

// AllPermissions lists every permission.
func AllPermissions() []Permission { return slices.Clone(permissions) }

// Valid reports whether p is a known permission.
func (p Permission) Valid() bool { return slices.Contains(permissions, p) }

// builtin is what each built-in role allows. Reading is finer than one permission for
// the built-in roles (an approver reads their own organisation, a CA operator no agents):
// the service's read table says how.
var builtin = map[Role][]Permission{
	RoleAdmin:      permissions,
	RoleHelpdesk:   {PermRequest, PermRead, PermManageTokens},
	RoleApprover:   {PermApprove, PermRead},
	RoleCAOperator: {PermCAOperator, PermRead},
	RoleAuditor:    {PermRead, PermReadAudit},
	// A rollout owner runs fleet rollouts and reads what they target; the jobs a rollout
	// creates pass their request gate by the rollout's own approval, never by this role.
	RoleRolloutOwner: {PermManageRollouts, PermRead},
	// A key-recovery officer approves recoveries (by role, at their gate), opens the
	// approved ones, and reads jobs, people and certificates to judge them.
	RoleKeyRecoveryOfficer: {PermRecoverKeys, PermRead},
}

// RolePermissions returns what a built-in role allows; nil for any other name.
func RolePermissions(r Role) []Permission { return slices.Clone(builtin[r]) }

// customRoleRE is the form of a custom role's name: lower case, so that a name in a
// profile, on a user and in the store compare byte for byte.
var customRoleRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)

// WellFormed reports whether r is a built-in role or a name a custom role may have. Whether
// such a custom role exists is the store's to say.
func (r Role) WellFormed() bool { return r.Valid() || customRoleRE.MatchString(string(r)) }

// CustomRoleNameRule says what a custom role's name may be, for error messages.
const CustomRoleNameRule = "1 to 64 lower-case letters, digits, _ and -, starting with a letter, and not a built-in role"

// ValidCustomRoleName reports whether name may name a new custom role.
func ValidCustomRoleName(name string) bool {
	return customRoleRE.MatchString(name) && !Role(name).Valid()
}

// Can reports whether the actor holds permission p: through a built-in role it holds, or
// through the custom roles the caller resolved into Permissions for this job.
func (a Actor) Can(p Permission) bool {
	if slices.Contains(a.Permissions, p) {
		return true
	}
	for _, r := range a.Roles {
		if slices.Contains(builtin[r], p) {
			return true
		}
	}
	return false
}
