package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// ---- rollouts ----

const rolloutCols = "id, name, state, spec, standing, profile_name, binding_hash, target_count, created_by, " +
	"created_at, updated_at, approved_at, current_wave, wave_finished_at, promoted, pause_kind, pause_reason, " +
	"paused_by, paused_at, pause_round, trip, finished_at, version, idempotency_key, request_hash"

// finalRolloutStates are the rollout states that end a rollout (rollout.State.Final):
// the standing rollout index counts a rollout in none of them as open.
var finalRolloutStates = []string{"completed", "rejected", "expired", "aborted"}

func scanRollout(r scanner) (Rollout, error) {
	var o Rollout
	var spec, trip []byte
	err := r.Scan(&o.ID, &o.Name, &o.State, bytesCol{&spec}, &o.Standing, &o.ProfileName, &o.BindingHash,
		&o.TargetCount, &o.CreatedBy, timeCol{&o.Created}, timeCol{&o.Updated}, timeCol{&o.ApprovedAt},
		&o.CurrentWave, timeCol{&o.WaveFinishedAt}, &o.Promoted, &o.PauseKind, &o.PauseReason, &o.PausedBy,
		timeCol{&o.PausedAt}, &o.PauseRound, bytesCol{&trip}, timeCol{&o.FinishedAt}, &o.Version,
		strCol{&o.IdempotencyKey}, &o.RequestHash)
	if err != nil {
		return Rollout{}, err
	}
	o.Spec = spec
	if len(trip) > 0 {
		o.Trip = trip
	}
	return o, nil
}

// checkRollout checks what CreateRollout and UpdateRollout both write.
func checkRollout(what string, r Rollout) error {
	if err := required(what, "name", r.Name, "state", r.State); err != nil {
		return err
	}
	if r.CurrentWave < 0 || r.PauseRound < 0 {
		return fmt.Errorf("store: %s: current wave %d, pause round %d: neither may be negative: %w",
			what, r.CurrentWave, r.PauseRound, ErrInvalid)
	}
	return checkJSON(what+": trip", r.Trip)
}

func (x *q) CreateRollout(ctx context.Context, r Rollout, targets []RolloutTarget) (Rollout, error) {
	if r.ID == "" {
		r.ID = newID()
	} else if err := checkID("create rollout", r.ID); err != nil {
		return Rollout{}, err
	}
	what := "create rollout " + r.ID
	if err := checkRollout(what, r); err != nil {
		return Rollout{}, err
	}
	if err := required(what, "created by", r.CreatedBy); err != nil {
		return Rollout{}, err
	}
	if len(r.Spec) == 0 {
		return Rollout{}, fmt.Errorf("store: %s: spec is required: %w", what, ErrInvalid)
	}
	if err := checkJSON(what+": spec", r.Spec); err != nil {
		return Rollout{}, err
	}
	r.Created = orNow(r.Created)
	ts, err := rolloutTargets(what, targets, r.Created)
	if err != nil {
		return Rollout{}, err
	}
	for i, t := range ts {
		if t.Seq == 0 {
			ts[i].Seq = i + 1
		}
	}
	if err := checkTargetsUnique(what, ts); err != nil {
		return Rollout{}, err
	}
	if r.Standing && !slices.Contains(finalRolloutStates, r.State) {
		// The unique index refuses a second one anyway; this names the first.
		var id string
		err := x.queryRow(ctx, "SELECT id FROM rollouts WHERE standing = ? AND profile_name = ? AND state NOT IN ("+
			placeholders(len(finalRolloutStates))+")", append([]any{true, r.ProfileName}, toAny(finalRolloutStates)...)...).Scan(&id)
		switch {
		case err == nil:
			return Rollout{}, fmt.Errorf("store: %s: profile %q already has the standing rollout %s; abort it first: %w",
				what, r.ProfileName, id, ErrConflict)
		case !isNoRows(err):
			return Rollout{}, x.d.wrap(what, err)
		}
	}
	row := x.queryRow(ctx, `INSERT INTO rollouts (id, name, state, spec, standing, profile_name, binding_hash, target_count,
			created_by, created_at, updated_at, approved_at, current_wave, wave_finished_at, promoted, pause_kind,
			pause_reason, paused_by, paused_at, pause_round, trip, finished_at, version, idempotency_key, request_hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING `+rolloutCols,
		r.ID, r.Name, r.State, string(r.Spec), r.Standing, r.ProfileName, r.BindingHash, len(ts),
		r.CreatedBy, x.d.ts(r.Created), x.d.ts(r.Created), x.d.ts(r.ApprovedAt), r.CurrentWave,
		x.d.ts(r.WaveFinishedAt), r.Promoted, r.PauseKind, r.PauseReason, r.PausedBy, x.d.ts(r.PausedAt),
		r.PauseRound, string(r.Trip), x.d.ts(r.FinishedAt), nullStr(r.IdempotencyKey), r.RequestHash)
	out, err := scanRollout(row)
	if err != nil {
		return Rollout{}, x.d.wrap(what, err)
	}
	if err := x.insertTargets(ctx, what, out.ID, ts); err != nil {
		return Rollout{}, err
	}
	return out, nil
}

