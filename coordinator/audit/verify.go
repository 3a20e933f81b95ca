package audit

import (
	"fmt"
	"iter"
)

// Kind is how the chain was broken.
type Kind string

// Kinds of tampering.
const (
	// KindEdited: the entry's content does not match its hash, or the next entry does not
	// link to it (it was rewritten and re-hashed after the next one was written).
	KindEdited Kind = "edited"
	// KindRemoved: the entry is missing (a gap in Seq).
	KindRemoved Kind = "removed"
	// KindReordered: the entry appears later in the stream than its place.
	KindReordered Kind = "reordered"
	// KindInserted: an entry reuses a Seq already in the chain.
	KindInserted Kind = "inserted"
	// KindRewritten: the chain is whole, but the entry at a checkpoint's Seq does not carry
	// the hash the checkpoint signed: the log was rewritten up to there, hashes and head
	// recomputed.
	KindRewritten Kind = "rewritten"
)

// CodeChainBroken is the stable code of a VerifyError.
const CodeChainBroken = "audit_chain_broken"

// VerifyError names the first broken entry.
type VerifyError struct {
	Seq    int64
	Kind   Kind
	Detail string
	// Checkpoint is the checkpoint the log contradicts (a cut or rewritten tail); nil when
	// the chain itself is broken.
	Checkpoint *Checkpoint
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("audit: entry %d %s: %s", e.Seq, e.Kind, e.Detail)
}

// Code returns CodeChainBroken.
func (e *VerifyError) Code() string { return CodeChainBroken }

// Is makes errors.Is(err, ErrTampered) match any VerifyError.
func (e *VerifyError) Is(target error) bool { return target == ErrTampered }

// ErrTampered matches every VerifyError.
var ErrTampered = &VerifyError{Kind: "tampered", Detail: "the audit chain is broken"}

// Head is the last verified entry: where a later verification may resume, and what an
// anchor would record.
type Head struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

// Verifier checks entries one at a time, in Seq order, keeping O(1) state, so a store can
// verify millions of rows while streaming them. After the first error every call returns
// that error.
type Verifier struct {
	next     int64  // the Seq expected next
	lastHash string // the hash the next entry must link to
	// A gap is decided later: if the missing entry shows up further on, it was reordered;
	// if the stream ends without it, it was removed.
	gapAt   int64 // first missing Seq; 0 when no gap is pending
	gapSeen int64 // the Seq found in its place
	anchors anchors
	err     error
}

// NewVerifier starts at the beginning of the log.
func NewVerifier() *Verifier { return &Verifier{next: 1, lastHash: GenesisHash} }

// ResumeVerifier continues after a head verified earlier (or anchored), so a periodic check
// need only read the entries added since.
func ResumeVerifier(h Head) *Verifier { return &Verifier{next: h.Seq + 1, lastHash: h.Hash} }

// Head returns the last entry verified so far.
func (v *Verifier) Head() Head { return Head{Seq: v.next - 1, Hash: v.lastHash} }

// Add verifies the next entry of the stream.
func (v *Verifier) Add(e Entry) error {
	if v.err != nil {
		return v.err
	}
	if v.gapAt != 0 {
		if e.Seq == v.gapAt {
			return v.fail(v.gapAt, KindReordered, "it appears after entry %d", v.gapSeen)
		}
		return nil // the first problem is the gap; only its kind is still open
	}
	switch {
	case e.Seq == v.next:
		if e.Unreadable != "" {
			return v.fail(e.Seq, KindEdited, "its stored row cannot be read: %s", e.Unreadable)
		}
		if ComputeHash(e) != e.Hash {
			if k := v.renumbered(e); k > 0 {
				return v.fail(e.Seq, KindRemoved, "the entry here was written as entry %d: %d entries were removed and the rest renumbered", e.Seq+k, k)
			}
			return v.fail(e.Seq, KindEdited, "its content does not match its hash")
		}
		if e.PrevHash != v.lastHash {
			if v.next == 1 {
				return v.fail(e.Seq, KindEdited, "it does not link to the start of the chain")
			}
			return v.fail(v.next-1, KindEdited, "entry %d does not link to it: it was rewritten after entry %d was written", e.Seq, e.Seq)
		}
		v.next, v.lastHash = e.Seq+1, e.Hash
		return v.checkAnchors(e)
	case v.seqEdited(e):
		return v.fail(v.next, KindEdited, "its seq was changed to %d", e.Seq)
	case e.Seq > v.next:
		v.gapAt, v.gapSeen = v.next, e.Seq
		return nil
	default:
		return v.fail(e.Seq, KindInserted, "a second entry with seq %d appears after entry %d", e.Seq, v.next-1)
	}
}

