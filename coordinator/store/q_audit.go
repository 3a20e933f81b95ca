package store

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
)

const auditCols = "seq, at, actor, action, job_id, target, reason, details, prev_hash, hash"

// scanAudit reads an audit row leniently: a column changed behind the store's back into
// something the store never writes (a time that is not a time, details that are not
// JSON) does not fail the read, which would hide which entry it was. It is named in
// Unreadable instead, and the verifier reports the entry.
func scanAudit(r scanner) (audit.Entry, error) {
	var (
		e                                   audit.Entry
		at, actor, action, job, target, why any
		details, prev, hash                 any
	)
	if err := r.Scan(&e.Seq, &at, &actor, &action, &job, &target, &why, &details, &prev, &hash); err != nil {
		return audit.Entry{}, err
	}
	var bad []string
	if err := (timeCol{&e.Time}).Scan(at); err != nil || e.Time.IsZero() {
		e.Time = time.Time{}
		bad = append(bad, "at holds "+rawText(at)+", which is not a time")
	}
	for _, c := range []struct {
		name string
		v    any
		s    *string
	}{
		{"actor", actor, &e.Actor}, {"action", action, &e.Action}, {"job_id", job, &e.JobID}, {"target", target, &e.Target},
		{"reason", why, &e.Reason}, {"prev_hash", prev, &e.PrevHash}, {"hash", hash, &e.Hash},
	} {
		if err := (strCol{c.s}).Scan(c.v); err != nil {
			bad = append(bad, c.name+" holds "+rawText(c.v)+", which is not text")
		}
	}
	if err := (bytesCol{(*[]byte)(&e.Details)}).Scan(details); err != nil || len(e.Details) > 0 && !json.Valid(e.Details) {
		e.Details = nil
		bad = append(bad, "details holds "+rawText(details)+", which is not JSON")
	}
	e.Unreadable = strings.Join(bad, "; ")
	return e, nil
}

// rawUnreadableMax bounds how much of an unreadable value goes into a message.
const rawUnreadableMax = 64

// rawText shows a stored value in a message, quoted and cut short.
func rawText(v any) string {
	var s string
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		s = x
	case []byte:
		s = string(x)
	default:
		return fmt.Sprintf("the %T %v", v, v)
	}
	if len(s) > rawUnreadableMax {
		return strconv.Quote(s[:rawUnreadableMax]) + "..."
	}
	return strconv.Quote(s)
}

// pendingAudit is an audit entry a transaction was given, with its seal function, waiting
// for the end of the transaction's work (see tx.AppendAudit).
type pendingAudit struct {
	e    audit.Entry
	seal SealFunc
}

// auditQueue is a transaction's pending audit entries, in the order given.
type auditQueue struct {
	es []pendingAudit
	// marks is len(es) at each savepoint still open, the innermost last: rolling back to a
	// savepoint drops what was given since, as it undoes the rows written since.
	marks []int
}

// AppendAudit checks e and queues it; the transaction chains and stores its entries, in
// the order given, when its work is done, just before it commits (sqlStore.inTx). The
// chain head, which every appender on every coordinator locks, is so the last lock a
// transaction takes: one that holds it waits for no row another transaction holds, and
// so is never in a deadlock with it on PostgreSQL. A transaction that ends with an error,
// or rolls back to a savepoint, stores none of the entries it was given since. The entry
// returned is e with its time; its sequence number and hash come at the commit.
func (t tx) AppendAudit(ctx context.Context, e audit.Entry, seal SealFunc) (audit.Entry, error) {
	out, err := t.AppendAudits(ctx, []audit.Entry{e}, seal)
	if err != nil {
		return audit.Entry{}, err
	}
	return out[0], nil
}

// AppendAudits is AppendAudit for several entries, in their order.
func (t tx) AppendAudits(_ context.Context, es []audit.Entry, seal SealFunc) ([]audit.Entry, error) {
	if len(es) == 0 {
		return nil, nil
	}
	what := appendWhat(es[0].Action, len(es))
	if seal == nil {
		return nil, fmt.Errorf("store: %s: no seal function: %w", what, ErrInvalid)
	}
	out := make([]audit.Entry, len(es))
	for i, e := range es {
		ew := "append audit " + e.Action
		if err := required(ew, "actor", e.Actor, "action", e.Action); err != nil {
			return nil, err
		}
		if err := checkJSON(ew+" details", e.Details); err != nil {
			return nil, err
		}
		// The time is put in store form before it is hashed, so the hash still matches
		// the entry read back.
		e.Time = orNow(e.Time)
		e.Seq, e.PrevHash, e.Hash = 0, "", ""
		out[i] = e
	}
	for _, e := range out {
		t.audits.es = append(t.audits.es, pendingAudit{e: e, seal: seal})
	}
	return out, nil
}

