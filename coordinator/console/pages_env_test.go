package console_test

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/checkpoint"
	"github.com/tokenfleet/tokenfleet/coordinator/console"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// revokingIssuer is pinIssuer that also revokes, as the CA does in its store (the CRL
// the CA then signs is the CA's tests' business).
type revokingIssuer struct{ pinIssuer }

func (revokingIssuer) RevokeCertificate(ctx context.Context, tx store.Tx, c store.Certificate, reason int, at time.Time) error {
	_, err := tx.RevokeCertificate(ctx, c.Serial, at, reason)
	return err
}

func (revokingIssuer) ReleaseCertificateHold(ctx context.Context, tx store.Tx, c store.Certificate) error {
	_, err := tx.ReleaseCertificateHold(ctx, c.Serial)
	return err
}

// fleetProfile warns 30 days before expiry; rollouts of it may be approved by any
// approver.
const fleetProfile = `name: fleet
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 365d
expiry_warning: 30d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], scope: any, expires_after: 48h}
`

// pagesEnv is env for the list pages: its database file known (to tamper with), a
// checkpoint key, a CA that revokes, and an auditor, a CA operator and a rollout owner.
type pagesEnv struct {
	*env
	dsn string
	cps *checkpoint.Checkpointer
}

func newPagesEnv(t *testing.T) *pagesEnv {
	t.Helper()
	ctx := context.Background()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	dsn := filepath.Join(t.TempDir(), "p.db")
	st, err := store.Open(ctx, store.Config{Driver: store.DriverSQLite, DSN: dsn}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, cpKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := checkpoint.New(checkpoint.Options{Store: st, Key: cpKey, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Now().UTC().Truncate(time.Second)}
	svc, err := service.New(service.Options{Store: st, Logger: log, Now: clk.Now, Issuer: revokingIssuer{pinIssuer{key}},
		CheckpointKey: cps.PublicKey(),
		SignIn:        service.SignInOptions{Password: service.PasswordParams{Memory: 8 * 1024, Time: 1, Threads: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	e := &pagesEnv{env: &env{t: t, ctx: ctx, svc: svc, st: st, clock: clk, key: key}, dsn: dsn, cps: cps}
	if _, err := svc.Bootstrap(ctx, func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	e.admin = e.actor(service.BootstrapUsername)
	for _, org := range []string{"Acme", "Globex"} {
		if _, err := svc.CreateOrganization(ctx, e.admin, org); err != nil {
			t.Fatal(err)
		}
	}
	people := []service.UserRequest{
		{Username: "helen", DisplayName: "Helen Desk", Organization: "Acme", Roles: []jobs.Role{jobs.RoleHelpdesk}},
		{Username: "alice", DisplayName: "Alice Approver", Organization: "Acme", Roles: []jobs.Role{jobs.RoleApprover}},
		{Username: "audrey", DisplayName: "Audrey Auditor", Organization: "Acme", Roles: []jobs.Role{jobs.RoleAuditor}},
		{Username: "carl", DisplayName: "Carl CA", Organization: "Acme", Roles: []jobs.Role{jobs.RoleCAOperator}},
		{Username: "rita", DisplayName: "Rita Rollouts", Organization: "Acme", Roles: []jobs.Role{jobs.RoleRolloutOwner}},
		{Username: "hugo", DisplayName: "Hugo Holder", Email: "hugo@acme.example", Organization: "Acme"},
	}
	for _, p := range people {
		if _, err := svc.CreateUser(ctx, e.admin, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"admin", "helen", "alice", "audrey", "carl", "rita"} {
		if err := svc.SetPassword(ctx, e.admin, name, password); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.ApplyProfiles(ctx, e.admin, []byte(testProfile+"---\n"+fleetProfile)); err != nil {
		t.Fatal(err)
	}
	if err := st.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.CreateAgent(ctx, store.Agent{ID: "ws-0001", Hostname: "reception-pc", OS: "linux", Version: "1.4.2"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h, err := console.New(console.Options{Service: svc, Logger: log, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// tx runs fn in a store transaction, setting the scene.
func (e *pagesEnv) tx(fn func(tx store.Tx) error) {
	e.t.Helper()
	if err := e.st.InTx(e.ctx, fn); err != nil {
		e.t.Fatal(err)
	}
}

// tamper runs statements on the database behind the coordinator's back.
func (e *pagesEnv) tamper(stmts ...string) {
	e.t.Helper()
	db, err := sql.Open("sqlite", e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
	}
}

// addCertificate records a certificate of holder's on token, valid until notAfter.
func (e *pagesEnv) addCertificate(serial, holder, profile, token string, notAfter time.Time) {
	e.t.Helper()
	u, err := e.st.GetUserByUsername(e.ctx, holder)
	if err != nil {
		e.t.Fatal(err)
	}
	e.tx(func(tx store.Tx) error {
		_, err := tx.AddCertificate(e.ctx, store.Certificate{Serial: serial, HolderID: u.ID, Profile: profile, TokenSerial: token,
			AgentID: "ws-0001", Subject: "CN=" + holder, Issuer: "CN=Test CA", NotBefore: e.clock.Now().Add(-time.Hour),
			NotAfter: notAfter, DER: []byte{1}})
		return err
	})
}
