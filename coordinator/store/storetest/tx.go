package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// stateChange is what the coordinator writes when a job moves: the new state and its
// timeline event, an audit entry, a message for the agent, and the inbox record of the
// message that caused it.
func stateChange(h *harness, tx store.Tx, j store.Job, msgID string) error {
	if _, err := tx.UpdateJobState(h.ctx, j.ID, j.State, jobs.StateApproved, j.Version, store.JobChange{Actor: "boss", Reason: "ok"}); err != nil {
		return err
	}
	if _, err := tx.AddOutbox(h.ctx, store.OutboxMessage{Exchange: "tokenfleet.commands", RoutingKey: j.AgentID,
		Type: "job.issue", CorrelationID: j.ID, Body: []byte(`{"job":"` + j.ID + `"}`)}); err != nil {
		return err
	}
	if _, err := tx.RecordInbox(h.ctx, store.InboxEntry{MessageID: msgID, JobID: j.ID}); err != nil {
		return err
	}
	_, err := tx.AppendAudit(h.ctx, audit.Entry{Actor: "boss", Action: audit.ActionJobApproved, JobID: j.ID}, audit.Seal)
	return err
}

func testTxCommit(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, nil)
	var created store.Job
	h.tx(t, func(tx store.Tx) error {
		if err := stateChange(h, tx, j, "m1"); err != nil {
			return err
		}
		var err error
		if created, err = tx.CreateJob(h.ctx, f.job()); err != nil {
			return err
		}
		// The transaction reads its own writes...
		if got, err := tx.GetJob(h.ctx, j.ID); err != nil || got.State != jobs.StateApproved {
			return fmt.Errorf("inside the transaction the job is %q: %w", got.State, err)
		}
		// ...and nobody else sees them before the commit.
		if _, err := h.s.GetJob(h.ctx, created.ID); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("uncommitted job visible outside its transaction: %w", err)
		}
		if head, err := h.s.AuditHead(h.ctx); err != nil || head.Seq != 0 {
			return fmt.Errorf("uncommitted audit entry visible outside its transaction: %+v: %w", head, err)
		}
		return nil
	})
	if got := must(h.s.GetJob(h.ctx, j.ID))(t); got.State != jobs.StateApproved || got.Version != 2 {
		t.Fatalf("job after commit: %+v", got)
	}
	must(h.s.GetJob(h.ctx, created.ID))(t)
	if n := len(must(h.s.ListJobEvents(h.ctx, j.ID))(t)); n != 2 {
		t.Fatalf("%d timeline events", n)
	}
	if n := len(must(h.s.ListUnsentOutbox(h.ctx, 10))(t)); n != 1 {
		t.Fatalf("%d outbox messages", n)
	}
	must(h.s.GetInbox(h.ctx, "m1"))(t)
	if head := must(h.s.AuditHead(h.ctx))(t); head.Seq != 1 {
		t.Fatalf("audit head %+v", head)
	}
}

func testTxRollback(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, nil)
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		fn   func(tx store.Tx) error
		want error
	}{
		{"function fails after every write", func(tx store.Tx) error {
			if err := stateChange(h, tx, j, "m1"); err != nil {
				return err
			}
			if _, err := tx.CreateJob(h.ctx, f.job()); err != nil {
				return err
			}
			return boom
		}, boom},
		{"a store call fails half-way", func(tx store.Tx) error {
			if _, err := tx.AddOutbox(h.ctx, store.OutboxMessage{Exchange: "x", RoutingKey: "k", Type: "t"}); err != nil {
				return err
			}
			if _, err := tx.AppendAudit(h.ctx, audit.Entry{Actor: "a", Action: audit.ActionJobApproved}, audit.Seal); err != nil {
				return err
			}
			if _, err := tx.UpdateJobState(h.ctx, j.ID, j.State, jobs.StateApproved, j.Version, store.JobChange{Actor: "boss"}); err != nil {
				return err
			}
			// Stale version: someone else "won"; the whole transaction must go.
			_, err := tx.UpdateJobState(h.ctx, j.ID, j.State, jobs.StateRejected, j.Version, store.JobChange{Actor: "boss"})
			return err
		}, store.ErrConflict},
		{"the database refuses a write half-way", func(tx store.Tx) error {
			if err := stateChange(h, tx, j, "m2"); err != nil {
				return err
			}
			// A foreign key violation: on PostgreSQL this aborts the transaction.
			bad := f.job()
			bad.RequesterID = "nobody"
			_, err := tx.CreateJob(h.ctx, bad)
			return err
		}, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := h.s.InTx(h.ctx, tc.fn)
			wantErr(t, err, tc.want)
			if errors.Is(tc.want, boom) && errors.Unwrap(err) != nil {
				t.Fatalf("InTx changed the function's error: %v", err)
			}
			equal(t, "job untouched", must(h.s.GetJob(h.ctx, j.ID))(t), j)
			if n := len(must(h.s.ListJobEvents(h.ctx, j.ID))(t)); n != 1 {
				t.Fatalf("%d timeline events survived", n)
			}
			if jobs, _, _ := h.s.ListJobs(h.ctx, store.JobFilter{}, store.Page{}); len(jobs) != 1 {
				t.Fatalf("%d jobs after rollback", len(jobs))
			}
			if ms := must(h.s.ListUnsentOutbox(h.ctx, 10))(t); len(ms) != 0 {
				t.Fatalf("outbox message survived: %+v", ms)
			}
			for _, id := range []string{"m1", "m2"} {
				_, err := h.s.GetInbox(h.ctx, id)
				wantErr(t, err, store.ErrNotFound)
			}
			equal(t, "audit head after rollback", must(h.s.AuditHead(h.ctx))(t), audit.NewVerifier().Head())
			if es := readAudit(t, h); len(es) != 0 {
				t.Fatalf("audit entries survived: %+v", es)
			}
		})
	}
	// The store is still usable and the chain starts at 1.
	h.tx(t, func(tx store.Tx) error { return stateChange(h, tx, j, "m3") })
	verifyChain(t, readAudit(t, h))
}

