package journal

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

const agentID = "ws-test"

// The crash test re-runs this test binary as a child that commits and then kills itself.
func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(crashChild(dir))
	}
	os.Exit(m.Run())
}

type fixture struct {
	dir  string
	path string
	pair *keys.Pair
	j    *Journal
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	pair, err := keys.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, path: filepath.Join(dir, FileName), pair: pair}
	f.reopen(t)
	return f
}

// reopen closes the journal (if open) and opens the file again, as a restarted agent does.
func (f *fixture) reopen(t testing.TB) {
	t.Helper()
	if f.j != nil {
		if err := f.j.Close(); err != nil {
			t.Fatal(err)
		}
	}
	j, err := Open(context.Background(), f.path, f.pair, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.j = j
	t.Cleanup(func() { _ = j.Close() })
}

// sealedPIN seals a PIN to the agent as the coordinator does for a dispatch.
func (f *fixture) sealedPIN(t testing.TB, ref protocol.JobRef, purpose protocol.SealPurpose, pin string) *protocol.Sealed {
	t.Helper()
	pub, err := seal.ParsePublicKey(f.pair.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.Seal(pub, []byte(pin), seal.Binding{JobID: ref.JobID, Attempt: ref.Attempt, Purpose: purpose})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func dispatch(t testing.TB, f *fixture, ref protocol.JobRef, userPIN string) *protocol.Envelope {
	t.Helper()
	d := protocol.JobDispatch{
		Kind:     protocol.KindIssue,
		Deadline: time.Now().Add(time.Hour).UTC(),
		Token:    protocol.TokenSelector{Serial: "0123456789abcdef"},
		Key:      &protocol.KeyParams{Type: protocol.KeyP256, ID: protocol.DeriveKeyID(ref.JobID)},
		PINs:     &protocol.SealedPINs{UserPIN: f.sealedPIN(t, ref, protocol.PurposeUserPIN, userPIN)},
	}
	return envelope(t, ref, d)
}

func envelope(t testing.TB, ref protocol.JobRef, body protocol.Body) *protocol.Envelope {
	t.Helper()
	env, err := protocol.NewEnvelope(agentID, ref, body)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func progress(t *testing.T, ref protocol.JobRef, step protocol.Step) *protocol.Envelope {
	return envelope(t, ref, protocol.Progress{Step: step, TokenSerial: "0123456789abcdef"})
}

// expect checks a Record call's receipt: expect(t, Accepted)(j.RecordDispatch(ctx, env)).
func expect(t *testing.T, want Disposition) func(Receipt, error) Receipt {
	return func(rc Receipt, err error) Receipt {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if rc.Disposition != want {
			t.Fatalf("disposition %s (%s), want %s", rc.Disposition, rc.Reason, want)
		}
		return rc
	}
}

func TestDispatchStepsAndResultRoundTrip(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ref := protocol.JobRef{JobID: "job-1", Attempt: 1}
	env := dispatch(t, f, ref, "93847261")
	expect(t, Accepted)(f.j.RecordDispatch(ctx, env))

	job, err := f.j.Job(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if job.Kind != protocol.KindIssue || job.State != StateReceived || job.Step != "" {
		t.Fatalf("fresh job %+v", job)
	}
	gotEnv, d, err := job.Dispatch()
	if err != nil {
		t.Fatal(err)
	}
	if gotEnv.ID != env.ID || d.Key.ID != protocol.DeriveKeyID("job-1") {
		t.Fatalf("dispatch changed in the journal: %+v", d)
	}

	steps := []Change{
		{State: StateRunning, Step: "token", StepStatus: StepStarted},
		{Step: "token", StepStatus: StepDone, TokenSerial: "0123456789abcdef",
			Outbox: []*protocol.Envelope{progress(t, ref, protocol.StepTokenFound)}},
		{Step: "generate_key", StepStatus: StepStarted},
		{Step: "generate_key", StepStatus: StepDone, KeyID: "0a0b", PublicKey: []byte{0x30, 0x01},
			Secrets: []Secret{{Name: "user_pin", Value: "55512340", Applied: true}}},
	}
	for _, c := range steps {
		if err := f.j.Update(ctx, ref, c); err != nil {
			t.Fatal(err)
		}
	}
	f.reopen(t)
	job, err = f.j.Job(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if job.State != StateRunning || job.Step != "generate_key" || job.StepStatus != StepDone ||
		job.TokenSerial != "0123456789abcdef" || job.KeyID != "0a0b" || !bytes.Equal(job.PublicKey, []byte{0x30, 0x01}) {
		t.Fatalf("after reopen: %+v", job)
	}
	secrets, err := f.j.Secrets(ctx, ref.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Secret{{Name: "user_pin", Value: "55512340", Applied: true, Sent: true}}; !reflect.DeepEqual(secrets, want) {
		t.Fatalf("secrets %+v, want %+v", secrets, want)
	}
	pending, err := f.j.Pending(ctx)
	if err != nil || len(pending) != 1 || pending[0].Ref != ref || pending[0].Step != "generate_key" {
		t.Fatalf("pending %+v, %v", pending, err)
	}

	res := envelope(t, ref, protocol.Result{Outcome: protocol.OutcomeSucceeded, Outputs: &protocol.Outputs{KeyID: "0a0b"}})
	if err := f.j.Update(ctx, ref, Change{State: StateDone, Result: res}); err != nil {
		t.Fatal(err)
	}
	job, _ = f.j.Job(ctx, ref)
	r, err := job.Result()
	if err != nil || r == nil || r.Outcome != protocol.OutcomeSucceeded || r.Outputs.KeyID != "0a0b" {
		t.Fatalf("stored result %+v, %v", r, err)
	}
	if secrets, _ := f.j.Secrets(ctx, ref.JobID); len(secrets) != 0 {
		t.Errorf("secrets kept after the job was done: %d", len(secrets))
	}
	if pending, _ := f.j.Pending(ctx); len(pending) != 0 {
		t.Errorf("a done job is still pending")
	}
	if err := f.j.Update(ctx, ref, Change{Step: "verify", StepStatus: StepStarted}); !errors.Is(err, ErrFinished) {
		t.Errorf("update after done: %v, want ErrFinished", err)
	}
	out, err := f.j.Unsent(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Type != protocol.TypeProgress || out[1].Type != protocol.TypeResult || out[1].ID != res.ID {
		t.Fatalf("outbox %+v", out)
	}
}

func TestFailedJobsKeepTheirSecretsForARetry(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ref := protocol.JobRef{JobID: "job-2", Attempt: 1}
	expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, ref, "11223344")))
	if err := f.j.Update(ctx, ref, Change{State: StateRunning, Step: "initialise", StepStatus: StepStarted,
		Secrets: []Secret{{Name: "so_pin", Value: "66778899"}, {Name: "user_pin", Value: "44556677"}}}); err != nil {
		t.Fatal(err)
	}
	if err := f.j.Update(ctx, ref, Change{Step: "initialise", StepStatus: StepDone, Applied: []string{"so_pin"}}); err != nil {
		t.Fatal(err)
	}
	res := envelope(t, ref, protocol.Result{Outcome: protocol.OutcomeFailed, Error: protocol.NewError(protocol.CodeTokenDeviceRemoved, "gone")})
	if err := f.j.Update(ctx, ref, Change{State: StateFailed, Result: res, TokenSerial: "feed"}); err != nil {
		t.Fatal(err)
	}
	// The retry is a new attempt of the same job: it inherits the token and the secrets.
	next := protocol.JobRef{JobID: ref.JobID, Attempt: 2}
	expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, next, "11223344")))
	job, err := f.j.Job(ctx, next)
	if err != nil || job.TokenSerial != "feed" || job.State != StateReceived {
		t.Fatalf("retry attempt %+v, %v", job, err)
	}
	secrets, err := f.j.Secrets(ctx, ref.JobID)
	if err != nil {
		t.Fatal(err)
	}
	want := []Secret{{Name: "so_pin", Value: "66778899", Applied: true, Sent: true}, {Name: "user_pin", Value: "44556677"}}
	if !reflect.DeepEqual(secrets, want) {
		t.Fatalf("secrets %+v, want %+v", secrets, want)
	}
}

// A secret's sent mark is kept across attempts and restarts, taken back by Unsent (not
// from an applied secret), and set by Sent.
func TestSecretsMarkedSent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ref := protocol.JobRef{JobID: "job-sent", Attempt: 1}
	expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, ref, "11223344")))
	check := func(what string, want ...Secret) {
		t.Helper()
		got, err := f.j.Secrets(ctx, ref.JobID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: secrets %+v, want %+v", what, got, want)
		}
	}
	update := func(c Change) {
		t.Helper()
		if err := f.j.Update(ctx, ref, c); err != nil {
			t.Fatal(err)
		}
	}
	update(Change{Secrets: []Secret{{Name: "so_pin", Value: "66778899", Sent: true}, {Name: "user_pin", Value: "44556677"}}})
	f.reopen(t)
	check("stored", Secret{Name: "so_pin", Value: "66778899", Sent: true}, Secret{Name: "user_pin", Value: "44556677"})
	update(Change{Sent: []string{"user_pin"}, Unsent: []string{"so_pin"}})
	check("swapped", Secret{Name: "so_pin", Value: "66778899"}, Secret{Name: "user_pin", Value: "44556677", Sent: true})
	update(Change{Applied: []string{"user_pin"}})
	update(Change{Unsent: []string{"so_pin", "user_pin"}})
	check("applied", Secret{Name: "so_pin", Value: "66778899"}, Secret{Name: "user_pin", Value: "44556677", Applied: true, Sent: true})
}

