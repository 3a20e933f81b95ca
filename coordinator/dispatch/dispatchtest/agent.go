// Package dispatchtest is a scripted workstation agent for tests of the coordinator's
// dispatch: a real broker connection (protocol/amqp) that consumes the agent's command
// queue and sends progress, CSRs and results as the test says, with keys made by
// crypto/ecdsa or crypto/rsa instead of a token.
//
// Like the real agent it keeps each command once (by message ID), publishes every
// message with confirms and sends a message again, unchanged, when its confirm was lost;
// Duplicates makes it send every event twice, as at-least-once delivery may.
package dispatchtest

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// Timeout bounds every wait of the scripted agent.
const Timeout = 3 * time.Minute

// Agent is a scripted agent. Its methods fail the test on error.
type Agent struct {
	ID      string
	SealKey *ecdh.PrivateKey
	Conn    *amqp.Conn
	// Duplicates sends every event twice with the same message ID.
	Duplicates bool

	t        testing.TB
	instance string
	seq      uint64

	mu       sync.Mutex // guards the fields below
	seen     map[string]bool
	commands []*protocol.Envelope
	taken    map[string]bool
	changed  chan struct{} // closed and replaced when a command arrives
}

// Start connects agent id to the broker at url (the agent's own broker user, or the
// shared one) and consumes its command queue. It waits until the queue exists, as an
// agent waits to be enrolled. Everything stops when the test ends.
func Start(t testing.TB, url, id string) *Agent {
	t.Helper()
	key, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{ID: id, SealKey: key, t: t, instance: protocol.NewMessageID(), seen: map[string]bool{}, taken: map[string]bool{},
		changed: make(chan struct{})}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("scripted_agent", id).Logger()
	conn, err := amqp.Open(context.Background(), amqp.Config{URL: url, Name: "scripted agent " + id, Logger: log,
		Backoff:  amqp.Backoff{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond},
		Topology: func(ch amqp.Declarer) error { return amqp.CheckAgentQueue(ch, id) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	a.Conn = conn
	queue, err := protocol.AgentQueue(id)
	if err != nil {
		t.Fatal(err)
	}
	// The consumer lives until the test ends (Close); waiting for the queue is bounded by
	// the Conn's context.
	ready, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := conn.Ready(ready); err != nil {
		t.Fatalf("scripted agent %s: broker: %v", id, err)
	}
	cons, err := conn.Consume(context.Background(), queue, amqp.ConsumeOptions{Senders: amqp.SenderCoordinator, AgentID: id, Exclusive: true,
		DeadLetter: amqp.DeadLetterNack}, a.receive)
	if err != nil {
		t.Fatalf("scripted agent %s: consuming its queue: %v", id, err)
	}
	t.Cleanup(cons.Close)
	return a
}

// receive keeps a command once, then acks it.
func (a *Agent) receive(_ context.Context, d *amqp.Delivery) amqp.Outcome {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.seen[d.Envelope.ID] {
		a.seen[d.Envelope.ID] = true
		a.commands = append(a.commands, d.Envelope)
		close(a.changed)
		a.changed = make(chan struct{})
	}
	return amqp.Ack()
}

// Commands returns every command received, in order, each once.
func (a *Agent) Commands() []*protocol.Envelope {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.commands)
}

// Next waits for the first command of type typ for job jobID ("" for any) that Next did
// not return before, and returns it.
func (a *Agent) Next(typ protocol.MessageType, jobID string) *protocol.Envelope {
	a.t.Helper()
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		changed := a.changed
		for _, env := range a.commands {
			if env.Type == typ && (jobID == "" || env.JobID == jobID) && !a.taken[env.ID] {
				a.taken[env.ID] = true
				a.mu.Unlock()
				return env
			}
		}
		a.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			a.t.Fatalf("scripted agent %s: no %s for job %q within %s; received %s", a.ID, typ, jobID, Timeout, a.describe())
		}
	}
}

func (a *Agent) describe() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := ""
	for _, env := range a.commands {
		s += fmt.Sprintf(" %s(%s/%d)", env.Type, env.JobID, env.Attempt)
	}
	if s == "" {
		return "nothing"
	}
	return s
}

// Send sends an event for ref (the zero JobRef for hello, heartbeat, inventory).
func (a *Agent) Send(ref protocol.JobRef, body protocol.Body) *protocol.Envelope {
	a.t.Helper()
	env, err := protocol.NewEnvelope(a.ID, ref, body)
	if err != nil {
		a.t.Fatal(err)
	}
	a.SendEnvelope(env)
	return env
}

