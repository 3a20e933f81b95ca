package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// ---- escrowed keys ----

const escrowCols = "id, job_id, attempt, holder_id, token_serial, key_id, certificate_serial, archive, state, state_reason, " +
	"created_at, state_since, recovered_to, recovered_job_id, recovered_at"

func scanEscrowed(r scanner) (EscrowedKey, error) {
	var k EscrowedKey
	err := r.Scan(&k.ID, &k.JobID, &k.Attempt, &k.HolderID, &k.TokenSerial, &k.KeyID, &k.CertificateSerial, bytesCol{&k.Archive},
		&k.State, &k.StateReason, timeCol{&k.Created}, timeCol{&k.StateSince}, &k.RecoveredTo, &k.RecoveredJobID, timeCol{&k.Recovered})
	return k, err
}

func validEscrowState(s EscrowedKeyState) bool {
	return s == EscrowPending || s == EscrowActive || s == EscrowSuperseded
}

func (x *q) AddEscrowedKey(ctx context.Context, k EscrowedKey) (EscrowedKey, error) {
	const what = "add escrowed key"
	if err := required(what, "job ID", k.JobID, "holder ID", k.HolderID, "key ID", k.KeyID); err != nil {
		return EscrowedKey{}, err
	}
	switch {
	case len(k.Archive) == 0:
		return EscrowedKey{}, fmt.Errorf("store: %s: no archive: %w", what, ErrInvalid)
	case k.Attempt < 1:
		return EscrowedKey{}, fmt.Errorf("store: %s: attempt %d: %w", what, k.Attempt, ErrInvalid)
	case k.State == "":
		k.State = EscrowPending
	case !validEscrowState(k.State):
		return EscrowedKey{}, fmt.Errorf("store: %s: state %q: %w", what, k.State, ErrInvalid)
	}
	k.ID = newID()
	k.Created = orNow(k.Created)
	k.StateSince = k.Created
	row := x.queryRow(ctx, `INSERT INTO escrowed_keys (id, job_id, attempt, holder_id, token_serial, key_id, certificate_serial,
		archive, state, state_reason, created_at, state_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (job_id, attempt) DO NOTHING RETURNING `+escrowCols,
		k.ID, k.JobID, k.Attempt, k.HolderID, k.TokenSerial, k.KeyID, k.CertificateSerial, k.Archive, string(k.State), k.StateReason,
		x.d.ts(k.Created), x.d.ts(k.StateSince))
	out, err := scanEscrowed(row)
	if isNoRows(err) {
		return EscrowedKey{}, fmt.Errorf("store: %s: job %s attempt %d has its key already: %w", what, k.JobID, k.Attempt, ErrConflict)
	}
	return out, x.d.wrap(what, err)
}

func (x *q) GetEscrowedKey(ctx context.Context, id string) (EscrowedKey, error) {
	k, err := scanEscrowed(x.queryRow(ctx, "SELECT "+escrowCols+" FROM escrowed_keys WHERE id = ?", id))
	return k, x.d.wrap("escrowed key "+id, err)
}

func (x *q) GetEscrowedKeyOfAttempt(ctx context.Context, jobID string, attempt int) (EscrowedKey, error) {
	k, err := scanEscrowed(x.queryRow(ctx, "SELECT "+escrowCols+" FROM escrowed_keys WHERE job_id = ? AND attempt = ?", jobID, attempt))
	return k, x.d.wrap(fmt.Sprintf("escrowed key of job %s attempt %d", jobID, attempt), err)
}

