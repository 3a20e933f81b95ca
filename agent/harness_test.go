package agent_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// Every test runs against a SoftHSM2 store of its own (testenv.NewSoftHSMStore, first
// thing) and its own RabbitMQ vhost: a hello carries at most protocol.MaxTokens tokens, so
// tokens earlier tests left in a shared store would push out the ones a test looks for.
// SoftHSM sees tokens another process made (softhsm2-util, an agent binary) only when the
// module is initialised again: tests make such tokens before they start an in-process
// agent, and an agent closing its modules finalizes the library. Tests do not run in
// parallel.
func TestMain(m *testing.M) { os.Exit(testenv.MainWithSoftHSM(m)) }

// waitLimit bounds every wait; the work itself takes a second or two.
const waitLimit = 60 * time.Second

var labels atomic.Int64

// newLabel is a token label unique in this run (tokens stay in the store between tests).
func newLabel(t testing.TB) string {
	name := strings.TrimPrefix(t.Name(), "Test")
	if len(name) > 20 {
		name = name[:20]
	}
	return fmt.Sprintf("%s-%d", name, labels.Add(1))
}

func newTestLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
}

func newAgentID(t testing.TB) string { return testenv.UniqueUser("ws-") }

// logBuffer collects log lines from many goroutines and lets a test wait for one.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until a log line holds every part.
func (b *logBuffer) waitFor(t testing.TB, parts ...string) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		changed := b.changed
		for _, line := range strings.Split(b.buf.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				b.mu.Unlock()
				return
			}
		}
		b.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no log line with %q; log:\n%s", parts, tail(b.String(), 6000))
		}
	}
}

func withoutDebug(log string) string {
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `"level":"debug"`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// testCA is the issuing CA, standing in for the coordinator's.
func newCA(t testing.TB) *testenv.CA {
	t.Helper()
	ca, err := testenv.NewCA("tokenfleet agent test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// event is a message the coordinator consumed, in the wire form it was re-encoded to.
type event struct {
	env    *protocol.Envelope
	wire   []byte
	userID string
}

// coordinator plays the coordinator's part on the broker: it declares the shared
// topology, consumes the events and heartbeats queues, publishes commands, and signs CSRs
// with its test CA (delivering the certificate at once when autoSign is on).
type coordinator struct {
	t         *testing.T
	broker    *testenv.Broker
	conn      *amqp.Conn
	ca        *testenv.CA
	resultKey *ecdh.PrivateKey
	autoSign  atomic.Bool

	mu         sync.Mutex // guards the fields below
	events     []event
	heartbeats []*protocol.Envelope
	signed     map[protocol.JobRef]bool
	changed    chan struct{} // closed and replaced on every message
}

func newCoordinator(t *testing.T, b *testenv.Broker, senders amqp.SenderCheck) *coordinator {
	t.Helper()
	key, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := &coordinator{t: t, broker: b, ca: newCA(t), resultKey: key, signed: map[protocol.JobRef]bool{}, changed: make(chan struct{})}
	c.autoSign.Store(true)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("side", "coordinator").Logger()
	conn, err := amqp.Open(context.Background(), amqp.Config{URL: b.URL, Name: "scripted coordinator",
		Topology: amqp.DeclareShared, Backoff: fastBackoff, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c.conn = conn
	// The consumers live until the test ends; they are closed before the connection.
	ctx := context.Background()
	for queue, h := range map[string]amqp.Handler{protocol.EventsQueue: c.onEvent, protocol.HeartbeatsQueue: c.onHeartbeat} {
		cons, err := conn.Consume(ctx, queue, amqp.ConsumeOptions{Senders: senders}, h)
		if err != nil {
			t.Fatalf("consuming %s: %v", queue, err)
		}
		t.Cleanup(cons.Close)
	}
	return c
}

var fastBackoff = amqp.Backoff{Min: 20 * time.Millisecond, Max: 300 * time.Millisecond}

func (c *coordinator) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *coordinator) onEvent(ctx context.Context, d *amqp.Delivery) amqp.Outcome {
	wire, err := protocol.Encode(d.Envelope)
	if err != nil {
		return amqp.Reject(err)
	}
	c.mu.Lock()
	c.events = append(c.events, event{env: d.Envelope, wire: wire, userID: d.UserID})
	ref := d.Envelope.Job()
	sign := d.Envelope.Type == protocol.TypeCSR && c.autoSign.Load() && !c.signed[ref]
	if sign {
		c.signed[ref] = true
	}
	c.notifyLocked()
	c.mu.Unlock()
	if sign {
		if err := c.deliverFor(ctx, d.Envelope); err != nil {
			return amqp.Retry(err)
		}
	}
	return amqp.Ack()
}

func (c *coordinator) onHeartbeat(_ context.Context, d *amqp.Delivery) amqp.Outcome {
	c.mu.Lock()
	c.heartbeats = append(c.heartbeats, d.Envelope)
	c.notifyLocked()
	c.mu.Unlock()
	return amqp.Ack()
}

// deliverFor signs the CSR of a csr message and sends the certificate to its agent.
func (c *coordinator) deliverFor(ctx context.Context, csrEnv *protocol.Envelope) error {
	sub, err := protocol.DecodeBody[protocol.CSRSubmission](csrEnv)
	if err != nil {
		return err
	}
	der, err := c.ca.Sign(sub.CSR, "holder of "+csrEnv.JobID)
	if err != nil {
		return err
	}
	env, err := protocol.NewEnvelope(csrEnv.AgentID, csrEnv.Job(), protocol.CertificateDelivery{KeyID: sub.KeyID,
		Certificates: protocol.CertificateChain{Certificate: der, Chain: [][]byte{c.ca.Cert.Raw}, Label: "signing"}})
	if err != nil {
		return err
	}
	return c.publishCtx(ctx, env)
}

// publish sends a command, again after a lost confirm (the agent dedupes on the ID).
func (c *coordinator) publish(env *protocol.Envelope) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := c.publishCtx(ctx, env); err != nil {
		c.t.Fatalf("publishing %s: %v", env.Type, err)
	}
}

func (c *coordinator) publishCtx(ctx context.Context, env *protocol.Envelope) error {
	for {
		err := c.conn.PublishCommand(ctx, env)
		if err == nil || ctx.Err() != nil || (!errors.Is(err, amqp.ErrUnconfirmed) && !errors.Is(err, amqp.ErrNacked)) {
			return err
		}
	}
}

// deliverCertificate signs the job's CSR (the last one received) and delivers it.
func (c *coordinator) deliverCertificate(ref protocol.JobRef) {
	c.t.Helper()
	csr := c.waitMessage(ref, protocol.TypeCSR, "")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := c.deliverFor(ctx, csr); err != nil {
		c.t.Fatalf("delivering the certificate: %v", err)
	}
}

// until waits until cond holds, checking it after each message.
func (c *coordinator) until(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			c.t.Fatalf("timed out waiting for %s; events so far: %v", what, c.trace(protocol.JobRef{}))
		}
	}
}

// messages returns the events of an attempt (every event for the zero JobRef), in order.
func (c *coordinator) messages(ref protocol.JobRef) []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []event
	for _, e := range c.events {
		if ref == (protocol.JobRef{}) || e.env.Job() == ref {
			out = append(out, e)
		}
	}
	return out
}

