package service_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/checkpoint"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// viewsEnv is a service on SQLite with a checkpoint key, an administrator, an auditor
// and a help-desk operator.
type viewsEnv struct {
	s                        *service.Service
	st                       store.Store
	dsn                      string
	cps                      *checkpoint.Checkpointer
	admin, auditor, helpdesk service.Actor
}

func newViewsEnv(t *testing.T) *viewsEnv {
	t.Helper()
	ctx := t.Context()
	e := &viewsEnv{dsn: filepath.Join(t.TempDir(), "s.db")}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	var err error
	if e.st, err = store.Open(ctx, store.Config{Driver: store.DriverSQLite, DSN: e.dsn}, log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.st.Close() })
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if e.cps, err = checkpoint.New(checkpoint.Options{Store: e.st, Key: key, Logger: log}); err != nil {
		t.Fatal(err)
	}
	if e.s, err = service.New(service.Options{Store: e.st, Logger: log, CheckpointKey: e.cps.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	e.admin = bootstrapAdmin(t, e.s, e.st)
	if _, err := e.s.CreateOrganization(ctx, e.admin, "acme"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []service.UserRequest{
		{Username: "audrey", DisplayName: "Audrey Auditor", Organization: "acme", Roles: []jobs.Role{jobs.RoleAuditor}},
		{Username: "olga", DisplayName: "Olga Operator", Email: "olga@acme.test", Organization: "acme", Roles: []jobs.Role{jobs.RoleHelpdesk}},
		{Username: "alice", DisplayName: "Alice Holder", Organization: "acme"},
	} {
		if _, err := e.s.CreateUser(ctx, e.admin, u); err != nil {
			t.Fatal(err)
		}
	}
	e.auditor, e.helpdesk = e.actor(t, "audrey"), e.actor(t, "olga")
	return e
}

func (e *viewsEnv) actor(t *testing.T, name string) service.Actor {
	t.Helper()
	return actorNamed(t, e.st, name)
}

// tamper runs statements on the database behind the store's back.
func (e *viewsEnv) tamper(t *testing.T, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func TestVerifyAudit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newViewsEnv(t)

	_, err := e.s.VerifyAudit(ctx, e.helpdesk)
	wantCode(t, err, service.CodeForbidden)

	cp, err := e.cps.Make(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.s.VerifyAudit(ctx, e.auditor)
	if err != nil || !res.Verified() || res.Broken != nil || res.Checkpoints != 1 || res.Latest.Seq != cp.Seq {
		t.Fatalf("whole log: %+v, %v", res, err)
	}
	// The denial above and the users are in the log; the head is where the checkpoint is.
	if res.Entries != cp.Seq || res.Head.Seq != cp.Seq || res.Entries < 5 {
		t.Fatalf("checked %d entries to %d, the checkpoint is of %d", res.Entries, res.Head.Seq, cp.Seq)
	}
	// The verification is audited with its outcome.
	es, _, err := e.s.SearchAudit(ctx, e.auditor, service.AuditQuery{Action: audit.ActionAuditVerified}, service.Page{})
	if err != nil || len(es) != 1 || es[0].ActorName != "audrey" || string(es[0].Details) == "" {
		t.Fatalf("audit.verified entries %+v, %v", es, err)
	}

	// An entry edited behind the coordinator's back is named.
	e.tamper(t, "DROP TRIGGER audit_log_no_update", "UPDATE audit_log SET reason = 'nothing happened' WHERE seq = 5")
	res, err = e.s.VerifyAudit(ctx, e.admin)
	if err != nil || res.Verified() || res.Broken == nil || res.Broken.Seq != 5 || res.Broken.Kind != audit.KindEdited {
		t.Fatalf("edited entry 5: %+v, %v", res, err)
	}
	if res.Head.Seq != 4 {
		t.Fatalf("verified to %d, want 4", res.Head.Seq)
	}
}

func TestVerifyAuditCheckpoints(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	t.Run("tail cut", func(t *testing.T) {
		t.Parallel()
		e := newViewsEnv(t)
		cp, err := e.cps.Make(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// A valid chain is left, shorter than the checkpoint: only the checkpoint shows it.
		e.tamper(t, "DROP TRIGGER audit_log_no_delete",
			"DELETE FROM audit_log WHERE seq >= 4",
			"UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_log WHERE seq = 3)")
		res, err := e.s.VerifyAudit(ctx, e.auditor)
		if err != nil || res.Verified() || res.Broken == nil || res.Broken.Checkpoint == nil || res.Broken.Checkpoint.Seq != cp.Seq {
			t.Fatalf("tail cut before checkpoint %d: %+v, %v", cp.Seq, res, err)
		}
	})
	t.Run("forged checkpoint", func(t *testing.T) {
		t.Parallel()
		e := newViewsEnv(t)
		cp, err := e.cps.Make(ctx)
		if err != nil {
			t.Fatal(err)
		}
		e.tamper(t, "DROP TRIGGER audit_checkpoints_no_update", "UPDATE audit_checkpoints SET hash = 'ab' || substr(hash, 3)")
		res, err := e.s.VerifyAudit(ctx, e.auditor)
		if err != nil || res.Verified() || len(res.Forged) != 1 || res.Checkpoints != 0 || res.Broken != nil {
			t.Fatalf("forged checkpoint of %d: %+v, %v", cp.Seq, res, err)
		}
	})
	t.Run("no key", func(t *testing.T) {
		t.Parallel()
		e := newViewsEnv(t)
		s, err := service.New(service.Options{Store: e.st})
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.VerifyAudit(ctx, e.auditor)
		if err != nil || !res.Verified() || !res.NoKey || res.Checkpoints != 0 {
			t.Fatalf("without a key: %+v, %v", res, err)
		}
	})
}

func TestConsoleSearches(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newViewsEnv(t)
	for _, a := range []service.AgentEnrolment{{ID: "ws-01", Hostname: "paris-01.acme.test"}, {ID: "ws-02", Hostname: "lyon-02.acme.test"}} {
		if _, err := e.s.EnrolAgent(ctx, e.admin, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.InTx(ctx, func(tx store.Tx) error {
		if err := tx.RecordAgentSeen(ctx, "ws-02", time.Now(), true); err != nil {
			return err
		}
		if _, err := tx.UpsertToken(ctx, store.Token{Serial: "T1", AgentID: "ws-01", Label: "alice", Model: "Rutoken ECP"}); err != nil {
			return err
		}
		alice, err := tx.GetUserByUsername(ctx, "alice")
		if err != nil {
			return err
		}
		_, err = tx.AddCertificate(ctx, store.Certificate{Serial: "a1", HolderID: alice.ID, TokenSerial: "T1", Profile: "logon",
			Subject: "CN=Alice", Issuer: "CN=CA", NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 24 * time.Hour), DER: []byte{1}})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	online := true
	as, _, err := e.s.SearchAgents(ctx, e.helpdesk, service.AgentQuery{Online: &online}, service.Page{})
	if err != nil || len(as) != 1 || as[0].ID != "ws-02" || as[0].LastSeen.IsZero() {
		t.Fatalf("online agents %+v, %v", as, err)
	}
	as, _, err = e.s.SearchAgents(ctx, e.helpdesk, service.AgentQuery{Search: "PARIS"}, service.Page{})
	if err != nil || len(as) != 1 || as[0].ID != "ws-01" {
		t.Fatalf("agents by host %+v, %v", as, err)
	}
	_, _, err = e.s.SearchAgents(ctx, e.helpdesk, service.AgentQuery{State: "asleep"}, service.Page{})
	wantCode(t, err, service.CodeBadRequest)

	ts, _, err := e.s.SearchTokens(ctx, e.helpdesk, service.TokenQuery{Holder: "alice", Model: "rutoken"}, service.Page{})
	if err != nil || len(ts) != 1 || ts[0].Serial != "T1" {
		t.Fatalf("tokens of alice %+v, %v", ts, err)
	}
	_, _, err = e.s.SearchTokens(ctx, e.helpdesk, service.TokenQuery{Holder: "nobody"}, service.Page{})
	wantCode(t, err, service.CodeBadRequest)

	cs, _, err := e.s.ListCertificates(ctx, e.admin, service.CertificateQuery{Profile: "logon", ExpiresBefore: time.Now().Add(30 * 24 * time.Hour)}, service.Page{})
	if err != nil || len(cs) != 1 || cs[0].Holder != "alice" {
		t.Fatalf("certificates expiring %+v, %v", cs, err)
	}
	revoked := true
	cs, _, err = e.s.ListCertificates(ctx, e.admin, service.CertificateQuery{Revoked: &revoked}, service.Page{})
	if err != nil || len(cs) != 0 {
		t.Fatalf("revoked certificates %+v, %v", cs, err)
	}

	us, _, err := e.s.ListUsers(ctx, e.admin, service.UserQuery{Search: "operator"}, service.Page{})
	if err != nil || len(us) != 1 || us[0].Username != "olga" {
		t.Fatalf("users by name %+v, %v", us, err)
	}

	// Audit by actor's username, newest first, paged.
	es, next, err := e.s.SearchAudit(ctx, e.auditor, service.AuditQuery{Actor: "admin", Action: audit.ActionUserCreated}, service.Page{Limit: 2})
	if err != nil || len(es) != 2 || next == "" || es[0].Seq < es[1].Seq || es[0].ActorName != "admin" {
		t.Fatalf("first page %+v, %q, %v", es, next, err)
	}
	more, next, err := e.s.SearchAudit(ctx, e.auditor, service.AuditQuery{Actor: "admin", Action: audit.ActionUserCreated}, service.Page{Limit: 2, Cursor: next})
	// The bootstrap administrator is created by system:bootstrap: three users by admin.
	if err != nil || len(more) != 1 || next != "" || more[0].Seq >= es[1].Seq {
		t.Fatalf("second page %+v, %q, %v", more, next, err)
	}
	_, _, err = e.s.SearchAudit(ctx, e.helpdesk, service.AuditQuery{}, service.Page{})
	wantCode(t, err, service.CodeForbidden)
}
