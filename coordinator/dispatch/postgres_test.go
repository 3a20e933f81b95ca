package dispatch_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestTwoCoordinatorsOnPostgres: two coordinators share a PostgreSQL database, a broker
// vhost, the CA and the result key; both publish the outbox and compete for the events.
// Every job still goes through each state once.
func TestTwoCoordinatorsOnPostgres(t *testing.T) {
	t.Parallel()
	db := testenv.PostgresDatabase(t)
	b := testenv.NewBroker(t)
	first := coordinatortest.Start(t, coordinatortest.Options{Driver: "postgres", DSN: db, BrokerURL: b.URL})
	// The second gets the first's CA, result key and admin token, as an operator copies
	// them to every coordinator of a site.
	dir := filepath.Join(t.TempDir(), "second")
	copyTree(t, first.DataDir, dir)
	second := coordinatortest.Start(t, coordinatortest.Options{Driver: "postgres", DSN: db, BrokerURL: b.URL, Dir: dir})

	ctx := testenv.Context(t)
	w := &world{t: t, ctx: ctx, broker: b, c: first, holder: "alice"}
	w.admin = w.client(first.AdminToken)
	if _, err := w.admin.CreateOrg(ctx, "Acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.CreateUser(ctx, client.UserCreate{Username: "alice", DisplayName: "Alice", Email: "alice@acme.example", Organization: "Acme"}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.ApplyProfiles(ctx, []byte(profiles)); err != nil {
		t.Fatal(err)
	}
	w.desk = w.admin
	a := w.agent("ws-pg", "")
	serials := []string{"G0", "G1", "G2", "G3", "G4", "G5"}
	var tokens []protocol.Token
	for _, s := range serials {
		tokens = append(tokens, dispatchtest.Token(s, false))
	}
	a.Hello(tokens...)
	other, err := client.New(second.URL, second.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, s := range serials {
		c := w.admin
		if i%2 == 1 {
			c = other // jobs come through both coordinators
		}
		j, err := c.CreateJob(ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-pg", Profile: "blank-issue", TokenSerial: s})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	var issued []*dispatchtest.Issued
	for i, id := range ids {
		issued = append(issued, a.IssueUntilCSR(a.Next(protocol.TypeDispatch, id), serials[i]))
	}
	for _, is := range issued {
		a.Finish(is)
	}
	for _, id := range ids {
		det := w.waitState(id, jobs.StateSucceeded)
		for _, s := range []jobs.State{jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate, jobs.StateInstalling, jobs.StateSucceeded} {
			if n := transitions(det, s); n != 1 {
				t.Errorf("job %s: %d transitions to %s", id, n, s)
			}
		}
		if n := len(w.certificates(id)); n != 1 {
			t.Errorf("job %s: %d certificates", id, n)
		}
		if n := len(w.auditOf(audit.ActionCertificateIssued, id)); n != 1 {
			t.Errorf("job %s: %d issuance entries", id, n)
		}
	}
	w.verifyAudit()
}

// copyTree copies a data directory's files (the database is elsewhere).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}