// renumberWindow bounds the search for renumbered entries; it only runs once the chain
// is already known to be broken, to name the cause.
const renumberWindow = 64

// renumbered returns k > 0 when e hashes correctly as entry e.Seq+k, i.e. k entries were
// deleted and the following ones given lower numbers.
func (v *Verifier) renumbered(e Entry) int64 {
	for k := int64(1); k <= renumberWindow; k++ {
		orig := e
		orig.Seq = e.Seq + k
		if ComputeHash(orig) == e.Hash {
			return k
		}
	}
	return 0
}

// seqEdited reports whether e is the expected entry with only its Seq changed.
func (v *Verifier) seqEdited(e Entry) bool {
	orig := e
	orig.Seq = v.next
	return ComputeHash(orig) == e.Hash
}

// Finish ends the stream: a gap still open means the missing entry was removed; a log
// that stops before the highest checkpoint expected (Expect) lost its tail.
func (v *Verifier) Finish() error {
	if v.err == nil && v.gapAt != 0 {
		if v.gapAt == 1 {
			return v.fail(1, KindRemoved, "the log starts at entry %d", v.gapSeen)
		}
		if v.gapSeen == v.gapAt+1 {
			return v.fail(v.gapAt, KindRemoved, "entry %d follows entry %d", v.gapSeen, v.gapAt-1)
		}
		return v.fail(v.gapAt, KindRemoved, "entries %d to %d are missing", v.gapAt, v.gapSeen-1)
	}
	if v.err == nil {
		return v.checkReach()
	}
	return v.err
}

func (v *Verifier) fail(seq int64, kind Kind, format string, args ...any) error {
	return v.failAt(nil, seq, kind, format, args...)
}

// failAt records the first error, with the checkpoint it contradicts when there is one.
func (v *Verifier) failAt(c *Checkpoint, seq int64, kind Kind, format string, args ...any) error {
	v.err = &VerifyError{Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...), Checkpoint: c}
	return v.err
}

// Verify checks a whole log given in Seq order from its first entry.
func Verify(entries []Entry) error {
	v := NewVerifier()
	for _, e := range entries {
		if err := v.Add(e); err != nil {
			return err
		}
	}
	return v.Finish()
}

// VerifySeq checks a stream of entries as a store yields them (a read error stops it and
// is returned wrapped, as it is not tampering), starting after head (Head{} with an empty
// hash means the beginning of the log). It returns the last verified head.
func VerifySeq(from Head, entries iter.Seq2[Entry, error]) (Head, error) {
	return VerifySeqCheckpoints(from, nil, entries)
}

// VerifySeqCheckpoints is VerifySeq holding the chain to checkpoints whose signatures the
// caller verified (see Verifier.Expect). Checkpoints before from cannot be checked and
// are ignored.
func VerifySeqCheckpoints(from Head, checkpoints []Checkpoint, entries iter.Seq2[Entry, error]) (Head, error) {
	v := NewVerifier()
	if from.Seq > 0 || from.Hash != "" {
		v = ResumeVerifier(from)
	}
	for _, c := range checkpoints {
		if c.Seq > from.Seq {
			v.Expect(c)
		}
	}
	for e, err := range entries {
		if err != nil {
			return v.Head(), fmt.Errorf("audit: reading entries after seq %d: %w", v.Head().Seq, err)
		}
		if err := v.Add(e); err != nil {
			return v.Head(), err
		}
	}
	return v.Head(), v.Finish()
}