// SendEnvelope publishes env, again with the same message ID while its confirm is lost
// (the broker's connections closed, say), as an agent's outbox does.
func (a *Agent) SendEnvelope(env *protocol.Envelope) {
	a.t.Helper()
	times := 1
	if a.Duplicates {
		times = 2
	}
	for range times {
		if err := a.publish(env); err != nil {
			a.t.Fatalf("scripted agent %s: publishing %s: %v", a.ID, env.Type, err)
		}
	}
}

func (a *Agent) publish(env *protocol.Envelope) error {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.Conn.PublishEvent(pctx, env)
		pcancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return err
		case errors.Is(err, amqp.ErrUnconfirmed), errors.Is(err, amqp.ErrNacked), errors.Is(err, context.DeadlineExceeded):
			continue // sent again, unchanged
		default:
			return err
		}
	}
}

// Hello introduces the agent with its seal key and tokens.
func (a *Agent) Hello(tokens ...protocol.Token) *protocol.Envelope {
	a.t.Helper()
	pub, err := seal.MarshalPublicKey(a.SealKey.PublicKey())
	if err != nil {
		a.t.Fatal(err)
	}
	if tokens == nil {
		tokens = []protocol.Token{}
	}
	return a.Send(protocol.JobRef{}, protocol.Hello{InstanceID: a.instance, Hostname: a.ID + ".test", OS: "linux", Arch: "amd64",
		AgentVersion: "scripted", Protocol: protocol.VersionRange{Min: protocol.MinVersion, Max: protocol.Version},
		SealKey: pub, Tokens: tokens})
}

// Heartbeat says the agent is alive.
func (a *Agent) Heartbeat() *protocol.Envelope {
	a.t.Helper()
	a.mu.Lock()
	a.seq++
	seq := a.seq
	a.mu.Unlock()
	return a.Send(protocol.JobRef{}, protocol.Heartbeat{InstanceID: a.instance, Seq: seq, UptimeSeconds: seq})
}

// Progress reports a step.
func (a *Agent) Progress(ref protocol.JobRef, p protocol.Progress) *protocol.Envelope {
	a.t.Helper()
	return a.Send(ref, p)
}

// OpenPIN opens a PIN a dispatch carries, sealed to the agent for its job and attempt.
func (a *Agent) OpenPIN(ref protocol.JobRef, s *protocol.Sealed, purpose protocol.SealPurpose) string {
	a.t.Helper()
	if s == nil {
		a.t.Fatalf("scripted agent %s: the dispatch carries no %s", a.ID, purpose)
	}
	pin, err := seal.Open(a.SealKey, s, seal.Binding{JobID: ref.JobID, Attempt: ref.Attempt, Purpose: purpose})
	if err != nil {
		a.t.Fatalf("scripted agent %s: opening the %s: %v", a.ID, purpose, err)
	}
	return string(pin)
}

// Token describes a token as an agent reports it.
func Token(serial string, initialised bool) protocol.Token {
	return protocol.Token{Serial: serial, Label: "token " + serial, Model: "SoftHSM v2", Manufacturer: "SoftHSM project",
		Flags: protocol.TokenFlags{Initialized: initialised, UserPINInitialized: initialised, LoginRequired: true}}
}