// targetKey is what makes a target unique in its rollout.
type targetKey [3]string

func (t RolloutTarget) key() targetKey {
	return targetKey{t.AgentID, t.TokenSerial, t.CertificateSerial}
}

// rolloutTargets checks targets and returns them in the form they are stored: serials
// normalised, added at added when they do not say.
func rolloutTargets(what string, targets []RolloutTarget, added time.Time) ([]RolloutTarget, error) {
	ts := slices.Clone(targets)
	for i := range ts {
		t := &ts[i]
		if t.AgentID == "" {
			return nil, fmt.Errorf("store: %s: target %d has no agent: %w", what, i+1, ErrInvalid)
		}
		if t.Seq < 0 || t.Wave < 0 {
			return nil, fmt.Errorf("store: %s: target %d: seq %d, wave %d: neither may be negative: %w",
				what, i+1, t.Seq, t.Wave, ErrInvalid)
		}
		if t.CertificateSerial != "" {
			s, err := normSerial(t.CertificateSerial)
			if err != nil {
				return nil, fmt.Errorf("store: %s: target %d: %w", what, i+1, err)
			}
			t.CertificateSerial = s
		}
		if t.Added.IsZero() {
			t.Added = added
		}
		t.Added = normTime(t.Added)
	}
	return ts, nil
}

// checkTargetsUnique refuses a repeated seq or target before the unique keys do, naming
// them.
func checkTargetsUnique(what string, ts []RolloutTarget) error {
	seqs := make(map[int]bool, len(ts))
	keys := make(map[targetKey]int, len(ts))
	for i, t := range ts {
		if seqs[t.Seq] {
			return fmt.Errorf("store: %s: seq %d is given to two targets: %w", what, t.Seq, ErrInvalid)
		}
		seqs[t.Seq] = true
		if j, dup := keys[t.key()]; dup {
			return fmt.Errorf("store: %s: targets %d and %d are the same (agent %s, token %q, certificate %q): %w",
				what, ts[j].Seq, t.Seq, t.AgentID, t.TokenSerial, t.CertificateSerial, ErrInvalid)
		}
		keys[t.key()] = i
	}
	return nil
}

// targetWidth is the number of values of one inserted target.
const targetWidth = 11

// insertTargets inserts ts a few hundred to a statement.
func (x *q) insertTargets(ctx context.Context, what, rolloutID string, ts []RolloutTarget) error {
	for chunk := range slices.Chunk(ts, batchRows) {
		vals := make([]any, 0, targetWidth*len(chunk))
		for _, t := range chunk {
			vals = append(vals, rolloutID, t.Seq, t.Wave, t.AgentID, t.TokenSerial, nullStr(t.HolderID),
				t.CertificateSerial, t.TokenModel, nullStr(t.OrganizationID), nullStr(t.JobID), x.d.ts(t.Added))
		}
		if _, err := x.exec(ctx, `INSERT INTO rollout_targets (rollout_id, seq, wave, agent_id, token_serial, holder_id,
				certificate_serial, token_model, organisation_id, job_id, added_at)
			VALUES `+valueRows(len(chunk), targetWidth), vals...); err != nil {
			return x.d.wrap(fmt.Sprintf("%s: targets %d to %d", what, chunk[0].Seq, chunk[len(chunk)-1].Seq), err)
		}
	}
	return nil
}

