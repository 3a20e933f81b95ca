// Package audit holds the logic of the coordinator's append-only, hash-chained audit log:
// the entry, its hash, chaining a new entry onto the last one, and verifying a chain
// (whole, or streamed row by row from a store) with the first broken entry named.
//
// Each entry's hash covers every other field, its sequence number and the previous
// entry's hash, so editing, removing, inserting or reordering entries breaks the chain
// where it happened. What a plain hash chain cannot show: a rewrite of the whole chain
// from some point on, and a removal at the very end. Both need something kept outside the
// database: signed checkpoints of the chain head (Checkpoint, SignCheckpoint,
// VerifyCheckpoint), which an auditor keeps and holds a later log to
// (VerifySeqCheckpoints). What happened after the last checkpoint an auditor kept stays
// unprovable.
//
// The store must give sequence numbers with Next (previous + 1, in the same transaction
// as the insert), never from a database sequence: those skip values on rollback, and a
// gap reads as a removed entry.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// GenesisHash is the PrevHash of the first entry (Seq 1).
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// hashDomain separates audit hashes from the project's other hashes and versions the
// encoding.
const hashDomain = "tokenfleet/audit-entry/v1"

// Entry is one audit log record.
type Entry struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"` // UTC, whole microseconds (what SQL stores)
	// Actor is a user ID, "agent:<id>" or "system:<component>".
	Actor  string `json:"actor"`
	Action string `json:"action"`
	JobID  string `json:"job_id,omitempty"`
	Target string `json:"target,omitempty"` // what was acted on: user, agent, profile, token ...
	Reason string `json:"reason,omitempty"`
	// Details is a JSON object, hashed byte for byte: the store keeps it unchanged (not as
	// jsonb, which reorders keys). Next puts it in the compact form encoding/json writes,
	// so an export and re-import through encoding/json keeps the bytes.
	Details  json.RawMessage `json:"details,omitempty"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
	// Unreadable says what of the stored row could not be read (a time that is not a
	// time, details that are not JSON): such a row was changed behind the store's back.
	// It is never hashed; the store fills it, and the verifier reports the entry.
	Unreadable string `json:"unreadable,omitempty"`
}

// ErrInvalidEntry marks an entry the log must not accept.
var ErrInvalidEntry = errors.New("invalid audit entry")

var actionRE = regexp.MustCompile(`^[a-z][a-z_]*(\.[a-z][a-z_]*)+$`)

// Validate checks an entry before it is chained: an actor, a known action, a time, text
// that both SQLite and PostgreSQL store unchanged (valid UTF-8, no NUL), details that are
// a JSON object (or empty).
func (e Entry) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrInvalidEntry, fmt.Sprintf(format, args...)))
	}
	if e.Actor == "" {
		bad("actor is empty")
	}
	switch {
	case !actionRE.MatchString(e.Action):
		bad("action %q is not of the form noun.verb", e.Action)
	case !KnownAction(e.Action):
		bad("action %q is not a known action; add it to the action list first", e.Action)
	}
	if e.Time.IsZero() {
		bad("time is not set")
	}
	check := func(field, s string) {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			bad("%s holds invalid UTF-8 or a NUL byte", field)
		}
	}
	check("actor", e.Actor)
	check("job_id", e.JobID)
	check("target", e.Target)
	check("reason", e.Reason)
	if d := canonicalDetails(e.Details); d != nil {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(d, &obj); err != nil || obj == nil {
			bad("details is not a JSON object")
		}
	}
	return errors.Join(errs...)
}

// ComputeHash returns the hex SHA-256 of an unambiguous encoding of every field but Hash:
// fixed-width integers, length-prefixed strings and details bytes. Time enters as whole
// microseconds since 1970, so a value that went through SQL hashes alike. Empty and nil
// details hash alike.
func ComputeHash(e Entry) string {
	h := sha256.New()
	putString(h, hashDomain)
	putInt(h, e.Seq)
	putInt(h, e.Time.UnixMicro())
	for _, s := range []string{e.Actor, e.Action, e.JobID, e.Target, e.Reason} {
		putString(h, s)
	}
	putInt(h, int64(len(e.Details)))
	h.Write(e.Details)
	putString(h, e.PrevHash)
	return hex.EncodeToString(h.Sum(nil))
}

func putInt(h hash.Hash, n int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	h.Write(b[:])
}

func putString(h hash.Hash, s string) {
	putInt(h, int64(len(s)))
	h.Write([]byte(s))
}

// Next chains e after prev (nil for the first entry): it sets Seq, PrevHash and Hash, puts
// Time in UTC truncated to microseconds, and puts Details in canonical form (a copy, so
// later changes to the caller's slice cannot alter the entry). Call e.Validate first, or
// use Seal.
func Next(prev *Entry, e Entry) Entry {
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	e.Details = canonicalDetails(e.Details)
	if prev == nil {
		e.Seq, e.PrevHash = 1, GenesisHash
	} else {
		e.Seq, e.PrevHash = prev.Seq+1, prev.Hash
	}
	e.Hash = ComputeHash(e)
	return e
}

// Seal validates e and chains it after prev: the function a store calls while it holds
// the chain head.
func Seal(prev *Entry, e Entry) (Entry, error) {
	if err := e.Validate(); err != nil {
		return Entry{}, err
	}
	if prev != nil && (prev.Seq < 1 || len(prev.Hash) != len(GenesisHash)) {
		return Entry{}, fmt.Errorf("%w: previous entry has seq %d and hash %q", ErrInvalidEntry, prev.Seq, prev.Hash)
	}
	return Next(prev, e), nil
}

// canonicalDetails returns details compacted with HTML-sensitive characters escaped,
// which is what encoding/json writes for a RawMessage; "null" and "{}" become nil, as
// does empty. Invalid JSON is copied unchanged for Validate to report.
func canonicalDetails(d json.RawMessage) json.RawMessage {
	if len(d) == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, d); err != nil {
		return bytes.Clone(d)
	}
	if s := buf.String(); s == "" || s == "null" || s == "{}" {
		return nil
	}
	var out bytes.Buffer
	json.HTMLEscape(&out, buf.Bytes())
	return out.Bytes()
}

// Details builds an entry's details object from key-value pairs, leaving out empty strings:
// Details("holder", id, "reason_code", 1). Keys are strings; values are strings, numbers,
// booleans or lists of them. nil when nothing is left.
func Details(kv ...any) json.RawMessage {
	m := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		if s, ok := kv[i+1].(string); ok && s == "" {
			continue
		}
		m[k] = kv[i+1]
	}
	if len(m) == 0 {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		// Only plain values are passed (see above): a failure is a programming error.
		panic("audit: details: " + err.Error())
	}
	return b
}
