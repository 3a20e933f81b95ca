package store

import (
	"context"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
)

// ---- agents ----

const agentCols = "id, hostname, os, version, public_key, broker_user, enrolled_at, approved_at, approved_by, last_seen_at, last_heartbeat_at, online, " +
	"refused_at, refused_code, refused_sender, refused_reason, " +
	"state, state_reason, state_by, state_at, organisation_id, tags, enrolled_with, credentials_at"

func scanAgent(r scanner, extra ...any) (Agent, error) {
	var a Agent
	var tags []byte
	err := r.Scan(append([]any{&a.ID, &a.Hostname, &a.OS, &a.Version, bytesCol{&a.PublicKey}, strCol{&a.BrokerUser},
		timeCol{&a.Enrolled}, timeCol{&a.Approved}, &a.ApprovedBy, timeCol{&a.LastSeen},
		timeCol{&a.LastHeartbeat}, &a.Online,
		timeCol{&a.LastRefusal.At}, &a.LastRefusal.Code, &a.LastRefusal.Sender, &a.LastRefusal.Reason,
		&a.State, &a.StateReason, &a.StateBy, timeCol{&a.StateAt}, strCol{&a.OrganizationID}, bytesCol{&tags},
		&a.EnrolledWith, timeCol{&a.CredentialsAt}}, extra...)...)
	if err != nil {
		return Agent{}, err
	}
	if a.Tags, err = decodeTags(tags); err != nil {
		return Agent{}, fmt.Errorf("agent %s tags: %w", a.ID, err)
	}
	return a, nil
}

func (x *q) CreateAgent(ctx context.Context, a Agent) (Agent, error) {
	if err := checkAgentID("enrol agent", a.ID); err != nil {
		return Agent{}, err
	}
	if err := required("enrol agent "+a.ID, "hostname", a.Hostname); err != nil {
		return Agent{}, err
	}
	a.Enrolled = orNow(a.Enrolled)
	if a.State == "" {
		a.State = AgentActive
	}
	if !a.State.Valid() {
		return Agent{}, fmt.Errorf("store: enrol agent %s: unknown state %q: %w", a.ID, a.State, ErrInvalid)
	}
	row := x.queryRow(ctx, `INSERT INTO agents (id, hostname, os, version, public_key, broker_user,
			enrolled_at, approved_at, approved_by, last_seen_at, last_heartbeat_at, online,
			state, state_reason, state_by, state_at, organisation_id, tags, enrolled_with)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING RETURNING `+agentCols,
		a.ID, a.Hostname, a.OS, a.Version, nullBytes(a.PublicKey), nullStr(a.BrokerUser),
		x.d.ts(a.Enrolled), x.d.ts(a.Approved), a.ApprovedBy, x.d.ts(a.LastSeen),
		x.d.ts(a.LastHeartbeat), a.Online,
		a.State, a.StateReason, a.StateBy, x.d.ts(a.StateAt), nullStr(a.OrganizationID), encodeTags(a.Tags), a.EnrolledWith)
	out, err := scanAgent(row)
	if isNoRows(err) {
		// A taken ID is the duplicate-agent case: say which host holds it.
		var host string
		if err := x.queryRow(ctx, "SELECT hostname FROM agents WHERE id = ?", a.ID).Scan(&host); err != nil {
			return Agent{}, x.d.wrap("enrol agent "+a.ID, err)
		}
		return Agent{}, fmt.Errorf("store: enrol agent: ID %q is already enrolled, held by host %q: %w", a.ID, host, ErrConflict)
	}
	return out, x.d.wrap("enrol agent "+a.ID, err)
}

func (x *q) UpdateAgent(ctx context.Context, a Agent) (Agent, error) {
	if err := required("update agent "+a.ID, "ID", a.ID, "hostname", a.Hostname); err != nil {
		return Agent{}, err
	}
	row := x.queryRow(ctx, `UPDATE agents SET hostname = ?, os = ?, version = ?, public_key = ?, broker_user = ?
		WHERE id = ? RETURNING `+agentCols,
		a.Hostname, a.OS, a.Version, nullBytes(a.PublicKey), nullStr(a.BrokerUser), a.ID)
	out, err := scanAgent(row)
	return out, x.d.wrap("update agent "+a.ID, err)
}

