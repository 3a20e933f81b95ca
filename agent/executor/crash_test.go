//go:build cgo

package executor

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// Crashes are real: the agent runs in a child process (this test binary, re-executed),
// which is killed with SIGKILL at a chosen moment, holding its journal and its PKCS#11
// session open. The test then starts a new executor in this process over the same journal
// and token store. A subprocess rather than an abandoned executor in this process, because
// only then does nothing of the dead agent run on (a goroutine left behind could still
// write the journal or the token), and because SoftHSM2 then shows this process exactly
// what the dead one left on disk, as a real token shows a restarted agent.
const (
	childEnv        = "TOKENFLEET_EXECUTOR_CHILD"         // the data directory
	childCrashEnv   = "TOKENFLEET_EXECUTOR_CHILD_CRASH"   // where to stop
	childDeliverEnv = "TOKENFLEET_EXECUTOR_CHILD_DELIVER" // "1": play the coordinator
	crashMarker     = "CRASHPOINT"
)

// Crash points, as the child understands them:
//
//	block:Call        hold the first call of the PKCS#11 function, before it reaches the token
//	after:Call:Next   hold the first call of Next made after Call reached the token: Call's
//	                  effect is on the token, the agent has not journalled it
//	parked            stop once the journal says the job awaits its certificate
func TestCrashAndResumeAtEveryStep(t *testing.T) {
	points := []struct {
		name  string
		crash string
		// deliver: the child plays the coordinator (signs the CSR, delivers the certificate).
		deliver bool
		// deliverBeforeRestart: the certificate reaches the journal before the new executor
		// starts (the consumer took it while the agent was coming up).
		deliverBeforeRestart bool
		// What the dead agent left on the token: tokens with the job's label, and (once
		// the user PIN is set) keys and certificates under the job's ID. They show the
		// crash happened where it was meant to.
		tokens, keys, certs int
		// keyExisted: the restarted agent finds the key the dead one made.
		keyExisted bool
	}{
		{name: "before initialise", crash: "block:InitToken", keys: -1, certs: -1},
		{name: "initialised, serial not journalled", crash: "after:InitToken:GetTokenInfo", tokens: 1, keys: -1, certs: -1},
		{name: "initialised, user PIN not set", crash: "block:InitPIN", tokens: 1, keys: -1, certs: -1},
		{name: "PINs set, before key generation", crash: "block:GenerateKeyPair", tokens: 1},
		{name: "key generated, not journalled", crash: "after:GenerateKeyPair:GetAttributeValue", tokens: 1, keys: 1, keyExisted: true},
		// send_csr only reads the token: generate_key's done is journalled with the CSR, so
		// the restarted agent finds the key it made, as when the key was not journalled.
		{name: "key generated, before the CSR", crash: "block:SignInit", tokens: 1, keys: 1, keyExisted: true},
		{name: "CSR sent, certificate after restart", crash: "parked", tokens: 1, keys: 1},
		{name: "CSR sent, certificate before restart", crash: "parked", deliverBeforeRestart: true, tokens: 1, keys: 1},
		{name: "before the certificate write", crash: "block:CreateObject", deliver: true, tokens: 1, keys: 1},
		{name: "certificate written, not journalled", crash: "after:CreateObject:FindObjectsInit", deliver: true, tokens: 1, keys: 1, certs: 1},
		{name: "certificate written, before verification", crash: "after:CreateObject:SignInit", deliver: true, tokens: 1, keys: 1, certs: 1},
	}
	for i, p := range points {
		keyExisted := p.keyExisted
		t.Run(p.name, func(t *testing.T) {
			ctx := context.Background()
			ref := protocol.JobRef{JobID: fmt.Sprintf("crash-%02d", i), Attempt: 1}
			dir, coord, label := journalledBlankIssue(t, ref)

			runChild(t, dir, p.crash, p.deliver)

			a := newAgent(t, agentOptions{dir: dir, coord: coord, noRun: true})
			before, err := a.j.Job(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("after the crash the journal says: %s, step %s %s", before.State, before.Step, before.StepStatus)
			if p.crash == "parked" && before.State != journal.StateAwaitingCertificate {
				t.Fatalf("the child was stopped in %s, want awaiting_certificate", before.State)
			}
			if n := tokensLabelled(t, label); n != p.tokens {
				t.Fatalf("after the crash %d tokens carry the job's label, want %d", n, p.tokens)
			}
			if p.keys >= 0 {
				secrets, err := a.j.Secrets(ctx, ref.JobID)
				if err != nil {
					t.Fatal(err)
				}
				var pin string
				for _, s := range secrets {
					if s.Name == secretUserPIN {
						pin = s.Value
					}
				}
				objs := objects(t, label, pin)
				if k, c := countObjects(objs, "Private Key", keyID(ref.JobID)), countObjects(objs, "Certificate", keyID(ref.JobID)); k != p.keys || c != p.certs {
					t.Fatalf("after the crash the token holds %d keys and %d certificates of the job, want %d and %d", k, c, p.keys, p.certs)
				}
			}
			if p.deliverBeforeRestart {
				if err := a.coord.poll(ctx, a.j, a.ex); err != nil {
					t.Fatal(err)
				}
				if job, _ := a.j.Job(ctx, ref); job.State != journal.StateInstalling {
					t.Fatalf("the delivered certificate left the job %s, want installing", job.State)
				}
			}
			if n, err := a.ex.Resume(ctx); err != nil || n != 1 {
				t.Fatalf("Resume found %d jobs (%v), want 1", n, err)
			}
			a.start()
			res := a.result(ref)
			wantSuccess(t, res)
			user, so := a.pins(ref, res)
			a.stop()

			// Over the whole life of the attempt, before and after the crash: one CSR, one
			// result.
			msgs, err := a.j.Messages(ctx, ref.JobID)
			if err != nil {
				t.Fatal(err)
			}
			count := map[protocol.MessageType]int{}
			for _, m := range msgs {
				count[m.Type]++
			}
			if count[protocol.TypeCSR] != 1 || count[protocol.TypeResult] != 1 {
				t.Errorf("the attempt sent %d CSRs and %d results, want 1 and 1", count[protocol.TypeCSR], count[protocol.TypeResult])
			}
			for _, m := range msgs {
				env, err := protocol.Decode(m.Data)
				if err != nil {
					t.Fatal(err)
				}
				if p, err := protocol.DecodeBody[protocol.Progress](env); err == nil && p.Step == protocol.StepKeyGenerated && p.KeyExisted != keyExisted {
					t.Errorf("key_generated says key_existed %t, want %t", p.KeyExisted, keyExisted)
				}
			}
			wantOneKeyAndCertificate(t, label, user, keyID(ref.JobID))
			if err := soPINWorks(label, so, user); err != nil {
				t.Errorf("SO PIN: %v", err)
			}
			if n := tokensLabelled(t, label); n != 1 {
				t.Errorf("%d tokens carry the label %q, want 1", n, label)
			}
		})
	}
}

// tokensLabelled counts, with softhsm2-util, the tokens with the label.
func tokensLabelled(t *testing.T, label string) int {
	n := 0
	for _, line := range strings.Split(testenv.Run(t, "softhsm2-util", "--show-slots"), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Label:"); ok && strings.TrimSpace(v) == label {
			n++
		}
	}
	return n
}

