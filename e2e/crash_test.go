//go:build cgo

package e2e_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/faults"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// The agent of the crash test runs in a child process: this test binary, started again
// with childEnv set, runs the real agent (agent.New, Run) with a fault injector in front of
// SoftHSM2. At the crash point it says so on its standard output and holds there, inside
// the agent, until the test kills it with SIGKILL: nothing of it runs on afterwards, and
// what it left in its journal, on the token and on the broker is what a real crash leaves.
// The test then starts the agent again, in this process, on the same data directory.
const (
	childEnv       = "TOKENFLEET_E2E_AGENT_CHILD" // the agent ID
	childDirEnv    = "TOKENFLEET_E2E_AGENT_DIR"
	childBrokerEnv = "TOKENFLEET_E2E_AGENT_BROKER"
	childCrashEnv  = "TOKENFLEET_E2E_AGENT_CRASH"
	crashMarker    = "CRASHPOINT"
)

// Crash points, as the child understands them:
//
//	log:MESSAGE      hold the goroutine that logs MESSAGE (with the job's ID in the line)
//	                 once the agent logged it: "job message journalled" for a dispatch is
//	                 the moment after the journal commit, before the delivery is acked
//	block:Call       hold the first call of the PKCS#11 function, before it reaches the token
//	after:Call:Next  hold the first call of Next made after Call reached the token: Call's
//	                 effect is on the token, the agent has not journalled it
//
// Several, separated by "|", all hold; the first one reached is the crash point.
type crashPoint struct {
	name  string
	crash string
	// waitLog, if set, are the parts of a line of the agent's log the test waits for
	// after the crash point, before it kills the agent: what the rest of the agent (its
	// sender, its consumer) did meanwhile.
	waitLog []string
	// journal is the job's state in the dead agent's journal, when set.
	journal []journal.State
	// redelivered: the dead agent had not acked the dispatch, so the broker delivers it
	// again to the restarted agent, which finds it in its journal.
	redelivered bool
	// initialised: the dead agent left the token initialised with the job's label.
	initialised bool
	// keys and certs: what the dead agent left on the token (checked when initialised and
	// the user PIN is set: keys >= 0).
	keys, certs int
}

var crashPoints = []crashPoint{
	{name: "dispatch journalled, not acked", crash: "log:job message journalled", keys: -1, redelivered: true},
	{name: "initialising, before the token is touched", crash: "block:InitToken", keys: -1},
	{name: "initialised, not journalled", crash: "after:InitToken:GetTokenInfo", initialised: true, keys: -1},
	{name: "initialised, user PIN not set", crash: "block:InitPIN", initialised: true, keys: -1},
	{name: "initialised, before key generation", crash: "block:GenerateKeyPair", initialised: true},
	{name: "key generated, not journalled", crash: "after:GenerateKeyPair:GetAttributeValue", initialised: true, keys: 1},
	{name: "key generated, before the CSR", crash: "block:SignInit", initialised: true, keys: 1},
	{name: "CSR made, maybe not sent", crash: "log:job parked until its certificate is delivered", initialised: true, keys: 1,
		journal: []journal.State{journal.StateAwaitingCertificate}},
	{name: "CSR sent, waiting for the certificate", crash: "log:job parked until its certificate is delivered", initialised: true, keys: 1,
		waitLog: []string{`"type":"csr"`, `"message":"sent"`}, journal: []journal.State{journal.StateAwaitingCertificate, journal.StateInstalling}},
	{name: "certificate received, job not resumed", crash: "log:job parked until its certificate is delivered|block:CreateObject", initialised: true, keys: 1,
		waitLog: []string{`"type":"certificate"`, `"disposition":"accepted"`, `"message":"job message journalled"`}, journal: []journal.State{journal.StateInstalling}},
	{name: "certificate delivered, before it is written", crash: "block:CreateObject", initialised: true, keys: 1},
	{name: "certificate written, not journalled", crash: "after:CreateObject:FindObjectsInit", initialised: true, keys: 1, certs: 1},
	{name: "certificate written, before verification", crash: "after:CreateObject:SignInit", initialised: true, keys: 1, certs: 1},
}