func testTxPanic(t *testing.T, h *harness) {
	func() {
		defer func() {
			if r := recover(); r != "kaboom" {
				t.Fatalf("recovered %v, want the function's panic", r)
			}
		}()
		_ = h.s.InTx(h.ctx, func(tx store.Tx) error {
			if _, err := tx.CreateOrganization(h.ctx, store.Organization{Name: "Doomed"}); err != nil {
				return err
			}
			panic("kaboom")
		})
	}()
	_, err := h.s.GetOrganizationByName(h.ctx, "Doomed")
	wantErr(t, err, store.ErrNotFound)
	// The connection went back to the pool: the single SQLite writer is free again.
	do(t, h, func(tx store.Tx) (store.Organization, error) {
		return tx.CreateOrganization(h.ctx, store.Organization{Name: "Doomed"})
	})
}

func testTimes(t *testing.T, h *harness) {
	f := newFixture(t, h)
	zones := []*time.Location{time.UTC, time.FixedZone("UTC+5:45", 5*3600+45*60), time.FixedZone("UTC-11", -11*3600)}
	for i, tc := range []time.Time{
		base,
		time.Date(1970, 1, 1, 0, 0, 0, 1, zones[1]),
		time.Date(2199, 12, 31, 23, 59, 59, 999999999, zones[2]),
		time.Date(2030, 6, 1, 12, 0, 0, 123456000, zones[0]),
	} {
		t.Run(tc.String(), func(t *testing.T) {
			j := f.createJob(t, h, func(j *store.Job) { j.Deadline = tc; j.Created = tc.Add(-time.Hour) })
			got := must(h.s.GetJob(h.ctx, j.ID))(t)
			if got.Deadline != stored(tc) || got.Created != stored(tc.Add(-time.Hour)) {
				// == and not Equal: the location must be UTC too.
				t.Fatalf("case %d: deadline %v created %v, want %v and %v", i, got.Deadline, got.Created, stored(tc), stored(tc.Add(-time.Hour)))
			}
			if got != j {
				t.Fatalf("read back %+v, returned on create %+v", got, j)
			}
		})
	}
	// A zero time is "now" where the store fills it in, and stays zero where it means none.
	before := time.Now().Add(-time.Second)
	j := f.createJob(t, h, nil)
	if j.Created.Before(before) || j.Created.After(time.Now().Add(time.Second)) || j.Created.Location() != time.UTC {
		t.Fatalf("created %v, not now in UTC", j.Created)
	}
	if !j.Deadline.IsZero() {
		t.Fatalf("zero deadline came back as %v", j.Deadline)
	}
}