// A journal of schema 1, which did not mark secrets sent, is migrated: its secrets count as
// sent, so that a resumed step checks the token for them as the agent that chose them
// would have.
func TestSchema1SecretsCountAsSent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ref := protocol.JobRef{JobID: "job-v1", Attempt: 1}
	expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, ref, "11223344")))
	if err := f.j.Update(ctx, ref, Change{Secrets: []Secret{{Name: "so_pin", Value: "66778899"}}}); err != nil {
		t.Fatal(err)
	}
	if err := f.j.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", f.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`ALTER TABLE secrets DROP COLUMN sent`, `UPDATE meta SET value = '1' WHERE key = 'schema_version'`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	f.j = nil
	f.reopen(t)
	got, err := f.j.Secrets(ctx, ref.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Secret{{Name: "so_pin", Value: "66778899", Sent: true}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("secrets %+v, want %+v", got, want)
	}
	var v string
	if err := f.j.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v); err != nil || v != "2" {
		t.Fatalf("schema version %q, %v", v, err)
	}
}

func TestDuplicateStaleAndSupersedingDispatches(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	a1 := protocol.JobRef{JobID: "job-3", Attempt: 1}
	a2 := protocol.JobRef{JobID: "job-3", Attempt: 2}
	a3 := protocol.JobRef{JobID: "job-3", Attempt: 3}
	first := dispatch(t, f, a2, "10293847")

	expect(t, Accepted)(f.j.RecordDispatch(ctx, first))
	if err := f.j.Update(ctx, a2, Change{State: StateRunning, Step: "token", StepStatus: StepDone, TokenSerial: "s1"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  *protocol.Envelope
		want Disposition
	}{
		{"redelivery of the same message", first, Duplicate},
		{"another message for the same attempt", dispatch(t, f, a2, "10293847"), Duplicate},
		{"an older attempt", dispatch(t, f, a1, "10293847"), Stale},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expect(t, tc.want)(f.j.RecordDispatch(ctx, tc.env))
			jobs, err := f.j.Jobs(ctx)
			if err != nil || len(jobs) != 1 || jobs[0].Ref != a2 || jobs[0].State != StateRunning {
				t.Fatalf("journal changed: %+v, %v", jobs, err)
			}
		})
	}
	// A newer attempt stops the running one and inherits its token.
	rc := expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, a3, "10293847")))
	if !slices.Equal(rc.Superseded, []protocol.JobRef{a2}) {
		t.Fatalf("superseded %v, want [%v]", rc.Superseded, a2)
	}
	old, _ := f.j.Job(ctx, a2)
	if old.State != StateSuperseded {
		t.Fatalf("older attempt is %s, want superseded", old.State)
	}
	if err := f.j.Update(ctx, a2, Change{Step: "generate_key", StepStatus: StepStarted}); !errors.Is(err, ErrFinished) {
		t.Fatalf("the superseded attempt could still be updated: %v", err)
	}
	cur, _ := f.j.Latest(ctx, "job-3")
	if cur.Ref != a3 || cur.TokenSerial != "s1" {
		t.Fatalf("latest %+v", cur)
	}
	// The redelivered stale dispatch is now a duplicate of what was recorded as stale.
	expect(t, Duplicate)(f.j.RecordDispatch(ctx, tests[2].env))
}