// runChild runs the agent in a child process until it reaches the crash point, then kills
// it.
func runChild(t *testing.T, dir, crash string, deliver bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	d := "0"
	if deliver {
		d = "1"
	}
	cmd.Env = append(os.Environ(), childEnv+"="+dir, childCrashEnv+"="+crash, childDeliverEnv+"="+d)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reached := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == crashMarker {
				close(reached)
				break
			}
		}
		_, _ = bufio.NewReader(stdout).WriteTo(&bytes.Buffer{}) // drain until the child is gone
	}()
	select {
	case <-reached:
	case <-time.After(waitFor):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the child never reached %s; its log:\n%s", crash, tail(stderr.Bytes(), 6000))
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("the child ended with %v, want killed; its log:\n%s", err, tail(stderr.Bytes(), 6000))
	}
}

// crashChild is the agent of the crash test: it resumes the journalled job until the crash
// point, says so on stdout, and waits there to be killed.
func crashChild() int {
	dir, crash := os.Getenv(childEnv), os.Getenv(childCrashEnv)
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := zerolog.New(os.Stderr).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	pair, err := keys.LoadOrCreate(dir)
	if err != nil {
		return fail(err)
	}
	j, err := journal.Open(ctx, filepath.Join(dir, journal.FileName), pair, journal.Options{Log: log})
	if err != nil {
		return fail(err)
	}
	var inj faults.Injector
	var once sync.Once
	stop := func() {
		once.Do(func() { fmt.Println(crashMarker) })
		select {} // held here until the parent kills the process
	}
	switch parts := strings.Split(crash, ":"); {
	case len(parts) == 2 && parts[0] == "block":
		inj.Hook(parts[1], stop)
	case len(parts) == 3 && parts[0] == "after":
		after := parts[1]
		inj.Hook(parts[2], func() {
			if inj.Calls(after) > 0 {
				stop()
			}
		})
	case crash == "parked":
		go func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for range tick.C {
				jobs, err := j.Jobs(ctx)
				if err == nil && len(jobs) == 1 && jobs[0].State == journal.StateAwaitingCertificate {
					stop()
				}
			}
		}()
	default:
		return fail(fmt.Errorf("unknown crash point %q", crash))
	}
	mod, err := pkcs11.Open(testenv.SoftHSMModule, pkcs11.Options{Logger: log, Wrap: inj.Wrap})
	if err != nil {
		return fail(err)
	}
	ex, err := New(Config{AgentID: testAgent, Journal: j, Keys: pair, Tokens: ModuleTokens{Module: mod},
		PollInterval: 20 * time.Millisecond, Log: log})
	if err != nil {
		return fail(err)
	}
	if _, err := ex.Resume(ctx); err != nil {
		return fail(err)
	}
	go func() { _ = ex.Run(ctx) }()
	if os.Getenv(childDeliverEnv) == "1" {
		ca, err := testenv.LoadCA(filepath.Join(dir, "ca.pem"))
		if err != nil {
			return fail(err)
		}
		coord := newCoordinator(pair, ca, nil)
		jobs, err := j.Jobs(ctx)
		if err != nil {
			return fail(err)
		}
		for _, job := range jobs {
			coord.kinds[job.Ref.JobID] = job.Kind
		}
		go func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for range tick.C {
				if err := coord.poll(ctx, j, ex); err != nil {
					fmt.Fprintln(os.Stderr, "crash child: coordinator:", err)
				}
			}
		}()
	}
	// Never reached in a passing test: the parent kills the child at the crash point.
	<-time.After(waitFor)
	return fail(fmt.Errorf("the crash point %s was not reached in %s", crash, waitFor))
}