// TestAgentKilledAtEveryStep: for each crash point, an issue job starts on an agent in a
// child process, which is killed with SIGKILL there and started again. Every job ends
// succeeded exactly once: each state once in its timeline, each step once, one CSR and one
// result on the broker, one certificate issued, and one token holding one key and that
// certificate.
func TestAgentKilledAtEveryStep(t *testing.T) {
	s := newSystem(t)
	for i, p := range crashPoints {
		t.Run(p.name, func(t *testing.T) {
			st := s.sub(t)
			st.tokens = newTokenStore(t) // a blank token store of the crash's own
			id := fmt.Sprintf("ws-crash-%02d", i)
			holderName := fmt.Sprintf("holder%02d", i)
			st.addHolder(holderName, fmt.Sprintf("Holder %02d", i))
			st.enrol(id)
			dir := st.newDataDir()

			child := st.startChild(id, dir, p.crash)
			jobID := st.queue(jobs.KindIssue, id, holderName)
			child.waitCrashPoint(t)
			if p.waitLog != nil {
				child.logs.waitFor(t, p.waitLog...)
			}
			child.kill(t)
			st.snapshot(dir, "as the killed agent left it")

			// Where the agent died: its journal, and the token as pkcs11-tool sees it.
			state, step := journalState(t, dir, jobID)
			t.Logf("killed at %s: the journal says %s, step %q", p.crash, state, step)
			if p.journal != nil && !slices.Contains(p.journal, state) {
				t.Errorf("killed in %s, want one of %v", state, p.journal)
			}
			toks := initializedTokens(t)
			if got := len(toks) == 1 && toks[0].label == fmt.Sprintf("Holder %02d", i); got != p.initialised {
				t.Fatalf("after the crash the initialised tokens are %+v; want the job's token: %t", toks, p.initialised)
			}
			if p.keys >= 0 {
				pin := journalSecret(t, dir, jobID, "user_pin")
				objs := objects(t, toks[0].serial, pin)
				if k, c := count(objs, "Private Key", ""), count(objs, "Certificate", protocol.DeriveKeyID(jobID)); k != p.keys || c != p.certs {
					t.Fatalf("after the crash the token holds %d keys and %d certificates, want %d and %d:%s", k, c, p.keys, p.certs, describeObjects(objs))
				}
			}

			s.tap.waitNoConsumer(t, agentQueue(t, id))
			a := st.startAgent(id, agentOptions{dir: dir})
			d := st.waitJob(jobID, jobs.StateSucceeded)
			if err := a.stop(); err != nil {
				t.Fatalf("agent: %v", err)
			}
			wantIssueHistory(t, d)
			if p.redelivered {
				a.logs.waitFor(t, `"type":"dispatch"`, `"disposition":"duplicate"`, `"message":"job message journalled"`)
			}
			msgs := s.tap.messages(t)
			if n := distinct(msgs, protocol.TypeCSR, jobID, nil); n != 1 {
				t.Errorf("the agent sent %d CSRs for the job, want 1", n)
			}
			if n := distinct(msgs, protocol.TypeResult, jobID, nil); n != 1 {
				t.Errorf("the agent sent %d results for the job, want 1", n)
			}
			toks = initializedTokens(t)
			if len(toks) != 1 || toks[0].serial != d.TokenSerial {
				t.Fatalf("initialised tokens %+v, want only the job's token %s", toks, d.TokenSerial)
			}
			cert := st.certificateOf(jobID)
			pin := st.revealPIN(jobID)
			wantOnlyKeyAndCertificate(t, d.TokenSerial, pin, protocol.DeriveKeyID(jobID), certificateDER(t, cert.PEM))
			wantSOLogin(t, d.TokenSerial, st.keptPIN(d.TokenSerial, "so_pin"))
		})
	}
	s.finalChecks()
}

