package service_test

import (
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

func open(t *testing.T, cfg store.Config) (*service.Service, store.Store) {
	t.Helper()
	return openWith(t, cfg, service.Options{})
}

// openWith is open with options; their Store and Logger are filled in.
func openWith(t *testing.T, cfg store.Config, o service.Options) (*service.Service, store.Store) {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st, err := store.Open(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	o.Store, o.Logger = st, log
	s, err := service.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

// bothStores runs fn as two parallel subtests, on SQLite and on PostgreSQL.
func bothStores(t *testing.T, fn func(t *testing.T, cfg store.Config)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, sqlite(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)})
	})
}

// bootstrapAdmin runs a coordinator's first start on s and returns the administrator it
// made.
func bootstrapAdmin(t *testing.T, s *service.Service, st store.Store) service.Actor {
	t.Helper()
	if _, err := s.Bootstrap(t.Context(), func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	return actorNamed(t, st, "admin")
}

// actorNamed is the stored user named name, as an actor.
func actorNamed(t *testing.T, st store.Store, name string) service.Actor {
	t.Helper()
	u, err := st.GetUserByUsername(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return service.ActorFor(u)
}

func sqlite(t *testing.T) store.Config {
	return store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(t.TempDir(), "s.db")}
}

func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	s, st := open(t, sqlite(t))

	// A failure to keep the token leaves nothing behind.
	created, err := s.Bootstrap(ctx, func(string) error { return errors.New("disk full") })
	if err == nil || created {
		t.Fatalf("bootstrap with a failing keeper: %v, %v", created, err)
	}
	if _, err := st.GetUserByUsername(ctx, service.BootstrapUsername); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("admin exists after a failed bootstrap: %v", err)
	}
	var token string
	created, err = s.Bootstrap(ctx, func(tok string) error { token = tok; return nil })
	if err != nil || !created || token == "" {
		t.Fatalf("first bootstrap: %v, %v", created, err)
	}
	_, u, err := st.LookupAPIToken(ctx, token, time.Now())
	if err != nil || u.Username != "admin" || !u.HasRole(jobs.RoleAdmin) {
		t.Fatalf("bootstrap token authenticates %+v, %v", u, err)
	}
	created, err = s.Bootstrap(ctx, func(string) error { t.Fatal("second bootstrap made a token"); return nil })
	if err != nil || created {
		t.Fatalf("second bootstrap: %v, %v", created, err)
	}
	var actions []string
	for e, err := range st.AuditEntries(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Actor != "system:bootstrap" {
			t.Errorf("bootstrap entry by %q", e.Actor)
		}
		actions = append(actions, e.Action)
	}
	if fmt.Sprint(actions) != fmt.Sprint([]string{audit.ActionUserCreated, audit.ActionTokenCreated}) {
		t.Fatalf("audit %v", actions)
	}
}

func TestRunExpiryStops(t *testing.T) {
	s, _ := open(t, sqlite(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunExpiry(ctx, time.Hour)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RunExpiry did not stop with its context")
	}
}

const dualProfile = `name: dual
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 2, roles: [approver], scope: organization, expires_after: 48h}
`

// TestConcurrentApprovalsPostgres: on PostgreSQL (read committed) approvers deciding at the
// same moment may each see only their own approval; the job must still end approved,
// exactly once.
func TestConcurrentApprovalsPostgres(t *testing.T) {
	ctx := context.Background()
	s, st := open(t, store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)})
	admin := bootstrapAdmin(t, s, st)
	if _, err := s.CreateOrganization(ctx, admin, "Acme"); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, roles ...jobs.Role) service.Actor {
		u, err := s.CreateUser(ctx, admin, service.UserRequest{Username: name, DisplayName: name, Organization: "Acme", Roles: roles})
		if err != nil {
			t.Fatal(err)
		}
		return service.ActorFor(u.User)
	}
	hd := mk("hd", jobs.RoleHelpdesk)
	approvers := []service.Actor{mk("ap1", jobs.RoleApprover), mk("ap2", jobs.RoleApprover), mk("ap3", jobs.RoleApprover), mk("ap4", jobs.RoleApprover)}
	if _, err := s.ApplyProfiles(ctx, admin, []byte(dualProfile)); err != nil {
		t.Fatal(err)
	}
	const rounds = 6
	for i := range rounds {
		holder := mk(fmt.Sprintf("holder%d", i))
		agentID := fmt.Sprintf("ws-%d", i)
		if err := st.InTx(ctx, func(tx store.Tx) error {
			_, err := tx.CreateAgent(ctx, store.Agent{ID: agentID, Hostname: agentID})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		j, err := s.CreateJob(ctx, hd, service.JobRequest{Kind: jobs.KindIssue, Holder: holder.Username(), Profile: "dual", Agent: agentID})
		if err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make([]error, len(approvers))
		for k, a := range approvers {
			wg.Go(func() {
				<-start
				_, errs[k] = s.Approve(ctx, a, j.ID, service.DecisionRequest{})
			})
		}
		close(start)
		wg.Wait()
		succeeded := 0
		for _, err := range errs {
			switch {
			case err == nil:
				succeeded++
			case errors.Is(err, &service.Error{Code: service.CodeNotPending}), errors.Is(err, &service.Error{Code: service.CodeConflict}):
			default:
				t.Fatalf("round %d: approval failed: %v", i, err)
			}
		}
		got, err := st.GetJob(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		events, err := st.ListJobEvents(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		toApproved := 0
		for _, e := range events {
			if e.To == jobs.StateApproved {
				toApproved++
			}
		}
		t.Logf("round %d: %d succeeded %v", i, succeeded, errs)
		if got.State != jobs.StateApproved || toApproved != 1 || succeeded < 2 {
			t.Fatalf("round %d: job %s, %d transitions to approved, %d approvals succeeded (%v)", i, got.State, toApproved, succeeded, errs)
		}
	}
	// The audit chain stayed linear under the concurrent writers.
	var entries []audit.Entry
	for e, err := range st.AuditEntries(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	if err := audit.Verify(entries); err != nil {
		t.Fatal(err)
	}
}

// dispatchRig is a store with the built-in CA and the real dispatcher on it (no broker),
// for service tests whose jobs go as far as their dispatch.
type dispatchRig struct {
	st        store.Store
	ca        ca.CA
	d         *dispatch.Dispatcher
	resultKey *ecdh.PrivateKey
	dir       string
	log       zerolog.Logger
}

func newDispatchRig(t *testing.T, cfg store.Config) dispatchRig {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st, err := store.Open(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	dir := t.TempDir()
	authority, err := ca.New(t.Context(), ca.Options{DataDir: filepath.Join(dir, "ca"), Revocations: dispatch.Revocations{Store: st}, Logger: log,
		Builtin: ca.BuiltinOptions{CRLURL: "http://pki.test/crl", KeyType: protocol.KeyP256}})
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := dispatch.LoadOrCreateResultKey(filepath.Join(dir, dispatch.ResultKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	d, err := dispatch.New(dispatch.Options{Store: st, CA: authority, ResultKey: key, AgentUsers: dispatch.AgentUsersShared, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return dispatchRig{st: st, ca: authority, d: d, resultKey: key, dir: dir, log: log}
}