func (x *q) UpdateRollout(ctx context.Context, r Rollout, expectedVersion int64) (Rollout, error) {
	what := "update rollout " + r.ID
	if err := required(what, "rollout ID", r.ID); err != nil {
		return Rollout{}, err
	}
	if err := checkRollout(what, r); err != nil {
		return Rollout{}, err
	}
	if err := checkVersion(what, expectedVersion); err != nil {
		return Rollout{}, err
	}
	// Compare-and-set, as for jobs: two coordinators advancing one rollout cannot both win.
	row := x.queryRow(ctx, `UPDATE rollouts SET name = ?, state = ?, binding_hash = ?, updated_at = ?, approved_at = ?,
			current_wave = ?, wave_finished_at = ?, promoted = ?, pause_kind = ?, pause_reason = ?, paused_by = ?,
			paused_at = ?, pause_round = ?, trip = ?, finished_at = ?, version = version + 1
		WHERE id = ? AND version = ? RETURNING `+rolloutCols,
		r.Name, r.State, r.BindingHash, x.d.ts(now()), x.d.ts(r.ApprovedAt), r.CurrentWave, x.d.ts(r.WaveFinishedAt),
		r.Promoted, r.PauseKind, r.PauseReason, r.PausedBy, x.d.ts(r.PausedAt), r.PauseRound, string(r.Trip),
		x.d.ts(r.FinishedAt), r.ID, expectedVersion)
	out, err := scanRollout(row)
	if isNoRows(err) {
		var version int64
		if err := x.queryRow(ctx, "SELECT version FROM rollouts WHERE id = ?", r.ID).Scan(&version); err != nil {
			return Rollout{}, x.d.wrap(what, err)
		}
		return Rollout{}, fmt.Errorf("store: %s: the rollout is at version %d, expected %d: %w",
			what, version, expectedVersion, ErrConflict)
	}
	return out, x.d.wrap(what, err)
}

func (x *q) GetRollout(ctx context.Context, id string) (Rollout, error) {
	r, err := scanRollout(x.queryRow(ctx, "SELECT "+rolloutCols+" FROM rollouts WHERE id = ?", id))
	return r, x.d.wrap("rollout "+id, err)
}

func (x *q) GetRolloutByIdempotencyKey(ctx context.Context, createdBy, key string) (Rollout, error) {
	what := "rollout of " + createdBy + " with idempotency key " + key
	if err := required(what, "creator", createdBy, "key", key); err != nil {
		return Rollout{}, err
	}
	r, err := scanRollout(x.queryRow(ctx, "SELECT "+rolloutCols+" FROM rollouts WHERE created_by = ? AND idempotency_key = ?", createdBy, key))
	return r, x.d.wrap(what, err)
}

func (x *q) LockRollout(ctx context.Context, id string) (Rollout, error) {
	r, err := scanRollout(x.queryRow(ctx, "SELECT "+rolloutCols+" FROM rollouts WHERE id = ?"+x.d.forUpdate, id))
	return r, x.d.wrap("lock rollout "+id, err)
}