// TestAgentKilledInOtherKinds: the agent is killed with SIGKILL in the middle of a renew,
// an unblock_pin and a wipe job, at the moment the token changed and the journal does not
// know it yet, and started again: each job finishes exactly once and leaves the token as
// it should.
func TestAgentKilledInOtherKinds(t *testing.T) {
	s := newSystem(t)
	cases := []struct {
		name  string
		kind  jobs.Kind
		crash string
		steps []jobs.Step
		// atCrash checks the token as the dead agent left it: that it died where meant.
		atCrash func(t *testing.T, dir, serial, issue, job, pin string)
		check   func(t *testing.T, s *system, serial, issue, job, pin string)
	}{
		{
			name: "renew: old certificate removed, old key not yet", kind: jobs.KindRenew, crash: "after:DestroyObject:DestroyObject",
			steps: []jobs.Step{jobs.StepTokenFound, jobs.StepKeyGenerated, jobs.StepCSRSent, jobs.StepCertificateWritten, jobs.StepVerified},
			atCrash: func(t *testing.T, _, serial, issue, job, pin string) {
				objs := objects(t, serial, pin)
				old, renewed := protocol.DeriveKeyID(issue), protocol.DeriveKeyID(job)
				if count(objs, "Certificate", old) != 0 || count(objs, "Private Key", old) != 1 ||
					count(objs, "Certificate", renewed) != 1 || count(objs, "Private Key", renewed) != 1 {
					t.Fatalf("at the crash the token holds, want the old key without its certificate and the new pair:%s", describeObjects(objs))
				}
			},
			check: func(t *testing.T, s *system, serial, _, job, pin string) {
				wantOnlyKeyAndCertificate(t, serial, pin, protocol.DeriveKeyID(job), certificateDER(t, s.certificateOf(job).PEM))
			},
		},
		{
			name: "renew: new key generated, not journalled", kind: jobs.KindRenew, crash: "after:GenerateKeyPair:GetAttributeValue",
			steps: []jobs.Step{jobs.StepTokenFound, jobs.StepKeyGenerated, jobs.StepCSRSent, jobs.StepCertificateWritten, jobs.StepVerified},
			atCrash: func(t *testing.T, _, serial, issue, job, pin string) {
				if objs := objects(t, serial, pin); count(objs, "Private Key", protocol.DeriveKeyID(job)) != 1 || count(objs, "Private Key", "") != 2 {
					t.Fatalf("at the crash the token holds, want the old and the new key:%s", describeObjects(objs))
				}
			},
			check: func(t *testing.T, s *system, serial, _, job, pin string) {
				wantOnlyKeyAndCertificate(t, serial, pin, protocol.DeriveKeyID(job), certificateDER(t, s.certificateOf(job).PEM))
			},
		},
		{
			name: "unblock_pin: new PIN set, not journalled", kind: jobs.KindUnblockPIN, crash: "after:InitPIN:Logout",
			steps: []jobs.Step{jobs.StepTokenFound, jobs.StepVerified},
			atCrash: func(t *testing.T, dir, serial, _, job, pin string) {
				wantLogin(t, serial, journalSecret(t, dir, job, "user_pin"), true)
				wantLogin(t, serial, pin, false)
			},
			check: func(t *testing.T, s *system, serial, issue, job, pin string) {
				newPIN := s.revealPIN(job)
				wantLogin(t, serial, newPIN, true)
				wantLogin(t, serial, pin, false)
				wantOnlyKeyAndCertificate(t, serial, newPIN, protocol.DeriveKeyID(issue), certificateDER(t, s.certificateOf(issue).PEM))
			},
		},
		{
			name: "wipe: token re-initialised, not journalled", kind: jobs.KindWipe, crash: "after:InitToken:GetTokenInfo",
			steps: []jobs.Step{jobs.StepTokenFound, jobs.StepInitialising, jobs.StepVerified},
			atCrash: func(t *testing.T, _, serial, _, _, _ string) {
				if slot := slotOf(t, serial); strings.Contains(slot.flags, "PIN initialized") {
					t.Fatalf("at the crash the token still has a user PIN: %q", slot.flags)
				}
			},
			check: func(t *testing.T, s *system, serial, _, _, pin string) {
				if objs := objects(t, serial, ""); len(objs) != 0 {
					t.Errorf("after the wipe the token shows:%s", describeObjects(objs))
				}
				wantLogin(t, serial, pin, false)
				wantSOLogin(t, serial, s.keptPIN(serial, "so_pin"))
			},
		},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := s.sub(t)
			st.tokens = newTokenStore(t)
			id := fmt.Sprintf("ws-kind-crash-%02d", i)
			holderName := fmt.Sprintf("kindholder%02d", i)
			st.addHolder(holderName, fmt.Sprintf("Kind Holder %02d", i))
			st.enrol(id)
			dir := st.newDataDir()

			// An issued token, by the agent in this process.
			a := st.startAgent(id, agentOptions{dir: dir})
			issue := st.queue(jobs.KindIssue, id, holderName)
			serial := st.waitJob(issue, jobs.StateSucceeded).TokenSerial
			pin := st.revealPIN(issue)
			if err := a.stop(); err != nil {
				t.Fatal(err)
			}

			// The job, on the agent in a child process, killed at the crash point.
			s.tap.waitNoConsumer(t, agentQueue(t, id))
			child := st.startChild(id, dir, c.crash)
			job := st.queue(c.kind, id, holderName, "--token-serial", serial)
			child.waitCrashPoint(t)
			child.kill(t)
			st.snapshot(dir, "as the killed agent left it")
			state, step := journalState(t, dir, job)
			t.Logf("killed at %s: the journal says %s, step %q", c.crash, state, step)
			c.atCrash(t, dir, serial, issue, job, pin)

			s.tap.waitNoConsumer(t, agentQueue(t, id))
			a = st.startAgent(id, agentOptions{dir: dir})
			d := st.waitJob(job, jobs.StateSucceeded)
			if err := a.stop(); err != nil {
				t.Fatal(err)
			}
			wantSteps(t, d, c.steps...)
			want := []string{"pending_approval>approved", "approved>dispatched", "dispatched>running"}
			if c.kind == jobs.KindRenew {
				want = append(want, "running>awaiting_certificate", "awaiting_certificate>installing", "installing>succeeded")
			} else {
				want = append(want, "running>succeeded")
			}
			if got := transitions(d); !slices.Equal(got[1:], want) {
				t.Errorf("timeline %v, want %v", got, want)
			}
			if n := distinct(s.tap.messages(t), protocol.TypeResult, job, nil); n != 1 {
				t.Errorf("the agent sent %d results for the job, want 1", n)
			}
			c.check(t, st, serial, issue, job, pin)
		})
	}
	s.finalChecks()
}

