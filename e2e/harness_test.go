//go:build cgo

package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// waitLimit bounds every wait; a job takes a second or two.
const waitLimit = 90 * time.Second

// The people of every system: an organisation with a help-desk operator who queues jobs,
// an approver who approves them, and token holders.
const (
	org      = "acme"
	operator = "olga"
	approver = "arne"
	holder   = "alice"
)

// profileName is the profile of every job: an RSA-2048 key generated on a token the agent
// initialises (any blank one), one approver of the holder's organisation. Its PINs are
// long and not digits only, so that looking for them in logs and files cannot hit a
// timestamp or a serial number by chance.
const profileName = "e2e-logon"

const profileYAML = `name: e2e-logon
description: Smart-card logon for the end-to-end tests.
key:
  type: rsa
  size: 2048
subject:
  common_name: "{{.Name}}"
  organization: "{{.Organization}}"
sans:
  upn: true
key_usage: [digitalSignature, keyEncipherment]
extended_key_usage: [smartcardLogon, clientAuth]
validity: 30d
token:
  initialize: true
  label: "{{.Name}}"
  any_blank: true
pin_policy:
  min_length: 12
  max_length: 16
  so_pin_length: 16
approval:
  required: 1
  roles: [approver]
  scope: organization
  expires_after: 72h
`

// fastBackoff reconnects agents quickly after the broker drops them.
var fastBackoff = amqp.Backoff{Min: 20 * time.Millisecond, Max: 300 * time.Millisecond}

// system is one tokenfleet installation: a coordinator with its people and profile, a
// broker vhost with a tap on it, a SoftHSM2 token store, and the agents a test starts.
type system struct {
	t        *testing.T
	broker   *testenv.Broker
	tap      *tap
	tokens   string // the SoftHSM2 token directory
	coord    *coordinatortest.Instance
	coordLog *logBuffer
	api      *client.Client // as the administrator
	admin    string         // API tokens
	operator string
	approver string
	opts     systemOptions
	*record
}

// record is what a system and its subtests' views share: what the secret scan goes
// through, and the agents' broker URLs.
type record struct {
	root string // agents' data directories go here: they outlive subtests

	mu       sync.Mutex // guards the fields below
	logs     map[string]*logBuffer
	dataDirs []string
	pins     map[string]string // every PIN seen, by where it came from
	// brokerURLs are the agents' own broker URLs (perAgentUsers), by agent ID.
	brokerURLs map[string]string
	// snapshots are files as they were at a moment that passed (a killed agent's journal
	// and its -wal, before the restarted agent rewrote them), by name.
	snapshots map[string][]byte
}

// systemOptions choose how a system is set up.
type systemOptions struct {
	// perAgentUsers runs the broker as in production: every agent has a broker user of
	// its own, allowed its own queue and routing keys only, and the coordinator checks the
	// sender of every event against it (broker.agent_users per_agent). Otherwise agents
	// share guest, as on a development broker.
	perAgentUsers bool
	// management turns self-enrolment on: the coordinator provisions agents' broker users
	// through the management API.
	management bool
	// notifications is the coordinator's notifications section; nil: off.
	notifications *coordinator.NotificationsConfig
	// configure changes the coordinator's configuration last (the console's section).
	configure func(*coordinator.Config)
}

// newSystem starts a coordinator on a broker vhost of the test's own, points SOFTHSM2_CONF
// at a fresh token store (SoftHSM2 reads it when a module is initialised: agents started in
// this process and every tool the test runs see that store), and sets up the people and
// the profile with tokenfleetctl.
func newSystem(t *testing.T, opts ...systemOptions) *system {
	t.Helper()
	var o systemOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	s := &system{t: t, opts: o, record: newRecord(t)}
	s.tokens = newTokenStore(t)
	s.broker = testenv.NewBroker(t)
	s.tap = newTap(t, s.broker)
	agentUsers := "shared"
	if o.perAgentUsers {
		agentUsers = "per_agent"
	}
	s.startCoordinator(coordinatortest.Options{AgentUsers: agentUsers, Management: o.management,
		Notifications: o.notifications, Configure: o.configure})
	s.setUp()
	return s
}

