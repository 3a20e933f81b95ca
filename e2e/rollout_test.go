//go:build cgo && linux

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// The rollout owner of every rollout test: creates rollouts, cannot approve them.
const rolloutOwner = "rolf"

// TestRolloutRenewal: three workstations, real agents (child processes, each on a SoftHSM2
// store of its own), each issued a certificate the usual way (a help-desk request, an
// approval). A rollout owner then creates, with tokenfleetctl, a rollout renewing every
// certificate of the profile: a canary of one and two waves. One approval by an approver
// (the owner's own is refused) and the rollout runs to completed, wave after wave, with
// no other decision: each job was approved by the rollout, as the audit shows. Each token
// then holds a new key and the new certificate and nothing of the old ones (pkcs11-tool),
// the certificate verifies against the coordinator's CA (openssl verify), the holder's
// PIN still logs in, and the audit log verifies.
func TestRolloutRenewal(t *testing.T) {
	s := newSystem(t)
	ownerToken := s.addRolloutOwner()
	holders := []string{holder, "bob", "carol"}
	s.addHolder("bob", "Bob Holder")
	s.addHolder("carol", "Carol Holder")

	// Each workstation gets a certificate the usual way, all at once.
	type workstation struct {
		agent           *procAgent
		holder          string
		issue, pin      string
		serial, oldCert string
	}
	var wss []*workstation
	for i, h := range holders {
		id := fmt.Sprintf("ws-roll-%d", i)
		s.enrol(id)
		wss = append(wss, &workstation{agent: s.startProcAgent(id), holder: h})
	}
	for _, w := range wss {
		w.issue = s.queue(jobs.KindIssue, w.agent.id, w.holder)
	}
	for _, w := range wss {
		d := s.waitJob(w.issue, jobs.StateSucceeded)
		w.serial = d.TokenSerial
		w.pin = s.revealPIN(w.issue)
		w.oldCert = s.certificateOf(w.issue).Serial
	}

	// The rollout: every certificate of the profile renewed, a canary of one, then two
	// waves (half of the rest, then the rest).
	out := s.ctl(ownerToken, "rollout", "create", "--name", "renew e2e-logon", "--kind", "renew", "--profile", profileName,
		"--canary", "1", "--waves", "50,100", "--json")
	var created api.Rollout
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("tokenfleetctl rollout create --json: %v\n%s", err, out)
	}
	if created.State != rollout.StatePendingApproval || created.TargetCount != len(wss) || created.BindingHash == "" {
		t.Fatalf("a new rollout: %+v; want pending_approval with %d targets and a binding hash", created, len(wss))
	}
	if created.Preview == nil || !slices.Equal(created.Preview.WaveSizes, []int{1, 1, 1}) {
		t.Fatalf("preview %+v: want waves of 1, 1 and 1 target", created.Preview)
	}
	id := created.ID
	// Its owner cannot approve it, nor can the help desk.
	for who, token := range map[string]string{"its owner": ownerToken, "the help desk": s.operator} {
		if r := s.ctlRun(token, "rollout", "approve", id, "--yes", "--reason", "mine"); r.code == ctl.ExitOK {
			t.Fatalf("%s approved the rollout:\n%s", who, r.stdout)
		}
	}
	if got := s.rolloutShow(ownerToken, id); got.State != rollout.StatePendingApproval || got.Approvals != 0 {
		t.Fatalf("after refused approvals the rollout is %s with %d approvals", got.State, got.Approvals)
	}
	// No job before the approval.
	for _, tg := range s.rolloutTargets(ownerToken, id) {
		if tg.JobID != "" {
			t.Fatalf("target %d has job %s before the rollout was approved", tg.Seq, tg.JobID)
		}
	}
	s.ctl(s.approver, "rollout", "approve", id, "--yes", "--reason", "renewal before expiry, checked the targets")

	var final api.Rollout
	eventually(t, "the rollout to complete", func() (bool, string) {
		final = s.rolloutShow(ownerToken, id)
		return final.State.Final(), fmt.Sprintf("state %s, wave %d, overall %+v, waiting %q", final.State, final.CurrentWave, final.Overall, final.Waiting)
	})
	if final.State != rollout.StateCompleted || final.Overall.Succeeded != len(wss) {
		t.Fatalf("the rollout ended %s: overall %+v, trip %+v; want completed with %d succeeded", final.State, final.Overall, final.Trip, len(wss))
	}

	// Wave after wave: each wave's job was created after the job of the wave before ended.
	targets := s.rolloutTargets(ownerToken, id)
	if len(targets) != len(wss) {
		t.Fatalf("%d targets, want %d", len(targets), len(wss))
	}
	slices.SortFunc(targets, func(a, b api.RolloutTarget) int { return a.Wave - b.Wave })
	var prevEnd time.Time
	caPEM := s.ctl(s.operator, "ca", "cert")
	for _, tg := range targets {
		d := s.waitJob(tg.JobID, jobs.StateSucceeded)
		if d.Kind != jobs.KindRenew {
			t.Errorf("target %d: job %s is a %s, want renew", tg.Seq, d.ID, d.Kind)
		}
		if !prevEnd.IsZero() && d.Created.Before(prevEnd) {
			t.Errorf("wave %d's job %s was created at %s, before the wave before it ended (%s)", tg.Wave, d.ID, d.Created, prevEnd)
		}
		prevEnd = d.Updated
		// Approved by the rollout, not by a person.
		approvedBy := ""
		for _, ev := range d.Timeline {
			if ev.To == jobs.StateApproved {
				approvedBy = ev.Actor
			}
		}
		if approvedBy != "rollout:"+id {
			t.Errorf("job %s was approved by %q, want rollout:%s; timeline %v", d.ID, approvedBy, id, transitions(d))
		}

		var w *workstation
		for _, c := range wss {
			if c.agent.id == tg.AgentID {
				w = c
			}
		}
		if w == nil || tg.TokenSerial != w.serial || tg.CertificateSerial != w.oldCert || d.TokenSerial != w.serial {
			t.Fatalf("target %+v is none of the workstations' certificates", tg)
		}
		cert := s.certificateOf(d.ID)
		if cert.Serial == w.oldCert {
			t.Fatalf("job %s brought no new certificate", d.ID)
		}
		certPEM := w.agent.wantOnlyKeyAndCertificate(t, w.serial, w.pin, protocol.DeriveKeyID(d.ID), certificateDER(t, cert.PEM))
		wantVerifiedByCA(t, caPEM, certPEM)
	}

	s.wantRolloutAudit(id, created.BindingHash, targets)
	if out := s.ctl(s.admin, "audit", "verify"); !strings.Contains(out, "audit log verified") {
		t.Errorf("tokenfleetctl audit verify: %s", out)
	}
	s.checkNoPINs()
}