func (x *q) ApproveAgent(ctx context.Context, id, by string, at time.Time) (Agent, error) {
	if err := required("approve agent "+id, "approver", by); err != nil {
		return Agent{}, err
	}
	row := x.queryRow(ctx, `UPDATE agents SET approved_at = ?, approved_by = ?
		WHERE id = ? AND approved_at IS NULL RETURNING `+agentCols, x.d.ts(orNow(at)), by, id)
	out, err := scanAgent(row)
	if isNoRows(err) {
		if err := x.exists(ctx, "agent "+id, "SELECT 1 FROM agents WHERE id = ?", id); err != nil {
			return Agent{}, err
		}
		return Agent{}, fmt.Errorf("store: approve agent %s: already approved: %w", id, ErrConflict)
	}
	return out, x.d.wrap("approve agent "+id, err)
}

func (x *q) RecordAgentSeen(ctx context.Context, id string, at time.Time, heartbeat bool) error {
	at = orNow(at)
	query := "UPDATE agents SET online = ?, last_seen_at = ?"
	args := []any{true, x.d.ts(at)}
	if heartbeat {
		query += ", last_heartbeat_at = ?"
		args = append(args, x.d.ts(at))
	}
	res, err := x.exec(ctx, query+" WHERE id = ?", append(args, id)...)
	if err == nil {
		err = mustAffect(res)
	}
	return x.d.wrap("agent "+id+" seen", err)
}

// heartbeatsPerStatement bounds one statement of RecordHeartbeats: two parameters a row,
// well under both back ends' limits on parameters.
const heartbeatsPerStatement = 500

func (x *q) RecordHeartbeats(ctx context.Context, beats []Heartbeat) (int64, error) {
	const op = "record heartbeats"
	// The latest heartbeat of each agent only: one row may match only one VALUES row.
	latest := make(map[string]time.Time, len(beats))
	order := make([]string, 0, len(beats))
	for _, b := range beats {
		if err := required(op, "agent ID", b.AgentID); err != nil {
			return 0, err
		}
		at := orNow(b.At)
		prev, seen := latest[b.AgentID]
		if !seen {
			order = append(order, b.AgentID)
		}
		if !seen || at.After(prev) {
			latest[b.AgentID] = at
		}
	}
	// PostgreSQL types the VALUES columns from their first row; SQLite keeps times as text.
	timeType := "TEXT"
	if x.d.dollar {
		timeType = "timestamptz"
	}
	// Rows are locked in the order of their IDs, as a transaction of events locks its
	// agents' (after its jobs', dispatch.markSeen): two such orders never wait for each
	// other in a circle.
	slices.Sort(order)
	var n int64
	for start := 0; start < len(order); start += heartbeatsPerStatement {
		chunk := order[start:min(start+heartbeatsPerStatement, len(order))]
		if x.d.dollar {
			if err := x.lockAgents(ctx, op, chunk); err != nil {
				return n, err
			}
		}
		var b strings.Builder
		args := make([]any, 0, 1+2*len(chunk))
		args = append(args, true)
		for i, id := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(CAST(? AS TEXT), CAST(? AS " + timeType + "))")
			args = append(args, id, x.d.ts(latest[id]))
		}
		// A heartbeat never moves an agent's times back: another coordinator, or a hello,
		// may have written a later one since this one arrived. Nor does one still queued
		// when its agent was disabled show that agent online.
		res, err := x.exec(ctx, `UPDATE agents SET online = ?, last_heartbeat_at = v.column2,
				last_seen_at = CASE WHEN agents.last_seen_at IS NULL OR agents.last_seen_at < v.column2
					THEN v.column2 ELSE agents.last_seen_at END
			FROM (VALUES `+b.String()+`) AS v
			WHERE agents.id = v.column1 AND (agents.last_heartbeat_at IS NULL OR agents.last_heartbeat_at < v.column2)
				AND agents.state = 'active'`, args...)
		if err != nil {
			return n, x.d.wrap(op, err)
		}
		m, err := res.RowsAffected()
		if err != nil {
			return n, x.d.wrap(op, err)
		}
		n += m
	}
	return n, nil
}