// newRecord is a system's empty record, its agents' data directories under the test's
// temporary directory.
func newRecord(t *testing.T) *record {
	return &record{root: t.TempDir(), logs: map[string]*logBuffer{}, pins: map[string]string{},
		brokerURLs: map[string]string{}, snapshots: map[string][]byte{}}
}

// startCoordinator starts the system's coordinator with o on its broker, its log kept in
// the record and shown when the test fails.
func (s *system) startCoordinator(o coordinatortest.Options) {
	s.t.Helper()
	s.coordLog = newLogBuffer()
	s.logs["coordinator"] = s.coordLog
	o.BrokerURL, o.Log = s.broker.URL, s.coordLog
	s.coord = coordinatortest.Start(s.t, o)
	s.t.Cleanup(func() {
		if s.t.Failed() {
			s.t.Logf("coordinator log (info and above):\n%s", tail(withoutDebug(s.coordLog.String()), 6000))
		}
	})
}

// setUp sets up the people and the profile with tokenfleetctl, as an administrator does.
func (s *system) setUp() {
	t := s.t
	t.Helper()
	s.admin = s.coord.AdminToken
	var err error
	if s.api, err = client.New(s.coord.URL, s.admin); err != nil {
		t.Fatal(err)
	}

	s.ctl(s.admin, "org", "create", org)
	s.ctl(s.admin, "user", "create", operator, "--name", "Olga Operator", "--org", org, "--role", "helpdesk")
	s.ctl(s.admin, "user", "create", approver, "--name", "Arne Approver", "--org", org, "--role", "approver")
	s.addHolder(holder, "Alice Holder")
	s.operator = strings.TrimSpace(s.ctl(s.admin, "user", "token", operator, "--name", "e2e"))
	s.approver = strings.TrimSpace(s.ctl(s.admin, "user", "token", approver, "--name", "e2e"))
	profile := filepath.Join(t.TempDir(), "profile.yaml")
	if err := os.WriteFile(profile, []byte(profileYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	s.ctl(s.admin, "profile", "apply", profile)
}

// addHolder creates a token holder of the organisation.
func (s *system) addHolder(username, name string) {
	s.t.Helper()
	s.ctl(s.admin, "user", "create", username, "--name", name, "--org", org,
		"--email", username+"@acme.example", "--upn", username+"@acme.example")
}

// newTokenStore makes a SoftHSM2 token store of the test's own (on /dev/shm when there is
// one) and points SOFTHSM2_CONF at it until the test ends. Nothing in this process may
// hold the module open across tests: agents close it when they stop, which finalizes it.
func newTokenStore(t *testing.T) string {
	t.Helper()
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "tokenfleet-e2e-softhsm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	return tokens
}

// ctlResult is one run of tokenfleetctl.
type ctlResult struct {
	stdout, stderr string
	code           int
}

// ctlRun runs tokenfleetctl (its Main, as the binary does) against the coordinator as the
// holder of the API token.
func (s *system) ctlRun(token string, args ...string) ctlResult {
	s.t.Helper()
	return s.ctlRunInput(token, "", args...)
}

// ctlRunInput is ctlRun with stdin as the standard input.
func (s *system) ctlRunInput(token, stdin string, args ...string) ctlResult {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	vars := map[string]string{"TOKENFLEET_URL": s.coord.URL, "TOKENFLEET_TOKEN": token, "HOME": s.t.TempDir()}
	code := ctl.Main(ctx, args, ctl.Env{Stdin: strings.NewReader(stdin), Stdout: &stdout, Stderr: &stderr,
		Getenv: func(k string) string { return vars[k] }})
	return ctlResult{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// ctl runs tokenfleetctl and fails the test unless it succeeds; it returns the output.
func (s *system) ctl(token string, args ...string) string {
	s.t.Helper()
	r := s.ctlRun(token, args...)
	if r.code != ctl.ExitOK {
		s.t.Fatalf("tokenfleetctl %s: exit status %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// enrol enrols an agent ID (tokenfleetctl agent add), before any agent with that ID runs.
func (s *system) enrol(id string) {
	s.t.Helper()
	s.ctl(s.admin, "agent", "add", id, "--hostname", "ws-"+id+".acme.example")
	if !s.opts.perAgentUsers {
		return
	}
	// The agent's own broker user, with the permissions enrolment gives it: an
	// administrator creates it on the broker with these.
	user, err := protocol.AgentUser(id)
	if err != nil {
		s.t.Fatal(err)
	}
	perms, err := protocol.AgentPermissions(id)
	if err != nil {
		s.t.Fatal(err)
	}
	url := s.broker.AddUser(s.t, user, perms.Configure, perms.Write, perms.Read)
	s.broker.SetTopicPermissions(s.t, user, perms.TopicExchange, perms.TopicWrite, perms.TopicRead)
	s.mu.Lock()
	s.brokerURLs[id] = url
	s.mu.Unlock()
}

// brokerURL is the URL an agent connects with: its own user's, or guest's.
func (s *system) brokerURL(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.brokerURLs[id]; ok {
		return u
	}
	return s.broker.URL
}

// queue queues a job as the help-desk operator and approves it as the approver, as people
// do; it returns the job's ID. extra are more tokenfleetctl issue flags.
func (s *system) queue(kind jobs.Kind, agentID, holderName string, extra ...string) string {
	s.t.Helper()
	args := append([]string{"issue", "--kind", string(kind), "--holder", holderName, "--agent", agentID, "--profile", profileName}, extra...)
	id := strings.TrimSpace(s.ctl(s.operator, args...))
	if id == "" {
		s.t.Fatal("tokenfleetctl issue printed no job ID")
	}
	s.ctl(s.approver, "approve", id, "--reason", "checked the request")
	return id
}

// job fetches a job with its timeline and steps.
func (s *system) job(id string) client.JobDetail {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := s.api.GetJob(ctx, id)
	if err != nil {
		s.t.Fatalf("job %s: %v", id, err)
	}
	return d
}

// waitJob waits until the job is in a terminal state and fails the test unless it is want.
func (s *system) waitJob(id string, want jobs.State) client.JobDetail {
	s.t.Helper()
	var d client.JobDetail
	eventually(s.t, "job "+id+" to end", func() (bool, string) {
		d = s.job(id)
		return jobs.Terminal(d.State), fmt.Sprintf("state %s, steps %v", d.State, stepNames(d))
	})
	if d.State != want {
		s.t.Fatalf("job %s (%s) ended %s (%s: %s), want %s; timeline %v; steps %v",
			id, d.Kind, d.State, d.ErrorCode, d.ErrorMessage, want, transitions(d), stepNames(d))
	}
	return d
}

// revealPIN shows the user PIN a job set, through tokenfleetctl job pin as its requester,
// and remembers it for the secret scan.
func (s *system) revealPIN(jobID string) string {
	s.t.Helper()
	pin := strings.TrimSpace(s.ctl(s.operator, "job", "pin", jobID))
	if pin == "" {
		s.t.Fatalf("tokenfleetctl job pin %s printed nothing", jobID)
	}
	s.remember("user PIN revealed for job "+jobID, pin)
	return pin
}

func (s *system) remember(where, pin string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pins[where] = pin
}

func stepNames(d client.JobDetail) []jobs.Step {
	out := make([]jobs.Step, 0, len(d.Steps))
	for _, st := range d.Steps {
		out = append(out, st.Step)
	}
	return out
}

// transitions lists the job's timeline as "from>to" strings.
func transitions(d client.JobDetail) []string {
	out := make([]string, 0, len(d.Timeline))
	for _, ev := range d.Timeline {
		out = append(out, fmt.Sprintf("%s>%s", ev.From, ev.To))
	}
	return out
}

// wantIssueHistory checks the job went through every state of an issue once, in order, and
// reported each step of an issue exactly once (token_found again after a restart that had
// to wait for the token is allowed).
func wantIssueHistory(t *testing.T, d client.JobDetail) {
	t.Helper()
	want := []string{"pending_approval>approved", "approved>dispatched", "dispatched>running", "running>awaiting_certificate",
		"awaiting_certificate>installing", "installing>succeeded"}
	got := transitions(d)
	if len(got) > 0 && got[0] == ">pending_approval" {
		got = got[1:] // the creation, where the timeline records one
	}
	if !slices.Equal(got, want) {
		t.Errorf("job %s timeline %v, want %v", d.ID, got, want)
	}
	wantSteps(t, d, jobs.StepTokenFound, jobs.StepInitialising, jobs.StepKeyGenerated, jobs.StepCSRSent,
		jobs.StepCertificateWritten, jobs.StepVerified)
}

// wantSteps checks the job reported exactly these steps, each once and in this order,
// except that token_found may come more than once.
func wantSteps(t *testing.T, d client.JobDetail, want ...jobs.Step) {
	t.Helper()
	got := stepNames(d)
	var dedup []jobs.Step
	for _, st := range got {
		if st == jobs.StepTokenFound && slices.Contains(dedup, st) {
			continue
		}
		dedup = append(dedup, st)
	}
	if !slices.Equal(dedup, want) || len(got)-len(dedup) > 1 {
		t.Errorf("job %s reported steps %v, want %v each once", d.ID, got, want)
	}
}

// eventually polls cond until it holds or waitLimit passes; status says where it stands,
// for the failure message.
func eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, status := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", waitLimit, what, status)
		}
		<-tick.C
	}
}

// agentRun is an agent running in this process.
type agentRun struct {
	id, dir string
	logs    *logBuffer
	stop    func() error
}

type agentOptions struct {
	dir  string                              // data directory; "" makes one
	wrap func(pkcs11.Backend) pkcs11.Backend // the PKCS#11 seam, for fault injection
}

// startAgent runs the real agent in this process with the SoftHSM2 module, logging at debug
// level, until the test ends or stop is called. Tokens another process made since the
// module was last initialised in this process are seen (the module is initialised when
// the agent starts).
func (s *system) startAgent(id string, o agentOptions) *agentRun {
	s.t.Helper()
	t := s.t
	r := &agentRun{id: id, dir: o.dir, logs: newLogBuffer()}
	if r.dir == "" {
		r.dir = s.newDataDir()
	}
	s.addLog("agent "+id+" in-process", r.logs)
	log := zerolog.New(r.logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	ready := make(chan struct{})
	a, err := agent.New(agent.Config{
		ID: id, DataDir: r.dir, Modules: []string{testenv.SoftHSMModule},
		Broker:       agent.Broker{URL: s.brokerURL(id), Backoff: fastBackoff},
		PollInterval: 100 * time.Millisecond, HeartbeatInterval: time.Second, ShutdownGrace: 5 * time.Second,
		Ready: func() { close(ready) }, PKCS11Wrap: o.wrap,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
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
				t.Errorf("agent %s did not stop within %v; log:\n%s", id, waitLimit, tail(r.logs.String(), 4000))
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("agent %s: Run: %v", id, err)
		}
		if t.Failed() {
			t.Logf("log of agent %s (info and above):\n%s", id, tail(withoutDebug(r.logs.String()), 8000))
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("agent %s ended before it was ready: %v\n%s", id, err, r.logs.String())
	case <-time.After(waitLimit):
		t.Fatalf("agent %s did not get ready", id)
	}
	return r
}

// newDataDir makes an agent data directory, remembered for the secret scan.
func (s *system) newDataDir() string {
	s.t.Helper()
	dir, err := os.MkdirTemp(s.root, "agent-")
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.dataDirs = append(s.dataDirs, dir)
	s.mu.Unlock()
	return dir
}

func (s *system) addLog(name string, l *logBuffer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.logs[name]; ok {
		name = fmt.Sprintf("%s #%d", name, len(s.logs))
	}
	s.logs[name] = l
}

// logBuffer collects log lines from many goroutines.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func newLogBuffer() *logBuffer { return &logBuffer{} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// waitFor waits until a log line holds every part.
func (b *logBuffer) waitFor(t testing.TB, parts ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("a log line with %q", parts), func() (bool, string) {
		for _, line := range strings.Split(b.String(), "\n") {
			if containsAll(line, parts...) {
				return true, ""
			}
		}
		return false, "log:\n" + tail(withoutDebug(b.String()), 3000)
	})
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
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
		return "..." + s[len(s)-n:]
	}
	return s
}

// agentQueue is the agent's command queue.
func agentQueue(t testing.TB, id string) string {
	t.Helper()
	q, err := protocol.AgentQueue(id)
	if err != nil {
		t.Fatal(err)
	}
	return q
}