func TestCertificateAndCancelDispositions(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ref := protocol.JobRef{JobID: "job-4", Attempt: 2}
	expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, ref, "56473829")))
	if err := f.j.Update(ctx, ref, Change{State: StateAwaitingCertificate, Step: "send_csr", StepStatus: StepDone}); err != nil {
		t.Fatal(err)
	}
	cert := envelope(t, ref, protocol.CertificateDelivery{KeyID: "0a0b",
		Certificates: protocol.CertificateChain{Certificate: []byte{0x30, 0x03, 0x02, 0x01, 0x05}}})
	expect(t, Accepted)(f.j.RecordCertificate(ctx, cert))
	job, _ := f.j.Job(ctx, ref)
	if job.State != StateInstalling {
		t.Fatalf("after delivery the job is %s, want installing", job.State)
	}
	if d, err := job.Delivery(); err != nil || d == nil || d.KeyID != "0a0b" {
		t.Fatalf("delivery %+v, %v", d, err)
	}
	expect(t, Duplicate)(f.j.RecordCertificate(ctx, cert))
	again := envelope(t, ref, protocol.CertificateDelivery{KeyID: "0a0b",
		Certificates: protocol.CertificateChain{Certificate: []byte{0x30, 0x03, 0x02, 0x01, 0x06}}})
	expect(t, Duplicate)(f.j.RecordCertificate(ctx, again))
	stale := envelope(t, protocol.JobRef{JobID: ref.JobID, Attempt: 1}, protocol.CertificateDelivery{KeyID: "0a0b",
		Certificates: protocol.CertificateChain{Certificate: []byte{0x30, 0x03, 0x02, 0x01, 0x07}}})
	expect(t, Stale)(f.j.RecordCertificate(ctx, stale))
	unknown := envelope(t, protocol.JobRef{JobID: "job-none", Attempt: 1}, protocol.CertificateDelivery{KeyID: "0a0b",
		Certificates: protocol.CertificateChain{Certificate: []byte{0x30, 0x03, 0x02, 0x01, 0x07}}})
	expect(t, Ignored)(f.j.RecordCertificate(ctx, unknown))

	cancel := envelope(t, ref, protocol.Cancel{State: protocol.StateCancelled, Reason: "operator"})
	expect(t, Accepted)(f.j.RecordCancel(ctx, cancel))
	job, _ = f.j.Job(ctx, ref)
	if c, err := job.Cancel(); err != nil || c == nil || c.Reason != "operator" {
		t.Fatalf("cancel %+v, %v", c, err)
	}
	expect(t, Duplicate)(f.j.RecordCancel(ctx, cancel))

	// A cancel for an attempt not received yet leaves a tombstone: its dispatch is not
	// started when it comes.
	later := protocol.JobRef{JobID: "job-5", Attempt: 1}
	expect(t, Accepted)(f.j.RecordCancel(ctx, envelope(t, later, protocol.Cancel{State: protocol.StateSuperseded})))
	expect(t, Duplicate)(f.j.RecordDispatch(ctx, dispatch(t, f, later, "56473829")))
	if job, _ := f.j.Job(ctx, later); job.State != StateCancelled {
		t.Fatalf("tombstone is %s", job.State)
	}
	if _, err := f.j.RecordCancel(ctx, cert); err == nil {
		t.Error("a certificate message was taken as a cancel")
	}
}

