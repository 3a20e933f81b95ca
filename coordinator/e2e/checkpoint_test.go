package e2e_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the intruder's SQLite driver, to rewrite the chain

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
)

// TestAuditCheckpoints tampers with a stopped coordinator's SQLite file as an intruder
// would (append-only triggers dropped first) in the three ways a hash chain alone handles
// badly or not at all: a row edited into something unreadable, a tail cut off with the
// head moved back, a tail rewritten with valid hashes and the head updated. The first
// must be named by audit verify; the other two verify clean without a checkpoint (which
// is why checkpoints exist) and fail against one kept beforehand.
func TestAuditCheckpoints(t *testing.T) {
	sqlite3Path(t)
	bins := buildBinaries(t)
	data := t.TempDir()
	co := startCoordinator(t, bins.coordinator, data)
	raw, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(raw))
	s := &scenario{t: t, bins: bins, url: co.url}

	// The checkpoint key was made on first start, private to the coordinator.
	keyPath := filepath.Join(data, "audit-checkpoint-key.pem")
	if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("checkpoint key %s: %v, want mode 0600", keyPath, err)
	}

	// Some history, and an auditor.
	s.ok(admin, "org", "create", "acme")
	s.ok(admin, "user", "create", "audrey.auditor", "--name", "Audrey Auditor", "--role", "auditor")
	s.ok(admin, "user", "create", "olga.op", "--name", "Olga Operator", "--org", "acme", "--role", "helpdesk")
	auditor := strings.TrimSpace(s.ok(admin, "user", "token", "audrey.auditor", "--name", "e2e"))
	op := strings.TrimSpace(s.ok(admin, "user", "token", "olga.op", "--name", "e2e"))
	for _, name := range []string{"globex", "initech", "umbrella"} {
		s.ok(admin, "org", "create", name)
	}

	// The auditor pins the key and keeps a checkpoint, out of the coordinator's reach.
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "checkpoint-key.pem")
	writeFile(t, keyFile, s.ok(auditor, "audit", "key"))
	s.fails(op, 1, "forbidden", "audit", "checkpoint")
	keptFile := filepath.Join(dir, "kept.json")
	out := s.ok(auditor, "audit", "checkpoint")
	writeFile(t, keptFile, out)
	var kept audit.Checkpoint
	if err := json.Unmarshal([]byte(out), &kept); err != nil {
		t.Fatalf("audit checkpoint printed %q: %v", out, err)
	}
	var listed []audit.Checkpoint
	s.okJSON(auditor, &listed, "audit", "checkpoints", "--json")
	if len(listed) == 0 || listed[0].Seq != kept.Seq || listed[0].Hash != kept.Hash {
		t.Fatalf("audit checkpoints lists %+v, want %+v first", listed, kept)
	}
	pinned := []string{"audit", "verify", "--checkpoint", keptFile, "--key", keyFile}
	if out := s.ok(auditor, pinned...); !strings.Contains(out, "consistent with 1 kept checkpoint(s), the latest of entry "+fmt.Sprint(kept.Seq)) {
		t.Fatalf("audit verify with the checkpoint printed %q", out)
	}
	// Without --key the coordinator's key is fetched, with a warning.
	if r := s.ctl(auditor, "audit", "verify", "--checkpoint", keptFile); r.code != 0 || !strings.Contains(r.stderr, "pinned with --key") {
		t.Fatalf("audit verify without --key: exit %d, stderr %q", r.code, r.stderr)
	}
	head := verifyHead(t, s, auditor)
	if head.Seq != kept.Seq || kept.Seq < 8 {
		t.Fatalf("head %+v after the checkpoint of entry %d", head, kept.Seq)
	}

	co.stop()
	db := filepath.Join(data, "coordinator.db")
	pristine := filepath.Join(t.TempDir(), "pristine.db")
	sqlite(t, db, ".backup "+pristine+"\n")
	restart := func() {
		t.Helper()
		co = startCoordinator(t, bins.coordinator, data)
		s.url = co.url
	}
	restore := func() {
		t.Helper()
		co.stop()
		sqlite(t, db, ".restore "+pristine+"\n")
	}
	brokenAgainst := func(seq int64, kind audit.Kind, args ...string) string {
		t.Helper()
		return s.fails(auditor, 3, fmt.Sprintf("the audit log was tampered with: entry %d %s: ", seq, kind), args...)
	}

	// (a) A timestamp edited into something that is not a time.
	const edited = 3
	sqlite(t, db, fmt.Sprintf("DROP TRIGGER audit_log_no_update;\nUPDATE audit_log SET at = '2026-13-45 xx' WHERE seq = %d;\n", edited))
	restart()
	msg := brokenAgainst(edited, audit.KindEdited, "audit", "verify")
	if !strings.Contains(msg, `its stored row cannot be read: at holds "2026-13-45 xx", which is not a time`) {
		t.Errorf("audit verify says %q", msg)
	}
	restore()

	// (b) The tail cut off and the head moved back, as if the last entries never were.
	for _, cut := range []int64{1, 3} {
		from := kept.Seq - cut + 1
		sqlite(t, db, fmt.Sprintf("DROP TRIGGER audit_log_no_delete;\nDELETE FROM audit_log WHERE seq >= %d;\n"+
			"UPDATE audit_head SET seq = %d, hash = (SELECT hash FROM audit_log WHERE seq = %d);\n", from, from-1, from-1))
		restart()
		// The chain that is left is valid: only the checkpoint shows the cut. The
		// coordinator goes on appending (the auditor's token use) where the head now is.
		after := verifyHead(t, s, auditor)
		if after.Seq > kept.Seq || after.Seq < from-1 || cut == 3 && after.Seq >= kept.Seq {
			t.Fatalf("head after a cut of %d: %+v", cut, after)
		}
		var msg string
		if after.Seq < kept.Seq {
			msg = brokenAgainst(after.Seq+1, audit.KindRemoved, pinned...)
			if !strings.Contains(msg, fmt.Sprintf("the log ends at entry %d, but the checkpoint of entry %d", after.Seq, kept.Seq)) {
				t.Errorf("cut of %d: audit verify says %q", cut, msg)
			}
		} else {
			// The entry now at the checkpoint's number is a new one.
			msg = brokenAgainst(kept.Seq, audit.KindRewritten, pinned...)
		}
		if !strings.Contains(msg, "(checkpoint from "+keptFile+")") {
			t.Errorf("cut of %d: audit verify does not name the checkpoint file: %q", cut, msg)
		}
		restore()
	}

	// (c) The tail rewritten from an earlier entry on, every hash recomputed, the head
	// updated: a valid chain, but not the one the coordinator signed.
	rewriteTail(t, db, kept.Seq-3, kept.Seq)
	restart()
	verifyHead(t, s, auditor)
	msg = brokenAgainst(kept.Seq, audit.KindRewritten, pinned...)
	for _, want := range []string{fmt.Sprintf("the checkpoint of entry %d signed", kept.Seq), "says entry " + fmt.Sprint(kept.Seq) + " has hash " + kept.Hash,
		"(checkpoint from " + keptFile + ")"} {
		if !strings.Contains(msg, want) {
			t.Errorf("audit verify says %q, not %q", msg, want)
		}
	}
	// The coordinator itself refuses to sign the rewritten head.
	s.fails(auditor, 1, "conflict", "audit", "checkpoint")

	// A kept checkpoint altered by hand does not verify: that is tampering too.
	forged := kept
	forged.Hash = head.Hash[:63] + "0"
	if forged.Hash == kept.Hash {
		forged.Hash = head.Hash[:63] + "1"
	}
	b, err := json.Marshal(forged)
	if err != nil {
		t.Fatal(err)
	}
	forgedFile := filepath.Join(dir, "forged.json")
	writeFile(t, forgedFile, string(b))
	if msg := s.fails(auditor, 3, "does not verify", "audit", "verify", "--checkpoint", forgedFile, "--key", keyFile); !strings.Contains(msg, forgedFile) {
		t.Errorf("audit verify does not name the forged file: %q", msg)
	}
	co.stop()
}