// lockAgents locks the rows of the agents ids in the order of their IDs, compared byte
// by byte as Go sorts them (COLLATE "C": the database's own collation may order "-" and
// "_" otherwise): an UPDATE joined to a list locks rows in whatever order its plan meets
// them. The lock is the UPDATE's own (FOR NO KEY UPDATE), which does not wait for the key
// share that a row referring to the agent (a token, a job, a certificate) holds while it
// is inserted. PostgreSQL only: SQLite has one writer and no row locks.
func (x *q) lockAgents(ctx context.Context, op string, ids []string) error {
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ")
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	_, err := x.exec(ctx, `SELECT id FROM agents WHERE id IN (`+marks+`) ORDER BY id COLLATE "C" FOR NO KEY UPDATE`, args...)
	return x.d.wrap(op, err)
}

func (x *q) RecordAgentRefusal(ctx context.Context, id string, r AgentRefusal) error {
	if err := required("record refusal for agent "+id, "code", r.Code); err != nil {
		return err
	}
	res, err := x.exec(ctx, `UPDATE agents SET refused_at = ?, refused_code = ?, refused_sender = ?, refused_reason = ?
		WHERE id = ?`, x.d.ts(orNow(r.At)), r.Code, r.Sender, r.Reason, id)
	if err == nil {
		err = mustAffect(res)
	}
	return x.d.wrap("refusal for agent "+id, err)
}

func (x *q) SetAgentOffline(ctx context.Context, id string) error {
	res, err := x.exec(ctx, "UPDATE agents SET online = ? WHERE id = ?", false, id)
	if err == nil {
		err = mustAffect(res)
	}
	return x.d.wrap("agent "+id+" offline", err)
}

func (x *q) MarkAgentsOffline(ctx context.Context, before time.Time) (int64, error) {
	res, err := x.exec(ctx, `UPDATE agents SET online = ?
		WHERE online = ? AND (last_heartbeat_at IS NULL OR last_heartbeat_at < ?)`,
		false, true, x.d.ts(orNow(before)))
	if err != nil {
		return 0, x.d.wrap("mark agents offline", err)
	}
	n, err := res.RowsAffected()
	return n, x.d.wrap("mark agents offline", err)
}

func (x *q) GetAgent(ctx context.Context, id string) (Agent, error) {
	a, err := scanAgent(x.queryRow(ctx, "SELECT "+agentCols+" FROM agents WHERE id = ?", id))
	return a, x.d.wrap("agent "+id, err)
}