// A certificate delivered to an attempt awaiting it can begin the step that writes it, in
// the delivery's one commit; delivered early (the attempt still running), it leaves the
// step alone.
func TestCertificateBeginsItsStep(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	deliver := func(ref protocol.JobRef) *protocol.Envelope {
		return envelope(t, ref, protocol.CertificateDelivery{KeyID: "0a0b",
			Certificates: protocol.CertificateChain{Certificate: []byte{0x30, 0x03, 0x02, 0x01, 0x05}}})
	}
	awaiting := protocol.JobRef{JobID: "job-awaiting", Attempt: 1}
	expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, awaiting, "56473829")))
	if err := f.j.Update(ctx, awaiting, Change{State: StateAwaitingCertificate, Step: "send_csr", StepStatus: StepDone}); err != nil {
		t.Fatal(err)
	}
	before := f.j.Commits()
	expect(t, Accepted)(f.j.RecordCertificateAndBegin(ctx, deliver(awaiting), "write_certificate"))
	if n := f.j.Commits() - before; n != 1 {
		t.Errorf("the delivery took %d commits, want 1", n)
	}
	f.reopen(t) // what is on disk
	job, err := f.j.Job(ctx, awaiting)
	if err != nil {
		t.Fatal(err)
	}
	if job.State != StateInstalling || job.Step != "write_certificate" || job.StepStatus != StepStarted || job.CertificateEnvelope == nil {
		t.Errorf("after the delivery: %s, step %s %s, certificate %t; want installing, write_certificate started, a certificate",
			job.State, job.Step, job.StepStatus, job.CertificateEnvelope != nil)
	}

	early := protocol.JobRef{JobID: "job-early", Attempt: 1}
	expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, early, "56473829")))
	if err := f.j.Update(ctx, early, Change{State: StateRunning, Step: "generate_key", StepStatus: StepStarted}); err != nil {
		t.Fatal(err)
	}
	expect(t, Accepted)(f.j.RecordCertificateAndBegin(ctx, deliver(early), "write_certificate"))
	if job, _ := f.j.Job(ctx, early); job.State != StateRunning || job.Step != "generate_key" || job.StepStatus != StepStarted {
		t.Errorf("an early delivery moved the attempt to %s, step %s %s", job.State, job.Step, job.StepStatus)
	}
}

