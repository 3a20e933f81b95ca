package client

import (
	"context"
	"fmt"
	"iter"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
)

// AuditEntries yields the audit log from the entry after afterSeq on, page by page
// (pageSize entries per request; 0: the server's default), in the order the server sends
// them. It stops with an error when the server's paging does not move forward.
func (c *Client) AuditEntries(ctx context.Context, afterSeq int64, pageSize int) iter.Seq2[AuditEntry, error] {
	return func(yield func(AuditEntry, error) bool) {
		after := afterSeq
		for {
			p, err := c.ListAudit(ctx, after, pageSize)
			if err != nil {
				yield(AuditEntry{}, err)
				return
			}
			for _, e := range p.Items {
				if !yield(e, nil) {
					return
				}
			}
			if p.NextAfterSeq == 0 || len(p.Items) == 0 {
				return
			}
			if p.NextAfterSeq <= after {
				yield(AuditEntry{}, fmt.Errorf("the coordinator's audit paging went back from after_seq %d to %d", after, p.NextAfterSeq))
				return
			}
			after = p.NextAfterSeq
		}
	}
}

// AuditVerification is the outcome of a verified audit log.
type AuditVerification struct {
	Entries int64      // entries received and checked
	Head    audit.Head // the last entry of the chain
}

// VerifyAudit downloads the whole audit log and verifies its hash chain here, in the
// client: a coordinator could lie about its own log, so the check must not be the
// server's. A broken chain gives an *audit.VerifyError naming the first bad entry (match
// with errors.Is(err, audit.ErrTampered)); other errors are about fetching the log. The
// result counts what was checked before any error.
func (c *Client) VerifyAudit(ctx context.Context, pageSize int) (AuditVerification, error) {
	return c.VerifyAuditCheckpoints(ctx, pageSize, nil)
}

// VerifyAuditCheckpoints is VerifyAudit holding the log to checkpoints kept earlier,
// whose signatures the caller verified (audit.VerifyCheckpoint): a cut or rewritten tail
// gives an *audit.VerifyError naming the checkpoint it contradicts.
func (c *Client) VerifyAuditCheckpoints(ctx context.Context, pageSize int, checkpoints []audit.Checkpoint) (AuditVerification, error) {
	var n int64
	var fetchErr error
	entries := func(yield func(audit.Entry, error) bool) {
		for e, err := range c.AuditEntries(ctx, 0, pageSize) {
			if err != nil {
				// Not tampering: stop here, and report it rather than what the verifier
				// would make of a log that ends early.
				fetchErr = err
				return
			}
			n++
			if !yield(e.Entry(), nil) {
				return
			}
		}
	}
	head, err := audit.VerifySeqCheckpoints(audit.Head{}, checkpoints, entries)
	if fetchErr != nil {
		return AuditVerification{Entries: n, Head: head}, fmt.Errorf("reading the audit log after entry %d: %w", head.Seq, fetchErr)
	}
	return AuditVerification{Entries: n, Head: head}, err
}