// trace summarises events: "hello", "progress:token_found", "result:succeeded". A message
// delivered again (at least once: same message ID) counts once, as the coordinator dedupes.
func (c *coordinator) trace(ref protocol.JobRef) []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range c.messages(ref) {
		if !seen[e.env.ID] {
			seen[e.env.ID] = true
			out = append(out, describe(e.env))
		}
	}
	return out
}

func describe(env *protocol.Envelope) string {
	switch env.Type {
	case protocol.TypeProgress:
		p, _ := protocol.DecodeBody[protocol.Progress](env)
		return "progress:" + string(p.Step)
	case protocol.TypeResult:
		r, _ := protocol.DecodeBody[protocol.Result](env)
		return "result:" + string(r.Outcome)
	}
	return string(env.Type)
}

// waitMessage waits for an event of the attempt with the type and, for progress, step.
func (c *coordinator) waitMessage(ref protocol.JobRef, typ protocol.MessageType, step protocol.Step) *protocol.Envelope {
	c.t.Helper()
	want := string(typ)
	if step != "" {
		want += ":" + string(step)
	}
	var found *protocol.Envelope
	c.until(fmt.Sprintf("%s of %s", want, ref.JobID), func() bool {
		for _, e := range c.messages(ref) {
			if e.env.Type == typ && (step == "" || describe(e.env) == want) {
				found = e.env
			}
		}
		return found != nil
	})
	return found
}