// NewKey makes a key of a protocol key type, or RSA of bits when t is "rsa<bits>".
func NewKey(t testing.TB, kt protocol.KeyType) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch kt {
	case protocol.KeyP256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case protocol.KeyP384:
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	default:
		var bits int
		if _, serr := fmt.Sscanf(string(kt), "rsa%d", &bits); serr != nil {
			t.Fatalf("key type %q", kt)
		}
		k, err = rsa.GenerateKey(rand.Reader, bits)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// PublicKeyDER is the PKIX form of k's public key.
func PublicKeyDER(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// CSR makes a CSR signed by k, asking for names the coordinator will not use.
func CSR(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "what the agent would like"},
		DNSNames: []string{"not.from.the.request.example"},
	}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Ref is the job reference of a command.
func Ref(env *protocol.Envelope) protocol.JobRef { return env.Job() }

// Pins are PINs the scripted agent set on a token.
type Pins struct{ User, SO string }

// SealedPins seals p to the dispatch's result key, for the attempt, as a result carries
// them.
func SealedPins(t testing.TB, ref protocol.JobRef, resultKey []byte, p Pins) *protocol.SealedPINs {
	t.Helper()
	to, err := seal.ParsePublicKey(resultKey)
	if err != nil {
		t.Fatal(err)
	}
	out := &protocol.SealedPINs{}
	if out.UserPIN, err = seal.Seal(to, []byte(p.User), seal.Binding{JobID: ref.JobID, Attempt: ref.Attempt, Purpose: protocol.PurposeUserPIN}); err != nil {
		t.Fatal(err)
	}
	if out.SOPIN, err = seal.Seal(to, []byte(p.SO), seal.Binding{JobID: ref.JobID, Attempt: ref.Attempt, Purpose: protocol.PurposeSOPIN}); err != nil {
		t.Fatal(err)
	}
	return out
}

// RandomPins makes PINs a token could be given.
func RandomPins() Pins {
	return Pins{User: "u" + protocol.NewMessageID()[:12], SO: "s" + protocol.NewMessageID()[:20]}
}

// Issued is what IssueUntilCSR and Finish leave.
type Issued struct {
	Ref         protocol.JobRef
	Dispatch    protocol.JobDispatch
	Key         crypto.Signer
	Serial      string // token serial
	Pins        Pins
	Certificate *x509.Certificate
}

// IssueUntilCSR plays an issue or csr dispatch up to its CSR on the token serial: token
// found, initialising (when asked), key generated, CSR, csr_sent.
func (a *Agent) IssueUntilCSR(dispatch *protocol.Envelope, serial string) *Issued {
	a.t.Helper()
	d, err := protocol.DecodeBody[protocol.JobDispatch](dispatch)
	if err != nil {
		a.t.Fatal(err)
	}
	ref := dispatch.Job()
	is := &Issued{Ref: ref, Dispatch: d, Serial: serial, Pins: RandomPins()}
	is.Key = NewKey(a.t, d.Key.Type)
	a.Progress(ref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: serial})
	if d.Initialise {
		a.Progress(ref, protocol.Progress{Step: protocol.StepInitialising, TokenSerial: serial})
	}
	pub := PublicKeyDER(a.t, is.Key)
	a.Progress(ref, protocol.Progress{Step: protocol.StepKeyGenerated, KeyID: d.Key.ID, PublicKey: pub})
	a.Send(ref, protocol.CSRSubmission{CSR: CSR(a.t, is.Key), KeyID: d.Key.ID, PublicKey: pub, TokenSerial: serial})
	a.Progress(ref, protocol.Progress{Step: protocol.StepCSRSent})
	return is
}

// Finish takes the certificate delivery of an issue job, reports it written and
// verified, and sends the successful result with the token serial and the PINs it set.
func (a *Agent) Finish(is *Issued) {
	a.t.Helper()
	env := a.Next(protocol.TypeCertificate, is.Ref.JobID)
	cd, err := protocol.DecodeBody[protocol.CertificateDelivery](env)
	if err != nil {
		a.t.Fatal(err)
	}
	if env.Attempt != is.Ref.Attempt || cd.KeyID != is.Dispatch.Key.ID {
		a.t.Fatalf("certificate for attempt %d key %s, want attempt %d key %s", env.Attempt, cd.KeyID, is.Ref.Attempt, is.Dispatch.Key.ID)
	}
	if is.Certificate, err = x509.ParseCertificate(cd.Certificates.Certificate); err != nil {
		a.t.Fatal(err)
	}
	a.Progress(is.Ref, protocol.Progress{Step: protocol.StepCertificateWritten})
	a.Progress(is.Ref, protocol.Progress{Step: protocol.StepVerified})
	a.Result(is, protocol.OutcomeSucceeded, nil)
}

// Result sends the attempt's result with its outputs.
func (a *Agent) Result(is *Issued, outcome protocol.Outcome, fail *protocol.Error) *protocol.Envelope {
	a.t.Helper()
	out := &protocol.Outputs{TokenSerial: is.Serial}
	if is.Dispatch.Key != nil {
		out.KeyID = is.Dispatch.Key.ID
	}
	if is.Certificate != nil {
		// The DER INTEGER's content: a leading zero byte keeps a high bit from reading as
		// a sign.
		b := is.Certificate.SerialNumber.Bytes()
		if len(b) > 0 && b[0]&0x80 != 0 {
			b = append([]byte{0}, b...)
		}
		out.CertificateSerial = hex.EncodeToString(b)
	}
	if len(is.Dispatch.ResultKey) > 0 {
		out.PINs = SealedPins(a.t, is.Ref, is.Dispatch.ResultKey, is.Pins)
	}
	return a.Send(is.Ref, protocol.Result{Outcome: outcome, Error: fail, Outputs: out})
}

// Key is a key the scripted agent made "on the token": the signer, its public key as
// the agent reports it at key_generated, and a CSR it signed.
type Key struct {
	Signer    crypto.Signer
	PublicKey []byte
	CSR       []byte
}

// NewReportedKey makes a Key of type kt.
func NewReportedKey(t testing.TB, kt protocol.KeyType) *Key {
	t.Helper()
	k := NewKey(t, kt)
	return &Key{Signer: k, PublicKey: PublicKeyDER(t, k), CSR: CSR(t, k)}
}
