package dispatch_test

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/escrow"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// heldProfile needs one approval, kept for thirty days, and no CA operator: a job of it
// stays in pending_approval until the test moves it, and the sweepers leave it alone.
const heldProfile = `name: held
description: One approval kept for thirty days; no CA-operator gate.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
pin_policy: {min_length: 6, max_length: 8}
approval:
  required: 1
  roles: [approver]
  expires_after: 30d
`

// heldEscrowProfile is heldProfile with a key the coordinator makes and escrows, for
// server_keygen jobs: under any other profile the dispatcher fails them at its first look.
const heldEscrowProfile = `name: held-escrow
description: One approval kept for thirty days; the key made by the coordinator, escrowed.
key: {type: ec, curve: P-256, origin: server, escrow: true}
subject:
  common_name: "{{.Name}}"
key_usage: [keyAgreement]
extended_key_usage: [emailProtection]
validity: 30d
pin_policy: {min_length: 6, max_length: 8}
approval:
  required: 1
  roles: [approver]
  expires_after: 30d
`

// fixture is a state a job can be in when an agent's event arrives.
type fixture struct {
	name       string
	state      jobs.State
	dispatched bool        // the attempt's dispatch was written out
	steps      []jobs.Step // progress recorded for the attempt
}

// fixturesOf lists the states a job of kind can really be in.
func fixturesOf(kind jobs.Kind) []fixture {
	running := []jobs.Step{jobs.StepTokenFound}
	sent := []jobs.Step{jobs.StepTokenFound, jobs.StepKeyGenerated, jobs.StepCSRSent}
	fs := []fixture{{name: "pending_approval", state: jobs.StatePendingApproval}}
	if kind != jobs.KindInventory && kind != jobs.KindInstallCertificate {
		// Waiting for the agent to report a token: the dispatch is not written. (An
		// inventory job needs nothing to be sent; an install job without a certificate
		// to install fails at once.)
		fs = append(fs, fixture{name: "approved, waiting", state: jobs.StateApproved})
	}
	fs = append(fs,
		fixture{name: "approved, dispatch written", state: jobs.StateApproved, dispatched: true},
		fixture{name: "dispatched", state: jobs.StateDispatched, dispatched: true},
		fixture{name: "running", state: jobs.StateRunning, dispatched: true, steps: running},
	)
	if jobs.NeedsCertificate(kind) {
		fs = append(fs,
			fixture{name: "awaiting_certificate", state: jobs.StateAwaitingCertificate, dispatched: true, steps: sent},
			fixture{name: "installing", state: jobs.StateInstalling, dispatched: true, steps: sent},
			fixture{name: "rejected by the CA operator", state: jobs.StateRejected, dispatched: true, steps: sent},
		)
	}
	return append(fs,
		fixture{name: "succeeded", state: jobs.StateSucceeded, dispatched: true, steps: running},
		fixture{name: "failed", state: jobs.StateFailed, dispatched: true, steps: running},
		fixture{name: "cancelled while waiting", state: jobs.StateCancelled, dispatched: true},
		fixture{name: "cancelled before dispatch", state: jobs.StateCancelled},
		fixture{name: "superseded", state: jobs.StateSuperseded, dispatched: true},
		fixture{name: "expired", state: jobs.StateExpired, dispatched: true},
		fixture{name: "rejected", state: jobs.StateRejected},
	)
}

// agentEvent is an event the agent sends about its job.
type agentEvent struct {
	kind jobs.EventKind
	step jobs.Step
}

var agentEvents = []agentEvent{
	{jobs.EventProgress, jobs.StepWaitingForToken},
	{jobs.EventProgress, jobs.StepCertificateWritten},
	{jobs.EventCSR, ""},
	{jobs.EventSucceeded, ""},
	{jobs.EventFailed, ""},
	{jobs.EventAcknowledged, ""},
}

// TestEventTable sends every agent event, from the job's own agent with its own broker
// user, to a job of every kind in every state it can be in. An event the table takes
// moves the job as the table says; any other is refused with the table's code, lands in
// the dead-letter queue with the reason, is audited, and leaves the database unchanged.
func TestEventTable(t *testing.T) {
	t.Parallel()
	for _, kind := range jobs.Kinds() {
		if !jobs.OnAgent(kind) {
			continue // revoke runs on the coordinator: jobs.TestAcceptEventTable covers it
		}
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			m := newMatrix(t)
			for _, f := range fixturesOf(kind) {
				for _, ev := range agentEvents {
					m.check(t, kind, f, ev)
				}
			}
			m.w.verifyAudit()
		})
	}
}

