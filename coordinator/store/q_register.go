package store

import (
	"context"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// ---- the crypto-device register ----

// endOfIssue is the first later job that took the token back: an issue (to anyone, the
// same holder included: the token was initialised again) or a wipe, once it succeeded.
// col is the column of that job to give.
func endOfIssue(col string) string {
	return `(SELECT n.` + col + ` FROM jobs n
		WHERE n.token_serial = j.token_serial AND n.kind IN ('` + string(jobs.KindIssue) + `', '` + string(jobs.KindWipe) + `')
		AND n.state = '` + string(jobs.StateSucceeded) + `' AND n.id <> j.id
		AND (n.state_since > j.state_since OR (n.state_since = j.state_since AND n.id > j.id))
		ORDER BY n.state_since, n.id LIMIT 1)`
}

var registerQuery = `SELECT j.id, j.token_serial, COALESCE(t.manufacturer, ''), COALESCE(t.model, ''), j.holder_id,
		j.organisation_id, j.profile_name, j.document_number, j.document_date, j.created_at, j.state_since,
		` + endOfIssue("state_since") + `, ` + endOfIssue("id") + `, ` + endOfIssue("kind") + `
	FROM jobs j LEFT JOIN tokens t ON t.serial = j.token_serial`

func scanRegisterEntry(r scanner) (RegisterEntry, error) {
	var e RegisterEntry
	err := r.Scan(&e.JobID, strCol{&e.TokenSerial}, &e.Manufacturer, &e.Model, strCol{&e.HolderID}, strCol{&e.OrganizationID},
		&e.ProfileName, &e.Document.Number, &e.Document.Date, timeCol{&e.Requested}, timeCol{&e.Issued},
		timeCol{&e.Returned}, strCol{&e.ReturnedByJob}, strCol{&e.ReturnedByKind})
	return e, err
}

func (x *q) ListRegister(ctx context.Context, f RegisterFilter, p Page) ([]RegisterEntry, string, error) {
	const op = "list the crypto-device register"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	var w where
	w.add("j.kind = ?", string(jobs.KindIssue))
	w.add("j.state = ?", string(jobs.StateSucceeded))
	w.add("j.token_serial IS NOT NULL")
	if f.OrganizationID != "" {
		w.add("j.organisation_id = ?", f.OrganizationID)
	}
	// Oldest first, as a register is kept.
	if err := w.afterCursor(x.d, p.Cursor, "j.created_at", "j.id", true); err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	rows, err := x.query(ctx, registerQuery+w.sql()+" ORDER BY j.created_at, j.id LIMIT ?", append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	out, err := collect(rows, x.d, op, scanRegisterEntry)
	if err != nil {
		return nil, "", err
	}
	return pageOf(out, limit, func(e RegisterEntry) string { return encodeCursor(cursorTime(e.Requested), e.JobID) })
}

func (x *q) ListJobEventsOf(ctx context.Context, jobIDs []string) (map[string][]JobEvent, error) {
	out := make(map[string][]JobEvent, len(jobIDs))
	for len(jobIDs) > 0 {
		n := min(len(jobIDs), 500) // well below either back end's limit on parameters
		args := make([]any, n)
		for i, id := range jobIDs[:n] {
			args[i] = id
		}
		jobIDs = jobIDs[n:]
		rows, err := x.query(ctx, `SELECT id, job_id, from_state, to_state, attempt, actor, reason, at
			FROM job_events WHERE job_id IN (`+placeholders(n)+`) ORDER BY job_id, id`, args...)
		if err != nil {
			return nil, x.d.wrap("timelines of jobs", err)
		}
		evs, err := collect(rows, x.d, "timelines of jobs", scanJobEvent)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			out[e.JobID] = append(out[e.JobID], e)
		}
	}
	return out, nil
}
