package agent_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

func hasToken(h protocol.Hello, serial string) bool {
	return slices.ContainsFunc(h.Tokens, func(t protocol.Token) bool { return t.Serial == serial })
}

func hasLabel(h protocol.Hello, label string) bool {
	return slices.ContainsFunc(h.Tokens, func(t protocol.Token) bool { return t.Label == label })
}

func TestHelloAndHeartbeats(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderSharedUser)
	label, serial := initToken(t, "12345678", "87654321")
	ra := startAgent(t, b, agentOptions{})

	h := c.hello(ra.id, func(h protocol.Hello) bool { return hasToken(h, serial) })
	if h.Hostname == "" || h.OS == "" || h.AgentVersion == "" || !h.Protocol.Contains(protocol.Version) {
		t.Errorf("hello %+v", h)
	}
	if _, err := seal.ParsePublicKey(h.SealKey); err != nil {
		t.Errorf("the hello's seal key: %v", err)
	}
	for _, tok := range h.Tokens {
		if tok.Serial == serial && (tok.Label != label || !tok.Flags.Initialized || !tok.Flags.UserPINInitialized) {
			t.Errorf("token in the hello: %+v", tok)
		}
	}

	// Heartbeats: this instance, sequence numbers growing, no job.
	c.until("three heartbeats", func() bool { return len(c.heartbeatsOf(ra.id)) >= 3 })
	var last uint64
	for i, hb := range c.heartbeatsOf(ra.id) {
		if hb.InstanceID != h.InstanceID || hb.Seq <= last || hb.CurrentJob != nil {
			t.Errorf("heartbeat %d: %+v (hello instance %s, previous seq %d)", i, hb, h.InstanceID, last)
		}
		last = hb.Seq
	}

	// A token initialised while the agent runs (in this process, so that SoftHSM2 shows
	// it to the agent's module) brings a new hello with it.
	newLabel := newLabel(t)
	mod, err := pkcs11.Open(testenv.SoftHSMModule, pkcs11.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mod.Close() }()
	ctx := context.Background()
	slots, err := mod.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	free := slices.IndexFunc(slots, func(s pkcs11.Slot) bool { return s.Free })
	if free < 0 {
		t.Fatal("SoftHSM2 shows no free slot")
	}
	if _, err := mod.InitToken(ctx, slots[free].ID, pkcs11.InitOptions{Label: newLabel, SOPIN: "11223344"}); err != nil {
		t.Fatal(err)
	}
	c.hello(ra.id, func(h protocol.Hello) bool { return hasLabel(h, newLabel) && hasToken(h, serial) })
	if err := ra.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestIssueEndToEnd: dispatch → progress → CSR → certificate → result, checked on the
// token with pkcs11-tool; no PIN in any log line or message.
func TestIssueEndToEnd(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderSharedUser)
	ra := startAgent(t, b, agentOptions{})
	c.hello(ra.id, nil)

	ref := protocol.JobRef{JobID: "issue-e2e", Attempt: 1}
	label := newLabel(t)
	c.dispatch(ra.id, ref, c.issueBlank(ref, label))
	_, res := c.result(ref)
	if res.Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("job failed: %+v", res.Error)
	}
	want := []string{"progress:token_found", "progress:initialising", "progress:key_generated", "csr",
		"progress:csr_sent", "progress:certificate_written", "progress:verified", "result:succeeded"}
	if got := c.trace(ref); !slices.Equal(got, want) {
		t.Errorf("messages %v, want %v", got, want)
	}
	// Heartbeats named the job while it ran, or at least kept coming.
	c.until("a heartbeat after the job", func() bool { return len(c.heartbeatsOf(ra.id)) > 0 })

	user, so := c.openPINs(ref, res)
	if err := ra.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	wantOneKeyAndCertificate(t, label, user, protocol.DeriveKeyID(ref.JobID), res.Outputs.CertificateSerial)
	c.wantNoSecret(ra.logs.String(), user, so)
}

