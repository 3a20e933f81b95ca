package console_test

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/checkpoint"
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
	e := &pagesEnv{dsn: filepath.Join(t.TempDir(), "p.db")}
	e.env = newEnvFrom(t, setup{
		dsn: e.dsn,
		people: []service.UserRequest{
			{Username: "helen", DisplayName: "Helen Desk", Organization: "Acme", Roles: []jobs.Role{jobs.RoleHelpdesk}},
			{Username: "alice", DisplayName: "Alice Approver", Organization: "Acme", Roles: []jobs.Role{jobs.RoleApprover}},
			{Username: "audrey", DisplayName: "Audrey Auditor", Organization: "Acme", Roles: []jobs.Role{jobs.RoleAuditor}},
			{Username: "carl", DisplayName: "Carl CA", Organization: "Acme", Roles: []jobs.Role{jobs.RoleCAOperator}},
			{Username: "rita", DisplayName: "Rita Rollouts", Organization: "Acme", Roles: []jobs.Role{jobs.RoleRolloutOwner}},
			{Username: "hugo", DisplayName: "Hugo Holder", Email: "hugo@acme.example", Organization: "Acme"},
		},
		signers:  []string{"admin", "helen", "alice", "audrey", "carl", "rita"},
		profiles: testProfile + "---\n" + fleetProfile,
		agentVer: "1.4.2",
		service: func(st store.Store, key *ecdh.PrivateKey, o *service.Options) {
			_, cpKey, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if e.cps, err = checkpoint.New(checkpoint.Options{Store: st, Key: cpKey, Logger: o.Logger}); err != nil {
				t.Fatal(err)
			}
			o.Issuer, o.CheckpointKey = revokingIssuer{pinIssuer{key}}, e.cps.PublicKey()
		},
	})
	return e
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
