//go:build cgo

package executor

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/faults"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// Every test runs against a private SoftHSM2 store. SoftHSM sees tokens made by another
// process (softhsm2-util, a crashed agent) only after C_Initialize, so a test makes such
// tokens before it opens the module, and closes the module when it ends (the last Close
// finalizes it). Tests do not run in parallel.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(crashChild())
	}
	os.Exit(testenv.MainWithSoftHSM(m))
}

const testAgent = "ws-test-01"

// waitFor bounds every wait of these tests; the work itself takes well under a second.
const waitFor = 90 * time.Second

var labels atomic.Int64

// newLabel is a token label unique in this run (tokens stay in the store between tests).
func newLabel(t testing.TB) string {
	name := strings.NewReplacer("/", "-", " ", "-", "_", "-").Replace(t.Name())
	name = strings.TrimPrefix(name, "Test")
	if len(name) > 22 {
		name = name[:22]
	}
	return fmt.Sprintf("%s-%d", name, labels.Add(1))
}

// syncBuffer collects log lines from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// coordinator plays the coordinator's part: it reads the agent's outbox, signs CSRs with
// the test CA and delivers the certificates, and keeps every message it saw. Its result
// key is what the agent seals generated PINs to.
type coordinator struct {
	key     *ecdh.PrivateKey
	ca      *testenv.CA
	agent   *keys.Pair
	deliver bool

	mu   sync.Mutex // guards the fields below
	seen []*protocol.Envelope
	// kinds of the jobs dispatched, to deliver certificates only to jobs that take them.
	kinds map[string]protocol.JobKind
	// marked counts the MarkSent calls that succeeded: a journal commit each.
	marked uint64
}

func newCoordinator(agent *keys.Pair, ca *testenv.CA, key *ecdh.PrivateKey) *coordinator {
	return &coordinator{key: key, ca: ca, agent: agent, deliver: true, kinds: map[string]protocol.JobKind{}}
}

func (c *coordinator) resultKey() []byte {
	der, err := seal.MarshalPublicKey(c.key.PublicKey())
	if err != nil {
		panic(err)
	}
	return der
}

// sealToAgent seals a PIN for a dispatch, as the coordinator does.
func (c *coordinator) sealToAgent(ref protocol.JobRef, purpose protocol.SealPurpose, pin string) *protocol.Sealed {
	pub, err := seal.ParsePublicKey(c.agent.PublicKey())
	if err != nil {
		panic(err)
	}
	s, err := seal.Seal(pub, []byte(pin), seal.Binding{JobID: ref.JobID, Attempt: ref.Attempt, Purpose: purpose})
	if err != nil {
		panic(err)
	}
	return s
}

// openPIN opens a PIN of a result with the coordinator's key.
func (c *coordinator) openPIN(ref protocol.JobRef, s *protocol.Sealed, purpose protocol.SealPurpose) (string, error) {
	pin, err := seal.Open(c.key, s, seal.Binding{JobID: ref.JobID, Attempt: ref.Attempt, Purpose: purpose})
	return string(pin), err
}

func (c *coordinator) envelope(ref protocol.JobRef, body protocol.Body) *protocol.Envelope {
	env, err := protocol.NewEnvelope(testAgent, ref, body)
	if err != nil {
		panic(err)
	}
	return env
}

func (c *coordinator) dispatch(ref protocol.JobRef, d protocol.JobDispatch) *protocol.Envelope {
	c.mu.Lock()
	c.kinds[ref.JobID] = d.Kind
	c.mu.Unlock()
	if d.Deadline.IsZero() {
		d.Deadline = time.Now().Add(10 * time.Minute).UTC()
	}
	return c.envelope(ref, d)
}

// poll takes the unsent messages of the outbox, acting on CSRs, and marks them sent.
func (c *coordinator) poll(ctx context.Context, j *journal.Journal, ex *Executor) error {
	out, err := j.Unsent(ctx, 100)
	if err != nil {
		return err
	}
	for _, o := range out {
		env, err := protocol.Decode(o.Data)
		if err != nil {
			return fmt.Errorf("the agent sent a message the coordinator refuses: %w\n%s", err, o.Data)
		}
		if env.AgentID != testAgent {
			return fmt.Errorf("message from agent %q", env.AgentID)
		}
		c.mu.Lock()
		c.seen = append(c.seen, env)
		kind := c.kinds[env.JobID]
		c.mu.Unlock()
		if env.Type == protocol.TypeCSR && c.deliver && (kind == protocol.KindIssue || kind == protocol.KindRenew) {
			if err := c.deliverFor(ctx, env, ex); err != nil {
				return err
			}
		}
		if err := j.MarkSent(ctx, o.ID); err != nil {
			return err
		}
		c.mu.Lock()
		c.marked++
		c.mu.Unlock()
	}
	return nil
}

