package storetest

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// testAuditCheckpoints keeps signed checkpoints and lists them newest first, each still
// verifying with the key that signed it once read back.
func testAuditCheckpoints(t *testing.T, h *harness) {
	none, next := must2(h.s.ListAuditCheckpoints(h.ctx, store.Page{}))(t)
	if len(none) != 0 || next != "" {
		t.Fatalf("empty store lists %d checkpoints, cursor %q", len(none), next)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var want []audit.Checkpoint
	for i := range 5 {
		head := must(h.s.AuditHead(h.ctx))(t)
		c, err := audit.SignCheckpoint(key, head, base.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		h.tx(t, func(tx store.Tx) error { return tx.AddAuditCheckpoint(h.ctx, c) })
		want = append([]audit.Checkpoint{c}, want...)
		appendAudit(t, h, h.s, audit.Entry{Actor: "a", Action: audit.ActionUserCreated})
	}
	got := listAll(t, 2, func(p store.Page) ([]audit.Checkpoint, string, error) { return h.s.ListAuditCheckpoints(h.ctx, p) })
	equal(t, "checkpoints, newest first", got, want)
	for _, c := range got {
		if err := audit.VerifyCheckpoint(pub, c); err != nil {
			t.Fatalf("read back: %v", err)
		}
	}
	if got[4].Seq != 0 || got[4].Hash != audit.GenesisHash || got[0].Seq != 4 {
		t.Fatalf("checkpoints of seq %d (%s) .. %d", got[4].Seq, got[4].Hash, got[0].Seq)
	}

	// What the store could not keep exactly, or is no checkpoint at all, is refused.
	good := want[0]
	for _, tc := range []struct {
		name string
		mod  func(c *audit.Checkpoint)
	}{
		{"negative seq", func(c *audit.Checkpoint) { c.Seq = -1 }},
		{"no hash", func(c *audit.Checkpoint) { c.Hash = "" }},
		{"no key ID", func(c *audit.Checkpoint) { c.KeyID = "" }},
		{"no signature", func(c *audit.Checkpoint) { c.Signature = nil }},
		{"time with nanoseconds", func(c *audit.Checkpoint) { c.Time = c.Time.Add(time.Nanosecond) }},
		{"no time", func(c *audit.Checkpoint) { c.Time = time.Time{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.AddAuditCheckpoint(h.ctx, c) }), store.ErrInvalid)
		})
	}
	// A rolled-back transaction keeps none.
	rollback := errors.New("roll back")
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error {
		if err := tx.AddAuditCheckpoint(h.ctx, good); err != nil {
			return err
		}
		return rollback
	}), rollback)
	if n := len(listAll(t, 100, func(p store.Page) ([]audit.Checkpoint, string, error) {
		return h.s.ListAuditCheckpoints(h.ctx, p)
	})); n != 5 {
		t.Fatalf("%d checkpoints after a rollback, want 5", n)
	}
	_, _, err = h.s.ListAuditCheckpoints(h.ctx, store.Page{Cursor: "!!"})
	wantErr(t, err, store.ErrInvalid)

	// Kept checkpoints are append-only at the database too.
	raw := h.raw(t)
	for _, stmt := range []string{
		"UPDATE audit_checkpoints SET seq = 1",
		"DELETE FROM audit_checkpoints",
	} {
		if _, err := raw.ExecContext(h.ctx, stmt); err == nil {
			t.Fatalf("%s: accepted", stmt)
		}
	}
}

// testAuditUnreadable puts a row into the log that the store never writes, as an intruder
// editing the database file would: reading the log must still give every entry, the bad
// one with what could not be read, so that the verifier names it instead of the read
// failing.
func testAuditUnreadable(t *testing.T, h *harness) {
	for range 3 {
		appendAudit(t, h, h.s, audit.Entry{Actor: "a", Action: audit.ActionUserCreated})
	}
	head := must(h.s.AuditHead(h.ctx))(t)
	raw := h.raw(t)
	_, err := raw.ExecContext(h.ctx, rebind(h, "INSERT INTO audit_log (seq, at, actor, action, prev_hash, hash, details) "+
		"VALUES (4, '2026-13-45 xx', 'mallory', 'user.created', ?, 'beef', '{not json')"), head.Hash)
	if h.cfg.Driver == store.DriverPostgres {
		// Typed columns refuse such values: on PostgreSQL an intruder can only store
		// readable values, which the hash chain judges.
		if err == nil {
			t.Fatal("PostgreSQL accepted a time that is not a time")
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, es []audit.Entry) {
		t.Helper()
		if len(es) != 4 {
			t.Fatalf("%s: %d entries, want 4", what, len(es))
		}
		bad := es[3]
		if bad.Seq != 4 || bad.Actor != "mallory" || bad.Hash != "beef" || !bad.Time.IsZero() || bad.Details != nil ||
			!strings.Contains(bad.Unreadable, `at holds "2026-13-45 xx", which is not a time`) ||
			!strings.Contains(bad.Unreadable, `details holds "{not json", which is not JSON`) {
			t.Fatalf("%s: unreadable row read as %+v", what, bad)
		}
		for _, e := range es[:3] {
			if e.Unreadable != "" {
				t.Fatalf("%s: readable entry %d marked %q", what, e.Seq, e.Unreadable)
			}
		}
		var ve *audit.VerifyError
		if err := audit.Verify(es); !errors.As(err, &ve) || ve.Seq != 4 || ve.Kind != audit.KindEdited {
			t.Fatalf("%s: verify gave %v, want entry 4 edited", what, err)
		}
	}
	check("AuditEntries", readAudit(t, h))
	check("ListAudit", listAll(t, 2, func(p store.Page) ([]audit.Entry, string, error) {
		return h.s.ListAudit(h.ctx, store.AuditFilter{}, p)
	}))
}

// rebind writes the raw driver's placeholders.
func rebind(h *harness, q string) string {
	if h.cfg.Driver == store.DriverPostgres {
		return strings.Replace(q, "?", "$1", 1)
	}
	return q
}

// must2(f())(t) returns f's two values, failing the test if f returned an error.
func must2[A, B any](a A, b B, err error) func(t *testing.T) (A, B) {
	return func(t *testing.T) (A, B) {
		t.Helper()
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return a, b
	}
}
