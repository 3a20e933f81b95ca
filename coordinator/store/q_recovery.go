package store

import (
	"context"
	"fmt"
	"time"
)

// ---- recovery certificates ----

const recoveryCols = "id, key_id, common_name, not_before, not_after, certificate, added_at, added_by, retired_at, retired_by, retire_reason"

func scanRecovery(r scanner) (RecoveryCertificate, error) {
	var c RecoveryCertificate
	err := r.Scan(&c.ID, &c.KeyID, &c.CommonName, timeCol{&c.NotBefore}, timeCol{&c.NotAfter}, bytesCol{&c.DER},
		timeCol{&c.Added}, &c.AddedBy, timeCol{&c.Retired}, &c.RetiredBy, &c.RetireReason)
	return c, err
}

func (x *q) AddRecoveryCertificate(ctx context.Context, c RecoveryCertificate) (RecoveryCertificate, error) {
	const what = "add recovery certificate"
	if err := required(what, "key ID", c.KeyID, "added by", c.AddedBy); err != nil {
		return RecoveryCertificate{}, err
	}
	switch {
	case len(c.DER) == 0:
		return RecoveryCertificate{}, fmt.Errorf("store: %s: no certificate: %w", what, ErrInvalid)
	case c.NotBefore.IsZero() || c.NotAfter.IsZero():
		return RecoveryCertificate{}, fmt.Errorf("store: %s: no validity period: %w", what, ErrInvalid)
	case !c.Retired.IsZero():
		return RecoveryCertificate{}, fmt.Errorf("store: %s: a certificate is added in use, then retired: %w", what, ErrInvalid)
	}
	c.ID = newID()
	c.Added = orNow(c.Added)
	row := x.queryRow(ctx, `INSERT INTO recovery_certificates (id, key_id, common_name, not_before, not_after, certificate, added_at, added_by)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key_id) DO NOTHING RETURNING `+recoveryCols,
		c.ID, c.KeyID, c.CommonName, x.d.ts(c.NotBefore), x.d.ts(c.NotAfter), c.DER, x.d.ts(c.Added), c.AddedBy)
	out, err := scanRecovery(row)
	if isNoRows(err) {
		return RecoveryCertificate{}, fmt.Errorf("store: %s: a certificate of key %s is kept already: %w", what, c.KeyID, ErrConflict)
	}
	return out, x.d.wrap(what, err)
}

func (x *q) RetireRecoveryCertificate(ctx context.Context, id, by, reason string, at time.Time) (RecoveryCertificate, error) {
	what := "retire recovery certificate " + id
	if err := required(what, "retired by", by); err != nil {
		return RecoveryCertificate{}, err
	}
	row := x.queryRow(ctx, `UPDATE recovery_certificates SET retired_at = ?, retired_by = ?, retire_reason = ?
		WHERE id = ? AND retired_at IS NULL RETURNING `+recoveryCols, x.d.ts(orNow(at)), by, reason, id)
	out, err := scanRecovery(row)
	if isNoRows(err) {
		if _, gerr := x.GetRecoveryCertificate(ctx, id); gerr != nil {
			return RecoveryCertificate{}, gerr
		}
		return RecoveryCertificate{}, fmt.Errorf("store: %s: retired already: %w", what, ErrConflict)
	}
	return out, x.d.wrap(what, err)
}

func (x *q) GetRecoveryCertificate(ctx context.Context, id string) (RecoveryCertificate, error) {
	c, err := scanRecovery(x.queryRow(ctx, "SELECT "+recoveryCols+" FROM recovery_certificates WHERE id = ?", id))
	return c, x.d.wrap("recovery certificate "+id, err)
}

func (x *q) ListRecoveryCertificates(ctx context.Context, withRetired bool) ([]RecoveryCertificate, error) {
	const op = "list recovery certificates"
	w := ""
	if !withRetired {
		w = " WHERE retired_at IS NULL"
	}
	rows, err := x.query(ctx, "SELECT "+recoveryCols+" FROM recovery_certificates"+w+
		" ORDER BY CASE WHEN retired_at IS NULL THEN 0 ELSE 1 END, not_after, id")
	if err != nil {
		return nil, x.d.wrap(op, err)
	}
	return collect(rows, x.d, op, scanRecovery)
}
