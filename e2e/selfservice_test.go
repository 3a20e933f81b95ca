//go:build cgo

package e2e_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

var selfJob = regexp.MustCompile(`is job ([0-9A-Za-z]+)\.`)

// TestConsoleSelfService: self-service in real Chromium, with a real agent on SoftHSM2.
// The profile lets holders act for themselves; the help desk issues Alice's token. Alice
// signs in, finds her token and certificate on "My tokens" and requests a renewal there;
// the approver approves it and the agent renews the certificate; Alice sees the new
// certificate, reveals the PIN once (it logs in to the token) and is not offered it again.
func TestConsoleSelfService(t *testing.T) {
	s := newSystem(t, systemOptions{perAgentUsers: true, configure: consoleOn})
	p := filepath.Join(t.TempDir(), "self.yaml")
	if err := os.WriteFile(p, []byte(profileYAML+"self_service: {request: true, reveal_pin: true, unblock_pin: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.ctl(s.admin, "profile", "apply", p)
	s.setPasswords(holder)
	id := testenv.UniqueUser("ws-self-")
	s.enrol(id)
	s.startAgent(id, agentOptions{})

	issue := s.queue(jobs.KindIssue, id, holder)
	serial := s.waitJob(issue, jobs.StateSucceeded).TokenSerial
	first := s.certificateOf(issue)

	alice := newBrowser(t, holder, s.coord.DirectURL, newShots(t))
	alice.signIn(holder, consolePassword)
	alice.open("/ui/me")
	row := "#token-" + serial
	alice.waitText(row, first.Serial)
	alice.axe("my tokens")
	alice.screenshot("me")
	alice.clickAndLoad("self-renew")
	alice.waitText(alert, "awaits approval")
	m := selfJob.FindStringSubmatch(alice.text(alert))
	if m == nil {
		t.Fatalf("the renewal's message names no job: %q", alice.text(alert))
	}
	renew := m[1]
	if d := s.job(renew); d.Kind != jobs.KindRenew || d.Requester != holder || d.Holder != holder || d.Agent != id || d.TokenSerial != serial {
		t.Fatalf("the renewal: kind %s, requester %s, holder %s, agent %s, token %s", d.Kind, d.Requester, d.Holder, d.Agent, d.TokenSerial)
	}
	s.ctl(s.approver, "approve", renew, "--reason", "her own renewal")
	s.waitJob(renew, jobs.StateSucceeded)
	second := s.certificateOf(renew)

	alice.open("/ui/me")
	alice.waitText(row, second.Serial)
	alice.clickAndLoad("self-reveal-pin")
	pin := alice.text("#pin")
	if pin == "" {
		t.Fatal("the revealed PIN is empty")
	}
	s.remember("user PIN revealed on My tokens", pin)
	wantLogin(t, serial, pin, true)
	eval[bool](alice, "mask the PIN for the screenshot", `(() => { document.querySelector("#pin").textContent = "••••••••••••"; return true; })()`)
	alice.axe("PIN revealed")
	alice.screenshot("me-pin")
	alice.open("/ui/me")
	if alice.exists(byTest("self-reveal-pin")) {
		t.Error("My tokens still offers the PIN it showed")
	}
	alice.checkConsole()
	s.finalChecks()
}