// addRolloutOwner creates the rollout owner and returns an API token of theirs.
func (s *system) addRolloutOwner() string {
	s.t.Helper()
	s.ctl(s.admin, "user", "create", rolloutOwner, "--name", "Rolf Rollout", "--org", org, "--role", string(jobs.RoleRolloutOwner))
	return strings.TrimSpace(s.ctl(s.admin, "user", "token", rolloutOwner, "--name", "e2e"))
}

// rolloutShow is tokenfleetctl rollout show --json.
func (s *system) rolloutShow(token, id string) api.Rollout {
	s.t.Helper()
	out := s.ctl(token, "rollout", "show", id, "--json")
	var r api.Rollout
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		s.t.Fatalf("tokenfleetctl rollout show --json: %v\n%s", err, out)
	}
	return r
}

// rolloutTargets is tokenfleetctl rollout targets --json.
func (s *system) rolloutTargets(token, id string) []api.RolloutTarget {
	s.t.Helper()
	out := s.ctl(token, "rollout", "targets", id, "--json")
	var ts []api.RolloutTarget
	if err := json.Unmarshal([]byte(out), &ts); err != nil {
		s.t.Fatalf("tokenfleetctl rollout targets --json: %v\n%s", err, out)
	}
	return ts
}

// wantRolloutAudit checks the audit trail of a rollout: created, one approval decision
// (rollout.approved), started, completed; each of its jobs created citing the rollout and
// its binding hash, and approved with the rollout as the actor and no person's decision.
func (s *system) wantRolloutAudit(id, binding string, targets []api.RolloutTarget) {
	s.t.Helper()
	t := s.t
	byJob := map[string]bool{}
	for _, tg := range targets {
		byJob[tg.JobID] = true
	}
	actions := map[string]int{}
	created := map[string]bool{}
	approvedByRollout := map[string]bool{}
	for e, err := range s.api.AuditEntries(context.Background(), 0, 500) {
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(e.Action, "rollout.") && e.Target == "rollout:"+id {
			actions[e.Action]++
		}
		if !byJob[e.Job] {
			continue
		}
		switch e.Action {
		case "job.created":
			if !bytes.Contains(e.Details, []byte(id)) || !bytes.Contains(e.Details, []byte(binding)) {
				t.Errorf("job %s was created without citing rollout %s and its binding %s: details %s", e.Job, id, binding, e.Details)
			}
			created[e.Job] = true
		case "job.approved", "job.rejected":
			t.Errorf("job %s of the rollout had a person's decision: %s by %s", e.Job, e.Action, e.ActorName)
		case "job.transition":
			var det map[string]any
			if err := json.Unmarshal(e.Details, &det); err != nil {
				t.Fatalf("audit entry %d: details %s: %v", e.Seq, e.Details, err)
			}
			if det["to"] == string(jobs.StateApproved) {
				if e.Actor != "rollout:"+id {
					t.Errorf("job %s moved to approved by %q, want rollout:%s", e.Job, e.Actor, id)
				}
				approvedByRollout[e.Job] = true
			}
		}
	}
	for job := range byJob {
		if !created[job] || !approvedByRollout[job] {
			t.Errorf("job %s of the rollout: created audited %t, approved by the rollout audited %t", job, created[job], approvedByRollout[job])
		}
	}
	for _, a := range []string{"rollout.created", "rollout.approved", "rollout.started", "rollout.completed"} {
		if actions[a] != 1 {
			t.Errorf("the audit holds %d %s entries for rollout %s, want 1 (all: %v)", actions[a], a, id, actions)
		}
	}
	if actions["rollout.rejected"] != 0 || actions["rollout.brake_tripped"] != 0 {
		t.Errorf("the rollout's audit: %v", actions)
	}
}