func testNotFound(t *testing.T, h *harness) {
	for _, tc := range []struct {
		name string
		get  func() error
	}{
		{"organisation", func() error { _, err := h.s.GetOrganization(h.ctx, "nope"); return err }},
		{"organisation by name", func() error { _, err := h.s.GetOrganizationByName(h.ctx, "nope"); return err }},
		{"user", func() error { _, err := h.s.GetUser(h.ctx, "nope"); return err }},
		{"user by username", func() error { _, err := h.s.GetUserByUsername(h.ctx, "nope"); return err }},
		{"agent", func() error { _, err := h.s.GetAgent(h.ctx, "nope"); return err }},
		{"token", func() error { _, err := h.s.GetToken(h.ctx, "nope"); return err }},
		{"certificate", func() error { _, err := h.s.GetCertificate(h.ctx, "beef"); return err }},
		{"profile", func() error { _, err := h.s.GetProfile(h.ctx, "nope"); return err }},
		{"profile version", func() error { _, err := h.s.GetProfileVersion(h.ctx, "nope", 1); return err }},
		{"job", func() error { _, err := h.s.GetJob(h.ctx, "nope"); return err }},
		{"outbox", func() error { _, err := h.s.GetOutbox(h.ctx, 42); return err }},
		{"inbox", func() error { _, err := h.s.GetInbox(h.ctx, "nope"); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.get()
			wantErr(t, err, store.ErrNotFound)
			if !strings.Contains(err.Error(), "nope") && !strings.Contains(err.Error(), "beef") && !strings.Contains(err.Error(), "42") {
				t.Fatalf("error %q does not name what was missing", err)
			}
		})
	}
	// Lists of children of a missing parent are empty, not errors.
	if es := must(h.s.ListJobEvents(h.ctx, "nope"))(t); len(es) != 0 {
		t.Fatalf("events of a missing job: %+v", es)
	}
	if as := must(h.s.ListApprovals(h.ctx, "nope"))(t); len(as) != 0 {
		t.Fatalf("approvals of a missing job: %+v", as)
	}
}

func testBadPages(t *testing.T, h *harness) {
	lists := map[string]func(p store.Page) error{
		"organisations": func(p store.Page) error { _, _, err := h.s.ListOrganizations(h.ctx, p); return err },
		"users":         func(p store.Page) error { _, _, err := h.s.ListUsers(h.ctx, store.UserFilter{}, p); return err },
		"agents":        func(p store.Page) error { _, _, err := h.s.ListAgents(h.ctx, store.AgentFilter{}, p); return err },
		"tokens":        func(p store.Page) error { _, _, err := h.s.ListTokens(h.ctx, store.TokenFilter{}, p); return err },
		"certificates": func(p store.Page) error {
			_, _, err := h.s.ListCertificates(h.ctx, store.CertificateFilter{}, p)
			return err
		},
		"jobs":  func(p store.Page) error { _, _, err := h.s.ListJobs(h.ctx, store.JobFilter{}, p); return err },
		"audit": func(p store.Page) error { _, _, err := h.s.ListAudit(h.ctx, store.AuditFilter{}, p); return err },
	}
	for name, list := range lists {
		t.Run(name, func(t *testing.T) {
			wantErr(t, list(store.Page{Limit: -1}), store.ErrInvalid)
			wantErr(t, list(store.Page{Cursor: "!!not base64!!"}), store.ErrInvalid)
			wantErr(t, list(store.Page{Cursor: "YQBiAGM"}), store.ErrInvalid) // three parts where one or two are expected
			if err := list(store.Page{Limit: store.MaxPageLimit * 10}); err != nil {
				t.Fatalf("an oversized limit is capped, not refused: %v", err)
			}
		})
	}
	_, err := h.s.ListUnsentOutbox(h.ctx, -1)
	wantErr(t, err, store.ErrInvalid)
}

func testReopen(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, nil)
	h.tx(t, func(tx store.Tx) error { return stateChange(h, tx, j, "m1") })
	j = must(h.s.GetJob(h.ctx, j.ID))(t)
	var token string
	h.tx(t, func(tx store.Tx) error {
		var err error
		_, token, err = tx.CreateAPIToken(h.ctx, f.requester.ID, "cli", time.Time{})
		return err
	})
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s := h.open(t)
	h.s = s
	equal(t, "job after reopen", must(s.GetJob(h.ctx, j.ID))(t), j)
	equal(t, "organisation after reopen", must(s.GetOrganization(h.ctx, f.org.ID))(t), f.org)
	equal(t, "agent after reopen", must(s.GetAgent(h.ctx, f.agent.ID))(t), f.agent)
	if _, u, err := s.LookupAPIToken(h.ctx, token, time.Now()); err != nil || u.ID != f.requester.ID {
		t.Fatalf("token after reopen: %v %+v", err, u)
	}
	if n := len(must(s.ListUnsentOutbox(h.ctx, 10))(t)); n != 1 {
		t.Fatalf("%d outbox messages after reopen", n)
	}
	// The chain carries on from where it was.
	appendAudit(t, h, s, audit.Entry{Actor: "x", Action: audit.ActionAuditVerified})
	all := readAudit(t, h)
	if len(all) != 2 {
		t.Fatalf("%d audit entries", len(all))
	}
	verifyChain(t, all)
}