// markCommits is how many journal commits marking messages sent has taken.
func (c *coordinator) markCommits() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.marked
}

func (c *coordinator) deliverFor(ctx context.Context, env *protocol.Envelope, ex *Executor) error {
	sub, err := protocol.DecodeBody[protocol.CSRSubmission](env)
	if err != nil {
		return err
	}
	der, err := c.ca.Sign(sub.CSR, "holder of "+env.JobID)
	if err != nil {
		return err
	}
	d := protocol.CertificateDelivery{KeyID: sub.KeyID, Certificates: protocol.CertificateChain{
		Certificate: der, Chain: [][]byte{c.ca.Cert.Raw}, Label: "signing"}}
	_, err = ex.DeliverCertificate(ctx, c.envelope(env.Job(), d), d)
	return err
}

// messages returns the messages seen for an attempt, in order.
func (c *coordinator) messages(ref protocol.JobRef) []*protocol.Envelope {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*protocol.Envelope
	for _, e := range c.seen {
		if e.Job() == ref {
			out = append(out, e)
		}
	}
	return out
}

func (c *coordinator) all() []*protocol.Envelope {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seen)
}

// trace summarises an attempt's messages: "progress:token_found", "csr", "result:failed".
func trace(envs []*protocol.Envelope) []string {
	var out []string
	for _, e := range envs {
		switch e.Type {
		case protocol.TypeProgress:
			p, _ := protocol.DecodeBody[protocol.Progress](e)
			out = append(out, "progress:"+string(p.Step))
		case protocol.TypeResult:
			r, _ := protocol.DecodeBody[protocol.Result](e)
			out = append(out, "result:"+string(r.Outcome))
		default:
			out = append(out, string(e.Type))
		}
	}
	return out
}

// agent is an executor over a journal and the SoftHSM2 module, running.
type agent struct {
	t     *testing.T
	dir   string
	pair  *keys.Pair
	j     *journal.Journal
	mod   *pkcs11.Module
	inj   *faults.Injector
	ex    *Executor
	logs  *syncBuffer
	coord *coordinator
	stop  func()
	// cancel asks Run to stop without waiting for it (stop waits).
	cancel func()
}

type agentOptions struct {
	dir     string // reuse a data directory (restart); empty for a fresh one
	coord   *coordinator
	factory FactoryPINs
	now     func() time.Time
	noRun   bool // do not start Run
	inj     *faults.Injector
	poll    time.Duration // how often a job waiting for a token looks; 0 for 20ms
	obs     Observer      // hears how jobs end and token steps take; nil for none
}

func newAgent(t *testing.T, o agentOptions) *agent {
	t.Helper()
	ctx := context.Background()
	a := &agent{t: t, dir: o.dir, logs: &syncBuffer{}, inj: o.inj}
	if a.dir == "" {
		a.dir = t.TempDir()
	}
	if a.inj == nil {
		a.inj = &faults.Injector{}
	}
	log := zerolog.New(a.logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	var err error
	if a.pair, err = keys.LoadOrCreate(a.dir); err != nil {
		t.Fatal(err)
	}
	if a.j, err = journal.Open(ctx, filepath.Join(a.dir, journal.FileName), a.pair, journal.Options{Log: log}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.j.Close() })
	if a.mod, err = pkcs11.Open(testenv.SoftHSMModule, pkcs11.Options{Logger: log, Wrap: a.inj.Wrap}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.mod.Close(); err != nil {
			t.Errorf("close module: %v", err)
		}
	})
	a.coord = o.coord
	if a.coord == nil {
		ca, err := testenv.NewCA("tokenfleet test issuing CA")
		if err != nil {
			t.Fatal(err)
		}
		key, err := seal.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		a.coord = newCoordinator(a.pair, ca, key)
	}
	a.coord.agent = a.pair
	tokens := ModuleTokens{Module: a.mod}
	if o.poll == 0 {
		o.poll = 20 * time.Millisecond
	}
	a.ex, err = New(Config{
		AgentID: testAgent, Journal: a.j, Keys: a.pair, Tokens: tokens, FactoryPINs: o.factory,
		Inventory:    NewInventory(inventoryOptions(), tokens, log),
		PollInterval: o.poll, Now: o.now, Log: log, Observer: o.obs,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !o.noRun {
		a.start()
	}
	return a
}

// start runs the executor until the test ends (or stop is called).
func (a *agent) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ex.Run(ctx) }()
	a.cancel = cancel
	var once sync.Once
	a.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					a.t.Errorf("Run: %v", err)
				}
			case <-time.After(waitFor):
				a.t.Fatal("the executor did not stop")
			}
		})
	}
	a.t.Cleanup(a.stop)
}