func (x *q) ListRollouts(ctx context.Context, f RolloutFilter, p Page) ([]Rollout, string, error) {
	const op = "list rollouts"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	var w where
	w.in("state", f.States)
	if f.Standing != nil {
		w.add("standing = ?", *f.Standing)
	}
	if f.ProfileName != "" {
		w.add("profile_name = ?", f.ProfileName)
	}
	if err := w.olderThan(x.d, p.Cursor); err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	rows, err := x.query(ctx, "SELECT "+rolloutCols+" FROM rollouts"+w.sql()+" ORDER BY created_at DESC, id DESC LIMIT ?",
		append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	out, err := collect(rows, x.d, op, scanRollout)
	if err != nil {
		return nil, "", err
	}
	return pageOf(out, limit, func(r Rollout) string { return encodeCursor(cursorTime(r.Created), r.ID) })
}

// ---- rollout targets ----

const rolloutTargetCols = "rollout_id, seq, wave, agent_id, token_serial, holder_id, certificate_serial, token_model, " +
	"organisation_id, job_id, added_at"

func scanRolloutTarget(r scanner) (RolloutTarget, error) {
	var t RolloutTarget
	err := r.Scan(&t.RolloutID, &t.Seq, &t.Wave, &t.AgentID, &t.TokenSerial, strCol{&t.HolderID}, &t.CertificateSerial,
		&t.TokenModel, strCol{&t.OrganizationID}, strCol{&t.JobID}, timeCol{&t.Added})
	return t, err
}

func (x *q) ListRolloutTargets(ctx context.Context, rolloutID string, f RolloutTargetFilter, p Page) ([]RolloutTarget, string, error) {
	op := "rollout " + rolloutID + ": list targets"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	if f.WithoutJob && f.HasJob {
		return nil, "", fmt.Errorf("store: %s: a target cannot both have a job and have none; ask for one: %w", op, ErrInvalid)
	}
	var w where
	w.add("rollout_id = ?", rolloutID)
	if f.Wave != nil {
		w.add("wave = ?", *f.Wave)
	}
	if f.WithoutJob {
		w.add("job_id IS NULL")
	}
	if f.HasJob {
		w.add("job_id IS NOT NULL")
	}
	if p.Cursor != "" {
		c, err := decodeCursor(p.Cursor, 1)
		if err != nil {
			return nil, "", x.d.wrap(op, err)
		}
		seq, err := strconv.Atoi(c[0])
		if err != nil {
			return nil, "", fmt.Errorf("store: %s: malformed page cursor: %w", op, ErrInvalid)
		}
		w.add("seq > ?", seq)
	}
	rows, err := x.query(ctx, "SELECT "+rolloutTargetCols+" FROM rollout_targets"+w.sql()+" ORDER BY seq LIMIT ?",
		append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	out, err := collect(rows, x.d, op, scanRolloutTarget)
	if err != nil {
		return nil, "", err
	}
	return pageOf(out, limit, func(t RolloutTarget) string { return encodeCursor(strconv.Itoa(t.Seq)) })
}

func (x *q) HasRolloutTarget(ctx context.Context, rolloutID, certificateSerial string) (bool, error) {
	op := "rollout " + rolloutID + ": target for certificate " + certificateSerial
	s, err := normSerial(certificateSerial)
	if err != nil {
		return false, fmt.Errorf("store: %s: %w", op, err)
	}
	var one int
	// The <> '' names the partial index's condition, so that the index serves the query.
	err = x.queryRow(ctx, "SELECT 1 FROM rollout_targets WHERE rollout_id = ? AND certificate_serial = ? AND certificate_serial <> '' LIMIT 1",
		rolloutID, s).Scan(&one)
	if isNoRows(err) {
		return false, nil
	}
	return err == nil, x.d.wrap(op, err)
}

func (x *q) AddRolloutTargets(ctx context.Context, rolloutID string, ts []RolloutTarget) (int, error) {
	what := fmt.Sprintf("rollout %s: add %d targets", rolloutID, len(ts))
	ts, err := rolloutTargets(what, ts, now())
	if err != nil {
		return 0, err
	}
	// The rollout's row is the lock that orders writers of its seqs (on PostgreSQL;
	// SQLite has one writer).
	var count int
	if err := x.queryRow(ctx, "SELECT target_count FROM rollouts WHERE id = ?"+x.d.forUpdate, rolloutID).Scan(&count); err != nil {
		return 0, x.d.wrap(what, err)
	}
	if len(ts) == 0 {
		return 0, nil
	}
	var last int
	if err := x.queryRow(ctx, "SELECT COALESCE(MAX(seq), 0) FROM rollout_targets WHERE rollout_id = ?", rolloutID).Scan(&last); err != nil {
		return 0, x.d.wrap(what, err)
	}
	have, err := x.targetKeys(ctx, what, rolloutID, ts)
	if err != nil {
		return 0, err
	}
	added := make([]RolloutTarget, 0, len(ts))
	for _, t := range ts {
		if have[t.key()] {
			continue
		}
		have[t.key()] = true // the same target twice in ts: once
		last++
		t.Seq = last
		added = append(added, t)
	}
	if len(added) == 0 {
		return 0, nil
	}
	if err := x.insertTargets(ctx, what, rolloutID, added); err != nil {
		return 0, err
	}
	if _, err := x.exec(ctx, "UPDATE rollouts SET target_count = target_count + ?, updated_at = ? WHERE id = ?",
		len(added), x.d.ts(now()), rolloutID); err != nil {
		return 0, x.d.wrap(what, err)
	}
	return len(added), nil
}

// targetKeys returns the keys (agent, token, certificate) the rollout already has among
// the agents of ts.
func (x *q) targetKeys(ctx context.Context, what, rolloutID string, ts []RolloutTarget) (map[targetKey]bool, error) {
	agents := make([]string, 0, len(ts))
	for _, t := range ts {
		agents = append(agents, t.AgentID)
	}
	slices.Sort(agents)
	agents = slices.Compact(agents)
	have := map[targetKey]bool{}
	for chunk := range slices.Chunk(agents, batchRows) {
		rows, err := x.query(ctx, "SELECT agent_id, token_serial, certificate_serial FROM rollout_targets WHERE rollout_id = ? AND agent_id IN ("+
			placeholders(len(chunk))+")", append([]any{rolloutID}, toAny(chunk)...)...)
		if err != nil {
			return nil, x.d.wrap(what, err)
		}
		keys, err := collect(rows, x.d, what, func(r scanner) (targetKey, error) {
			var k targetKey
			err := r.Scan(&k[0], &k[1], &k[2])
			return k, err
		})
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			have[k] = true
		}
	}
	return have, nil
}

func (x *q) AttachRolloutJobs(ctx context.Context, rolloutID string, links []RolloutJobLink) error {
	what := fmt.Sprintf("rollout %s: attach %d jobs", rolloutID, len(links))
	seqs := make(map[int]bool, len(links))
	jobIDs := make(map[string]bool, len(links))
	for _, l := range links {
		switch {
		case l.Seq < 1 || l.JobID == "":
			return fmt.Errorf("store: %s: seq %d, job %q: a link needs a seq from 1 and a job: %w", what, l.Seq, l.JobID, ErrInvalid)
		case seqs[l.Seq]:
			return fmt.Errorf("store: %s: target %d is given two jobs: %w", what, l.Seq, ErrInvalid)
		case jobIDs[l.JobID]:
			return fmt.Errorf("store: %s: job %s is given to two targets: %w", what, l.JobID, ErrInvalid)
		}
		seqs[l.Seq], jobIDs[l.JobID] = true, true
	}
	// In seq order, so that two writers lock rows in one order; every target is checked
	// before any is written, so that a refusal leaves all as they were.
	sorted := slices.SortedFunc(slices.Values(links), func(a, b RolloutJobLink) int { return cmp.Compare(a.Seq, b.Seq) })
	for chunk := range slices.Chunk(sorted, batchRows) {
		if err := x.checkUnattached(ctx, what, rolloutID, chunk); err != nil {
			return err
		}
	}
	for chunk := range slices.Chunk(sorted, batchRows) {
		var set string
		args := make([]any, 0, 3*len(chunk)+1)
		for _, l := range chunk {
			set += " WHEN ? THEN ?"
			args = append(args, l.Seq, l.JobID)
		}
		args = append(args, rolloutID)
		for _, l := range chunk {
			args = append(args, l.Seq)
		}
		res, err := x.exec(ctx, "UPDATE rollout_targets SET job_id = CASE seq"+set+" END WHERE rollout_id = ? AND seq IN ("+
			placeholders(len(chunk))+") AND job_id IS NULL", args...)
		if err != nil {
			return x.d.wrap(what, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return x.d.wrap(what, err)
		}
		if int(n) != len(chunk) {
			return fmt.Errorf("store: %s: %d of %d targets were checked but not attached: %w", what, len(chunk)-int(n), len(chunk), ErrConflict)
		}
	}
	return nil
}

// checkUnattached locks the targets of links (on PostgreSQL) and checks that each exists
// and has no job yet.
func (x *q) checkUnattached(ctx context.Context, what, rolloutID string, links []RolloutJobLink) error {
	args := make([]any, 0, 1+len(links))
	args = append(args, rolloutID)
	for _, l := range links {
		args = append(args, l.Seq)
	}
	rows, err := x.query(ctx, "SELECT seq, job_id FROM rollout_targets WHERE rollout_id = ? AND seq IN ("+
		placeholders(len(links))+") ORDER BY seq"+x.d.forUpdate, args...)
	if err != nil {
		return x.d.wrap(what, err)
	}
	found, err := collect(rows, x.d, what, func(r scanner) (RolloutJobLink, error) {
		var l RolloutJobLink
		err := r.Scan(&l.Seq, strCol{&l.JobID})
		return l, err
	})
	if err != nil {
		return err
	}
	job := make(map[int]string, len(found))
	for _, l := range found {
		job[l.Seq] = l.JobID
	}
	for _, l := range links {
		j, ok := job[l.Seq]
		switch {
		case !ok:
			return fmt.Errorf("store: %s: the rollout has no target %d: %w", what, l.Seq, ErrConflict)
		case j != "":
			return fmt.Errorf("store: %s: target %d already has job %s: %w", what, l.Seq, j, ErrConflict)
		}
	}
	return nil
}

// ---- progress ----

func (x *q) RolloutCounts(ctx context.Context, rolloutID string) ([]RolloutCount, error) {
	op := "rollout " + rolloutID + ": counts"
	rows, err := x.query(ctx, `SELECT t.wave, COALESCE(j.state, ''), COALESCE(j.error_code, ''), COUNT(*)
		FROM rollout_targets t LEFT JOIN jobs j ON j.id = t.job_id
		WHERE t.rollout_id = ?
		GROUP BY t.wave, j.state, j.error_code
		ORDER BY 1, 2, 3`, rolloutID)
	if err != nil {
		return nil, x.d.wrap(op, err)
	}
	return collect(rows, x.d, op, func(r scanner) (RolloutCount, error) {
		var c RolloutCount
		err := r.Scan(&c.Wave, &c.State, &c.ErrorCode, &c.N)
		return c, err
	})
}

// terminalJobStates are the states that end a job.
var terminalJobStates = func() []string {
	var out []string
	for _, s := range jobs.States() {
		if jobs.Terminal(s) {
			out = append(out, string(s))
		}
	}
	return out
}()

func (x *q) RolloutDoneSince(ctx context.Context, rolloutID string, since time.Time) (int, error) {
	var n int
	err := x.queryRow(ctx, "SELECT COUNT(*) FROM jobs WHERE rollout_id = ? AND state IN ("+placeholders(len(terminalJobStates))+
		") AND updated_at >= ?", append(append([]any{rolloutID}, toAny(terminalJobStates)...), x.d.ts(since))...).Scan(&n)
	return n, x.d.wrap("rollout "+rolloutID+": jobs done since "+since.UTC().Format(time.RFC3339), err)
}

// ---- rollout approvals ----

const rolloutApprovalCols = "id, rollout_id, approver_id, verdict, bound_hash, round, reason, at"

func scanRolloutApproval(r scanner) (RolloutApproval, error) {
	var a RolloutApproval
	err := r.Scan(&a.ID, &a.RolloutID, &a.ApproverID, &a.Verdict, &a.BoundHash, &a.Round, &a.Reason, timeCol{&a.At})
	return a, err
}

func (x *q) AddRolloutApproval(ctx context.Context, a RolloutApproval) (RolloutApproval, error) {
	what := fmt.Sprintf("rollout %s approval by %s", a.RolloutID, a.ApproverID)
	if err := required(what, "rollout ID", a.RolloutID, "approver", a.ApproverID, "bound hash", a.BoundHash); err != nil {
		return RolloutApproval{}, err
	}
	if a.Verdict != jobs.VerdictApprove && a.Verdict != jobs.VerdictReject {
		return RolloutApproval{}, fmt.Errorf("store: %s: unknown verdict %q: %w", what, a.Verdict, ErrInvalid)
	}
	if a.Round < 0 {
		return RolloutApproval{}, fmt.Errorf("store: %s: round %d: rounds start at 0: %w", what, a.Round, ErrInvalid)
	}
	row := x.queryRow(ctx, `INSERT INTO rollout_approvals (rollout_id, approver_id, verdict, bound_hash, round, reason, at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (rollout_id, approver_id, round, bound_hash) DO NOTHING RETURNING `+rolloutApprovalCols,
		a.RolloutID, a.ApproverID, string(a.Verdict), a.BoundHash, a.Round, a.Reason, x.d.ts(orNow(a.At)))
	out, err := scanRolloutApproval(row)
	if isNoRows(err) {
		return RolloutApproval{}, fmt.Errorf("store: %s: this approver already decided on this content in round %d: %w",
			what, a.Round, ErrConflict)
	}
	return out, x.d.wrap(what, err)
}

func (x *q) ListRolloutApprovals(ctx context.Context, rolloutID string) ([]RolloutApproval, error) {
	op := "rollout " + rolloutID + " approvals"
	rows, err := x.query(ctx, "SELECT "+rolloutApprovalCols+" FROM rollout_approvals WHERE rollout_id = ? ORDER BY id", rolloutID)
	if err != nil {
		return nil, x.d.wrap(op, err)
	}
	return collect(rows, x.d, op, scanRolloutApproval)
}

// toAny passes strings as query arguments.
func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