func TestOutboxOrderAndNotify(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ref := protocol.JobRef{JobID: "job-6", Attempt: 1}
	expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, ref, "12121299")))
	select {
	case <-f.j.Notify():
		t.Fatal("notified without an outbox message")
	default:
	}
	var want []string
	for i, step := range []protocol.Step{protocol.StepWaitingForToken, protocol.StepTokenFound, protocol.StepInitialising} {
		env := progress(t, ref, step)
		want = append(want, env.ID)
		if err := f.j.Update(ctx, ref, Change{Step: fmt.Sprint("s", i), StepStatus: StepDone, Outbox: []*protocol.Envelope{env}}); err != nil {
			t.Fatal(err)
		}
	}
	hello := envelope(t, protocol.JobRef{}, protocol.Inventory{Tokens: []protocol.Token{}})
	if err := f.j.Append(ctx, hello); err != nil {
		t.Fatal(err)
	}
	want = append(want, hello.ID)
	select {
	case <-f.j.Notify():
	default:
		t.Fatal("no notification after outbox appends")
	}
	ids := func() []string {
		out, err := f.j.Unsent(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for i, o := range out {
			if i > 0 && o.Seq <= out[i-1].Seq {
				t.Fatalf("outbox not in order: %d after %d", o.Seq, out[i-1].Seq)
			}
			env, err := protocol.Decode(o.Data)
			if err != nil || env.ID != o.ID {
				t.Fatalf("outbox row %d does not decode to its message: %v", o.Seq, err)
			}
			got = append(got, o.ID)
		}
		return got
	}
	if got := ids(); !slices.Equal(got, want) {
		t.Fatalf("unsent %v, want %v", got, want)
	}
	if err := f.j.MarkSent(ctx, want[1]); err != nil {
		t.Fatal(err)
	}
	if err := f.j.MarkSent(ctx, want[1]); err != nil {
		t.Fatalf("marking twice: %v", err)
	}
	f.reopen(t)
	if got := ids(); !slices.Equal(got, []string{want[0], want[2], want[3]}) {
		t.Fatalf("after marking one sent and reopening: %v", got)
	}
	all, err := f.j.Messages(ctx, ref.JobID)
	if err != nil || len(all) != 3 || all[1].ID != want[1] || all[1].Sent.IsZero() || !all[0].Sent.IsZero() {
		t.Fatalf("the job's messages, sent or not: %+v, %v", all, err)
	}
	if err := f.j.MarkSent(ctx, "00000000-0000-4000-8000-000000000001"); err == nil {
		t.Error("marking an unknown message sent succeeded")
	}
	// Several at once, in one transaction: an unknown one among them marks none.
	if err := f.j.MarkSent(ctx, want[0], "00000000-0000-4000-8000-000000000001"); err == nil {
		t.Error("marking an unknown message sent among others succeeded")
	}
	if got := ids(); !slices.Equal(got, []string{want[0], want[2], want[3]}) {
		t.Fatalf("after a failed marking of several: %v", got)
	}
	if err := f.j.MarkSent(ctx, want[0], want[2]); err != nil {
		t.Fatal(err)
	}
	if got := ids(); !slices.Equal(got, []string{want[3]}) {
		t.Fatalf("after marking two sent at once: %v", got)
	}
	// A message the coordinator would refuse never enters the outbox, nor does its change.
	bad := progress(t, ref, protocol.StepKeyGenerated) // key_generated needs a key
	if err := f.j.Update(ctx, ref, Change{Step: "bad", StepStatus: StepDone, Outbox: []*protocol.Envelope{bad}}); err == nil {
		t.Fatal("an invalid message was journalled")
	}
	if job, _ := f.j.Job(ctx, ref); job.Step == "bad" {
		t.Fatal("the change went in without its message")
	}
}