func (a *agent) submit(env *protocol.Envelope) journal.Receipt {
	a.t.Helper()
	rc, err := a.ex.Submit(context.Background(), env)
	if err != nil {
		a.t.Fatalf("Submit: %v", err)
	}
	return rc
}

// until polls the outbox (as the coordinator) until cond holds, failing the test after
// waitFor.
func (a *agent) until(what string, cond func() bool) {
	a.t.Helper()
	a.within(waitFor, what, cond)
}

// within is until with a bound of its own, for tests of how fast the agent reacts.
func (a *agent) within(bound time.Duration, what string, cond func() bool) {
	a.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(bound)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := a.coord.poll(ctx, a.j, a.ex); err != nil {
			a.t.Fatalf("coordinator: %v", err)
		}
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("timed out after %s waiting for %s; messages so far: %v\nlog tail:\n%s", bound, what, trace(a.coord.all()), tail(a.logs.Bytes(), 4000))
		}
		select {
		case <-a.j.Notify():
		case <-tick.C:
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// result waits for the attempt's result.
func (a *agent) result(ref protocol.JobRef) protocol.Result {
	a.t.Helper()
	return a.resultWithin(waitFor, ref)
}

// resultWithin waits for the attempt's result, failing the test after bound.
func (a *agent) resultWithin(bound time.Duration, ref protocol.JobRef) protocol.Result {
	a.t.Helper()
	var res *protocol.Result
	a.within(bound, fmt.Sprintf("the result of %s attempt %d", ref.JobID, ref.Attempt), func() bool {
		for _, e := range a.coord.messages(ref) {
			if e.Type == protocol.TypeResult {
				r, err := protocol.DecodeBody[protocol.Result](e)
				if err != nil {
					a.t.Fatal(err)
				}
				res = &r
				return true
			}
		}
		return false
	})
	return *res
}

// step waits until the attempt reported the step.
func (a *agent) step(ref protocol.JobRef, s protocol.Step) {
	a.t.Helper()
	a.until(fmt.Sprintf("step %s of %s", s, ref.JobID), func() bool {
		return slices.Contains(trace(a.coord.messages(ref)), "progress:"+string(s))
	})
}

func (a *agent) state(ref protocol.JobRef) journal.State {
	a.t.Helper()
	job, err := a.j.Job(context.Background(), ref)
	if err != nil {
		a.t.Fatal(err)
	}
	return job.State
}

func wantSuccess(t *testing.T, r protocol.Result) {
	t.Helper()
	if r.Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("job failed: %+v", r.Error)
	}
}

func wantFailure(t *testing.T, r protocol.Result, code protocol.ErrorCode, retryable bool) {
	t.Helper()
	if r.Outcome != protocol.OutcomeFailed || r.Error == nil {
		t.Fatalf("outcome %s, want a failure with %s", r.Outcome, code)
	}
	if r.Error.Code != code || r.Error.Retryable != retryable {
		t.Fatalf("failure %s (retryable %t): %s; want %s (retryable %t)", r.Error.Code, r.Error.Retryable, r.Error.Message, code, retryable)
	}
}