func (t tx) Savepoint(ctx context.Context) error {
	if err := t.q.Savepoint(ctx); err != nil {
		return err
	}
	t.audits.marks = append(t.audits.marks, len(t.audits.es))
	return nil
}

// RollbackToSavepoint keeps the savepoint, as SQL does: a later rollback to it undoes
// again from the same point.
func (t tx) RollbackToSavepoint(ctx context.Context) error {
	if err := t.q.RollbackToSavepoint(ctx); err != nil {
		return err
	}
	if n := len(t.audits.marks); n > 0 {
		t.audits.es = t.audits.es[:t.audits.marks[n-1]]
	}
	return nil
}

func (t tx) ReleaseSavepoint(ctx context.Context) error {
	if err := t.q.ReleaseSavepoint(ctx); err != nil {
		return err
	}
	if n := len(t.audits.marks); n > 0 {
		t.audits.marks = t.audits.marks[:n-1]
	}
	return nil
}

// flushAudits chains and stores the entries the transaction was given.
func (t tx) flushAudits(ctx context.Context) error {
	es := t.audits.es
	if len(es) == 0 {
		return nil
	}
	return t.appendAudit(ctx, appendWhat(es[0].e.Action, len(es)), es)
}

// appendWhat names an append of n entries, the first of them action, in errors.
func appendWhat(action string, n int) string {
	if n > 1 {
		return fmt.Sprintf("append %d audit entries", n)
	}
	return "append audit " + action
}

// appendAudit chains es, in order, after the chain head: the head is locked and read
// once, each entry sealed onto the one before it, the entries inserted batchRows to a
// statement, and the head moved once.
func (x *q) appendAudit(ctx context.Context, what string, es []pendingAudit) error {
	// Lock the chain head: every appender, on every coordinator, queues here until the
	// transaction holding it ends, so each entry links to the one committed before it.
	var headSeq int64
	var headHash string
	if err := x.queryRow(ctx, "SELECT seq, hash FROM audit_head WHERE id = 1"+x.d.forUpdate).Scan(&headSeq, &headHash); err != nil {
		return x.d.wrap(what+": chain head", err)
	}
	var prev *audit.Entry
	wantPrev := audit.GenesisHash
	if headSeq > 0 {
		p, err := scanAudit(x.queryRow(ctx, "SELECT "+auditCols+" FROM audit_log WHERE seq = ?", headSeq))
		if err != nil {
			return x.d.wrap(what+": last entry "+strconv.FormatInt(headSeq, 10), err)
		}
		if p.Hash != headHash {
			return fmt.Errorf("store: %s: chain head says entry %d has hash %s, the log says %s", what, headSeq, headHash, p.Hash)
		}
		prev, wantPrev = &p, headHash
	}
	out := make([]audit.Entry, len(es))
	for i, pe := range es {
		sealed, err := pe.seal(prev, pe.e)
		if err != nil {
			return fmt.Errorf("store: append audit %s: seal: %w", pe.e.Action, err)
		}
		if err := checkSealed(headSeq+int64(i)+1, wantPrev, sealed); err != nil {
			return fmt.Errorf("store: append audit %s: %w", pe.e.Action, err)
		}
		if len(sealed.Details) == 0 {
			sealed.Details = nil
		}
		out[i] = sealed
		prev, wantPrev = &out[i], sealed.Hash
	}
	for chunk := range slices.Chunk(out, batchRows) {
		args := make([]any, 0, 10*len(chunk))
		for _, e := range chunk {
			args = append(args, e.Seq, x.d.ts(e.Time), e.Actor, e.Action, e.JobID, e.Target, e.Reason,
				nullText(e.Details), e.PrevHash, e.Hash)
		}
		if _, err := x.exec(ctx, "INSERT INTO audit_log ("+auditCols+") VALUES "+valueRows(len(chunk), 10), args...); err != nil {
			return x.d.wrap(what, err)
		}
	}
	last := out[len(out)-1]
	if _, err := x.exec(ctx, "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", last.Seq, last.Hash); err != nil {
		return x.d.wrap(what+": chain head", err)
	}
	return nil
}

