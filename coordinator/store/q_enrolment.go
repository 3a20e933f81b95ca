package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ---- enrolment keys ----

// Enrolment secrets look like tfe_<id>_<secret>, as API tokens do: the ID finds the row,
// the whole secret is compared by its SHA-256 in constant time. 160 random bits: short
// enough to read out over the phone, far beyond guessing through a rate-limited endpoint.
const enrolmentPrefix = "tfe_"

// Agent secrets (tfa_<secret>) are looked up by the agent ID the request names.
const agentSecretPrefix = "tfa_"

// maxEnrolmentBatch bounds one CreateEnrolmentKeys call.
const maxEnrolmentBatch = 1000

const enrolmentCols = "id, kind, name, organisation_id, tags, agent_id, pre_approved, max_uses, uses, " +
	"created_at, created_by, expires_at, last_used_at, revoked_at, revoked_by"

func scanEnrolmentKey(r scanner, extra ...any) (EnrolmentKey, error) {
	var k EnrolmentKey
	var tags []byte
	dest := []any{&k.ID, &k.Kind, &k.Name, strCol{&k.OrganizationID}, bytesCol{&tags}, &k.AgentID,
		&k.PreApproved, &k.MaxUses, &k.Uses, timeCol{&k.Created}, &k.CreatedBy, timeCol{&k.Expires},
		timeCol{&k.LastUsed}, timeCol{&k.Revoked}, &k.RevokedBy}
	if err := r.Scan(append(dest, extra...)...); err != nil {
		return EnrolmentKey{}, err
	}
	var err error
	if k.Tags, err = decodeTags(tags); err != nil {
		return EnrolmentKey{}, fmt.Errorf("enrolment key %s tags: %w", k.ID, err)
	}
	return k, nil
}

// encodeTags stores tags as a sorted JSON array without repeats.
func encodeTags(tags []string) string {
	t := slices.Clone(tags)
	slices.Sort(t)
	t = slices.Compact(t)
	if len(t) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(t) // strings always marshal
	return string(b)
}

func decodeTags(b []byte) ([]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var t []string
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, err
	}
	if len(t) == 0 {
		return nil, nil
	}
	return t, nil
}

// CreateEnrolmentKeys makes n keys like k (its ID, uses and times are set here) and
// returns their records and secrets, in the same order.
func (x *q) CreateEnrolmentKeys(ctx context.Context, k EnrolmentKey, n int) ([]EnrolmentKey, []string, error) {
	const op = "create enrolment key"
	if n < 1 || n > maxEnrolmentBatch {
		return nil, nil, fmt.Errorf("store: %s: %d at once: want 1 to %d: %w", op, n, maxEnrolmentBatch, ErrInvalid)
	}
	if k.Kind != EnrolmentCode && k.Kind != EnrolmentReusable {
		return nil, nil, fmt.Errorf("store: %s: unknown kind %q: %w", op, k.Kind, ErrInvalid)
	}
	if err := required(op, "created by", k.CreatedBy); err != nil {
		return nil, nil, err
	}
	if k.Expires.IsZero() {
		return nil, nil, fmt.Errorf("store: %s: no expiry: %w", op, ErrInvalid)
	}
	created := now()
	keys := make([]EnrolmentKey, 0, n)
	secrets := make([]string, 0, n)
	for range n {
		id := randomString(8)
		secret := enrolmentPrefix + id + "_" + randomString(20)
		row := x.queryRow(ctx, `INSERT INTO enrolment_keys (id, kind, name, secret_hash, organisation_id, tags,
				agent_id, pre_approved, max_uses, created_at, created_by, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING `+enrolmentCols,
			id, k.Kind, k.Name, hashToken(secret), nullStr(k.OrganizationID), encodeTags(k.Tags),
			k.AgentID, k.PreApproved, k.MaxUses, x.d.ts(created), k.CreatedBy, x.d.ts(k.Expires))
		got, err := scanEnrolmentKey(row)
		if err != nil {
			return nil, nil, x.d.wrap(op, err)
		}
		keys = append(keys, got)
		secrets = append(secrets, secret)
	}
	return keys, secrets, nil
}

func (x *q) GetEnrolmentKey(ctx context.Context, id string) (EnrolmentKey, error) {
	k, err := scanEnrolmentKey(x.queryRow(ctx, "SELECT "+enrolmentCols+" FROM enrolment_keys WHERE id = ?", id))
	return k, x.d.wrap("enrolment key "+id, err)
}