func (x *q) ListAgents(ctx context.Context, f AgentFilter, p Page) ([]Agent, string, error) {
	const op = "list agents"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	var w where
	if f.Online != nil {
		w.add("online = ?", *f.Online)
	}
	if f.Approved != nil {
		if *f.Approved {
			w.add("approved_at IS NOT NULL")
		} else {
			w.add("approved_at IS NULL")
		}
	}
	if f.State != "" {
		w.add("state = ?", f.State)
	}
	w.contains(f.Search, "id", "hostname")
	if p.Cursor != "" {
		c, err := decodeCursor(p.Cursor, 1)
		if err != nil {
			return nil, "", x.d.wrap(op, err)
		}
		w.add("id > ?", c[0])
	}
	rows, err := x.query(ctx, "SELECT "+agentCols+" FROM agents"+w.sql()+" ORDER BY id LIMIT ?", append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	out, err := collect(rows, x.d, op, func(r scanner) (Agent, error) { return scanAgent(r) })
	if err != nil {
		return nil, "", err
	}
	return pageOf(out, limit, func(a Agent) string { return encodeCursor(a.ID) })
}

// pageOf trims the extra row a list query fetched and makes the cursor for the next page.
func pageOf[T any](items []T, limit int, cursor func(T) string) ([]T, string, error) {
	if len(items) <= limit {
		return items, "", nil
	}
	items = items[:limit]
	return items, cursor(items[limit-1]), nil
}

// ---- tokens ----

const tokenCols = "serial, agent_id, label, manufacturer, model, firmware, flags, last_seen_at"

func scanToken(r scanner) (Token, error) {
	var t Token
	err := r.Scan(&t.Serial, strCol{&t.AgentID}, &t.Label, &t.Manufacturer, &t.Model, &t.Firmware,
		bytesCol{(*[]byte)(&t.Flags)}, timeCol{&t.LastSeen})
	return t, err
}

func (x *q) UpsertToken(ctx context.Context, t Token) (Token, error) {
	t.Serial = strings.TrimSpace(t.Serial)
	if err := required("record token", "serial", t.Serial); err != nil {
		return Token{}, err
	}
	if err := checkJSON("record token "+t.Serial+" flags", t.Flags); err != nil {
		return Token{}, err
	}
	flags := "{}"
	if len(t.Flags) > 0 {
		flags = string(t.Flags)
	}
	row := x.queryRow(ctx, `INSERT INTO tokens (serial, agent_id, label, manufacturer, model, firmware, flags, last_seen_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (serial) DO UPDATE SET agent_id = excluded.agent_id, label = excluded.label,
			manufacturer = excluded.manufacturer, model = excluded.model, firmware = excluded.firmware,
			flags = excluded.flags, last_seen_at = excluded.last_seen_at
		RETURNING `+tokenCols,
		t.Serial, nullStr(t.AgentID), t.Label, t.Manufacturer, t.Model, t.Firmware, flags, x.d.ts(orNow(t.LastSeen)))
	out, err := scanToken(row)
	return out, x.d.wrap("record token "+t.Serial, err)
}

func (x *q) GetToken(ctx context.Context, serial string) (Token, error) {
	t, err := scanToken(x.queryRow(ctx, "SELECT "+tokenCols+" FROM tokens WHERE serial = ?", serial))
	return t, x.d.wrap("token "+serial, err)
}

func (x *q) ListTokens(ctx context.Context, f TokenFilter, p Page) ([]Token, string, error) {
	const op = "list tokens"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	var w where
	if f.AgentID != "" {
		w.add("agent_id = ?", f.AgentID)
	}
	if f.HolderID != "" {
		w.add("serial IN (SELECT token_serial FROM certificates WHERE holder_id = ?)", f.HolderID)
	}
	w.contains(f.Model, "model", "manufacturer")
	w.contains(f.Search, "serial", "label")
	if p.Cursor != "" {
		c, err := decodeCursor(p.Cursor, 1)
		if err != nil {
			return nil, "", x.d.wrap(op, err)
		}
		w.add("serial > ?", c[0])
	}
	rows, err := x.query(ctx, "SELECT "+tokenCols+" FROM tokens"+w.sql()+" ORDER BY serial LIMIT ?", append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	out, err := collect(rows, x.d, op, scanToken)
	if err != nil {
		return nil, "", err
	}
	return pageOf(out, limit, func(t Token) string { return encodeCursor(t.Serial) })
}

// ---- certificates ----

const certCols = "serial, job_id, holder_id, profile, token_serial, agent_id, subject, issuer, not_before, not_after, der, created_at, revoked_at, revocation_reason"

func scanCert(r scanner) (Certificate, error) {
	var c Certificate
	err := r.Scan(&c.Serial, strCol{&c.JobID}, strCol{&c.HolderID}, &c.Profile, strCol{&c.TokenSerial},
		strCol{&c.AgentID}, &c.Subject, &c.Issuer, timeCol{&c.NotBefore}, timeCol{&c.NotAfter},
		bytesCol{&c.DER}, timeCol{&c.Created}, timeCol{&c.RevokedAt}, &c.RevocationReason)
	return c, err
}

// normSerial gives a serial number one spelling: lower-case hex without leading zeros, as
// (*big.Int).Text(16) writes it.
func normSerial(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("certificate serial is required: %w", ErrInvalid)
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() < 0 {
		return "", fmt.Errorf("certificate serial %q is not hexadecimal: %w", s, ErrInvalid)
	}
	return n.Text(16), nil
}

func (x *q) AddCertificate(ctx context.Context, c Certificate) (Certificate, error) {
	serial, err := normSerial(c.Serial)
	if err != nil {
		return Certificate{}, fmt.Errorf("store: add certificate: %w", err)
	}
	c.Serial = serial
	what := "add certificate " + serial
	if err := required(what, "subject", c.Subject, "issuer", c.Issuer); err != nil {
		return Certificate{}, err
	}
	if c.NotBefore.IsZero() || c.NotAfter.IsZero() || len(c.DER) == 0 {
		return Certificate{}, fmt.Errorf("store: %s: validity and DER are required: %w", what, ErrInvalid)
	}
	row := x.queryRow(ctx, `INSERT INTO certificates (serial, job_id, holder_id, profile, token_serial, agent_id,
			subject, issuer, not_before, not_after, der, created_at, revoked_at, revocation_reason)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (serial) DO NOTHING RETURNING `+certCols,
		c.Serial, nullStr(c.JobID), nullStr(c.HolderID), c.Profile, nullStr(c.TokenSerial), nullStr(c.AgentID),
		c.Subject, c.Issuer, x.d.ts(c.NotBefore), x.d.ts(c.NotAfter), c.DER, x.d.ts(orNow(c.Created)),
		x.d.ts(c.RevokedAt), c.RevocationReason)
	out, err := scanCert(row)
	if isNoRows(err) {
		return Certificate{}, fmt.Errorf("store: %s: serial already recorded: %w", what, ErrConflict)
	}
	return out, x.d.wrap(what, err)
}

func (x *q) RevokeCertificate(ctx context.Context, serial string, at time.Time, reason int) (Certificate, error) {
	s, err := normSerial(serial)
	if err != nil {
		return Certificate{}, fmt.Errorf("store: revoke certificate: %w", err)
	}
	// A certificate on hold may be revoked for good with another reason (ca.Revocable, in SQL
	// so that it holds under concurrency); it keeps the hold's time, since when it has not
	// been trusted.
	held := -1 // no reason matches: only a valid certificate is revoked
	if reason != ca.ReasonCertificateHold {
		held = ca.ReasonCertificateHold
	}
	row := x.queryRow(ctx, `UPDATE certificates SET revoked_at = COALESCE(revoked_at, ?), revocation_reason = ?
		WHERE serial = ? AND (revoked_at IS NULL OR revocation_reason = ?) RETURNING `+certCols,
		x.d.ts(orNow(at)), reason, s, held)
	out, err := scanCert(row)
	if isNoRows(err) {
		if err := x.exists(ctx, "certificate "+s, "SELECT 1 FROM certificates WHERE serial = ?", s); err != nil {
			return Certificate{}, err
		}
		return Certificate{}, fmt.Errorf("store: revoke certificate %s: already revoked: %w", s, ErrConflict)
	}
	return out, x.d.wrap("revoke certificate "+s, err)
}

func (x *q) ReleaseCertificateHold(ctx context.Context, serial string) (Certificate, error) {
	s, err := normSerial(serial)
	if err != nil {
		return Certificate{}, fmt.Errorf("store: release certificate hold: %w", err)
	}
	row := x.queryRow(ctx, `UPDATE certificates SET revoked_at = NULL, revocation_reason = 0
		WHERE serial = ? AND revoked_at IS NOT NULL AND revocation_reason = ? RETURNING `+certCols, s, ca.ReasonCertificateHold)
	out, err := scanCert(row)
	if isNoRows(err) {
		if err := x.exists(ctx, "certificate "+s, "SELECT 1 FROM certificates WHERE serial = ?", s); err != nil {
			return Certificate{}, err
		}
		return Certificate{}, fmt.Errorf("store: release certificate hold %s: not on hold: %w", s, ErrConflict)
	}
	return out, x.d.wrap("release certificate hold "+s, err)
}

func (x *q) GetCertificate(ctx context.Context, serial string) (Certificate, error) {
	s, err := normSerial(serial)
	if err != nil {
		return Certificate{}, fmt.Errorf("store: certificate: %w", err)
	}
	c, err := scanCert(x.queryRow(ctx, "SELECT "+certCols+" FROM certificates WHERE serial = ?", s))
	return c, x.d.wrap("certificate "+s, err)
}

func (x *q) ListCertificates(ctx context.Context, f CertificateFilter, p Page) ([]Certificate, string, error) {
	const op = "list certificates"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	var w where
	for _, c := range []struct{ col, val string }{
		{"holder_id", f.HolderID}, {"token_serial", f.TokenSerial}, {"agent_id", f.AgentID}, {"job_id", f.JobID},
		{"profile", f.Profile},
	} {
		if c.val != "" {
			w.add(c.col+" = ?", c.val)
		}
	}
	if f.Revoked != nil {
		if *f.Revoked {
			w.add("revoked_at IS NOT NULL")
		} else {
			w.add("revoked_at IS NULL")
		}
	}
	if !f.ExpiresBefore.IsZero() {
		w.add("not_after < ?", x.d.ts(f.ExpiresBefore))
	}
	if err := w.afterCursor(x.d, p.Cursor, "not_before", "serial", false); err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	rows, err := x.query(ctx, "SELECT "+certCols+" FROM certificates"+w.sql()+
		" ORDER BY not_before DESC, serial DESC LIMIT ?", append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	out, err := collect(rows, x.d, op, scanCert)
	if err != nil {
		return nil, "", err
	}
	return pageOf(out, limit, func(c Certificate) string { return encodeCursor(cursorTime(c.NotBefore), c.Serial) })
}

// ---- profiles ----

const profileCols = "name, content, content_hash, version, updated_at, updated_by"

func scanProfile(r scanner) (Profile, error) {
	var p Profile
	var content string
	err := r.Scan(&p.Name, &content, &p.ContentHash, &p.Version, timeCol{&p.Updated}, &p.UpdatedBy)
	p.Content = []byte(content)
	return p, err
}

func (x *q) PutProfile(ctx context.Context, p Profile, expectedVersion int64) (Profile, error) {
	what := "put profile " + p.Name
	// The hash is the profile package's (over its canonical form, not these bytes), so
	// the store does not make one up.
	if err := required(what, "name", p.Name, "content hash", p.ContentHash, "updated by", p.UpdatedBy); err != nil {
		return Profile{}, err
	}
	if len(p.Content) == 0 || !utf8.Valid(p.Content) {
		return Profile{}, fmt.Errorf("store: %s: content must be non-empty UTF-8 text: %w", what, ErrInvalid)
	}
	if expectedVersion < 0 {
		return Profile{}, fmt.Errorf("store: %s: negative expected version: %w", what, ErrInvalid)
	}
	at := x.d.ts(orNow(p.Updated))
	var out Profile
	var err error
	if expectedVersion == 0 {
		out, err = scanProfile(x.queryRow(ctx, `INSERT INTO profiles (name, content, content_hash, version, updated_at, updated_by)
			VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING `+profileCols,
			p.Name, string(p.Content), p.ContentHash, at, p.UpdatedBy))
	} else {
		out, err = scanProfile(x.queryRow(ctx, `UPDATE profiles SET content = ?, content_hash = ?, version = version + 1,
				updated_at = ?, updated_by = ?
			WHERE name = ? AND version = ? RETURNING `+profileCols,
			string(p.Content), p.ContentHash, at, p.UpdatedBy, p.Name, expectedVersion))
	}
	if isNoRows(err) {
		var v int64
		if err := x.queryRow(ctx, "SELECT version FROM profiles WHERE name = ?", p.Name).Scan(&v); err != nil {
			return Profile{}, x.d.wrap(what, err)
		}
		return Profile{}, fmt.Errorf("store: %s: profile is at version %d, not %d: %w", what, v, expectedVersion, ErrConflict)
	}
	if err != nil {
		return Profile{}, x.d.wrap(what, err)
	}
	_, err = x.exec(ctx, `INSERT INTO profile_revisions (name, version, content, content_hash, updated_at, updated_by)
		VALUES (?, ?, ?, ?, ?, ?)`, out.Name, out.Version, string(out.Content), out.ContentHash, x.d.ts(out.Updated), out.UpdatedBy)
	return out, x.d.wrap(what, err)
}

func (x *q) GetProfile(ctx context.Context, name string) (Profile, error) {
	p, err := scanProfile(x.queryRow(ctx, "SELECT "+profileCols+" FROM profiles WHERE name = ?", name))
	return p, x.d.wrap("profile "+name, err)
}

func (x *q) GetProfileVersion(ctx context.Context, name string, version int64) (Profile, error) {
	p, err := scanProfile(x.queryRow(ctx, "SELECT "+profileCols+" FROM profile_revisions WHERE name = ? AND version = ?", name, version))
	return p, x.d.wrap("profile "+name+" version "+strconv.FormatInt(version, 10), err)
}

func (x *q) ListProfiles(ctx context.Context) ([]Profile, error) {
	rows, err := x.query(ctx, "SELECT "+profileCols+" FROM profiles ORDER BY name")
	if err != nil {
		return nil, x.d.wrap("list profiles", err)
	}
	return collect(rows, x.d, "list profiles", scanProfile)
}

func (x *q) ReleaseAgentTokens(ctx context.Context, agentID string, keep []string) (int64, error) {
	what := "release tokens of agent " + agentID
	if err := required(what, "agent ID", agentID); err != nil {
		return 0, err
	}
	query := "UPDATE tokens SET agent_id = NULL WHERE agent_id = ?"
	args := []any{agentID}
	if len(keep) > 0 {
		query += " AND serial NOT IN (?" + strings.Repeat(", ?", len(keep)-1) + ")"
		for _, s := range keep {
			args = append(args, s)
		}
	}
	res, err := x.exec(ctx, query, args...)
	if err != nil {
		return 0, x.d.wrap(what, err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