func TestFileModesAndDurabilitySettings(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ref := protocol.JobRef{JobID: "job-7", Attempt: 1}
	expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, ref, "86420975")))
	for _, suffix := range []string{"", "-wal", "-shm"} {
		st, err := os.Stat(f.path + suffix)
		if err != nil {
			t.Fatalf("%s: %v", suffix, err)
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("journal%s has mode %04o; others may read it", suffix, perm)
		}
	}
	var sync int
	if err := f.j.db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Errorf("synchronous = %d (%v), want 2 (FULL)", sync, err)
	}
	// A journal file left readable by others is narrowed when opened.
	if err := f.j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f.path, 0o644); err != nil {
		t.Fatal(err)
	}
	f.j = nil
	f.reopen(t)
	if st, _ := os.Stat(f.path); st.Mode().Perm() != 0o600 {
		t.Errorf("reopened journal mode %04o, want 0600", st.Mode().Perm())
	}
}

// TestPINsNeverInTheFile journals dispatch PINs and generated PINs, and searches the
// database and its WAL byte for byte, in every encoding a careless writer might use.
func TestPINsNeverInTheFile(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	pins := []string{"Zq7Kx2Pm9Rt4", "73915264", "Hy5Nw8Bc3Vd6"}
	for i := range 3 {
		ref := protocol.JobRef{JobID: fmt.Sprintf("pin-job-%d", i), Attempt: 1}
		expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, ref, pins[0])))
		if err := f.j.Update(ctx, ref, Change{State: StateRunning, Step: "initialise", StepStatus: StepStarted,
			Secrets: []Secret{{Name: "user_pin", Value: pins[1]}, {Name: "so_pin", Value: pins[2]}}}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			continue // keep one job's secrets live in the file
		}
		if err := f.j.Update(ctx, ref, Change{State: StateDone}); err != nil {
			t.Fatal(err)
		}
	}
	secrets, err := f.j.Secrets(ctx, "pin-job-0")
	if err != nil || len(secrets) != 2 {
		t.Fatalf("secrets %v, %v", secrets, err)
	}
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(f.path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			t.Fatalf("journal%s is empty: nothing was searched", suffix)
		}
		for _, pin := range pins {
			for _, form := range leakForms(pin) {
				if bytes.Contains(data, form) {
					t.Errorf("journal%s contains a PIN (as %q)", suffix, form)
				}
			}
		}
	}
}

