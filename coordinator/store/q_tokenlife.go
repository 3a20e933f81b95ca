package store

import (
	"context"
	"fmt"
)

const tokenLifeCols = "serial, state, holder_id, reason, changed_by, changed_at, temporary_for, replaced_by, version"

func scanTokenLife(r scanner) (TokenLife, error) {
	var l TokenLife
	err := r.Scan(&l.Serial, &l.State, strCol{&l.HolderID}, &l.Reason, &l.ChangedBy, timeCol{&l.ChangedAt},
		&l.TemporaryFor, &l.ReplacedBy, &l.Version)
	return l, err
}

func (x *q) GetTokenLife(ctx context.Context, serial string) (TokenLife, error) {
	l, err := scanTokenLife(x.queryRow(ctx, "SELECT "+tokenLifeCols+" FROM token_life WHERE serial = ?", serial))
	return l, x.d.wrap("token life "+serial, err)
}

func (x *q) ListTemporaryTokens(ctx context.Context, original string) ([]TokenLife, error) {
	op := "temporary tokens of " + original
	rows, err := x.query(ctx, "SELECT "+tokenLifeCols+" FROM token_life WHERE temporary_for = ? AND temporary_for <> '' ORDER BY serial", original)
	if err != nil {
		return nil, x.d.wrap(op, err)
	}
	return collect(rows, x.d, op, scanTokenLife)
}

func (x *q) ListTokenLifeEvents(ctx context.Context, serial string) ([]TokenLifeEvent, error) {
	const op = "token life events"
	rows, err := x.query(ctx, `SELECT id, serial, from_state, to_state, actor, reason, job_id, at
		FROM token_life_events WHERE serial = ? ORDER BY id`, serial)
	if err != nil {
		return nil, x.d.wrap(op, err)
	}
	return collect(rows, x.d, op, scanTokenLifeEvent)
}

func scanTokenLifeEvent(r scanner) (TokenLifeEvent, error) {
	var e TokenLifeEvent
	err := r.Scan(&e.ID, &e.Serial, &e.From, &e.To, &e.Actor, &e.Reason, &e.JobID, timeCol{&e.At})
	return e, err
}

func (x *q) SetTokenLife(ctx context.Context, l TokenLife, expectedVersion int64, e TokenLifeEvent) (TokenLife, error) {
	what := "set token life " + l.Serial
	if err := required(what, "serial", l.Serial, "actor", l.ChangedBy); err != nil {
		return TokenLife{}, err
	}
	if !l.State.Valid() {
		return TokenLife{}, fmt.Errorf("store: %s: unknown state %q: %w", what, l.State, ErrInvalid)
	}
	at := x.d.ts(orNow(l.ChangedAt))
	var row scanner
	if expectedVersion == 0 {
		row = x.queryRow(ctx, `INSERT INTO token_life (serial, state, holder_id, reason, changed_by, changed_at, temporary_for, replaced_by)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING RETURNING `+tokenLifeCols,
			l.Serial, string(l.State), nullStr(l.HolderID), l.Reason, l.ChangedBy, at, l.TemporaryFor, l.ReplacedBy)
	} else {
		row = x.queryRow(ctx, `UPDATE token_life SET state = ?, holder_id = ?, reason = ?, changed_by = ?, changed_at = ?,
			temporary_for = ?, replaced_by = ?, version = version + 1
			WHERE serial = ? AND version = ? RETURNING `+tokenLifeCols,
			string(l.State), nullStr(l.HolderID), l.Reason, l.ChangedBy, at, l.TemporaryFor, l.ReplacedBy, l.Serial, expectedVersion)
	}
	out, err := scanTokenLife(row)
	if isNoRows(err) {
		return TokenLife{}, fmt.Errorf("store: %s: changed since version %d was read: %w", what, expectedVersion, ErrConflict)
	}
	if err != nil {
		return TokenLife{}, x.d.wrap(what, err)
	}
	if _, err := x.exec(ctx, `INSERT INTO token_life_events (serial, from_state, to_state, actor, reason, job_id, at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, l.Serial, string(e.From), string(l.State), l.ChangedBy, l.Reason, e.JobID, at); err != nil {
		return TokenLife{}, x.d.wrap(what, err)
	}
	return out, nil
}

func (x *q) AddTokenRequest(ctx context.Context, r TokenRequest) error {
	what := "add token request of job " + r.JobID
	if err := required(what, "job ID", r.JobID, "token serial", r.TokenSerial); err != nil {
		return err
	}
	if r.Purpose != PurposeTemporary && r.Purpose != PurposeReplacement {
		return fmt.Errorf("store: %s: unknown purpose %q: %w", what, r.Purpose, ErrInvalid)
	}
	_, err := x.exec(ctx, "INSERT INTO token_requests (job_id, purpose, token_serial) VALUES (?, ?, ?)",
		r.JobID, string(r.Purpose), r.TokenSerial)
	return x.d.wrap(what, err)
}

func (x *q) GetTokenRequest(ctx context.Context, jobID string) (TokenRequest, error) {
	var r TokenRequest
	err := x.queryRow(ctx, "SELECT job_id, purpose, token_serial FROM token_requests WHERE job_id = ?", jobID).
		Scan(&r.JobID, &r.Purpose, &r.TokenSerial)
	return r, x.d.wrap("token request of job "+jobID, err)
}
