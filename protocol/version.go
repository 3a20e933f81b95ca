package protocol

// Version is the protocol version this code speaks and stamps on every
// envelope it builds.
//
// Bump it for any change a receiver of the previous version would reject or
// misread: a new field (receivers reject unknown fields), a new message type,
// job kind, step or state, a changed meaning or limit. Fixes that change no
// byte on the wire do not bump it.
//
// Compatibility rule: a receiver rejects a version outside
// [MinVersion, Version] with unsupported_version and dead-letters the
// message; it never guesses. A bump from N to N+1 is rolled out in order:
//
//  1. Coordinators learn N+1 while still accepting N, and keep sending N to
//     every agent whose hello announces Protocol.Max = N.
//  2. Agents are upgraded (in waves); each hello announces the range it
//     speaks, and the coordinator switches an agent to N+1 when it sees it.
//  3. When no enrolled agent announces Max < N+1 any more, MinVersion is
//     raised to N+1 and the code for N is removed.
//
// Agents are never ahead of the coordinators: an agent speaks to a
// coordinator that has been upgraded first.
//
// History (date: version, change):
//   - 2026-11-21: 1, initial: envelope, dispatch/certificate/cancel to
//     agents, hello/heartbeat/progress/csr/result/inventory from agents,
//     sealed PINs (x25519-hkdf-sha256-aes256gcm).
//   - 2026-11-21: 1, amended before any release (no receiver of 1 existed
//     yet, so no bump): dispatch.factory_pins, key.replaces (renew), error
//     code factory_pins_unknown, seal purpose agent_resume (agent-local,
//     never on the wire). Messages without the new fields are unchanged.
//   - 2026-11-21: 1, amended again before any release: pin_policy.so_length
//     (the profile's so_pin_length reaches the agent). Messages without it are
//     unchanged.
//   - 2026-12-06: 1, amended again before any release: cancel.state may be
//     failed (the coordinator failed the job itself) or rejected (a CA
//     operator refused to sign): the agent is told to stop in both cases.
//     Other cancels are unchanged.
const Version = 1

// MinVersion is the oldest version this code still accepts.
const MinVersion = 1

// SupportedVersion reports whether v is in [MinVersion, Version].
func SupportedVersion(v int) bool {
	return v >= MinVersion && v <= Version
}

// VersionRange is the span of versions an agent speaks, sent in its hello.
type VersionRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// Contains reports whether v is in the range.
func (r VersionRange) Contains(v int) bool {
	return v >= r.Min && v <= r.Max
}

// Validate checks the range is well formed.
func (r VersionRange) Validate() error {
	if r.Min < 1 {
		return invalid("min", "%d: versions start at 1", r.Min)
	}
	if r.Max < r.Min {
		return invalid("max", "%d is below min %d", r.Max, r.Min)
	}
	return nil
}