// sub is the system seen from a subtest: the same coordinator, broker and secrets, with
// t the subtest (for failures and cleanups).
func (s *system) sub(t *testing.T) *system {
	c := *s
	c.t = t
	return &c
}

// journalState reads the job's state and step from the agent's journal, as a restarted
// agent finds it.
func journalState(t *testing.T, dir, jobID string) (journal.State, string) {
	t.Helper()
	j := openJournal(t, dir)
	defer func() { _ = j.Close() }()
	jobs, err := j.Jobs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, job := range jobs {
		if job.Ref.JobID == jobID {
			return job.State, job.Step
		}
	}
	t.Fatalf("the journal in %s holds no job %s", dir, jobID)
	return "", ""
}

// journalSecret reads a PIN the job generated from the agent's journal (sealed to the
// agent's own key there).
func journalSecret(t *testing.T, dir, jobID, name string) string {
	t.Helper()
	j := openJournal(t, dir)
	defer func() { _ = j.Close() }()
	secrets, err := j.Secrets(context.Background(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range secrets {
		if sec.Name == name {
			return sec.Value
		}
	}
	t.Fatalf("the journal holds no %s for job %s", name, jobID)
	return ""
}

func openJournal(t *testing.T, dir string) *journal.Journal {
	t.Helper()
	pair, err := keys.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.Open(context.Background(), filepath.Join(dir, journal.FileName), pair, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// childAgent is an agent running in a child process.
type childAgent struct {
	cmd     *exec.Cmd
	reached chan struct{}
	done    chan struct{}
	err     error
	logs    *logBuffer
}

// startChild starts the agent in a child process, to stop at the crash point.
func (s *system) startChild(id, dir, crash string) *childAgent {
	s.t.Helper()
	c := &childAgent{reached: make(chan struct{}), done: make(chan struct{}), logs: newLogBuffer()}
	s.addLog("agent "+id+" child", c.logs)
	c.cmd = exec.Command(os.Args[0], "-test.run", "^$")
	c.cmd.Env = append(os.Environ(), childEnv+"="+id, childDirEnv+"="+dir, childBrokerEnv+"="+s.brokerURL(id), childCrashEnv+"="+crash)
	c.cmd.Stderr = c.logs
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == crashMarker {
				close(c.reached)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	s.t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

func (c *childAgent) waitCrashPoint(t *testing.T) {
	t.Helper()
	select {
	case <-c.reached:
	case <-c.done:
		t.Fatalf("the agent child exited before its crash point: %v\n%s", c.err, tail(c.logs.String(), 6000))
	case <-time.After(waitLimit):
		t.Fatalf("the agent child did not reach its crash point within %v\n%s", waitLimit, tail(withoutDebug(c.logs.String()), 6000))
	}
}

// kill ends the child with SIGKILL and waits until it is gone.
func (c *childAgent) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.done
	var ee *exec.ExitError
	if !errors.As(c.err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the agent child ended with %v, want killed by SIGKILL", c.err)
	}
}

// agentChild is the crash test's agent: the real agent with an injector that holds it at
// the crash point.
func agentChild() int {
	id, dir, url, crash := os.Getenv(childEnv), os.Getenv(childDirEnv), os.Getenv(childBrokerEnv), os.Getenv(childCrashEnv)
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "agent child:", err)
		return 2
	}
	var once sync.Once
	stop := func() {
		once.Do(func() { fmt.Println(crashMarker) })
		select {} // held here until the parent kills the process
	}
	var inj faults.Injector
	logOut := io.Writer(os.Stderr)
	for _, point := range strings.Split(crash, "|") {
		switch parts := strings.SplitN(point, ":", 3); {
		case len(parts) == 2 && parts[0] == "log":
			logOut = &haltingWriter{w: os.Stderr, message: parts[1], halt: stop}
		case len(parts) == 2 && parts[0] == "block":
			inj.Hook(parts[1], stop)
		case len(parts) == 3 && parts[0] == "after":
			after := parts[1]
			inj.Hook(parts[2], func() {
				if inj.Calls(after) > 0 {
					stop()
				}
			})
		default:
			return fail(fmt.Errorf("unknown crash point %q", point))
		}
	}
	log := zerolog.New(logOut).Level(zerolog.DebugLevel).With().Timestamp().Str("process", "child").Logger()
	a, err := agent.New(agent.Config{
		ID: id, DataDir: dir, Modules: []string{testenv.SoftHSMModule},
		Broker: agent.Broker{URL: url, Backoff: fastBackoff},
		// The watcher polls rarely, so that the PKCS#11 calls the crash points name are the
		// job's: a job's first look at the tokens does not wait for the poll interval.
		PollInterval: time.Minute, HeartbeatInterval: time.Second,
		PKCS11Wrap: inj.Wrap,
	}, log)
	if err != nil {
		return fail(err)
	}
	if err := a.Run(context.Background()); err != nil {
		return fail(err)
	}
	return fail(errors.New("the agent stopped before its crash point"))
}

// haltingWriter passes log lines on and halts the goroutine writing the first line with
// the message.
type haltingWriter struct {
	w       io.Writer
	message string
	halt    func()
}

func (h *haltingWriter) Write(p []byte) (int, error) {
	n, err := h.w.Write(p)
	line := string(p)
	if strings.Contains(line, `"message":"`+h.message+`"`) && strings.Contains(line, `"job":"`) &&
		(!strings.Contains(line, `"type":"`) || strings.Contains(line, `"type":"dispatch"`)) {
		h.halt()
	}
	return n, err
}
