//go:build cgo

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/enrol"
	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// enrolled is an agent binary that enrolled itself, with a SoftHSM2 store of its own.
type enrolled struct {
	id   string
	dir  string
	hsm  *testenv.SoftHSM
	cmd  *exec.Cmd
	logs *logBuffer
	done chan error
}

// adminAPI sends a request to the coordinator's API (through the proxy that checks every
// answer against the API description) as the administrator; it returns the status and
// decodes a 2xx body into out.
func (s *system) adminAPI(method, path string, in, out any) (int, string) {
	s.t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			s.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, s.coord.URL+path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.admin)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: %v\n%s", method, path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// newKey creates an enrolment key or codes as the administrator; it returns the first.
func (s *system) newKey(req api.EnrolmentKeyCreate) api.EnrolmentKey {
	s.t.Helper()
	var out api.EnrolmentKeys
	if code, body := s.adminAPI("POST", "/api/v1/enrolment-keys", req, &out); code != http.StatusCreated || len(out.Items) == 0 {
		s.t.Fatalf("create enrolment key %+v: %d %s", req, code, body)
	}
	return out.Items[0]
}

// enrolBinary runs tokenfleet-agent enrol; it returns its output and exit status.
func (s *system) enrolBinary(a *enrolled, code string, extra ...string) (string, int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	args := append([]string{"enrol", "--coordinator", s.coord.DirectURL, "--code", code, "--data", a.dir,
		"--module", testenv.SoftHSMModule, "--log-format", "json"}, extra...)
	if a.id != "" {
		args = append(args, "--id", a.id)
	}
	cmd := exec.CommandContext(ctx, agentBin, args...)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+a.hsm.Conf)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	s.t.Fatalf("tokenfleet-agent enrol: %v\n%s", err, out)
	return "", -1
}

// newEnrolled makes an agent's data directory and token store; its broker user, made by
// the coordinator, is removed when the test ends.
func (s *system) newEnrolled(id string) *enrolled {
	s.t.Helper()
	if id != "" {
		user, err := protocol.AgentUser(id)
		if err != nil {
			s.t.Fatal(err)
		}
		testenv.RemoveBrokerUserAtEnd(s.t, user)
	}
	return &enrolled{id: id, dir: s.newDataDir(), hsm: testenv.NewPrivateSoftHSM(s.t), logs: newLogBuffer()}
}

// run starts tokenfleet-agent run on the enrolled agent's data directory: no broker
// settings, so it takes its enrolment's.
func (s *system) run(a *enrolled, extra ...string) {
	s.t.Helper()
	a.cmd = exec.Command(agentBin, append([]string{"run", "--data", a.dir, "--module", testenv.SoftHSMModule, "--log-format", "json",
		"--log-level", "debug", "--poll-interval", "100ms", "--heartbeat-interval", "1s"}, extra...)...)
	a.cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+a.hsm.Conf)
	a.cmd.Stdout, a.cmd.Stderr = a.logs, a.logs
	s.addLog("agent "+a.id+" binary", a.logs)
	if err := a.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	a.done = make(chan error, 1)
	go func() { a.done <- a.cmd.Wait() }()
	s.t.Cleanup(func() { s.stop(a) })
}

// stop ends a running agent with SIGTERM, as its service manager does.
func (s *system) stop(a *enrolled) {
	if a.cmd == nil || a.done == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.done:
		if err != nil && !s.t.Failed() {
			s.t.Logf("agent %s ended with %v", a.id, err)
		}
	case <-time.After(waitLimit):
		_ = a.cmd.Process.Kill()
		s.t.Errorf("agent %s did not stop on SIGTERM", a.id)
	}
	a.done = nil
	if s.t.Failed() {
		s.t.Logf("log of agent %s:\n%s", a.id, tail(withoutDebug(a.logs.String()), 6000))
	}
}

// agentState reads an agent's life-cycle state through the API.
func (s *system) agentState(id string) string {
	s.t.Helper()
	var list api.AgentList
	if code, body := s.adminAPI("GET", "/api/v1/agents?limit=500", nil, &list); code != http.StatusOK {
		s.t.Fatalf("list agents: %d %s", code, body)
	}
	for _, a := range list.Items {
		if a.ID == id {
			return a.State
		}
	}
	return ""
}

