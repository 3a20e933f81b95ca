package agent_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/internal/sdnotify"
	"github.com/tokenfleet/tokenfleet/internal/sdnotify/sdnotifytest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// process is a running tokenfleet-agent binary.
type process struct {
	cmd    *exec.Cmd
	logs   *logBuffer
	done   chan struct{}
	state  *os.ProcessState
	notify *sdnotifytest.Socket
}

// startBinary runs `tokenfleet-agent run` with the args, SOFTHSM2_CONF of this test run and
// a notification socket.
func startBinary(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{logs: newLogBuffer(), done: make(chan struct{}), notify: sdnotifytest.Listen(t)}
	p.cmd = exec.Command(agentBinary(t), append([]string{"run"}, args...)...)
	p.cmd.Env = append(os.Environ(), sdnotify.SocketEnv+"="+p.notify.Path)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %v, without debug lines:\n%s", p.cmd.Args, tail(withoutDebug(p.logs.String()), 8000))
		}
	})
	return p
}

func (p *process) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// exit waits for the process to end, within limit.
func (p *process) exit(t *testing.T, limit time.Duration) *os.ProcessState {
	t.Helper()
	select {
	case <-p.done:
		return p.state
	case <-time.After(limit):
		t.Fatalf("the agent did not exit within %v; output:\n%s", limit, tail(p.logs.String(), 4000))
		return nil
	}
}

func wantExit(t *testing.T, st *os.ProcessState, code int) {
	t.Helper()
	if st.ExitCode() != code {
		t.Fatalf("exit status %v, want %d", st, code)
	}
}

func binaryArgs(url, id, dir string, extra ...string) []string {
	return append([]string{"--broker", url, "--id", id, "--data", dir, "--module", testenv.SoftHSMModule,
		"--log-format", "json", "--log-level", "debug", "--poll-interval", "50ms", "--heartbeat-interval", "200ms"}, extra...)
}

// openJournal opens a stopped agent's journal as the agent would.
func openJournal(t *testing.T, dir string) *journal.Journal {
	t.Helper()
	pair, err := keys.Load(filepath.Join(dir, keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.Open(context.Background(), filepath.Join(dir, journal.FileName), pair, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Close() })
	return j
}

func unsent(t *testing.T, j *journal.Journal) []string {
	t.Helper()
	out, err := j.Unsent(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, o := range out {
		types = append(types, string(o.Type))
	}
	return types
}

// TestBinarySIGTERMAndResume: the built program says READY=1, takes a job, shuts down on
// SIGTERM with exit status 0 and a consistent journal (the job parked, nothing unsent),
// and finishes the job when it starts again.
func TestBinarySIGTERMAndResume(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderSharedUser)
	id, dir := newAgentID(t), t.TempDir()
	args := binaryArgs(b.URL, id, dir)
	p := startBinary(t, args...)
	p.notify.Wait(t, sdnotify.Ready, waitLimit)
	h := c.hello(id, nil)

	const userPIN, soPIN = "bin-user-61442", "bin-so-77310"
	label := newLabel(t)
	ref := protocol.JobRef{JobID: "binary-resume", Attempt: 1}
	c.dispatch(id, ref, c.csrJob(h, ref, label, userPIN))
	c.waitMessage(ref, protocol.TypeProgress, protocol.StepWaitingForToken)
	// Heartbeats name the job waiting for its token.
	c.until("a heartbeat naming the job", func() bool {
		return slices.ContainsFunc(c.heartbeatsOf(id), func(hb protocol.Heartbeat) bool {
			return hb.CurrentJob != nil && *hb.CurrentJob == ref && hb.Step == protocol.StepWaitingForToken
		})
	})

	p.signal(t, syscall.SIGTERM)
	wantExit(t, p.exit(t, waitLimit), 0)
	if p.notify.Count(sdnotify.Stopping) != 1 {
		t.Errorf("STOPPING=1 sent %d times, want once", p.notify.Count(sdnotify.Stopping))
	}
	j := openJournal(t, dir)
	pending, err := j.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].Ref != ref {
		t.Fatalf("pending jobs after SIGTERM: %+v, want %s", pending, ref.JobID)
	}
	if left := unsent(t, j); len(left) != 0 {
		t.Errorf("unsent after a clean shutdown: %v", left)
	}
	_ = j.Close()

	// The token is inserted while the agent is stopped; the next start finishes the job.
	if serial := testenv.InitToken(t, label, soPIN, userPIN); serial == "" {
		t.Fatal("no serial")
	}
	p = startBinary(t, args...)
	p.notify.Wait(t, sdnotify.Ready, waitLimit)
	_, res := c.result(ref)
	if res.Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("job failed: %+v", res.Error)
	}
	want := []string{"progress:waiting_for_token", "progress:token_found", "progress:key_generated", "csr", "progress:csr_sent", "result:succeeded"}
	if got := c.trace(ref); !slices.Equal(got, want) {
		t.Errorf("messages %v, want %v", got, want)
	}
	p.signal(t, syscall.SIGTERM)
	wantExit(t, p.exit(t, waitLimit), 0)
	j = openJournal(t, dir)
	if job, err := j.Job(context.Background(), ref); err != nil || job.State != journal.StateDone {
		t.Errorf("journal: %s is %s (%v), want done", ref.JobID, job.State, err)
	}
	if left := unsent(t, j); len(left) != 0 {
		t.Errorf("unsent after a clean shutdown: %v", left)
	}

	objs, _ := objects(t, label, userPIN)
	if n := slices.Index(objs, "Private Key "+protocol.DeriveKeyID(ref.JobID)); n < 0 {
		t.Errorf("no key with the job's ID on the token: %v", objs)
	}
	c.wantNoSecret(p.logs.String(), userPIN, soPIN)
}