// verifyHead runs audit verify without checkpoints, which must pass, and returns the head.
func verifyHead(t *testing.T, s *scenario, token string) audit.Head {
	t.Helper()
	var rep struct {
		Verified bool       `json:"verified"`
		Head     audit.Head `json:"head"`
	}
	s.okJSON(token, &rep, "audit", "verify", "--json")
	if !rep.Verified {
		t.Fatalf("audit verify --json: %+v", rep)
	}
	return rep.Head
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rewriteTail changes entry from's reason and recomputes the chain from there to the
// last entry with audit.Seal, writing the new hashes and the head back: what an intruder
// who read the source would do.
func rewriteTail(t *testing.T, path string, from, last int64) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	ctx := t.Context()
	rows, err := db.QueryContext(ctx, "SELECT seq, at, actor, action, job_id, target, reason, details, prev_hash, hash "+
		"FROM audit_log WHERE seq >= ? AND seq <= ? ORDER BY seq", from-1, last)
	if err != nil {
		t.Fatal(err)
	}
	var es []audit.Entry
	for rows.Next() {
		var e audit.Entry
		var at string
		var details sql.NullString
		if err := rows.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.JobID, &e.Target, &e.Reason, &details, &e.PrevHash, &e.Hash); err != nil {
			t.Fatal(err)
		}
		if e.Time, err = time.Parse(time.RFC3339Nano, at); err != nil {
			t.Fatal(err)
		}
		if details.Valid {
			e.Details = json.RawMessage(details.String)
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	_ = rows.Close()
	if int64(len(es)) != last-from+2 {
		t.Fatalf("read %d entries from %d to %d", len(es), from-1, last)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, "DROP TRIGGER audit_log_no_update"); err != nil {
		t.Fatal(err)
	}
	prev := es[0]
	for i, e := range es[1:] {
		if i == 0 {
			e.Reason = "nothing happened here"
		}
		sealed, err := audit.Seal(&prev, audit.Entry{Time: e.Time, Actor: e.Actor, Action: e.Action, JobID: e.JobID,
			Target: e.Target, Reason: e.Reason, Details: e.Details})
		if err != nil {
			t.Fatal(err)
		}
		if sealed.Seq != e.Seq {
			t.Fatalf("sealed as %d, want %d", sealed.Seq, e.Seq)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE audit_log SET reason = ?, prev_hash = ?, hash = ? WHERE seq = ?",
			sealed.Reason, sealed.PrevHash, sealed.Hash, sealed.Seq); err != nil {
			t.Fatal(err)
		}
		prev = sealed
	}
	if _, err := tx.ExecContext(ctx, "UPDATE audit_head SET hash = ? WHERE id = 1 AND seq = ?", prev.Hash, last); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}
