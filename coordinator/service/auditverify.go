package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// AuditVerification is what VerifyAudit found.
type AuditVerification struct {
	Entries int64      // entries read, as tokenfleetctl audit verify counts them
	Head    audit.Head // the last entry that verified
	// Checkpoints is how many kept checkpoints, their signatures verified, the log was
	// held to; Latest is the newest of them (zero when none).
	Checkpoints int
	Latest      audit.Checkpoint
	// Forged names kept checkpoints that claim the coordinator's key but whose signature
	// does not verify: rows written behind its back.
	Forged []string
	// OtherKey counts kept checkpoints signed by another key (one rotated out): they hold
	// nothing here and are not checked.
	OtherKey int
	// NoKey: the service was given no checkpoint key, so no checkpoint was checked.
	NoKey bool
	// Broken is the first break of the chain, or the first checkpoint the log
	// contradicts; nil when the log is whole.
	Broken *audit.VerifyError
}

// Verified reports whether the log is whole and every kept checkpoint of this key holds.
func (v AuditVerification) Verified() bool { return v.Broken == nil && len(v.Forged) == 0 }

// VerifyAudit walks the whole audit log through the hash-chain verifier tokenfleetctl's
// audit verify uses (audit.VerifySeqCheckpoints), holding it to the checkpoints the
// coordinator kept whose signatures verify with its key. Tampering is the result, not an
// error: the error is for a refusal or a log that could not be read. Admin and auditor
// only; each verification is audited with its outcome.
//
// A verification on the coordinator trusts the coordinator; tokenfleetctl audit verify,
// with checkpoints kept elsewhere, does not.
func (s *Service) VerifyAudit(ctx context.Context, by Actor) (AuditVerification, error) {
	actor := by.user
	if _, err := s.canRead(ctx, actor, resAudit); err != nil {
		return AuditVerification{}, err
	}
	var res AuditVerification
	cps, err := s.keptCheckpoints(ctx, &res)
	if err != nil {
		return AuditVerification{}, err
	}
	entries := func(yield func(audit.Entry, error) bool) {
		for e, err := range s.st.AuditEntries(ctx, 1) {
			if err == nil {
				res.Entries++
			}
			if !yield(e, err) {
				return
			}
		}
	}
	head, err := audit.VerifySeqCheckpoints(audit.Head{}, cps, entries)
	res.Head = head
	if !errors.As(err, &res.Broken) && err != nil {
		return AuditVerification{}, AsError(err)
	}
	if err := s.update(ctx, func(t *txn) error { return t.audit(ctx, verifiedEntry(actor.ID, res)) }); err != nil {
		return AuditVerification{}, err
	}
	return res, nil
}

// keptCheckpoints reads every kept checkpoint and returns those whose signatures verify
// with the service's key, noting the others in res.
func (s *Service) keptCheckpoints(ctx context.Context, res *AuditVerification) ([]audit.Checkpoint, error) {
	if s.cpKey == nil {
		res.NoKey = true
		return nil, nil
	}
	keyID := audit.CheckpointKeyID(s.cpKey)
	var out []audit.Checkpoint
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		kept, next, err := s.st.ListAuditCheckpoints(ctx, p)
		if err != nil {
			return nil, AsError(err)
		}
		for _, c := range kept {
			switch err := audit.VerifyCheckpoint(s.cpKey, c); {
			case err == nil:
				out = append(out, c)
				if c.Seq >= res.Latest.Seq {
					res.Latest = c
				}
			case c.KeyID != keyID:
				res.OtherKey++
			default:
				res.Forged = append(res.Forged, fmt.Sprintf("the checkpoint of entry %d made at %s: %v", c.Seq,
					c.Time.Format("2006-01-02 15:04:05Z07:00"), err))
			}
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	res.Checkpoints = len(out)
	return out, nil
}

// verifiedEntry records a verification and what it found.
func verifiedEntry(actorID string, res AuditVerification) audit.Entry {
	kv := []any{"verified", res.Verified(), "entries", res.Entries, "head_seq", res.Head.Seq, "checkpoints", res.Checkpoints}
	if res.Broken != nil {
		kv = append(kv, "broken_seq", res.Broken.Seq, "broken_kind", res.Broken.Kind, "broken_detail", res.Broken.Detail)
	}
	if len(res.Forged) > 0 {
		kv = append(kv, "forged_checkpoints", res.Forged)
	}
	return audit.Entry{Actor: actorID, Action: audit.ActionAuditVerified, Target: "audit", Details: audit.Details(kv...)}
}