// TestCrashInInitialiseThenCancel: the agent dies while initialising a token (its new SO
// PIN on the token, the user PIN not set yet), and the coordinator's cancel is journalled
// before the job can resume. The attempt ends cancelled, and its result still reports the
// PINs the token now has, having set the user PIN the dead agent chose: the coordinator
// would otherwise go on with the SO PIN the token no longer has, and a cancelled job's
// PINs leave the journal.
func TestCrashInInitialiseThenCancel(t *testing.T) {
	ctx := context.Background()
	ref := protocol.JobRef{JobID: "crash-then-cancel", Attempt: 1}
	dir, coord, label := journalledBlankIssue(t, ref)

	runChild(t, dir, "block:InitPIN", false)
	if n := tokensLabelled(t, label); n != 1 {
		t.Fatalf("after the crash %d tokens carry the job's label, want 1", n)
	}
	a := newAgent(t, agentOptions{dir: dir, coord: coord, noRun: true})
	if _, err := a.ex.Cancel(ctx, coord.envelope(ref, protocol.Cancel{State: protocol.StateCancelled, Reason: "the help desk cancelled it"})); err != nil {
		t.Fatal(err)
	}
	if n, err := a.ex.Resume(ctx); err != nil || n != 1 {
		t.Fatalf("Resume found %d jobs (%v), want 1", n, err)
	}
	a.start()
	res := a.result(ref)
	wantFailure(t, res, protocol.CodeJobCancelled, false)
	user, so := a.pins(ref, res)
	a.stop()
	if user == "" || so == "" {
		t.Fatalf("the cancelled attempt reports PINs user %t, SO %t", user != "", so != "")
	}
	if err := soPINWorks(label, so, user); err != nil {
		t.Errorf("the SO PIN the result reports: %v", err)
	}
	if err := userPINWorks(label, user); err != nil {
		t.Errorf("the user PIN the result reports: %v", err)
	}
}

// journalledBlankIssue makes an agent's data directory (key pair, issuing CA) holding, in
// its journal, an issue dispatch of ref on a blank token, as the consumer leaves it once
// it journalled and acked the dispatch; then the agent went down. It returns the
// directory, the coordinator that sent the dispatch and the token label it asks for.
func journalledBlankIssue(t *testing.T, ref protocol.JobRef) (dir string, coord *coordinator, label string) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	pair, err := keys.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := testenv.NewCA("tokenfleet test issuing CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(filepath.Join(dir, "ca.pem")); err != nil {
		t.Fatal(err)
	}
	coordKey, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	coord = newCoordinator(pair, ca, coordKey)
	label = newLabel(t)
	j, err := journal.Open(ctx, filepath.Join(dir, journal.FileName), pair, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.RecordDispatch(ctx, issueBlank(&agent{coord: coord}, ref, label, protocol.KeyP256)); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, coord, label
}