func leakForms(pin string) [][]byte {
	return [][]byte{
		[]byte(pin),
		[]byte(base64.StdEncoding.EncodeToString([]byte(pin))),
		[]byte(strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(pin)), "=")),
		[]byte(hex.EncodeToString([]byte(pin))),
	}
}

func TestSecretsAreBoundToTheirNameAndJob(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ref := protocol.JobRef{JobID: "job-8", Attempt: 1}
	expect(t, Accepted)(f.j.RecordDispatch(ctx, dispatch(t, f, ref, "99887766")))
	if err := f.j.Update(ctx, ref, Change{Secrets: []Secret{{Name: "so_pin", Value: "31415926"}, {Name: "user_pin", Value: "27182818"}}}); err != nil {
		t.Fatal(err)
	}
	// Someone with write access swaps the sealed values: the agent must notice, not use
	// the SO PIN as the user PIN.
	if _, err := f.j.db.ExecContext(ctx, `UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE name = 'so_pin')
		WHERE name = 'user_pin'`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.j.Secrets(ctx, ref.JobID); err == nil || !strings.Contains(err.Error(), "sealed under another name") {
		t.Fatalf("swapped secrets: %v", err)
	}
	if err := f.j.Update(ctx, ref, Change{Secrets: []Secret{{Name: "", Value: "x"}}}); err == nil {
		t.Error("a secret without a name was stored")
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	f := newFixture(t)
	if err := f.j.Close(); err != nil {
		t.Fatal(err)
	}
	j, err := Open(ctx, f.path, f.pair, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Close() })

	done := protocol.JobRef{JobID: "old-done", Attempt: 1}
	open := protocol.JobRef{JobID: "old-open", Attempt: 1}
	for _, ref := range []protocol.JobRef{done, open} {
		expect(t, Accepted)(j.RecordDispatch(ctx, dispatch(t, f, ref, "13572468")))
	}
	res := envelope(t, done, protocol.Result{Outcome: protocol.OutcomeFailed, Error: protocol.NewError(protocol.CodeJobCancelled, "x")})
	if err := j.Update(ctx, done, Change{State: StateFailed, Result: res,
		Secrets: []Secret{{Name: "user_pin", Value: "24681357"}}}); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkSent(ctx, res.ID); err != nil {
		t.Fatal(err)
	}
	advance(48 * time.Hour)
	fresh := protocol.JobRef{JobID: "fresh", Attempt: 1}
	expect(t, Accepted)(j.RecordDispatch(ctx, dispatch(t, f, fresh, "13572468")))

	n, err := j.Prune(ctx, now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("nothing pruned")
	}
	jobs, err := j.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, job := range jobs {
		left = append(left, job.Ref.JobID)
	}
	if !slices.Equal(left, []string{"old-open", "fresh"}) {
		t.Fatalf("jobs left %v, want the unfinished one and the fresh one", left)
	}
	if s, _ := j.Secrets(ctx, done.JobID); len(s) != 0 {
		t.Error("secrets of a pruned job are left")
	}
	if out, _ := j.Unsent(ctx, 10); len(out) != 0 {
		t.Errorf("outbox %v", out)
	}
}

// The crash test: a child process journals dispatches and steps, then kills itself with
// SIGKILL, without closing anything. Whatever it committed must be in the file.
const childEnv = "TOKENFLEET_JOURNAL_CRASH_CHILD"

const crashJobs = 20

func crashChild(dir string) int {
	ctx := context.Background()
	pair, err := keys.LoadOrCreate(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	j, err := Open(ctx, filepath.Join(dir, FileName), pair, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pub, _ := seal.ParsePublicKey(pair.PublicKey())
	for i := range crashJobs {
		ref := protocol.JobRef{JobID: fmt.Sprintf("crash-%d", i), Attempt: 1}
		pin, _ := seal.Seal(pub, []byte("55443322"), seal.Binding{JobID: ref.JobID, Attempt: 1, Purpose: protocol.PurposeUserPIN})
		env, _ := protocol.NewEnvelope(agentID, ref, protocol.JobDispatch{
			Kind: protocol.KindIssue, Deadline: time.Now().Add(time.Hour).UTC(),
			Token: protocol.TokenSelector{Serial: "0123456789abcdef"},
			Key:   &protocol.KeyParams{Type: protocol.KeyP256, ID: protocol.DeriveKeyID(ref.JobID)},
			PINs:  &protocol.SealedPINs{UserPIN: pin},
		})
		if _, err := j.RecordDispatch(ctx, env); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		p, _ := protocol.NewEnvelope(agentID, ref, protocol.Progress{Step: protocol.StepTokenFound})
		if err := j.Update(ctx, ref, Change{State: StateRunning, Step: "token", StepStatus: StepDone,
			Secrets: []Secret{{Name: "user_pin", Value: "99000011"}}, Outbox: []*protocol.Envelope{p}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	// Say everything is committed, then die the hard way.
	fmt.Println("committed")
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

func TestCommittedWorkSurvivesAKill(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != -1 || !strings.Contains(string(out), "committed") {
		t.Fatalf("child: %v, stdout %q, stderr %s", err, out, stderr.String())
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v", ee)
	}
	pair, err := keys.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	j, err := Open(ctx, filepath.Join(dir, FileName), pair, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Close() })
	pending, err := j.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != crashJobs {
		t.Fatalf("%d jobs after the crash, want %d", len(pending), crashJobs)
	}
	for _, job := range pending {
		if job.State != StateRunning || job.Step != "token" || job.StepStatus != StepDone {
			t.Errorf("job %s after the crash: %s %s %s", job.Ref.JobID, job.State, job.Step, job.StepStatus)
		}
		s, err := j.Secrets(ctx, job.Ref.JobID)
		if err != nil || len(s) != 1 || s[0].Value != "99000011" {
			t.Errorf("secrets of %s: %v, %v", job.Ref.JobID, s, err)
		}
	}
	if out, _ := j.Unsent(ctx, 100); len(out) != crashJobs {
		t.Errorf("%d outbox messages after the crash, want %d", len(out), crashJobs)
	}
}