// procAgent is a real agent as a child process (the fault campaign's), on a SoftHSM2
// store of its own: several agents of one test each see their own tokens only.
type procAgent struct {
	*proc
	id    string
	store softStore
}

// startProcAgent starts the agent (enrolled already) as a child process; it is killed when
// the test ends. Its data directory is in the secret scan.
func (s *system) startProcAgent(id string) *procAgent {
	s.t.Helper()
	t := s.t
	a := &procAgent{id: id, store: newSoftStore(t)}
	a.proc = newProc("agent "+id, "agent", childConfig{DataDir: s.newDataDir(), BrokerURL: s.brokerURL(id), AgentID: id},
		"SOFTHSM2_CONF="+a.store.conf)
	if err := a.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.kill()
		if t.Failed() {
			t.Logf("log of agent %s (its end):\n%s", id, tail(withoutDebug(a.log.String()), 4000))
		}
	})
	return a
}

// wantOnlyKeyAndCertificate checks, logged in with the PIN, that the agent's token holds
// exactly one private key and one certificate, both under keyID, besides the CA's
// certificate, and that the certificate is wantDER; it returns the certificate as PEM in
// a file.
func (a *procAgent) wantOnlyKeyAndCertificate(t *testing.T, serial, pin, keyID string, wantDER []byte) string {
	t.Helper()
	slot, err := slotIn(a.store, serial)
	if err != nil {
		t.Fatalf("agent %s: %v", a.id, err)
	}
	out, err := a.store.p11("--slot", slot, "--login", "--pin", pin, "--list-objects")
	if err != nil {
		t.Fatalf("agent %s: %v", a.id, err)
	}
	objs := parseObjects(out)
	var others []object
	for _, o := range objs {
		switch {
		case (o.class == "Private Key" || o.class == "Public Key" || o.class == "Certificate") && o.id == keyID:
		case o.class == "Certificate" && o.label == caLabel:
		default:
			others = append(others, o)
		}
	}
	if count(objs, "Private Key", keyID) != 1 || count(objs, "Certificate", keyID) != 1 || len(others) != 0 {
		t.Fatalf("agent %s token %s holds, want exactly one private key and one certificate with ID %s (and the CA's certificate):%s",
			a.id, serial, keyID, describeObjects(objs))
	}
	dir := t.TempDir()
	der := filepath.Join(dir, "cert.der")
	if _, err := a.store.p11("--slot", slot, "--read-object", "--type", "cert", "--id", keyID, "-o", der); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(der)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantDER) {
		t.Errorf("agent %s token %s: the certificate is not the one the coordinator issued", a.id, serial)
	}
	certPEM := filepath.Join(dir, "cert.pem")
	tool(t, "openssl", "x509", "-inform", "DER", "-in", der, "-out", certPEM)
	return certPEM
}

// standingProfile issues certificates valid for two minutes at first; then for an hour,
// with standing renewals 90 s before expiry: the first certificate enters its renewal
// window 30 s after its issue, the renewed one only after the test.
const standingProfile = "e2e-standing"