// checkSealed makes sure the seal function linked the entry where the store holds the
// head, and gave it a time the store keeps exactly (else the hash would not verify once
// read back). The content is the seal function's to put in canonical form.
func checkSealed(seq int64, prevHash string, e audit.Entry) error {
	switch {
	case e.Seq != seq:
		return fmt.Errorf("seal gave sequence number %d, the next is %d: %w", e.Seq, seq, ErrInvalid)
	case e.PrevHash != prevHash:
		return fmt.Errorf("seal linked to %q, the chain head is %q: %w", e.PrevHash, prevHash, ErrInvalid)
	case e.Hash == "":
		return fmt.Errorf("seal gave no hash: %w", ErrInvalid)
	case e.Time.IsZero() || e.Time != normTime(e.Time):
		return fmt.Errorf("seal gave time %v, which the store cannot keep exactly (UTC, whole microseconds): %w", e.Time, ErrInvalid)
	case e.Actor == "" || e.Action == "":
		return fmt.Errorf("seal removed the actor or action: %w", ErrInvalid)
	case len(e.Details) > 0 && !json.Valid(e.Details):
		return fmt.Errorf("seal gave details that are not JSON: %w", ErrInvalid)
	}
	return nil
}

// nullText passes text held in bytes as a string (NULL when empty): PostgreSQL json and
// text columns take strings.
func nullText(d []byte) any {
	if len(d) == 0 {
		return nil
	}
	return string(d)
}

func (x *q) AuditHead(ctx context.Context) (audit.Head, error) {
	var h audit.Head
	if err := x.queryRow(ctx, "SELECT seq, hash FROM audit_head WHERE id = 1").Scan(&h.Seq, &h.Hash); err != nil {
		return audit.Head{}, x.d.wrap("audit head", err)
	}
	if h.Seq == 0 {
		h.Hash = audit.GenesisHash
	}
	return h, nil
}

func (x *q) ListAudit(ctx context.Context, f AuditFilter, p Page) ([]audit.Entry, string, error) {
	const op = "list audit"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	var w where
	if f.FromSeq > 0 {
		w.add("seq >= ?", f.FromSeq)
	}
	if f.ToSeq > 0 {
		w.add("seq <= ?", f.ToSeq)
	}
	if f.JobID != "" {
		w.add("job_id = ?", f.JobID)
	}
	if f.Action != "" {
		w.add("action = ?", f.Action)
	}
	if f.Actor != "" {
		w.add("actor = ?", f.Actor)
	}
	order, next := "seq", "seq > ?"
	if f.Newest {
		order, next = "seq DESC", "seq < ?"
	}
	if p.Cursor != "" {
		c, err := decodeCursor(p.Cursor, 1)
		if err != nil {
			return nil, "", x.d.wrap(op, err)
		}
		after, err := strconv.ParseInt(c[0], 10, 64)
		if err != nil {
			return nil, "", x.d.wrap(op, fmt.Errorf("malformed page cursor: %w", ErrInvalid))
		}
		w.add(next, after)
	}
	rows, err := x.query(ctx, "SELECT "+auditCols+" FROM audit_log"+w.sql()+" ORDER BY "+order+" LIMIT ?", append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	out, err := collect(rows, x.d, op, scanAudit)
	if err != nil {
		return nil, "", err
	}
	return pageOf(out, limit, func(e audit.Entry) string { return encodeCursor(strconv.FormatInt(e.Seq, 10)) })
}

// auditBatch is how many entries AuditEntries reads per query.
const auditBatch = 500

func (x *q) AuditEntries(ctx context.Context, fromSeq int64) iter.Seq2[audit.Entry, error] {
	// The log is append-only, so reading it in sequence-number batches sees each entry
	// exactly once without holding one read transaction over the whole log.
	return func(yield func(audit.Entry, error) bool) {
		next := fromSeq
		for {
			rows, err := x.query(ctx, "SELECT "+auditCols+" FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?", next, auditBatch)
			if err != nil {
				yield(audit.Entry{}, x.d.wrap("read audit", err))
				return
			}
			batch, err := collect(rows, x.d, "read audit", scanAudit)
			if err != nil {
				yield(audit.Entry{}, err)
				return
			}
			for _, e := range batch {
				if !yield(e, nil) {
					return
				}
			}
			if len(batch) < auditBatch {
				return
			}
			next = batch[len(batch)-1].Seq + 1
		}
	}
}