func (x *q) ListEscrowedKeys(ctx context.Context, f EscrowedKeyFilter) ([]EscrowedKey, error) {
	const op = "list escrowed keys"
	var (
		where []string
		args  []any
	)
	if f.HolderID != "" {
		where, args = append(where, "holder_id = ?"), append(args, f.HolderID)
	}
	if f.TokenSerial != "" {
		where, args = append(where, "token_serial = ?"), append(args, f.TokenSerial)
	}
	if len(f.States) > 0 {
		ph := make([]string, len(f.States))
		for i, s := range f.States {
			ph[i] = "?"
			args = append(args, string(s))
		}
		where = append(where, "state IN ("+strings.Join(ph, ", ")+")")
	}
	w := ""
	if len(where) > 0 {
		w = " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := x.query(ctx, "SELECT "+escrowCols+" FROM escrowed_keys"+w+" ORDER BY created_at, job_id, attempt, id", args...)
	if err != nil {
		return nil, x.d.wrap(op, err)
	}
	return collect(rows, x.d, op, scanEscrowed)
}

func (x *q) SetEscrowedKeyState(ctx context.Context, id string, from, to EscrowedKeyState, reason string, at time.Time) (EscrowedKey, error) {
	what := "set escrowed key " + id + " " + string(to)
	if !validEscrowState(from) || !validEscrowState(to) || from == to {
		return EscrowedKey{}, fmt.Errorf("store: %s from %s: %w", what, from, ErrInvalid)
	}
	row := x.queryRow(ctx, `UPDATE escrowed_keys SET state = ?, state_reason = ?, state_since = ? WHERE id = ? AND state = ?
		RETURNING `+escrowCols, string(to), reason, x.d.ts(orNow(at)), id, string(from))
	out, err := scanEscrowed(row)
	if isNoRows(err) {
		cur, gerr := x.GetEscrowedKey(ctx, id)
		if gerr != nil {
			return EscrowedKey{}, gerr
		}
		return EscrowedKey{}, fmt.Errorf("store: %s: it is %s, not %s: %w", what, cur.State, from, ErrConflict)
	}
	return out, x.d.wrap(what, err)
}

func (x *q) SetEscrowedKeyToken(ctx context.Context, id, tokenSerial string) error {
	what := "set token of escrowed key " + id
	if err := required(what, "token serial", tokenSerial); err != nil {
		return err
	}
	res, err := x.exec(ctx, "UPDATE escrowed_keys SET token_serial = ? WHERE id = ?", tokenSerial, id)
	if err == nil {
		err = mustAffect(res)
	}
	return x.d.wrap(what, err)
}

func (x *q) RecordEscrowedKeyRecovery(ctx context.Context, id, jobID, to string, at time.Time) (EscrowedKey, error) {
	what := "record recovery of escrowed key " + id
	if err := required(what, "job ID", jobID, "recovered to", to); err != nil {
		return EscrowedKey{}, err
	}
	// A key re-installed on a token now lives there: a later replacement of that token
	// recovers it again.
	set := "recovered_to = ?, recovered_job_id = ?, recovered_at = ?"
	args := []any{to, jobID, x.d.ts(orNow(at))}
	if to != RecoveredToOfficer {
		set += ", token_serial = ?"
		args = append(args, to)
	}
	row := x.queryRow(ctx, "UPDATE escrowed_keys SET "+set+" WHERE id = ? RETURNING "+escrowCols, append(args, id)...)
	out, err := scanEscrowed(row)
	return out, x.d.wrap(what, err)
}

// ---- holders' encryption keys ----

const encKeyCols = "id, holder_id, key_id, public_key, certificate, certificate_serial, token_serial, source, job_id, escrowed_key_id, created_at"

func scanEncKey(r scanner) (HolderEncryptionKey, error) {
	var k HolderEncryptionKey
	err := r.Scan(&k.ID, &k.HolderID, &k.KeyID, bytesCol{&k.PublicKey}, bytesCol{&k.Certificate}, &k.CertificateSerial, &k.TokenSerial,
		&k.Source, &k.JobID, &k.EscrowedKeyID, timeCol{&k.Created})
	return k, err
}

func (x *q) AddHolderEncryptionKey(ctx context.Context, k HolderEncryptionKey) (HolderEncryptionKey, error) {
	const what = "add holder encryption key"
	if err := required(what, "holder ID", k.HolderID, "key ID", k.KeyID, "job ID", k.JobID); err != nil {
		return HolderEncryptionKey{}, err
	}
	switch {
	case len(k.PublicKey) == 0 || len(k.Certificate) == 0:
		return HolderEncryptionKey{}, fmt.Errorf("store: %s: public key and certificate are required: %w", what, ErrInvalid)
	case k.Source != SourceEscrowed && k.Source != SourceRegistered:
		return HolderEncryptionKey{}, fmt.Errorf("store: %s: source %q: %w", what, k.Source, ErrInvalid)
	case (k.Source == SourceEscrowed) != (k.EscrowedKeyID != ""):
		return HolderEncryptionKey{}, fmt.Errorf("store: %s: an escrowed key names its archive, a registered one none: %w", what, ErrInvalid)
	}
	k.ID = newID()
	k.Created = orNow(k.Created)
	row := x.queryRow(ctx, `INSERT INTO holder_encryption_keys (id, holder_id, key_id, public_key, certificate, certificate_serial,
		token_serial, source, job_id, escrowed_key_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (job_id) DO NOTHING RETURNING `+encKeyCols,
		k.ID, k.HolderID, k.KeyID, k.PublicKey, k.Certificate, k.CertificateSerial, k.TokenSerial, string(k.Source), k.JobID,
		k.EscrowedKeyID, x.d.ts(k.Created))
	out, err := scanEncKey(row)
	if isNoRows(err) {
		return HolderEncryptionKey{}, fmt.Errorf("store: %s: job %s recorded its key already: %w", what, k.JobID, ErrConflict)
	}
	return out, x.d.wrap(what, err)
}

func (x *q) ListHolderEncryptionKeys(ctx context.Context, holderID string) ([]HolderEncryptionKey, error) {
	const op = "list holder encryption keys"
	rows, err := x.query(ctx, "SELECT "+encKeyCols+" FROM holder_encryption_keys WHERE holder_id = ? ORDER BY created_at, id", holderID)
	if err != nil {
		return nil, x.d.wrap(op, err)
	}
	return collect(rows, x.d, op, scanEncKey)
}

// ---- key requests ----

const keyReqCols = "job_id, escrowed_key_id, target, cka_id, delivered_key, delivered_attempt, delivered_by, delivered_at"

func scanKeyReq(r scanner) (KeyRequest, error) {
	var k KeyRequest
	err := r.Scan(&k.JobID, &k.EscrowedKeyID, &k.Target, &k.CKAID, bytesCol{&k.DeliveredKey}, &k.DeliveredAttempt, &k.DeliveredBy, timeCol{&k.Delivered})
	return k, err
}

func (x *q) AddKeyRequest(ctx context.Context, k KeyRequest) error {
	const what = "add key request"
	if err := required(what, "job ID", k.JobID); err != nil {
		return err
	}
	if (k.EscrowedKeyID == "") == (k.CKAID == "") || (k.EscrowedKeyID != "") != (k.Target != "") {
		return fmt.Errorf("store: %s: name an escrowed key and its target, or a CKA_ID: %w", what, ErrInvalid)
	}
	_, err := x.exec(ctx, "INSERT INTO key_requests (job_id, escrowed_key_id, target, cka_id) VALUES (?, ?, ?, ?)",
		k.JobID, k.EscrowedKeyID, k.Target, k.CKAID)
	return x.d.wrap(what, err)
}

func (x *q) GetKeyRequest(ctx context.Context, jobID string) (KeyRequest, error) {
	k, err := scanKeyReq(x.queryRow(ctx, "SELECT "+keyReqCols+" FROM key_requests WHERE job_id = ?", jobID))
	return k, x.d.wrap("key request of job "+jobID, err)
}

func (x *q) SetKeyDelivery(ctx context.Context, jobID string, attempt int, sealed []byte, by string, at time.Time) (KeyRequest, error) {
	what := fmt.Sprintf("record delivery for job %s attempt %d", jobID, attempt)
	if err := required(what, "delivered by", by); err != nil {
		return KeyRequest{}, err
	}
	if attempt < 1 {
		return KeyRequest{}, fmt.Errorf("store: %s: %w", what, ErrInvalid)
	}
	var key any
	if len(sealed) > 0 {
		key = sealed
	}
	row := x.queryRow(ctx, `UPDATE key_requests SET delivered_key = ?, delivered_attempt = ?, delivered_by = ?, delivered_at = ?
		WHERE job_id = ? AND delivered_attempt < ? RETURNING `+keyReqCols, key, attempt, by, x.d.ts(orNow(at)), jobID, attempt)
	out, err := scanKeyReq(row)
	if isNoRows(err) {
		if _, gerr := x.GetKeyRequest(ctx, jobID); gerr != nil {
			return KeyRequest{}, gerr
		}
		return KeyRequest{}, fmt.Errorf("store: %s: delivered already: %w", what, ErrConflict)
	}
	return out, x.d.wrap(what, err)
}