// result waits for the attempt's result and checks it is the only one: results may be
// delivered twice (same message ID) but never made twice.
func (c *coordinator) result(ref protocol.JobRef) (*protocol.Envelope, protocol.Result) {
	c.t.Helper()
	env := c.waitMessage(ref, protocol.TypeResult, "")
	ids := map[string]bool{}
	for _, e := range c.messages(ref) {
		if e.env.Type == protocol.TypeResult {
			ids[e.env.ID] = true
		}
	}
	if len(ids) != 1 {
		c.t.Fatalf("%d results for %s attempt %d, want exactly one", len(ids), ref.JobID, ref.Attempt)
	}
	r, err := protocol.DecodeBody[protocol.Result](env)
	if err != nil {
		c.t.Fatal(err)
	}
	return env, r
}

// hello waits for a hello of the agent that cond accepts and returns it.
func (c *coordinator) hello(agentID string, cond func(protocol.Hello) bool) protocol.Hello {
	c.t.Helper()
	var h protocol.Hello
	c.until("a hello from "+agentID, func() bool {
		for _, e := range c.messages(protocol.JobRef{}) {
			if e.env.Type != protocol.TypeHello || e.env.AgentID != agentID {
				continue
			}
			got, err := protocol.DecodeBody[protocol.Hello](e.env)
			if err != nil {
				c.t.Fatal(err)
			}
			if cond == nil || cond(got) {
				h = got
				return true
			}
		}
		return false
	})
	return h
}

func (c *coordinator) countHellos(agentID string) int {
	n := 0
	for _, e := range c.messages(protocol.JobRef{}) {
		if e.env.Type == protocol.TypeHello && e.env.AgentID == agentID {
			n++
		}
	}
	return n
}

func (c *coordinator) heartbeatsOf(agentID string) []protocol.Heartbeat {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []protocol.Heartbeat
	for _, env := range c.heartbeats {
		if env.AgentID == agentID {
			hb, err := protocol.DecodeBody[protocol.Heartbeat](env)
			if err != nil {
				c.t.Fatal(err)
			}
			out = append(out, hb)
		}
	}
	return out
}

// sealToAgent seals a PIN for a dispatch to the key the agent announced in its hello.
func (c *coordinator) sealToAgent(h protocol.Hello, ref protocol.JobRef, purpose protocol.SealPurpose, pin string) *protocol.Sealed {
	c.t.Helper()
	pub, err := seal.ParsePublicKey(h.SealKey)
	if err != nil {
		c.t.Fatalf("the hello's seal key: %v", err)
	}
	s, err := seal.Seal(pub, []byte(pin), seal.Binding{JobID: ref.JobID, Attempt: ref.Attempt, Purpose: purpose})
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

func (c *coordinator) resultKeyDER() []byte {
	der, err := seal.MarshalPublicKey(c.resultKey.PublicKey())
	if err != nil {
		c.t.Fatal(err)
	}
	return der
}

// openPINs opens the PINs a result carries.
func (c *coordinator) openPINs(ref protocol.JobRef, r protocol.Result) (user, so string) {
	c.t.Helper()
	if r.Outputs == nil || r.Outputs.PINs == nil {
		c.t.Fatalf("the result carries no PINs: %+v", r.Outputs)
	}
	open := func(s *protocol.Sealed, p protocol.SealPurpose) string {
		if s == nil {
			return ""
		}
		pin, err := seal.Open(c.resultKey, s, seal.Binding{JobID: ref.JobID, Attempt: ref.Attempt, Purpose: p})
		if err != nil {
			c.t.Fatalf("opening the %s: %v", p, err)
		}
		return string(pin)
	}
	return open(r.Outputs.PINs.UserPIN, protocol.PurposeUserPIN), open(r.Outputs.PINs.SOPIN, protocol.PurposeSOPIN)
}

// dispatch sends an attempt of a job to the agent.
func (c *coordinator) dispatch(agentID string, ref protocol.JobRef, d protocol.JobDispatch) {
	c.t.Helper()
	if d.Deadline.IsZero() {
		d.Deadline = time.Now().Add(10 * time.Minute).UTC()
	}
	env, err := protocol.NewEnvelope(agentID, ref, d)
	if err != nil {
		c.t.Fatal(err)
	}
	c.publish(env)
}

// issueBlank is an issue job that initialises the blank token, with PINs made by the agent.
func (c *coordinator) issueBlank(ref protocol.JobRef, label string) protocol.JobDispatch {
	return protocol.JobDispatch{
		Kind: protocol.KindIssue, Profile: "signature",
		Token: protocol.TokenSelector{Blank: true}, Initialise: true, TokenLabel: label,
		PINPolicy: &protocol.PINPolicy{MinLength: 12, MaxLength: 16},
		Key:       &protocol.KeyParams{Type: protocol.KeyP256, ID: protocol.DeriveKeyID(ref.JobID), Label: "signing"},
		ResultKey: c.resultKeyDER(),
	}
}

// csrJob makes a key and a CSR on the token with the label, logging in with the user PIN.
func (c *coordinator) csrJob(h protocol.Hello, ref protocol.JobRef, label, userPIN string) protocol.JobDispatch {
	return protocol.JobDispatch{
		Kind: protocol.KindCSR, Profile: "signature",
		Token: protocol.TokenSelector{URI: "pkcs11:token=" + label},
		Key:   &protocol.KeyParams{Type: protocol.KeyP256, ID: protocol.DeriveKeyID(ref.JobID), Label: "signing"},
		PINs:  &protocol.SealedPINs{UserPIN: c.sealToAgent(h, ref, protocol.PurposeUserPIN, userPIN)},
	}
}

// wantNoSecret fails if a secret shows in any log or in any message the coordinator got.
func (c *coordinator) wantNoSecret(logs string, secrets ...string) {
	c.t.Helper()
	for _, s := range secrets {
		if s == "" {
			c.t.Fatal("an empty secret cannot be looked for")
		}
		if strings.Contains(logs, s) {
			c.t.Errorf("a PIN appears in the agent's log")
		}
		for _, e := range c.messages(protocol.JobRef{}) {
			if bytes.Contains(e.wire, []byte(s)) {
				c.t.Errorf("a PIN appears in clear in a %s message", e.env.Type)
			}
		}
	}
}

// runningAgent is an in-process agent.
type runningAgent struct {
	id   string
	dir  string
	a    *agent.Agent
	logs *logBuffer
	stop func() error

	mu       sync.Mutex // guards statuses
	statuses []string
}

type agentOptions struct {
	id, dir, url string
	queue        agent.QueueMode
	// The seams (agent.Config.Dial, OpenModule); noModules leaves Config.Modules empty.
	dial       func(context.Context, amqp.Config) (agent.Transport, error)
	openModule func(string, pkcs11.Options) (*pkcs11.Module, error)
	noModules  bool
}

func (r *runningAgent) status() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.statuses)
}