// TestBinaryKilledMidJob: SIGKILL while the job waits for its certificate; the restarted
// agent finishes it exactly once (one key, one certificate).
func TestBinaryKilledMidJob(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderSharedUser)
	c.autoSign.Store(false)
	id, dir := newAgentID(t), t.TempDir()
	args := binaryArgs(b.URL, id, dir)
	p := startBinary(t, args...)
	c.hello(id, nil)

	ref := protocol.JobRef{JobID: "binary-killed", Attempt: 1}
	label := newLabel(t)
	c.dispatch(id, ref, c.issueBlank(ref, label))
	c.waitMessage(ref, protocol.TypeProgress, protocol.StepCSRSent)
	p.signal(t, syscall.SIGKILL)
	if st := p.exit(t, waitLimit); st.ExitCode() != -1 {
		t.Fatalf("exit status %v after SIGKILL", st)
	}
	// The broker drops the dead agent's exclusive consumer when it sees the socket close.
	queue, _ := protocol.AgentQueue(id)
	waitNoConsumer(t, b, queue)

	hellos := c.countHellos(id)
	p = startBinary(t, args...)
	c.until("a hello from the restarted agent", func() bool { return c.countHellos(id) > hellos })
	c.deliverCertificate(ref)
	_, res := c.result(ref)
	if res.Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("job failed: %+v", res.Error)
	}
	user, so := c.openPINs(ref, res)
	p.signal(t, syscall.SIGTERM)
	wantExit(t, p.exit(t, waitLimit), 0)
	wantOneKeyAndCertificate(t, label, user, protocol.DeriveKeyID(ref.JobID), res.Outputs.CertificateSerial)
	c.wantNoSecret(p.logs.String(), user, so)
}

// TestBinaryBrokerHangs: a broker that stops answering does not hold the shutdown beyond
// the grace period; a second signal ends the process at once; what could not be sent is
// sent by the next start.
func TestBinaryBrokerHangs(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderSharedUser)
	px := newProxy(t)
	id, dir := newAgentID(t), t.TempDir()
	p := startBinary(t, binaryArgs(px.url(b), id, dir, "--shutdown-grace", "5m")...)
	h := c.hello(id, nil)

	// A job whose token never comes: it fails at its deadline, on its own.
	ref := protocol.JobRef{JobID: "binary-hang", Attempt: 1}
	d := c.csrJob(h, ref, newLabel(t), "hang-user-5521")
	d.Deadline = time.Now().Add(3 * time.Second).UTC()
	c.dispatch(id, ref, d)
	c.waitMessage(ref, protocol.TypeProgress, protocol.StepWaitingForToken)
	p.logs.waitFor(t, `"job":"binary-hang"`, `"message":"sent"`) // its confirm is back too
	px.pause()
	// The failure is in the outbox once the sender tries to publish it.
	p.logs.waitFor(t, `"type":"result"`, `"job":"binary-hang"`, `"message":"publishing"`)

	p.signal(t, syscall.SIGTERM)
	p.logs.waitFor(t, "shutting down")
	start := time.Now()
	p.signal(t, syscall.SIGTERM)
	wantExit(t, p.exit(t, 30*time.Second), 128+int(syscall.SIGTERM))
	p.logs.waitFor(t, "tokenfleet-agent: second signal (terminated): exiting without finishing the shutdown")
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the second signal took %v to end the process", took)
	}
	if got := c.trace(ref); slices.Contains(got, "result:failed") {
		t.Fatalf("the result went out through a hung broker: %v", got)
	}

	// Broker back: the next start sends the result made while it hung.
	px.down()
	px.resume()
	px.up()
	queue, _ := protocol.AgentQueue(id)
	waitNoConsumer(t, b, queue)
	p = startBinary(t, binaryArgs(px.url(b), id, dir, "--shutdown-grace", "1s")...)
	env, res := c.result(ref)
	if res.Outcome != protocol.OutcomeFailed || res.Error == nil || res.Error.Code != protocol.CodeDeadlineExceeded {
		t.Fatalf("result %+v, want deadline_exceeded", res)
	}
	if env.Time.After(start) {
		t.Errorf("the result was made at %s, after the first run ended (%s)", env.Time, start)
	}

	// A hung broker again, with a short grace period: SIGTERM alone ends the process.
	px.pause()
	p.signal(t, syscall.SIGTERM)
	wantExit(t, p.exit(t, 30*time.Second), 0)
}

// TestBinaryDuplicateID: `run` with an ID another connected agent holds exits with status 3
// and one line naming the ID.
func TestBinaryDuplicateID(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	c := newCoordinator(t, b, amqp.SenderSharedUser)
	first := startAgent(t, b, agentOptions{})
	c.hello(first.id, nil)
	first.logs.waitFor(t, "consuming the agent's queue")

	p := startBinary(t, "--broker", b.URL, "--id", first.id, "--data", t.TempDir(), "--module", testenv.SoftHSMModule, "--log-format", "json")
	wantExit(t, p.exit(t, waitLimit), 3)
	want := "tokenfleet-agent: agent ID " + first.id + " is already in use by another connected agent on this broker"
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(p.logs.String()), "\n") {
		if !json.Valid([]byte(l)) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.HasPrefix(lines[0], want) {
		t.Errorf("output outside the JSON log: %q; want one line starting %q", lines, want)
	}
}

// waitNoConsumer polls the broker until the queue has no consumer.
func waitNoConsumer(t *testing.T, b *testenv.Broker, queue string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		_, consumers := b.QueueCounts(t, queue)
		if consumers == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s still has %d consumers", queue, consumers)
		}
		<-tick.C
	}
}