// TestSelfEnrolment: agents enrol themselves with the tokenfleet-agent binary, each
// ending with its own least-privilege broker user that the coordinator made, and run
// issuances; bad codes are refused and audited; disabling an agent closes its broker
// connections within seconds; rotated credentials lose no job.
func TestSelfEnrolment(t *testing.T) {
	s := newSystem(t, systemOptions{perAgentUsers: true, management: true})

	pre := s.newEnrolled(testenv.UniqueUser("ws-pre-"))
	held := s.newEnrolled(testenv.UniqueUser("ws-held-"))
	coded := s.newEnrolled(testenv.UniqueUser("ws-code-"))
	keyPre := s.newKey(api.EnrolmentKeyCreate{Kind: "key", Name: "floor 3", PreApproved: true, MaxUses: 5, Tags: []string{"floor3"}})
	keyHeld := s.newKey(api.EnrolmentKeyCreate{Kind: "key", Name: "held for approval"})
	code := s.newKey(api.EnrolmentKeyCreate{Kind: "code", AgentID: coded.id})
	if keyPre.Secret == "" || code.Secret == "" || code.MaxUses != 1 || !code.Expires.After(code.Created) {
		t.Fatalf("keys as created: %+v, %+v", keyPre, code)
	}

	// Three ways in: a pre-approved key, a key held for approval, a one-off code.
	if out, st := s.enrolBinary(pre, keyPre.Secret); st != 0 || !strings.Contains(out, "enrolled as "+pre.id) || !strings.Contains(out, ": active") {
		t.Fatalf("enrol with the pre-approved key: exit %d\n%s", st, out)
	}
	if out, st := s.enrolBinary(held, keyHeld.Secret, "--no-wait"); st != 0 || !strings.Contains(out, ": pending") ||
		!strings.Contains(out, "tokenfleetctl agent approve "+held.id) {
		t.Fatalf("enrol with the held key: exit %d\n%s", st, out)
	}
	if out, st := s.enrolBinary(coded, code.Secret); st != 0 || !strings.Contains(out, ": active") {
		t.Fatalf("enrol with the code: exit %d\n%s", st, out)
	}
	for _, a := range []*enrolled{pre, held, coded} {
		st, err := os.Stat(a.dir + "/enrolment.json")
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("agent %s's enrolment record: %v, mode %v; want 0600", a.id, err, st.Mode().Perm())
		}
		rec, err := enrol.Load(a.dir)
		if err != nil || rec.AgentID != a.id || rec.Secret == "" || len(rec.ResultKey) == 0 ||
			!strings.Contains(rec.CAPEM, "BEGIN CERTIFICATE") || strings.Contains(rec.BrokerURL, "@") {
			t.Fatalf("agent %s's enrolment record: %+v, %v", a.id, rec, err)
		}
	}
	if out, st := s.enrolBinary(pre, keyPre.Secret); st != 1 || !strings.Contains(out, "enrolled already") || !strings.Contains(out, "--force") {
		t.Fatalf("enrolling an enrolled agent again: exit %d\n%s", st, out)
	}
	var pending api.AgentList
	s.adminAPI("GET", "/api/v1/agents?state=pending", nil, &pending)
	if len(pending.Items) != 1 || pending.Items[0].ID != held.id || pending.Items[0].EnrolledWith != keyHeld.ID {
		t.Fatalf("pending agents: %+v", pending.Items)
	}
	if testenv.BrokerUserExists(t, "agent-"+held.id) {
		t.Fatal("an agent waiting for approval has a broker user")
	}
	if code, body := s.adminAPI("POST", "/api/v1/agents/"+held.id+"/approve", map[string]string{"reason": "known laptop"}, nil); code != http.StatusOK {
		t.Fatalf("approve: %d %s", code, body)
	}

	// Each has its own broker user with exactly the agent's permissions.
	perms := tool(t, "rabbitmqctl", "list_permissions", "-q", "-p", s.broker.VHost)
	topics := tool(t, "rabbitmqctl", "list_topic_permissions", "-q", "-p", s.broker.VHost)
	for _, a := range []*enrolled{pre, held, coded} {
		p, err := protocol.AgentPermissions(a.id)
		if err != nil {
			t.Fatal(err)
		}
		user := "agent-" + a.id
		want := strings.Join([]string{user, p.Configure, p.Write, p.Read}, "\t")
		if !slices.Contains(strings.Split(perms, "\n"), want) {
			t.Errorf("rabbitmqctl list_permissions has no line %q:\n%s", want, perms)
		}
		wantTopic := strings.Join([]string{user, p.TopicExchange, p.TopicWrite, p.TopicRead}, "\t")
		if !slices.Contains(strings.Split(topics, "\n"), wantTopic) {
			t.Errorf("rabbitmqctl list_topic_permissions has no line %q:\n%s", wantTopic, topics)
		}
	}

	// Each connects as its own user and runs an issuance.
	for _, a := range []*enrolled{pre, held, coded} {
		s.run(a)
	}
	var ids []string
	for _, a := range []*enrolled{pre, held, coded} {
		ids = append(ids, s.queue(jobs.KindIssue, a.id, holder))
	}
	for i, id := range ids {
		d := s.waitJob(id, jobs.StateSucceeded)
		if d.TokenSerial == "" {
			t.Errorf("agent %s's issuance names no token", []*enrolled{pre, held, coded}[i].id)
		}
	}
	for _, a := range []*enrolled{pre, held, coded} {
		if got := testenv.UserConnections(t, "agent-"+a.id); len(got) == 0 {
			t.Errorf("agent %s has no connection as its own broker user", a.id)
		}
	}

	// A software-distribution package carries the key in the agent's configuration: the
	// first start enrols, then runs.
	packaged := s.newEnrolled(testenv.UniqueUser("ws-pkg-"))
	keyFile := packaged.dir + "-key"
	if err := os.WriteFile(keyFile, []byte(keyPre.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := packaged.dir + ".yaml"
	yaml := fmt.Sprintf("id: %s\nenrol:\n  coordinator: %s\n  code_file: %s\n", packaged.id, s.coord.DirectURL, keyFile)
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s.run(packaged, "--config", conf)
	packaged.logs.waitFor(t, "enrolled on first start")
	s.waitJob(s.queue(jobs.KindIssue, packaged.id, holder), jobs.StateSucceeded)

	t.Run("refused", func(t *testing.T) { testEnrolRefused(t, s, keyPre, code, coded.id, pre.id) })

	// Rotation: the open connection stays and the next job runs on it.
	if code, body := s.adminAPI("POST", "/api/v1/agents/"+held.id+"/rotate-credentials", map[string]string{"reason": "quarterly"}, nil); code != http.StatusOK {
		t.Fatalf("rotate: %d %s", code, body)
	}
	if got := testenv.UserConnections(t, "agent-"+held.id); len(got) == 0 {
		t.Fatal("rotating the credentials closed the agent's connection")
	}
	s.waitJob(s.queue(jobs.KindIssue, held.id, holder), jobs.StateSucceeded)

	// Rotation while the agent is away with a job waiting for it: its old password is
	// refused, it fetches the new one and the job runs.
	s.stop(coded)
	waiting := s.queue(jobs.KindIssue, coded.id, holder)
	if code, body := s.adminAPI("POST", "/api/v1/agents/"+coded.id+"/rotate-credentials", nil, nil); code != http.StatusOK {
		t.Fatalf("rotate: %d %s", code, body)
	}
	if d := s.job(waiting); jobs.Terminal(d.State) {
		t.Fatalf("the waiting job ended before its agent came back: %s", d.State)
	}
	s.run(coded)
	s.waitJob(waiting, jobs.StateSucceeded)
	coded.logs.waitFor(t, "the broker refused the login")

	// Disabling closes the agent's connections within 5 s and its user is gone.
	start := time.Now()
	if code, body := s.adminAPI("POST", "/api/v1/agents/"+pre.id+"/disable", map[string]string{"reason": "laptop stolen"}, nil); code != http.StatusOK {
		t.Fatalf("disable: %d %s", code, body)
	}
	eventually(t, "agent "+pre.id+"'s connections to close", func() (bool, string) {
		n := len(testenv.UserConnections(t, "agent-"+pre.id))
		return n == 0, fmt.Sprintf("%d connections", n)
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("agent %s's connections closed %v after it was disabled, want within 5 s", pre.id, took)
	}
	if testenv.BrokerUserExists(t, "agent-"+pre.id) {
		t.Error("a disabled agent keeps its broker user")
	}
	if st := s.agentState(pre.id); st != "disabled" {
		t.Errorf("disabled agent's state: %q", st)
	}
	// The agent can no longer log in, and its request for new credentials is refused.
	pre.logs.waitFor(t, "agent "+pre.id+" is disabled")
}

// testEnrolRefused: every refused enrolment has a clear error and an audit entry.
func testEnrolRefused(t *testing.T, s *system, keyPre, code api.EnrolmentKey, codedID, takenID string) {
	expired := s.newKey(api.EnrolmentKeyCreate{Kind: "code", ExpiresIn: "1ms"})
	revoked := s.newKey(api.EnrolmentKeyCreate{Kind: "key"})
	if c, body := s.adminAPI("POST", "/api/v1/enrolment-keys/"+revoked.ID+"/revoke", map[string]string{"reason": "leaked"}, nil); c != http.StatusOK {
		t.Fatalf("revoke: %d %s", c, body)
	}
	limited := s.newKey(api.EnrolmentKeyCreate{Kind: "key", MaxUses: 1})
	first := s.newEnrolled(testenv.UniqueUser("ws-lim-"))
	if out, st := s.enrolBinary(first, limited.Secret, "--no-wait"); st != 0 {
		t.Fatalf("first use of a key limited to one: exit %d\n%s", st, out)
	}
	for _, tc := range []struct {
		name, code, id, want string
		extra                []string
	}{
		{"a one-off code used twice", code.Secret, codedID, "was used already", nil},
		{"an expired code", expired.Secret, "", "expired at", nil},
		{"a revoked key", revoked.Secret, "", "was revoked", nil},
		{"a key past its use limit", limited.Secret, "", "has enrolled its limit of 1 agents", nil},
		{"an agent ID already enrolled", keyPre.Secret, takenID, "is already enrolled", nil},
		{"an unknown code", "tfe_nosuchkey_" + strings.Repeat("x", 32), "", "no such activation code", nil},
	} {
		a := s.newEnrolled(tc.id)
		if a.id == "" {
			a.id = testenv.UniqueUser("ws-ref-")
		}
		out, st := s.enrolBinary(a, tc.code, tc.extra...)
		if st != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, want 1 and %q:\n%s", tc.name, st, tc.want, out)
		}
		if _, err := os.Stat(a.dir + "/enrolment.json"); err == nil {
			t.Errorf("%s: an enrolment record was kept", tc.name)
		}
	}
	// Plain http to another host is refused before the code is sent.
	a := s.newEnrolled("")
	a.id = "ws-plain"
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	out, err := exec.CommandContext(ctx, agentBin, "enrol", "--coordinator", "http://192.0.2.1:8443", "--code", keyPre.Secret,
		"--data", a.dir, "--id", a.id).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "plain http to another host") {
		t.Errorf("enrolment over plain http to another host: %v\n%s", err, out)
	}

	// The audit log has each refusal, with its reason.
	var reasons []string
	for e, err := range s.api.AuditEntries(context.Background(), 0, 500) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Action == "agent.enrol_refused" {
			reasons = append(reasons, e.Reason)
		}
	}
	for _, want := range []string{"used", "expired", "revoked", "agent ID taken: " + takenID, "unknown or wrong code"} {
		if !slices.Contains(reasons, want) {
			t.Errorf("no agent.enrol_refused entry with reason %q; the entries: %q", want, reasons)
		}
	}
	if n := strings.Count(strings.Join(reasons, "\n"), "used"); n < 2 {
		t.Errorf("%d refusals for used codes and keys, want 2 (the code twice, the key past its limit): %q", n, reasons)
	}
}