func (x *q) ListEnrolmentKeys(ctx context.Context, f EnrolmentKeyFilter, p Page) ([]EnrolmentKey, string, error) {
	const op = "list enrolment keys"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	var w where
	if f.Kind != "" {
		w.add("kind = ?", f.Kind)
	}
	if !f.Usable.IsZero() {
		w.add("revoked_at IS NULL AND expires_at > ? AND (max_uses = 0 OR uses < max_uses)", x.d.ts(f.Usable))
	}
	if err := w.afterCursor(x.d, p.Cursor, "created_at", "id", true); err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	rows, err := x.query(ctx, "SELECT "+enrolmentCols+" FROM enrolment_keys"+w.sql()+" ORDER BY created_at, id LIMIT ?",
		append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	out, err := collect(rows, x.d, op, func(r scanner) (EnrolmentKey, error) { return scanEnrolmentKey(r) })
	if err != nil {
		return nil, "", err
	}
	return pageOf(out, limit, func(k EnrolmentKey) string { return encodeCursor(cursorTime(k.Created), k.ID) })
}

// UseEnrolmentKey takes one use of the key the presented secret names. A malformed,
// unknown or wrong secret is ErrNotFound; a revoked, expired or used-up key is a
// *KeyUnusableError. The use is counted only when the key may be used: two agents racing
// for a one-off code get one use between them.
func (x *q) UseEnrolmentKey(ctx context.Context, presented string, at time.Time) (EnrolmentKey, error) {
	const op = "enrolment key"
	rest, ok := strings.CutPrefix(strings.TrimSpace(presented), enrolmentPrefix)
	id, secret, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || id == "" || secret == "" {
		return EnrolmentKey{}, fmt.Errorf("store: %s: malformed: %w", op, ErrNotFound)
	}
	var stored string
	k, err := scanEnrolmentKey(x.queryRow(ctx, "SELECT "+enrolmentCols+", secret_hash FROM enrolment_keys WHERE id = ?", id), &stored)
	if err != nil {
		return EnrolmentKey{}, x.d.wrap(op+" "+id, err)
	}
	if !constantTimeEqual(hashToken(strings.TrimSpace(presented)), stored) {
		return EnrolmentKey{}, fmt.Errorf("store: %s %s: wrong secret: %w", op, id, ErrNotFound)
	}
	at = orNow(at)
	switch {
	case !k.Revoked.IsZero():
		return k, &KeyUnusableError{Key: k, Reason: "revoked"}
	case !at.Before(k.Expires):
		return k, &KeyUnusableError{Key: k, Reason: "expired"}
	}
	row := x.queryRow(ctx, `UPDATE enrolment_keys SET uses = uses + 1, last_used_at = ?
		WHERE id = ? AND revoked_at IS NULL AND (max_uses = 0 OR uses < max_uses) RETURNING `+enrolmentCols,
		x.d.ts(at), id)
	used, err := scanEnrolmentKey(row)
	if isNoRows(err) {
		return k, &KeyUnusableError{Key: k, Reason: "used"}
	}
	return used, x.d.wrap(op+" "+id, err)
}

func (x *q) RevokeEnrolmentKey(ctx context.Context, id, by string, at time.Time) (EnrolmentKey, error) {
	const op = "revoke enrolment key"
	if err := required(op+" "+id, "revoked by", by); err != nil {
		return EnrolmentKey{}, err
	}
	row := x.queryRow(ctx, `UPDATE enrolment_keys SET revoked_at = ?, revoked_by = ?
		WHERE id = ? AND revoked_at IS NULL RETURNING `+enrolmentCols, x.d.ts(orNow(at)), by, id)
	k, err := scanEnrolmentKey(row)
	if isNoRows(err) {
		// Revoking twice keeps the first revocation; only a missing key is an error.
		return x.GetEnrolmentKey(ctx, id)
	}
	return k, x.d.wrap(op+" "+id, err)
}

// ---- agent life cycle and credentials ----

// SetAgentState moves the agent to the change's state when it is in one of from (any
// state when from is empty); another current state is ErrConflict naming it.
func (x *q) SetAgentState(ctx context.Context, id string, c AgentStateChange, from ...AgentState) (Agent, error) {
	op := "agent " + id + ": set state"
	if !c.State.Valid() {
		return Agent{}, fmt.Errorf("store: %s: unknown state %q: %w", op, c.State, ErrInvalid)
	}
	if err := required(op, "by", c.By); err != nil {
		return Agent{}, err
	}
	query := "UPDATE agents SET state = ?, state_reason = ?, state_by = ?, state_at = ?"
	args := []any{c.State, c.Reason, c.By, x.d.ts(orNow(c.At))}
	if c.State == AgentActive {
		// Activation is the approval.
		query += ", approved_at = COALESCE(approved_at, ?), approved_by = CASE WHEN approved_at IS NULL THEN ? ELSE approved_by END"
		args = append(args, x.d.ts(orNow(c.At)), c.By)
	}
	if c.State != AgentActive {
		// An agent that may not connect keeps no credentials to fetch, and stops being
		// shown online now rather than when its heartbeats time out.
		query += ", credentials = NULL, credentials_at = NULL, online = ?"
		args = append(args, false)
	}
	query += " WHERE id = ?"
	args = append(args, id)
	if len(from) > 0 {
		query += " AND state IN (" + placeholders(len(from)) + ")"
		for _, s := range from {
			args = append(args, s)
		}
	}
	a, err := scanAgent(x.queryRow(ctx, query+" RETURNING "+agentCols, args...))
	if isNoRows(err) {
		cur, gerr := x.GetAgent(ctx, id)
		if gerr != nil {
			return Agent{}, gerr
		}
		return cur, fmt.Errorf("store: %s %s: the agent is %s: %w", op, c.State, cur.State, ErrConflict)
	}
	return a, x.d.wrap(op, err)
}

// IssueAgentSecret makes the agent a new secret, replacing any earlier one, and returns it.
func (x *q) IssueAgentSecret(ctx context.Context, id string) (string, error) {
	secret := agentSecretPrefix + randomString(32)
	res, err := x.exec(ctx, "UPDATE agents SET secret_hash = ? WHERE id = ?", hashToken(secret), id)
	if err == nil {
		err = mustAffect(res)
	}
	if err != nil {
		return "", x.d.wrap("agent "+id+": issue secret", err)
	}
	return secret, nil
}

// CheckAgentSecret returns the agent whose secret was presented; an unknown agent, an
// agent without a secret and a wrong secret are all ErrNotFound.
func (x *q) CheckAgentSecret(ctx context.Context, id, presented string) (Agent, error) {
	const op = "agent secret"
	var stored string
	a, err := scanAgent(x.queryRow(ctx, "SELECT "+agentCols+", COALESCE(secret_hash, '') FROM agents WHERE id = ?", id), &stored)
	if err != nil {
		return Agent{}, x.d.wrap(op+" "+id, err)
	}
	if stored == "" || !strings.HasPrefix(presented, agentSecretPrefix) || !constantTimeEqual(hashToken(presented), stored) {
		return Agent{}, fmt.Errorf("store: %s %s: no such secret: %w", op, id, ErrNotFound)
	}
	return a, nil
}

// SetAgentCredentials keeps the agent's broker credentials, sealed to its own key, for it
// to fetch. Only an active agent has credentials: another state is ErrConflict.
func (x *q) SetAgentCredentials(ctx context.Context, id string, sealed []byte, at time.Time) error {
	op := "agent " + id + ": set credentials"
	res, err := x.exec(ctx, "UPDATE agents SET credentials = ?, credentials_at = ? WHERE id = ? AND state = ?",
		sealed, x.d.ts(orNow(at)), id, AgentActive)
	if err != nil {
		return x.d.wrap(op, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		a, err := x.GetAgent(ctx, id)
		if err != nil {
			return err
		}
		return fmt.Errorf("store: %s: the agent is %s: %w", op, a.State, ErrConflict)
	}
	return nil
}

// AgentCredentials returns the sealed credentials kept for the agent; nil when none.
func (x *q) AgentCredentials(ctx context.Context, id string) ([]byte, error) {
	var sealed []byte
	err := x.queryRow(ctx, "SELECT credentials FROM agents WHERE id = ?", id).Scan(bytesCol{&sealed})
	return sealed, x.d.wrap("agent "+id+": credentials", err)
}