func testMigrateIdempotent(t *testing.T, h *harness) {
	org := do(t, h, func(tx store.Tx) (store.Organization, error) {
		return tx.CreateOrganization(h.ctx, store.Organization{Name: "Kept"})
	})
	for i := range 2 {
		if err := h.s.Migrate(h.ctx); err != nil {
			t.Fatalf("migrate again (%d): %v", i, err)
		}
	}
	second := h.open(t) // migrates on open
	equal(t, "data kept", must(second.GetOrganization(h.ctx, org.ID))(t), org)
	if h.s.Driver() != h.cfg.Driver || second.Driver() != h.cfg.Driver {
		t.Fatalf("driver %q / %q, want %q", h.s.Driver(), second.Driver(), h.cfg.Driver)
	}

	// Each migration is recorded once, however often the store was opened.
	checkMigrationsOnce(t, h, h.cfg)
}

// checkMigrationsOnce reads goose's version table: every version once, and at least one
// migration besides goose's own version 0.
func checkMigrationsOnce(t *testing.T, h *harness, cfg store.Config) {
	t.Helper()
	raw := (&harness{cfg: cfg}).raw(t)
	rows, err := raw.QueryContext(h.ctx, "SELECT version_id, COUNT(*) FROM goose_db_version GROUP BY version_id")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	versions := 0
	for rows.Next() {
		var v, n int64
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("migration %d recorded %d times", v, n)
		}
		versions++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if versions < 2 {
		t.Fatalf("%d migration versions recorded", versions)
	}
}

// testConcurrentOpen starts several stores on one new database at the same moment, as
// coordinators (or the coordinator and the command-line tool) may at first start.
func testConcurrentOpen(t *testing.T, h *harness) {
	cfg := h.fresh(t)
	const n = 3
	stores := make([]store.Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = store.Open(h.ctx, cfg, Logger(t)) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("store %d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() { _ = stores[i].Close() })
	}
	if t.Failed() {
		return
	}
	o, err := func() (store.Organization, error) {
		var o store.Organization
		err := stores[0].InTx(h.ctx, func(tx store.Tx) error {
			var err error
			o, err = tx.CreateOrganization(h.ctx, store.Organization{Name: "First"})
			return err
		})
		return o, err
	}()
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		equal(t, "seen by store "+itoa(i), must(stores[i].GetOrganization(h.ctx, o.ID))(t), o)
	}
	checkMigrationsOnce(t, h, cfg)
}

// testTxSavepoints: what a transaction wrote after a savepoint is undone by rolling back
// to it, even after the database refused a write there (which on PostgreSQL aborts the
// transaction until then), and the transaction goes on and commits the rest; savepoints
// nest, and a released one keeps what was written after it.
func testTxSavepoints(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, nil)
	h.tx(t, func(tx store.Tx) error {
		if _, err := tx.CreateOrganization(h.ctx, store.Organization{Name: "Kept before"}); err != nil {
			return err
		}
		if err := tx.Savepoint(h.ctx); err != nil {
			return err
		}
		if err := stateChange(h, tx, j, "undone"); err != nil {
			return err
		}
		bad := f.job()
		bad.RequesterID = "nobody"
		if _, err := tx.CreateJob(h.ctx, bad); !errors.Is(err, store.ErrInvalid) {
			return fmt.Errorf("a job of nobody: %w, want refused", err)
		}
		if err := tx.RollbackToSavepoint(h.ctx); err != nil {
			return err
		}
		if err := tx.ReleaseSavepoint(h.ctx); err != nil {
			return err
		}
		// Nested: the inner one is undone, the outer one kept.
		if err := tx.Savepoint(h.ctx); err != nil {
			return err
		}
		if _, err := tx.CreateOrganization(h.ctx, store.Organization{Name: "Kept after"}); err != nil {
			return err
		}
		if err := tx.Savepoint(h.ctx); err != nil {
			return err
		}
		if _, err := tx.CreateOrganization(h.ctx, store.Organization{Name: "Undone inner"}); err != nil {
			return err
		}
		if err := tx.RollbackToSavepoint(h.ctx); err != nil {
			return err
		}
		if err := tx.ReleaseSavepoint(h.ctx); err != nil {
			return err
		}
		return tx.ReleaseSavepoint(h.ctx)
	})
	for _, name := range []string{"Kept before", "Kept after"} {
		must(h.s.GetOrganizationByName(h.ctx, name))(t)
	}
	_, err := h.s.GetOrganizationByName(h.ctx, "Undone inner")
	wantErr(t, err, store.ErrNotFound)
	equal(t, "job untouched", must(h.s.GetJob(h.ctx, j.ID))(t), j)
	_, err = h.s.GetInbox(h.ctx, "undone")
	wantErr(t, err, store.ErrNotFound)
	if ms := must(h.s.ListUnsentOutbox(h.ctx, 10))(t); len(ms) != 0 {
		t.Fatalf("outbox message written after the savepoint survived: %+v", ms)
	}
	if es := readAudit(t, h); len(es) != 0 {
		t.Fatalf("audit entries written after the savepoint survived: %+v", es)
	}
}
