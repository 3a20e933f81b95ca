// Package storetest is the one test suite every store back end must pass. A back end's test
// calls Run with a function that gives each subtest an empty database of its own.
package storetest

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Fresh returns the configuration of an empty database that lives until t ends. Each call
// gives a different database.
type Fresh func(t *testing.T) store.Config

// Run runs the whole suite against the back end fresh describes.
func Run(t *testing.T, fresh Fresh) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"Organizations", testOrganizations},
		{"Users", testUsers},
		{"UserList", testUserList},
		{"APITokens", testAPITokens},
		{"APITokenNeverStoredInClear", testAPITokenStorage},
		{"BootstrapAPIToken", testBootstrapToken},
		{"CustomRoles", testCustomRoles},
		{"RecoveryCertificates", testRecoveryCertificates},
		{"EscrowedKeys", testEscrowedKeys},
		{"KeyRequests", testKeyRequests},
		{"Agents", testAgents},
		{"AgentList", testAgentList},
		{"AgentsBatch", testAgentsBatch},
		{"EnrolmentKeys", testEnrolmentKeys},
		{"AgentLifeCycle", testAgentLifeCycle},
		{"Heartbeats", testHeartbeats},
		{"Tokens", testTokens},
		{"Certificates", testCertificates},
		{"CertificateList", testCertificateList},
		{"SearchFilters", testSearchFilters},
		{"Profiles", testProfiles},
		{"Jobs", testJobs},
		{"JobStateCompareAndSet", testJobCAS},
		{"JobStateConcurrent", testJobCASConcurrent},
		{"JobStatesSet", testJobStatesSet},
		{"JobAttemptsAndSteps", testJobAttempts},
		{"JobEdit", testJobEdit},
		{"JobIdempotencyKey", testJobIdempotencyKey},
		{"JobIdempotencyConcurrent", testJobIdempotencyConcurrent},
		{"JobList", testJobList},
		{"Register", testRegister},
		{"Approvals", testApprovals},
		{"Rollouts", testRollouts},
		{"RolloutTenThousandTargets", testRolloutTenThousand},
		{"RolloutJobs", testRolloutJobs},
		{"RolloutAttachMany", testRolloutAttachMany},
		{"RolloutCompareAndSet", testRolloutCAS},
		{"RolloutAddTargets", testRolloutAddTargets},
		{"RolloutStanding", testRolloutStanding},
		{"RolloutList", testRolloutList},
		{"RolloutIdempotencyKey", testRolloutIdempotencyKey},
		{"RolloutCertificateOnce", testRolloutCertificateOnce},
		{"Audit", testAudit},
		{"AuditAppendOnly", testAuditAppendOnly},
		{"AuditSealChecked", testAuditSealChecked},
		{"AuditConcurrentAppenders", testAuditConcurrent},
		{"AuditSet", testAuditSet},
		{"AuditUnreadableRow", testAuditUnreadable},
		{"AuditCheckpoints", testAuditCheckpoints},
		{"Outbox", testOutbox},
		{"OutboxSet", testOutboxSet},
		{"Inbox", testInbox},
		{"Notifications", testNotifications},
		{"NotificationClaims", testNotificationClaims},
		{"NotificationClaimsConcurrent", testNotificationClaimsConcurrent},
		{"UserLanguage", testUserLanguage},
		{"Credentials", testCredentials},
		{"Sessions", testSessions},
		{"SessionSecretNeverStoredInClear", testSessionStorage},
		{"OIDCIdentities", testOIDCIdentities},
		{"FleetStats", testFleetStats},
		{"AttemptRecords", testAttemptRecords},
		{"TokenPINs", testTokenPINs},
		{"TokenLife", testTokenLife},
		{"CertificateHold", testCertificateHold},
		{"TxCommitsTogether", testTxCommit},
		{"TxRollbackLeavesNothing", testTxRollback},
		{"TxPanicRollsBack", testTxPanic},
		{"TxSavepoints", testTxSavepoints},
		{"TimesRoundTrip", testTimes},
		{"NotFound", testNotFound},
		{"BadPages", testBadPages},
		{"ReopenKeepsData", testReopen},
		{"MigrateIdempotent", testMigrateIdempotent},
		{"ConcurrentOpen", testConcurrentOpen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fresh(t)
			h := &harness{cfg: cfg, ctx: t.Context(), fresh: fresh}
			h.s = h.open(t)
			tc.fn(t, h)
		})
	}
}

// harness is one subtest's store and what it needs to reopen or inspect it.
type harness struct {
	cfg   store.Config
	ctx   context.Context
	s     store.Store
	fresh Fresh
}

// Logger writes the store's warnings and errors into the test log.
func Logger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