// pins opens the PINs of a result.
func (a *agent) pins(ref protocol.JobRef, r protocol.Result) (user, so string) {
	a.t.Helper()
	if r.Outputs == nil || r.Outputs.PINs == nil {
		a.t.Fatalf("the result carries no PINs: %+v", r.Outputs)
	}
	var err error
	if p := r.Outputs.PINs.UserPIN; p != nil {
		if user, err = a.coord.openPIN(ref, p, protocol.PurposeUserPIN); err != nil {
			a.t.Fatalf("open the user PIN: %v", err)
		}
	}
	if p := r.Outputs.PINs.SOPIN; p != nil {
		if so, err = a.coord.openPIN(ref, p, protocol.PurposeSOPIN); err != nil {
			a.t.Fatalf("open the SO PIN: %v", err)
		}
	}
	return user, so
}

// slotOf finds the slot the token with the serial is in now.
func (a *agent) slotOf(serial string) uint {
	a.t.Helper()
	slots, err := a.mod.Slots(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	for _, s := range slots {
		if s.Token != nil && s.Token.Serial == serial {
			return s.ID
		}
	}
	a.t.Fatalf("no token with serial %s", serial)
	return 0
}

// insertAll puts back every token the injector pulled out (a token initialised during a
// job has no slot known to the test in advance).
func (a *agent) insertAll() {
	a.t.Helper()
	slots, err := a.mod.Slots(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	for _, s := range slots {
		a.inj.Insert(s.ID)
	}
}

// initToken makes a token with softhsm2-util (a tool nobody here wrote). Call it before
// newAgent: the module sees it only when initialised afterwards.
func initToken(t *testing.T, soPIN, userPIN string) (label, serial string) {
	t.Helper()
	label = newLabel(t)
	return label, testenv.InitToken(t, label, soPIN, userPIN)
}

// objects lists, with OpenSC's pkcs11-tool, the objects on the token logged in with the
// PIN: kind ("Private Key", "Public Key", "Certificate") and hex ID of each.
func objects(t *testing.T, label, pin string) []string {
	t.Helper()
	out := testenv.PKCS11Tool(t, "--token-label", label, "--login", "--pin", pin, "--list-objects")
	var objs []string
	kind := ""
	for _, line := range strings.Split(out, "\n") {
		if k, _, ok := strings.Cut(line, " Object;"); ok && !strings.HasPrefix(line, " ") {
			kind = k
			objs = append(objs, kind+" ")
			continue
		}
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "ID:"); ok && len(objs) > 0 {
			objs[len(objs)-1] = kind + " " + strings.TrimSpace(id)
		}
	}
	slices.Sort(objs)
	return objs
}

// countObjects counts the objects of a kind with the ID.
func countObjects(objs []string, kind, id string) int {
	n := 0
	for _, o := range objs {
		if o == kind+" "+id {
			n++
		}
	}
	return n
}

// wantOneKeyAndCertificate checks with pkcs11-tool that the token holds exactly one
// private key, and one certificate, under the job's key ID, and no other private key.
func wantOneKeyAndCertificate(t *testing.T, label, pin, keyID string) {
	t.Helper()
	objs := objects(t, label, pin)
	priv, certs := countObjects(objs, "Private Key", keyID), countObjects(objs, "Certificate", keyID)
	others := 0
	for _, o := range objs {
		if strings.HasPrefix(o, "Private Key ") && o != "Private Key "+keyID {
			others++
		}
	}
	if priv != 1 || certs != 1 || others != 0 {
		t.Fatalf("token %s holds %d private keys and %d certificates with ID %s, and %d other private keys; want 1, 1, 0:\n%s",
			label, priv, certs, keyID, others, strings.Join(objs, "\n"))
	}
}

// soPINWorks checks an SO PIN with pkcs11-tool, setting the user PIN to what it is.
func soPINWorks(label, soPIN, userPIN string) error {
	_, err := testenv.RunErr("pkcs11-tool", "--module", testenv.SoftHSMModule, "--token-label", label,
		"--login", "--login-type", "so", "--so-pin", soPIN, "--init-pin", "--new-pin", userPIN)
	return err
}

func userPINWorks(label, pin string) error {
	_, err := testenv.RunErr("pkcs11-tool", "--module", testenv.SoftHSMModule, "--token-label", label,
		"--login", "--pin", pin, "--list-objects")
	return err
}

func policy(n int, digitsOnly bool) *protocol.PINPolicy {
	return &protocol.PINPolicy{MinLength: n, MaxLength: n + 4, DigitsOnly: digitsOnly}
}

func keyID(jobID string) string { return protocol.DeriveKeyID(jobID) }
