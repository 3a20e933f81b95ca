package protocol

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
)

// Agent IDs.
//
// An agent ID is 1 to MaxAgentIDLen bytes of lowercase letters, digits and
// '_', '@', '-', starting with a letter or digit. Why so narrow:
//   - it is a word of AMQP routing keys: commands are routed by the agent ID
//     and events by "<type>.<agentID>" on a topic exchange, where '.'
//     separates words and '*' and '#' are wildcards. An ID containing any of
//     them would route to, or let an agent publish as, someone else.
//   - it names the agent's queue, its broker user and its permission
//     regexes, all compared byte for byte: allowing upper case would let
//     "WS-01" and "ws-01" be two agents that people read as one, defeating
//     duplicate-ID detection. Agents lower-case host names to make IDs.
//   - a leading '-' reads as a flag in rabbitmqctl and shell tools.
//
// '@' allows one agent per user session on a shared host ("alice@ws-01").
const MaxAgentIDLen = 128

// ValidateAgentID checks id against the agent ID rules.
func ValidateAgentID(id string) error {
	const field = "agent_id"
	if id == "" {
		return invalid(field, "required")
	}
	if len(id) > MaxAgentIDLen {
		return tooLarge(field, len(id), MaxAgentIDLen, "bytes")
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		switch {
		case b >= 'a' && b <= 'z', b >= '0' && b <= '9':
		case b == '_' || b == '@' || b == '-':
			if i == 0 {
				return invalid(field, "%q starts with %q; it must start with a lowercase letter or digit", id, b)
			}
		case b == '.' || b == '*' || b == '#':
			return invalid(field, "%q contains %q at byte %d: agent IDs are AMQP routing-key words, where '.', '*' and '#' have meaning", id, b, i)
		case b >= 'A' && b <= 'Z':
			return invalid(field, "%q contains upper case %q at byte %d: agent IDs are lower case", id, b, i)
		case b >= 0x80:
			return invalid(field, "%q contains non-ASCII byte 0x%02x at byte %d; allowed: a-z 0-9 _ @ -", id, b, i)
		default:
			return invalid(field, "%q contains %q at byte %d; allowed: a-z 0-9 _ @ -", id, b, i)
		}
	}
	return nil
}

// Job IDs are chosen by the coordinator: 1 to MaxJobIDLen letters, digits,
// '_' and '-', starting with a letter or digit. That fits UUIDs, ULIDs and
// database keys, and is safe in AMQP correlation IDs, file names of the
// agent's journal and log lines.
const MaxJobIDLen = 64

// ValidateJobID checks id against the job ID rules.
func ValidateJobID(id string) error {
	const field = "job_id"
	if id == "" {
		return invalid(field, "required")
	}
	if len(id) > MaxJobIDLen {
		return tooLarge(field, len(id), MaxJobIDLen, "bytes")
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case b == '_' || b == '-':
			if i == 0 {
				return invalid(field, "%q starts with %q; it must start with a letter or digit", id, b)
			}
		case b >= 0x80:
			return invalid(field, "%q contains non-ASCII byte 0x%02x at byte %d; allowed: A-Z a-z 0-9 _ -", id, b, i)
		default:
			return invalid(field, "%q contains %q at byte %d; allowed: A-Z a-z 0-9 _ -", id, b, i)
		}
	}
	return nil
}

// Message IDs are 128-bit values in canonical lowercase UUID form
// (8-4-4-4-12 hex digits). The UUID form lets a coordinator use its outbox
// row's UUID (v4 or time-ordered v7) as the message ID, and PostgreSQL store
// it natively; any version is accepted, the nil UUID is not.
const messageIDLen = 36

// NewMessageID returns a random (version 4) message ID.
func NewMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand crashes the program instead
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [messageIDLen]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}

// ValidateMessageID checks id is a canonical lowercase UUID other than nil.
func ValidateMessageID(id string) error {
	return checkUUID("id", id)
}

func checkUUID(field, id string) error {
	if id == "" {
		return invalid(field, "required")
	}
	if len(id) != messageIDLen {
		return invalid(field, "%d bytes; want a %d-byte lowercase UUID", len(id), messageIDLen)
	}
	nonZero := false
	for i := 0; i < len(id); i++ {
		b := id[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if b != '-' {
				return invalid(field, "byte %d is %q, want '-' (lowercase UUID form)", i, b)
			}
			continue
		}
		if !isLowerHex(b) {
			return invalid(field, "byte %d (%q) is not a lowercase hex digit", i, b)
		}
		nonZero = nonZero || b != '0'
	}
	if !nonZero {
		return invalid(field, "the nil UUID is not an ID")
	}
	return nil
}

// KeyIDSize is the length in bytes of the CKA_ID DeriveKeyID makes.
const KeyIDSize = 16

// DeriveKeyID returns the CKA_ID (lowercase hex) for the key a job
// generates. It depends on the job only, not the attempt: a retry finds the
// key an earlier attempt made instead of making a second one. A renewal is
// a new job and gets a new ID. The coordinator puts the result into the
// dispatch; agents use what the dispatch says.
func DeriveKeyID(jobID string) string {
	sum := sha256.Sum256([]byte("tokenfleet cka_id v1\x00" + jobID))
	return hex.EncodeToString(sum[:KeyIDSize])
}

// FingerprintSize is the length in bytes of a key fingerprint.
const FingerprintSize = 16

// KeyFingerprint names a public key by the first FingerprintSize bytes of
// the SHA-256 of its PKIX DER form, in lowercase hex. Sealed values carry the
// fingerprint of the key they were sealed to, so a receiver holding another
// key says so instead of failing to decrypt.
func KeyFingerprint(pkixDER []byte) string {
	sum := sha256.Sum256(pkixDER)
	return hex.EncodeToString(sum[:FingerprintSize])
}