// startAgent runs an agent against the broker (or opts.url) with the SoftHSM2 module until
// the test ends or stop is called.
func startAgent(t *testing.T, b *testenv.Broker, o agentOptions) *runningAgent {
	t.Helper()
	r := &runningAgent{id: o.id, dir: o.dir, logs: newLogBuffer()}
	if r.id == "" {
		r.id = newAgentID(t)
	}
	if r.dir == "" {
		r.dir = t.TempDir()
	}
	url := o.url
	if url == "" {
		url = b.URL
	}
	log := zerolog.New(r.logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	ready := make(chan struct{})
	modules := []string{testenv.SoftHSMModule}
	if o.noModules {
		modules = nil
	}
	a, err := agent.New(agent.Config{
		ID: r.id, DataDir: r.dir, Modules: modules, Dial: o.dial, OpenModule: o.openModule,
		Broker:       agent.Broker{URL: url, Backoff: fastBackoff, Queue: o.queue},
		PollInterval: 50 * time.Millisecond, HeartbeatInterval: 200 * time.Millisecond, ShutdownGrace: 5 * time.Second,
		Ready: func() { close(ready) },
		Status: func(s string) {
			r.mu.Lock()
			r.statuses = append(r.statuses, s)
			r.mu.Unlock()
		},
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	r.a = a
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	var runErr error
	r.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(waitLimit):
				t.Fatalf("the agent did not stop; log:\n%s", tail(r.logs.String(), 4000))
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("agent %s: Run: %v", r.id, err)
		}
		if t.Failed() {
			t.Logf("log of agent %s, without debug lines:\n%s", r.id, tail(withoutDebug(r.logs.String()), 8000))
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("the agent ended before it was ready: %v\n%s", err, r.logs.String())
	case <-time.After(waitLimit):
		t.Fatal("the agent did not get ready")
	}
	return r
}

// initToken makes a token with softhsm2-util, a tool nobody here wrote. Call it before an
// in-process agent starts: its module sees the token only when initialised afterwards.
func initToken(t *testing.T, soPIN, userPIN string) (label, serial string) {
	t.Helper()
	label = newLabel(t)
	return label, testenv.InitToken(t, label, soPIN, userPIN)
}

// objects lists, with OpenSC's pkcs11-tool, the objects on the token: a line per object
// ("Private Key <id>", "Certificate <id>", ...) and the access line of each private key.
func objects(t *testing.T, label, pin string) (objs []string, privateAccess []string) {
	t.Helper()
	out := testenv.PKCS11Tool(t, "--token-label", label, "--login", "--pin", pin, "--list-objects")
	kind := ""
	for _, line := range strings.Split(out, "\n") {
		if k, _, ok := strings.Cut(line, " Object;"); ok && !strings.HasPrefix(line, " ") {
			kind = k
			objs = append(objs, kind+" ")
			continue
		}
		trimmed := strings.TrimSpace(line)
		if id, ok := strings.CutPrefix(trimmed, "ID:"); ok && len(objs) > 0 {
			objs[len(objs)-1] = kind + " " + strings.TrimSpace(id)
		}
		if access, ok := strings.CutPrefix(trimmed, "Access:"); ok && kind == "Private Key" {
			privateAccess = append(privateAccess, strings.TrimSpace(access))
		}
	}
	slices.Sort(objs)
	return objs, privateAccess
}

// wantOneKeyAndCertificate checks with pkcs11-tool that the token holds one private key,
// sensitive and never extractable, and one certificate, both under the job's key ID, and
// that the certificate is the one the coordinator issued.
func wantOneKeyAndCertificate(t *testing.T, label, pin, keyID, certSerial string) {
	t.Helper()
	objs, access := objects(t, label, pin)
	var priv, certs, others int
	for _, o := range objs {
		switch {
		case o == "Private Key "+keyID:
			priv++
		case o == "Certificate "+keyID:
			certs++
		case strings.HasPrefix(o, "Private Key "):
			others++
		}
	}
	if priv != 1 || certs != 1 || others != 0 {
		t.Fatalf("token %s holds %d private keys and %d certificates with ID %s, and %d other private keys; want 1, 1, 0:\n%s",
			label, priv, certs, keyID, others, strings.Join(objs, "\n"))
	}
	for _, a := range access {
		if !strings.Contains(a, "sensitive") || !strings.Contains(a, "never extractable") {
			t.Errorf("private key access %q: want sensitive and never extractable", a)
		}
	}
	der := testenv.PKCS11Tool(t, "--token-label", label, "--read-object", "--type", "cert", "--id", keyID)
	cert, err := x509.ParseCertificate([]byte(der))
	if err != nil {
		t.Fatalf("the certificate on the token: %v", err)
	}
	if got := fmt.Sprintf("%x", cert.SerialNumber); got != strings.TrimLeft(certSerial, "0") {
		t.Errorf("certificate serial %s on the token, %s in the result", got, certSerial)
	}
	if !strings.HasPrefix(cert.Subject.CommonName, "holder of ") {
		t.Errorf("certificate subject %s is not the one issued", cert.Subject)
	}
}

// proxy stands between an agent and the broker, so a test can take the broker away
// (down: connections closed and refused) or make it hang (pause: bytes held, connections
// open) without touching the shared RabbitMQ.
type proxy struct {
	t      *testing.T
	addr   string
	target string

	mu     sync.Mutex // guards the fields below
	ln     net.Listener
	conns  map[net.Conn]bool
	paused chan struct{} // non-nil while paused; closed on resume
	wg     sync.WaitGroup
}

func newProxy(t *testing.T) *proxy {
	t.Helper()
	p := &proxy{t: t, target: testenv.RabbitMQAddr, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.down()
		p.resume()
		p.wg.Wait()
	})
	return p
}

// url is the broker's URL through the proxy.
func (p *proxy) url(b *testenv.Broker) string {
	return strings.Replace(b.URL, testenv.RabbitMQAddr, p.addr, 1)
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(up, c)
			go p.pipe(c, up)
		}
	}()
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			paused := p.paused
			p.mu.Unlock()
			if paused != nil {
				<-paused
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, or the connection closed by down
		}
	}
}

// down closes every connection and refuses new ones: the broker is away.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// up listens again on the same address: the broker is back.
func (p *proxy) up() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy: listening again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// pause holds every byte in flight: connections stay open but nothing gets through.
func (p *proxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused == nil {
		p.paused = make(chan struct{})
	}
}

func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused != nil {
		close(p.paused)
		p.paused = nil
	}
}

// agentBinary is tokenfleet-agent, built once per run of the package's tests.
func agentBinary(t *testing.T) string {
	t.Helper()
	return testenv.Binary(t, "./agent/cmd/tokenfleet-agent")
}