func TestDuplicateAgentIDRefused(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderSharedUser)
	first := startAgent(t, b, agentOptions{})
	c.hello(first.id, nil)
	first.logs.waitFor(t, "consuming the agent's queue")

	a, err := agent.New(agent.Config{ID: first.id, DataDir: t.TempDir(), Modules: []string{testenv.SoftHSMModule},
		Broker: agent.Broker{URL: b.URL, Backoff: fastBackoff}, PollInterval: 50 * time.Millisecond}, newTestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err = a.Run(ctx)
	var dup *agent.DuplicateIDError
	if !errors.As(err, &dup) || !errors.Is(err, amqp.ErrQueueInUse) {
		t.Fatalf("second agent with ID %s: Run = %v; want a DuplicateIDError", first.id, err)
	}
	if msg := err.Error(); !strings.Contains(msg, "agent ID "+first.id+" is already in use by another connected agent on this broker") {
		t.Errorf("error %q does not name the ID", msg)
	}
	// The refused agent said nothing in the first one's name.
	instances := map[string]bool{}
	for _, e := range c.messages(protocol.JobRef{}) {
		if e.env.Type == protocol.TypeHello {
			h, _ := protocol.DecodeBody[protocol.Hello](e.env)
			instances[h.InstanceID] = true
		}
	}
	if len(instances) != 1 {
		t.Errorf("hellos from %d instances of %s, want only the first agent's", len(instances), first.id)
	}
	// The first agent is unaffected.
	ref := protocol.JobRef{JobID: "after-duplicate", Attempt: 1}
	c.dispatch(first.id, ref, c.issueBlank(ref, newLabel(t)))
	if _, res := c.result(ref); res.Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("job failed: %+v", res.Error)
	}
}

// TestConnectionsClosedMidJob closes every broker connection while the job waits for its
// certificate: the job still finishes, exactly once.
func TestConnectionsClosedMidJob(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderSharedUser)
	c.autoSign.Store(false)
	ra := startAgent(t, b, agentOptions{})
	c.hello(ra.id, nil)
	hellos := c.countHellos(ra.id)

	ref := protocol.JobRef{JobID: "closed-mid-job", Attempt: 1}
	label := newLabel(t)
	c.dispatch(ra.id, ref, c.issueBlank(ref, label))
	c.waitMessage(ref, protocol.TypeProgress, protocol.StepCSRSent)

	b.CloseConnections(t, "test: connections closed mid-job")
	// The agent says hello again on its new connection.
	c.until("a hello after the reconnection", func() bool { return c.countHellos(ra.id) > hellos })
	c.deliverCertificate(ref)
	_, res := c.result(ref)
	if res.Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("job failed: %+v", res.Error)
	}
	user, _ := c.openPINs(ref, res)
	if err := ra.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	wantOneKeyAndCertificate(t, label, user, protocol.DeriveKeyID(ref.JobID), res.Outputs.CertificateSerial)
	// Each step was reported once (a message may arrive twice, with the same ID).
	seen := map[string]string{}
	for _, e := range c.messages(ref) {
		d := describe(e.env)
		if id, ok := seen[d]; ok && id != e.env.ID {
			t.Errorf("%s was made twice (message IDs %s and %s)", d, id, e.env.ID)
		}
		seen[d] = e.env.ID
	}
}

// TestResultsWhileBrokerAway: the job goes on while the agent cannot reach the broker; what
// it produced then arrives when the broker is back.
func TestResultsWhileBrokerAway(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderSharedUser)
	p := newProxy(t)
	ra := startAgent(t, b, agentOptions{url: p.url(b)})
	h := c.hello(ra.id, nil)

	const userPIN, soPIN = "away-user-8372", "away-so-40417"
	label := newLabel(t)
	ref := protocol.JobRef{JobID: "while-away", Attempt: 1}
	c.dispatch(ra.id, ref, c.csrJob(h, ref, label, userPIN))
	c.waitMessage(ref, protocol.TypeProgress, protocol.StepWaitingForToken)

	p.down()
	away := time.Now()
	// The token arrives while the broker is away (made in this process, where the agent's
	// SoftHSM2 module sees it).
	makeToken(t, label, soPIN, userPIN)
	ra.logs.waitFor(t, `"job":"while-away"`, "job finished")
	if got := c.trace(ref); slices.Contains(got, "csr") {
		t.Fatalf("the CSR went out while the broker was away: %v", got)
	}
	back := time.Now()
	p.up()

	env, res := c.result(ref)
	if res.Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("job failed: %+v", res.Error)
	}
	if env.Time.Before(away) || env.Time.After(back) {
		t.Errorf("the result was made at %s, not while the broker was away (%s to %s)", env.Time, away, back)
	}
	want := []string{"progress:waiting_for_token", "progress:token_found", "progress:key_generated", "csr", "progress:csr_sent", "result:succeeded"}
	if got := c.trace(ref); !slices.Equal(got, want) {
		t.Errorf("messages %v, want %v", got, want)
	}
	c.wantNoSecret(ra.logs.String(), userPIN, soPIN)
}