// matrix is one coordinator, one agent with its own broker user, and a way to read the
// coordinator's database and dead-letter queue.
type matrix struct {
	w       *world
	a       *dispatchtest.Agent
	db      *sql.DB
	dead    *amqp091.Channel
	boss    string // the approver's user ID
	cursor  int64  // audit entries before this sequence number were looked at
	holders int
	queries map[string]string // table → the query that renders it, for snapshot
	archive []byte            // an escrowed key's archive, for the escrowed kinds' fixtures
	// issuer signs the encryption certificates register_certificate's success carries; the
	// coordinator trusts it (escrow.trusted_issuers).
	issuerKey *ecdsa.PrivateKey
	issuer    *x509.Certificate
}

const matrixAgent = "ws-matrix"

func newMatrix(t *testing.T) *matrix {
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Mail CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &issuerKey.PublicKey, issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	issuerFile := filepath.Join(t.TempDir(), "mail-ca.pem")
	if err := os.WriteFile(issuerFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	w := newWorldWith(t, "per_agent", func(c *coordinator.Config) { c.Escrow.TrustedIssuers = []string{issuerFile} })
	for _, p := range []string{heldProfile, heldEscrowProfile} {
		if _, err := w.admin.ApplyProfiles(w.ctx, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	a := w.agent(matrixAgent, w.agentUser(matrixAgent))
	a.Hello() // its seal key; it reports no token, so jobs that need one wait
	boss, err := w.c.Store.GetUserByUsername(w.ctx, "boss")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(w.c.DataDir, coordinator.DatabaseFile)+"?_pragma=busy_timeout(10000)&_query_only=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	conn, err := amqp091.Dial(w.broker.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	dead, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	m := &matrix{w: w, a: a, db: db, dead: dead, boss: boss.ID, issuerKey: issuerKey, issuer: issuer}
	// The hello is taken before any job exists.
	waitFor(t, "the agent's hello", func() bool {
		ag, err := w.c.Store.GetAgent(w.ctx, matrixAgent)
		return err == nil && len(ag.PublicKey) > 0
	})
	// The snapshot sees a change where there is one.
	before := m.snapshot(t)
	if _, err := w.admin.CreateOrg(w.ctx, "Snapshot Check"); err != nil {
		t.Fatal(err)
	}
	if d := diffLines(before, m.snapshot(t)); !strings.Contains(d, "Snapshot Check") {
		t.Fatalf("the snapshot missed a new organisation: %q", d)
	}
	return m
}

// check sets up a job of kind in fixture f, sends ev, and checks what became of both.
func (m *matrix) check(t *testing.T, kind jobs.Kind, f fixture, ev agentEvent) {
	t.Helper()
	name := fmt.Sprintf("%s job %s: %s %s", kind, f.name, ev.kind, ev.step)
	j, key := m.fixture(t, kind, f, ev)
	eff, tableErr := jobs.AcceptEvent(kind, j.State, f.dispatched, j.Progress, ev.kind, ev.step)
	var before string
	if tableErr != nil {
		// What earlier cases queued for the agent is sent first: the publisher marks
		// rows sent on its own time.
		waitFor(t, name+": outbox sent", func() bool {
			var n int
			if err := m.db.QueryRowContext(m.w.ctx, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 0
		})
		before = m.snapshot(t)
	}
	env := m.send(t, j, ev, key)
	if tableErr != nil {
		code := protocol.CodeEventNotAllowed
		var je *jobs.Error
		if asJobsError(tableErr, &je) {
			switch je.Code {
			case jobs.CodeNotDispatched:
				code = protocol.CodeJobNotDispatched
			case jobs.CodeJobEnded:
				code = protocol.CodeJobEnded
			}
		}
		d := m.deadLetter(t, env.ID)
		if got := d.Headers[amqp.HeaderErrorCode]; got != string(code) {
			t.Errorf("%s: dead-lettered with %v (%v), want %s", name, got, d.Headers[amqp.HeaderError], code)
		}
		if reason, _ := d.Headers[amqp.HeaderError].(string); reason == "" {
			t.Errorf("%s: dead-lettered without a reason", name)
		}
		e, ok := m.rejection(t, env.ID)
		if !ok || !strings.Contains(string(e.Details), string(code)) || e.JobID != j.ID {
			t.Errorf("%s: audit entry %+v (found %v)", name, e, ok)
		}
		if after := m.snapshot(t); after != before {
			t.Errorf("%s: refused, but the database changed:\n%s", name, diffLines(before, after))
		}
		return
	}
	waitFor(t, name+": processed", func() bool {
		_, err := m.w.c.Store.GetInbox(m.w.ctx, env.ID)
		return err == nil
	})
	got, err := m.w.c.Store.GetJob(m.w.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := j.State
	switch {
	case eff.To != "":
		want = eff.To
	case eff.CheckCSR && jobs.NeedsCertificate(kind):
		want = jobs.StateInstalling // signed at once: the profile has no CA-operator gate
	case eff.Start:
		want = jobs.StateRunning
	}
	if got.State != want {
		t.Errorf("%s: the job is %s, want %s (%s: %s)", name, got.State, want, got.ErrorCode, got.ErrorMessage)
	}
	if ev.kind == jobs.EventProgress && !eff.Late && got.Progress.Current != ev.step {
		t.Errorf("%s: progress %+v", name, got.Progress)
	}
	if eff.CheckCSR {
		if cs := m.w.certificates(j.ID); len(cs) != 1 {
			t.Errorf("%s: %d certificates issued, want 1", name, len(cs))
		}
	}
}

func asJobsError(err error, target **jobs.Error) bool {
	return errors.As(err, target)
}

// fixture creates a job of kind through the API and moves it, in the store, to the
// fixture's state with what the coordinator would know of it there. It returns the job
// and, for a job whose key was reported, that key.
func (m *matrix) fixture(t *testing.T, kind jobs.Kind, f fixture, ev agentEvent) (store.Job, *dispatchtest.Key) {
	t.Helper()
	ctx := m.w.ctx
	// A holder of its own: a new request would supersede the last one of the same holder.
	m.holders++
	holder := fmt.Sprintf("holder-%d", m.holders)
	if _, err := m.w.admin.CreateUser(ctx, client.UserCreate{Username: holder, DisplayName: "Holder " + holder, Email: holder + "@acme.example", Organization: "Acme"}); err != nil {
		t.Fatal(err)
	}
	var cj client.Job
	var err error
	if escrowKind(kind) {
		// Queued through their own paths (an escrow profile, an escrowed key, a CKA_ID):
		// the event table is the same whatever made the job.
		cj.ID = m.escrowJob(t, kind, holder)
	} else if cj, err = m.w.desk.CreateJob(ctx, client.JobCreate{Kind: kind, Holder: holder, Agent: matrixAgent, Profile: "held"}); err != nil {
		t.Fatal(err)
	}
	var key *dispatchtest.Key
	if f.dispatched && slices.Contains([]jobs.Kind{jobs.KindIssue, jobs.KindRenew, jobs.KindCSR}, kind) {
		key = dispatchtest.NewReportedKey(t, protocol.KeyP256)
	}
	var out store.Job
	err = m.w.c.Store.InTx(ctx, func(tx store.Tx) error {
		j, err := tx.GetJob(ctx, cj.ID)
		if err != nil {
			return err
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		if f.state != jobs.StatePendingApproval {
			if _, err := tx.AddApproval(ctx, store.Approval{JobID: j.ID, Gate: jobs.GateRequest, ApproverID: m.boss,
				Verdict: jobs.VerdictApprove, BoundHash: j.BindingHash, Attempt: 1, At: now, Expires: now.Add(30 * 24 * time.Hour)}); err != nil {
				return err
			}
			if kind == jobs.KindRecoverKey {
				// The recovery gate wants two approvals (the default).
				caop, err := tx.GetUserByUsername(ctx, "caop")
				if err != nil {
					return err
				}
				if _, err := tx.AddApproval(ctx, store.Approval{JobID: j.ID, Gate: jobs.GateRequest, ApproverID: caop.ID,
					Verdict: jobs.VerdictApprove, BoundHash: j.BindingHash, Attempt: 1, At: now, Expires: now.Add(30 * 24 * time.Hour)}); err != nil {
					return err
				}
			}
			if j, err = tx.UpdateJobState(ctx, j.ID, j.State, f.state, j.Version, store.JobChange{Actor: "test", Reason: "fixture", At: now}); err != nil {
				return err
			}
		}
		if f.dispatched {
			if err := tx.RecordAttemptDispatch(ctx, j.ID, 1, protocol.NewMessageID()); err != nil {
				return err
			}
		}
		for _, s := range f.steps {
			p := jobs.Progress{Current: s, Highest: s}
			if j, err = tx.AddJobStep(ctx, store.JobStep{JobID: j.ID, Attempt: 1, Step: s, At: now}, p, j.Version); err != nil {
				return err
			}
		}
		if key != nil {
			if err := tx.RecordAttemptKey(ctx, j.ID, 1, key.PublicKey); err != nil {
				return err
			}
		}
		// A csr job reports success once its CSR was taken.
		if kind == jobs.KindCSR && ev.kind == jobs.EventSucceeded && f.dispatched {
			if err := tx.RecordAttemptCSR(ctx, j.ID, 1, key.CSR, now); err != nil {
				return err
			}
		}
		out = j
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, key
}

// send publishes the event for job j as its agent would.
func (m *matrix) send(t *testing.T, j store.Job, ev agentEvent, key *dispatchtest.Key) *protocol.Envelope {
	t.Helper()
	ref := protocol.JobRef{JobID: j.ID, Attempt: uint32(j.Attempt)}
	switch ev.kind {
	case jobs.EventProgress:
		return m.a.Send(ref, protocol.Progress{Step: ev.step})
	case jobs.EventCSR:
		if key == nil {
			key = dispatchtest.NewReportedKey(t, protocol.KeyP256)
		}
		return m.a.Send(ref, protocol.CSRSubmission{CSR: key.CSR, KeyID: protocol.DeriveKeyID(j.ID), PublicKey: key.PublicKey})
	case jobs.EventSucceeded:
		if j.Kind == jobs.KindRegisterCertificate {
			// Its success carries the certificate it read.
			return m.a.Send(ref, protocol.Result{Outcome: protocol.OutcomeSucceeded, Outputs: &protocol.Outputs{Certificate: m.encryptionCert(t, j)}})
		}
		return m.a.Send(ref, protocol.Result{Outcome: protocol.OutcomeSucceeded})
	case jobs.EventFailed:
		return m.a.Send(ref, protocol.Result{Outcome: protocol.OutcomeFailed, Error: protocol.NewError(protocol.CodeTokenNotPresent, "token removed")})
	}
	return m.a.Send(ref, protocol.Result{Outcome: protocol.OutcomeFailed, Error: protocol.NewError(protocol.CodeJobCancelled, "the coordinator moved the job to cancelled")})
}

// deadLetter takes the dead-lettered copy of message id off the dead-letter queue.
func (m *matrix) deadLetter(t *testing.T, id string) amqp091.Delivery {
	t.Helper()
	var found *amqp091.Delivery
	waitFor(t, "message "+id+" in the dead-letter queue", func() bool {
		for {
			d, ok, err := m.dead.Get(protocol.DeadLetterQueue, true)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				return false
			}
			if d.MessageId == id {
				found = &d
				return true
			}
		}
	})
	return *found
}

// rejection finds the message.rejected entry of message id among the entries not looked
// at yet.
func (m *matrix) rejection(t *testing.T, id string) (audit.Entry, bool) {
	t.Helper()
	for e, err := range m.w.c.Store.AuditEntries(m.w.ctx, m.cursor+1) {
		if err != nil {
			t.Fatal(err)
		}
		m.cursor = e.Seq
		if e.Action == audit.ActionMessageRejected && strings.Contains(string(e.Details), id) {
			return e, true
		}
	}
	return audit.Entry{}, false
}

// snapshotSkip are what may change while an event is refused: the audit log and the
// agent's last refusal (which record it), migrations, and presence and waiting notes the
// sweepers keep.
var snapshotSkip = map[string]bool{
	"audit_log": true, "audit_head": true, "audit_checkpoints": true, "goose_db_version": true, "sqlite_sequence": true,
	"online": true, "last_heartbeat_at": true, "waiting_reason": true,
	"refused_at": true, "refused_code": true, "refused_sender": true, "refused_reason": true,
}

// snapshot is the coordinator's whole database as text, a line per row. SQLite renders
// each table in one query (quote() of every column), which keeps a snapshot cheap enough
// to take around every refused event.
func (m *matrix) snapshot(t *testing.T) string {
	t.Helper()
	ctx := m.w.ctx
	if m.queries == nil {
		m.queries = map[string]string{}
		rows, err := m.db.QueryContext(ctx, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
		if err != nil {
			t.Fatal(err)
		}
		var tables []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			if !snapshotSkip[n] {
				tables = append(tables, n)
			}
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		for _, table := range tables {
			cols, err := m.db.QueryContext(ctx, "SELECT name FROM pragma_table_info(?) ORDER BY cid", table)
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for cols.Next() {
				var c string
				if err := cols.Scan(&c); err != nil {
					t.Fatal(err)
				}
				if !snapshotSkip[c] {
					parts = append(parts, fmt.Sprintf("'%s='||quote(%s)", c, c))
				}
			}
			if err := cols.Close(); err != nil {
				t.Fatal(err)
			}
			row := "'" + table + "'||' '||" + strings.Join(parts, "||' '||")
			m.queries[table] = "SELECT coalesce(group_concat(r, char(10)), '') FROM (SELECT " + row + " AS r FROM " + table + " ORDER BY rowid)"
		}
	}
	tables := make([]string, 0, len(m.queries))
	for table := range m.queries {
		tables = append(tables, table)
	}
	slices.Sort(tables)
	var b strings.Builder
	for _, table := range tables {
		var text string
		if err := m.db.QueryRowContext(ctx, m.queries[table]).Scan(&text); err != nil {
			t.Fatal(err)
		}
		b.WriteString(text)
		b.WriteByte('\n')
	}
	return b.String()
}

// diffLines lists the lines that differ between a and b, counting repeated lines.
func diffLines(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]--
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]++
	}
	var out []string
	for l, n := range count {
		switch {
		case n < 0:
			out = append(out, fmt.Sprintf("- (%d) %s", -n, l))
		case n > 0:
			out = append(out, fmt.Sprintf("+ (%d) %s", n, l))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// waitFor polls ok until it holds, failing the test after waitTimeout.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, waitTimeout)
		}
		<-tick.C
	}
}

func escrowKind(k jobs.Kind) bool {
	return k == jobs.KindServerKeygen || k == jobs.KindRecoverKey || k == jobs.KindRegisterCertificate
}

// escrowJob stores a job of an escrowed kind in pending_approval, with what its own path
// would have recorded: a server_keygen attempt's archive, a recovery's escrowed key and
// target, a registration's CKA_ID.
func (m *matrix) escrowJob(t *testing.T, kind jobs.Kind, holder string) string {
	t.Helper()
	ctx := m.w.ctx
	if m.archive == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		rk, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tpl := &x509.Certificate{SerialNumber: big.NewInt(8), Subject: pkix.Name{CommonName: "escrowed"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageKeyAgreement}
		der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		a, err := escrow.Seal(k, cert, []crypto.PublicKey{rk.PublicKey()})
		if err != nil {
			t.Fatal(err)
		}
		if m.archive, err = a.Marshal(); err != nil {
			t.Fatal(err)
		}
	}
	var id string
	err := m.w.c.Store.InTx(ctx, func(tx store.Tx) error {
		u, err := tx.GetUserByUsername(ctx, holder)
		if err != nil {
			return err
		}
		desk, err := tx.GetUserByUsername(ctx, "desk")
		if err != nil {
			return err
		}
		profileName := "held"
		if kind == jobs.KindServerKeygen {
			profileName = "held-escrow"
		}
		sp, err := tx.GetProfile(ctx, profileName)
		if err != nil {
			return err
		}
		serial := ""
		if kind == jobs.KindRecoverKey {
			serial = "rk-" + holder // a recovery always names the token it installs on
		}
		j, err := tx.CreateJob(ctx, store.Job{Kind: kind, State: jobs.StatePendingApproval, HolderID: u.ID, ProfileName: profileName,
			ProfileHash: sp.ContentHash, AgentID: matrixAgent, TokenSerial: serial, RequesterID: desk.ID, OrganizationID: u.OrganizationID,
			BindingHash: strings.Repeat("ab", 32), Deadline: time.Now().Add(30 * 24 * time.Hour)})
		if err != nil {
			return err
		}
		id = j.ID
		switch kind {
		case jobs.KindServerKeygen:
			_, err = tx.AddEscrowedKey(ctx, store.EscrowedKey{JobID: j.ID, Attempt: 1, HolderID: u.ID, KeyID: "k-" + j.ID, Archive: m.archive})
		case jobs.KindRecoverKey:
			var k store.EscrowedKey
			if k, err = tx.AddEscrowedKey(ctx, store.EscrowedKey{JobID: j.ID, Attempt: 1, HolderID: u.ID, KeyID: "k-" + j.ID, Archive: m.archive,
				State: store.EscrowActive}); err == nil {
				err = tx.AddKeyRequest(ctx, store.KeyRequest{JobID: j.ID, EscrowedKeyID: k.ID, Target: store.RecoveryToToken})
			}
		case jobs.KindRegisterCertificate:
			err = tx.AddKeyRequest(ctx, store.KeyRequest{JobID: j.ID, CKAID: "0102"})
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// encryptionCert is a certificate of an EC key allowing keyAgreement, valid now, naming
// j's holder, from the issuer the coordinator trusts.
func (m *matrix) encryptionCert(t *testing.T, j store.Job) []byte {
	t.Helper()
	u, err := m.w.c.Store.GetUser(m.w.ctx, j.HolderID)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "encryption"}, EmailAddresses: []string{u.Email},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageKeyAgreement}
	der, err := x509.CreateCertificate(rand.Reader, tpl, m.issuer, &k.PublicKey, m.issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