func standingProfileYAML(validity, renewBefore string) string {
	y := strings.Replace(profileYAML, "name: e2e-logon", "name: "+standingProfile, 1)
	y = strings.Replace(y, "validity: 30d", "validity: "+validity, 1)
	if renewBefore != "" {
		y = strings.Replace(y, "approval:", "renew_before: "+renewBefore+"\napproval:", 1)
	}
	return y
}

// TestRolloutStandingRenewal: a certificate is issued under a profile of short validity.
// The profile then asks for standing renewals (renew_before), and a standing rollout of
// it is created, naming its holders' organisation (the profile's approvals are scoped to
// it), and approved, with no target yet. When the certificate enters its
// renewal window the rollout takes it up on its own and renews it once: a new key and
// certificate on the token (pkcs11-tool), verified against the CA (openssl verify); the
// rollout still runs, waiting for the next certificate, and the renewed one (valid for
// an hour) is not a target.
func TestRolloutStandingRenewal(t *testing.T) {
	s := newSystem(t)
	ownerToken := s.addRolloutOwner()
	apply := func(yaml string) {
		f := filepath.Join(t.TempDir(), "profile.yaml")
		if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		s.ctl(s.admin, "profile", "apply", f)
	}
	apply(standingProfileYAML("2m", ""))
	const id = "ws-standing"
	s.enrol(id)
	s.startAgent(id, agentOptions{})
	issue := strings.TrimSpace(s.ctl(s.operator, "issue", "--holder", holder, "--agent", id, "--profile", standingProfile))
	s.ctl(s.approver, "approve", issue, "--reason", "checked the request")
	d := s.waitJob(issue, jobs.StateSucceeded)
	serial, pin := d.TokenSerial, s.revealPIN(issue)
	old := s.certificateOf(issue)

	apply(standingProfileYAML("1h", "90s"))
	out := s.ctl(ownerToken, "rollout", "create", "--name", "standing renewals", "--kind", "renew", "--profile", standingProfile,
		"--standing", "--canary", "1", "--holders-org", org, "--json")
	var created api.Rollout
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("tokenfleetctl rollout create --json: %v\n%s", err, out)
	}
	if !created.Standing || created.TargetCount != 0 {
		t.Fatalf("a new standing rollout: standing %t with %d targets; want standing, no target yet", created.Standing, created.TargetCount)
	}
	rid := created.ID
	s.ctl(s.approver, "rollout", "approve", rid, "--yes", "--reason", "renew logon certificates before they expire")

	// The certificate enters its window 30 s after its issue; the rollout looks every 30 s.
	var target api.RolloutTarget
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ts := s.rolloutTargets(ownerToken, rid)
		if len(ts) > 1 {
			t.Fatalf("the standing rollout has %d targets, want the one certificate: %+v", len(ts), ts)
		}
		if len(ts) == 1 && ts[0].JobID != "" && jobs.Terminal(ts[0].JobState) {
			target = ts[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no renewal of certificate %s (not after %s) within 2 minutes: targets %+v", old.Serial, old.NotAfter, ts)
		}
		<-tick.C
	}
	if target.CertificateSerial != old.Serial || target.TokenSerial != serial || target.JobState != jobs.StateSucceeded {
		t.Fatalf("target %+v: want certificate %s on token %s renewed", target, old.Serial, serial)
	}
	d = s.waitJob(target.JobID, jobs.StateSucceeded)
	if d.Kind != jobs.KindRenew {
		t.Fatalf("job %s is a %s, want renew", d.ID, d.Kind)
	}
	renewed := s.certificateOf(d.ID)
	if time.Until(renewed.NotAfter) < 50*time.Minute {
		t.Errorf("the renewed certificate is valid until %s, want an hour (the profile's validity now)", renewed.NotAfter)
	}
	certPEM := wantOnlyKeyAndCertificate(t, serial, pin, protocol.DeriveKeyID(d.ID), certificateDER(t, renewed.PEM))
	wantVerifiedByCA(t, s.ctl(s.operator, "ca", "cert"), certPEM)

	v := s.rolloutShow(ownerToken, rid)
	if v.State != rollout.StateRunning || v.TargetCount != 1 {
		t.Errorf("after the renewal the standing rollout is %s with %d targets; want running (it never completes) with 1", v.State, v.TargetCount)
	}
	added := 0
	for e, err := range s.api.AuditEntries(context.Background(), 0, 500) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Action == "rollout.targets_added" && e.Target == "rollout:"+rid {
			added++
		}
	}
	if added != 1 {
		t.Errorf("%d rollout.targets_added entries, want 1", added)
	}
	s.finalChecks()
}