// makeToken initialises the free SoftHSM2 slot in this process, with a user PIN.
func makeToken(t *testing.T, label, soPIN, userPIN string) {
	t.Helper()
	ctx := context.Background()
	mod, err := pkcs11.Open(testenv.SoftHSMModule, pkcs11.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mod.Close() }()
	slots, err := mod.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	free := slices.IndexFunc(slots, func(s pkcs11.Slot) bool { return s.Free })
	if free < 0 {
		t.Fatal("SoftHSM2 shows no free slot")
	}
	if _, err := mod.InitToken(ctx, slots[free].ID, pkcs11.InitOptions{Label: label, SOPIN: soPIN}); err != nil {
		t.Fatal(err)
	}
	tok, err := mod.FindToken(ctx, &uri.URI{Token: label})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tok.Close() }()
	if err := tok.InitUserPIN(ctx, soPIN, userPIN); err != nil {
		t.Fatal(err)
	}
}

// TestEnrolledAgentUser: an enrolled agent with its own broker user, which may not
// configure anything, finds its queue the coordinator declared, and works; the
// coordinator checks every message's sender against the agent's user. (Before enrolment
// it stops: TestNotEnrolledEndsTheAgent.)
func TestEnrolledAgentUser(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderAgentUsers)
	id := newAgentID(t)
	user, err := protocol.AgentUser(id)
	if err != nil {
		t.Fatal(err)
	}
	url := enrolledUser(t, b, id)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := c.conn.Declare(ctx, func(ch amqp.Declarer) error { return amqp.DeclareAgent(ch, id) }); err != nil {
		t.Fatalf("enrolling the agent: %v", err)
	}

	// Default queue mode (auto): the refused declaration turns into passive checks.
	ra := startAgent(t, b, agentOptions{id: id, url: url})
	ra.logs.waitFor(t, "may not declare queues")
	c.until("the agent to report it is connected", func() bool {
		return slices.ContainsFunc(ra.status(), func(s string) bool { return strings.HasPrefix(s, "connected to ") })
	})
	c.hello(id, nil)
	ref := protocol.JobRef{JobID: "enrolled", Attempt: 1}
	c.dispatch(id, ref, c.issueBlank(ref, newLabel(t)))
	if _, res := c.result(ref); res.Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("job failed: %+v", res.Error)
	}
	for _, e := range c.messages(protocol.JobRef{}) {
		if e.userID != user {
			t.Errorf("%s from broker user %q, want %q", e.env.Type, e.userID, user)
		}
	}
}

// TestBadCommandsAreDeadLettered: a message for another agent and one whose body the
// executor refuses go to the dead-letter queue; the agent goes on.
func TestBadCommandsAreDeadLettered(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderSharedUser)
	ra := startAgent(t, b, agentOptions{})
	c.hello(ra.id, nil)

	// Addressed to another agent but routed to this one's queue.
	other, err := protocol.NewEnvelope("someone-else", protocol.JobRef{JobID: "not-mine", Attempt: 1},
		protocol.Cancel{State: protocol.StateCancelled, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := c.conn.Publish(ctx, protocol.CommandsExchange, ra.id, other); err != nil {
		t.Fatal(err)
	}
	ra.logs.waitFor(t, other.ID, "dead-letter")

	// The agent still takes its own jobs.
	ref := protocol.JobRef{JobID: "after-bad", Attempt: 1}
	c.dispatch(ra.id, ref, c.issueBlank(ref, newLabel(t)))
	if _, res := c.result(ref); res.Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("job failed: %+v", res.Error)
	}
}