// open opens another store on the subtest's database, closed when the test ends.
func (h *harness) open(t *testing.T) store.Store {
	t.Helper()
	s, err := store.Open(h.ctx, h.cfg, Logger(t))
	if err != nil {
		t.Fatalf("open %s store: %v", h.cfg.Driver, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

// raw opens the database directly, bypassing the store, to look at what it really holds.
func (h *harness) raw(t *testing.T) *sql.DB {
	t.Helper()
	driver := map[string]string{store.DriverSQLite: "sqlite", store.DriverPostgres: "pgx"}[h.cfg.Driver]
	db, err := sql.Open(driver, h.cfg.DSN)
	if err != nil {
		t.Fatalf("raw open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// tx runs fn in a transaction and fails the test on error.
func (h *harness) tx(t *testing.T, fn func(tx store.Tx) error) {
	t.Helper()
	if err := h.s.InTx(h.ctx, fn); err != nil {
		t.Fatalf("transaction: %v", err)
	}
}

// do runs one write in its own transaction and returns its result.
func do[T any](t *testing.T, h *harness, fn func(tx store.Tx) (T, error)) T {
	t.Helper()
	var out T
	h.tx(t, func(tx store.Tx) error {
		var err error
		out, err = fn(tx)
		return err
	})
	return out
}

// try runs one write in its own transaction and returns its error.
func try[T any](h *harness, fn func(tx store.Tx) (T, error)) error {
	return h.s.InTx(h.ctx, func(tx store.Tx) error {
		_, err := fn(tx)
		return err
	})
}

// must(f())(t) returns f's value, failing the test if f returned an error.
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return v
	}
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func equal[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func jsonEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %q is not JSON: %v", what, got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: %q is not JSON: %v", what, want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s: got %s, want %s", what, got, want)
	}
}

// base is a time with nanoseconds and a zone, to check that the store keeps what it can
// (UTC microseconds) exactly.
var base = time.Date(2025, 3, 14, 9, 26, 53, 589793238, time.FixedZone("CET", 3600))

// stored is t as the store keeps it.
func stored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// listAll follows cursors to the end, checking that no page is larger than limit.
func listAll[T any](t *testing.T, limit int, list func(p store.Page) ([]T, string, error)) []T {
	t.Helper()
	var all []T
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
		items, next, err := list(store.Page{Limit: limit, Cursor: cursor})
		if err != nil {
			t.Fatalf("list page %d: %v", pages, err)
		}
		if len(items) > limit {
			t.Fatalf("page %d has %d items, limit %d", pages, len(items), limit)
		}
		all = append(all, items...)
		if next == "" {
			return all
		}
		if len(items) == 0 {
			t.Fatalf("page %d is empty but has a next cursor", pages)
		}
		cursor = next
	}
}

// verifyChain checks entries with the audit package's verifier: numbered 1..n without
// gaps, each hashing to its stored hash and linked to the one before.
func verifyChain(t *testing.T, entries []audit.Entry) {
	t.Helper()
	if err := audit.Verify(entries); err != nil {
		t.Fatalf("audit chain read back from the store: %v", err)
	}
}

// fixture creates the records most tests need.
type fixture struct {
	org       store.Organization
	requester store.User
	holder    store.User
	approver  store.User
	agent     store.Agent
}

func newFixture(t *testing.T, h *harness) fixture {
	t.Helper()
	var f fixture
	h.tx(t, func(tx store.Tx) error {
		var err error
		if f.org, err = tx.CreateOrganization(h.ctx, store.Organization{Name: "Acme"}); err != nil {
			return err
		}
		if f.requester, err = tx.CreateUser(h.ctx, store.User{Username: "helpdesk1", OrganizationID: f.org.ID,
			Roles: []jobs.Role{jobs.RoleHelpdesk}}); err != nil {
			return err
		}
		if f.holder, err = tx.CreateUser(h.ctx, store.User{Username: "alice", OrganizationID: f.org.ID}); err != nil {
			return err
		}
		if f.approver, err = tx.CreateUser(h.ctx, store.User{Username: "boss", OrganizationID: f.org.ID,
			Roles: []jobs.Role{jobs.RoleApprover}}); err != nil {
			return err
		}
		f.agent, err = tx.CreateAgent(h.ctx, store.Agent{ID: "ws-0001", Hostname: "ws-0001.acme.test"})
		return err
	})
	return f
}

// job returns a job of f ready to create.
func (f fixture) job() store.Job {
	return store.Job{
		Kind: jobs.KindIssue, State: jobs.StatePendingApproval, HolderID: f.holder.ID, ProfileName: "signing",
		ProfileHash: strings.Repeat("ab", 32), AgentID: f.agent.ID, RequesterID: f.requester.ID,
		OrganizationID: f.org.ID, BindingHash: strings.Repeat("cd", 32),
	}
}

func (f fixture) createJob(t *testing.T, h *harness, mod func(j *store.Job)) store.Job {
	t.Helper()
	j := f.job()
	if mod != nil {
		mod(&j)
	}
	return do(t, h, func(tx store.Tx) (store.Job, error) { return tx.CreateJob(h.ctx, j) })
}

func ptr[T any](v T) *T { return &v }

// tableText reads every row of table behind the store's back, each column as text (a
// byte column as its bytes): what the checks that a secret is never stored in clear read.
func tableText(t *testing.T, h *harness, table string) (cols []string, rows [][]string) {
	t.Helper()
	r, err := h.raw(t).QueryContext(h.ctx, "SELECT * FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	if cols, err = r.Columns(); err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := r.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			row[i] = fmt.Sprint(v)
			if b, ok := v.([]byte); ok {
				row[i] = string(b)
			}
		}
		rows = append(rows, row)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return cols, rows
}

func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func itoa(i int) string { return fmt.Sprint(i) }
