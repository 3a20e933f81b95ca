//go:build cgo

package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestTokenLifeCycle: a token the real agent issued on SoftHSM2 is suspended (its
// certificate on hold in the CRL, issuing to it refused), reinstated (off the CRL, openssl
// accepts it again), suspended and declared lost (key compromise), and replaced in one
// request: the agent issues the new token, and the old one is marked replaced.
func TestTokenLifeCycle(t *testing.T) {
	s := newSystem(t)
	id := testenv.UniqueUser("ws-life-")
	s.enrol(id)
	s.startAgent(id, agentOptions{})

	first := s.waitJob(s.queue(jobs.KindIssue, id, holder), jobs.StateSucceeded)
	serial := first.TokenSerial
	cert := s.certificateOf(first.ID)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", s.ctl(s.operator, "ca", "cert"))
	certFile := write("cert.pem", cert.PEM)
	hexSerial := strings.ToUpper(cert.Serial)
	if len(hexSerial)%2 == 1 {
		hexSerial = "0" + hexSerial
	}
	// crl fetches the published CRL and returns openssl's text of it and its verdict on the
	// certificate.
	n := 0
	crl := func() (text, verdict string) {
		t.Helper()
		n++
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, s.coord.DirectURL+"/crl", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		der, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		der2 := filepath.Join(dir, fmt.Sprintf("crl%d.der", n))
		if err := os.WriteFile(der2, der, 0o600); err != nil {
			t.Fatal(err)
		}
		pemFile := filepath.Join(dir, fmt.Sprintf("crl%d.pem", n))
		tool(t, "openssl", "crl", "-inform", "DER", "-in", der2, "-out", pemFile)
		text = tool(t, "openssl", "crl", "-in", pemFile, "-noout", "-text", "-CAfile", caFile)
		out, errOut, _ := toolErr("openssl", "verify", "-crl_check", "-CAfile", caFile, "-CRLfile", pemFile, certFile)
		return text, out + errOut
	}
	entry := func(text string) string {
		i := strings.Index(text, "Serial Number: "+hexSerial)
		if i < 0 {
			return ""
		}
		return text[i:min(len(text), i+200)]
	}

	s.ctl(s.operator, "token", "suspend", serial, "--reason", "left at home")
	if text, verdict := crl(); !strings.Contains(entry(text), "Certificate Hold") || !strings.Contains(verdict, "certificate revoked") {
		t.Errorf("suspended: CRL entry %q, openssl verify %q", entry(text), verdict)
	}
	r := s.ctlRun(s.operator, "issue", "--holder", holder, "--agent", id, "--profile", profileName, "--token-serial", serial)
	if r.code == ctl.ExitOK || !strings.Contains(r.stderr, "token_not_active") {
		t.Errorf("issuing to a suspended token: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	s.ctl(s.operator, "token", "reinstate", serial, "--reason", "back at work")
	if text, verdict := crl(); entry(text) != "" || !strings.Contains(verdict, ": OK") {
		t.Errorf("reinstated: CRL entry %q, openssl verify %q", entry(text), verdict)
	}

	s.ctl(s.operator, "token", "suspend", serial, "--reason", "not found this morning")
	s.ctl(s.operator, "token", "lost", serial, "--reason", "not found after a week")
	if text, verdict := crl(); !strings.Contains(entry(text), "Key Compromise") || !strings.Contains(verdict, "certificate revoked") {
		t.Errorf("lost: CRL entry %q, openssl verify %q", entry(text), verdict)
	}

	jobID := strings.TrimSpace(s.ctl(s.operator, "token", "replace", serial, "--holder", holder, "--agent", id, "--profile", profileName))
	s.ctl(s.approver, "approve", jobID, "--reason", "replacement of a lost token")
	repl := s.waitJob(jobID, jobs.StateSucceeded)
	if repl.TokenSerial == "" || repl.TokenSerial == serial {
		t.Fatalf("the replacement went onto token %q", repl.TokenSerial)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := s.api.TokenLife(ctx, serial)
	if err != nil || l.State != "replaced" || l.ReplacedBy != repl.TokenSerial || len(l.History) != 5 {
		t.Errorf("old token after its replacement: %+v, %v", l, err)
	}
	if nl, err := s.api.TokenLife(ctx, repl.TokenSerial); err != nil || nl.State != "active" {
		t.Errorf("new token: %+v, %v", nl, err)
	}
	// The new certificate is on the new token, as pkcs11-tool reads it.
	if objs := p11(t, "--token-label", slotOf(t, repl.TokenSerial).label, "--list-objects", "--type", "cert"); !strings.Contains(objs, "Certificate Object") {
		t.Errorf("no certificate on the new token:\n%s", objs)
	}
	s.finalChecks()
}

// TestTokenSuspendedCancelsJob: the real agent has put a key on a SoftHSM2 token and waits
// for its certificate behind the CA operator; the help desk suspends that token, and the
// job is cancelled with the token's new state as its reason: the agent stops waiting, its
// journal says cancelled, and it answers job_cancelled.
func TestTokenSuspendedCancelsJob(t *testing.T) {
	s := newSystem(t)
	profile := filepath.Join(t.TempDir(), "gated.yaml")
	if err := os.WriteFile(profile, []byte(gatedProfile), 0o600); err != nil {
		t.Fatal(err)
	}
	s.ctl(s.admin, "profile", "apply", profile)
	id := testenv.UniqueUser("ws-gone-")
	s.enrol(id)
	run := s.startAgent(id, agentOptions{})

	jobID := strings.TrimSpace(s.ctl(s.operator, "issue", "--holder", holder, "--agent", id, "--profile", "e2e-gated"))
	s.ctl(s.approver, "approve", jobID)
	var serial string
	eventually(t, "the job to wait for the CA operator", func() (bool, string) {
		d := s.job(jobID)
		serial = d.TokenSerial
		return d.State == jobs.StateAwaitingCertificate && serial != "", string(d.State)
	})

	s.ctl(s.operator, "token", "suspend", serial, "--reason", "left at home")
	d := s.waitJob(jobID, jobs.StateCancelled)
	why := "token " + serial + " became suspended: left at home"
	if len(d.Timeline) == 0 || d.Timeline[len(d.Timeline)-1].Reason != why {
		t.Errorf("job timeline %+v, want it to end with %q", d.Timeline, why)
	}
	run.logs.waitFor(t, "the coordinator cancelled the job", why)
	eventually(t, "the job to end on the agent", func() (bool, string) {
		state, _ := journalState(t, run.dir, jobID)
		return state.Finished(), string(state)
	})
	if state, _ := journalState(t, run.dir, jobID); state != journal.StateCancelled {
		t.Errorf("the agent's journal says %s, want cancelled", state)
	}
	eventually(t, "the agent's answer at the coordinator", func() (bool, string) {
		d := s.job(jobID)
		return strings.Contains(d.AgentResult, "job_cancelled"), d.AgentResult
	})
	s.finalChecks()
}
