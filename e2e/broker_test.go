//go:build cgo

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/faults"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestDuplicateAgentIDRefused: while an agent runs, the tokenfleet-agent binary started
// with the same ID is refused by the broker's exclusive consumer: it exits with status 3
// and says, in one line outside its JSON log, that the ID is in use. It said nothing on the
// broker in the first agent's name, and the first agent keeps working.
func TestDuplicateAgentIDRefused(t *testing.T) {
	s := newSystem(t)
	const id = "ws-duplicate"
	s.enrol(id)
	first := s.startAgent(id, agentOptions{})
	first.logs.waitFor(t, "consuming the agent's queue")

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentBin, "run", "--id", id, "--broker", s.broker.URL, "--module", testenv.SoftHSMModule,
		"--data", s.newDataDir(), "--log-format", "json", "--log-level", "debug")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	second := newLogBuffer()
	_, _ = second.Write(append(stdout.Bytes(), stderr.Bytes()...))
	s.addLog("agent "+id+" binary (refused)", second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("the second agent with ID %s ended with %v, want exit status 3\n%s%s", id, err, stdout.String(), stderr.String())
	}
	var plain []string
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if !json.Valid([]byte(l)) {
			plain = append(plain, l)
		}
	}
	want := "agent ID " + id + " is already in use by another connected agent"
	if len(plain) != 1 || !strings.Contains(plain[0], want) {
		t.Errorf("the refused agent's error outside its JSON log: %q; want one line saying %q", plain, want)
	}

	// Only the first agent spoke on the broker: every hello comes from its instance.
	instances := map[string]bool{}
	for _, m := range s.tap.messages(t) {
		if m.typ != string(protocol.TypeHello) {
			continue
		}
		env, err := protocol.Decode(m.body)
		if err != nil {
			t.Fatal(err)
		}
		h, err := protocol.DecodeBody[protocol.Hello](env)
		if err != nil {
			t.Fatal(err)
		}
		instances[h.InstanceID] = true
	}
	if len(instances) != 1 {
		t.Errorf("hellos for agent %s from %d instances, want the first agent's only", id, len(instances))
	}
	if n := s.tap.consumers(t, agentQueue(t, id)); n != 1 {
		t.Errorf("the agent's queue has %d consumers, want the first agent", n)
	}

	// Enrolling the ID again is refused too, naming the host that holds it (as the first
	// agent reported it).
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if r := s.ctlRun(s.admin, "agent", "add", id, "--hostname", "other.acme.example"); r.code == 0 ||
		!strings.Contains(r.stderr, id) || !strings.Contains(r.stderr, `"`+host+`"`) {
		t.Errorf("enrolling %s again: exit status %d, %q; want a refusal naming the ID and the host holding it", id, r.code, r.stderr)
	}

	// The first agent still takes jobs.
	job := s.queue(jobs.KindIssue, id, holder)
	d := s.waitJob(job, jobs.StateSucceeded)
	wantIssueHistory(t, d)
	pin := s.revealPIN(job)
	wantOnlyKeyAndCertificate(t, d.TokenSerial, pin, protocol.DeriveKeyID(job), certificateDER(t, s.certificateOf(job).PEM))
	s.finalChecks()
}

// TestConnectionsClosedMidJob: every connection of the vhost (agent, coordinator) is
// closed by the broker while the agent generates the job's key, and again while it writes
// the certificate: both reconnect, and the job finishes exactly once: each state and
// step once, one CSR, one result, one certificate issued, one key and one certificate on
// the token.
func TestConnectionsClosedMidJob(t *testing.T) {
	s := newSystem(t)
	const id = "ws-closed"
	s.enrol(id)
	inj := &faults.Injector{}
	keygen, certWrite := newGate(t), newGate(t)
	inj.Hook("GenerateKeyPair", keygen.hold)
	inj.Hook("CreateObject", certWrite.hold)
	a := s.startAgent(id, agentOptions{wrap: inj.Wrap})

	job := s.queue(jobs.KindIssue, id, holder)
	for _, g := range []*gate{keygen, certWrite} {
		g.waitHeld()
		connected := strings.Count(a.logs.String(), `"message":"connected to the broker"`)
		s.broker.CloseConnections(t, "e2e: connections closed mid-job")
		g.release()
		eventually(t, "the agent to reconnect", func() (bool, string) {
			return strings.Count(a.logs.String(), `"message":"connected to the broker"`) > connected, ""
		})
	}
	d := s.waitJob(job, jobs.StateSucceeded)
	wantIssueHistory(t, d)
	wantJobAudit(t, s, job, []string{"job.created", "job.approved", "job.transition:approved", "job.transition:dispatched",
		"job.transition:running", "job.transition:awaiting_certificate", "certificate.issued", "job.transition:installing",
		"job.transition:succeeded"})
	if n := strings.Count(s.coordLog.String(), `"message":"connected to the broker"`); n < 3 {
		t.Errorf("the coordinator connected %d times, want a reconnection after each close", n)
	}

	msgs := s.tap.messages(t)
	for _, typ := range []protocol.MessageType{protocol.TypeCSR, protocol.TypeResult} {
		if n := distinct(msgs, typ, job, nil); n != 1 {
			t.Errorf("the agent made %d %s messages for the job, want 1", n, typ)
		}
	}
	for _, step := range []protocol.Step{protocol.StepTokenFound, protocol.StepInitialising, protocol.StepKeyGenerated,
		protocol.StepCSRSent, protocol.StepCertificateWritten, protocol.StepVerified} {
		n := distinct(msgs, protocol.TypeProgress, job, func(env *protocol.Envelope) bool {
			p, err := protocol.DecodeBody[protocol.Progress](env)
			return err == nil && p.Step == step
		})
		if n != 1 {
			t.Errorf("the agent reported %s %d times, want once", step, n)
		}
	}
	if n := distinct(msgs, protocol.TypeDispatch, job, nil); n != 1 {
		t.Errorf("the coordinator made %d dispatches for the job, want 1", n)
	}
	if n := distinct(msgs, protocol.TypeCertificate, job, nil); n != 1 {
		t.Errorf("the coordinator made %d certificate deliveries for the job, want 1", n)
	}
	wantOnlyKeyAndCertificate(t, d.TokenSerial, s.revealPIN(job), protocol.DeriveKeyID(job), certificateDER(t, s.certificateOf(job).PEM))
	if toks := initializedTokens(t); len(toks) != 1 {
		t.Errorf("%d initialised tokens, want 1: %+v", len(toks), toks)
	}
	s.finalChecks()
}
