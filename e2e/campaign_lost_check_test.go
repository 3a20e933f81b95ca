//go:build cgo && linux

package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// TestFaultCampaignReplacesATokenAKillEmptied: a short campaign on one real agent whose
// lane's token file is emptied between two jobs, as a SIGKILL inside SoftHSM2's rewrite
// of token.object leaves it (the file truncated, with no process holding the module:
// the agent is stopped meanwhile). The lane's next job waits for the token's serial; the
// lane finds the file emptied, cancels the job through the API naming the token, removes
// the damaged token from the store, restarts the agent, and goes on from a blank token,
// which its next issue initialises under a new serial. Every verdict holds.
func TestFaultCampaignReplacesATokenAKillEmptied(t *testing.T) {
	p := variantPlan{name: variantSQLite, jobs: 6, agents: 1, lanes: 1}
	set := campaignSettings{seed: 20261207, variants: []variantPlan{p}}
	c := newCampaign(t, set, p, set.seed)
	var emptied string
	var emptyErr error
	c.beforeJob = func(l *lane) {
		if emptied != "" || l.state != tokenIssued {
			return
		}
		emptied = l.serial
		emptyErr = c.restartAgent(l.agent, func() error {
			whole, _, err := l.agent.noteTokens()
			if err != nil {
				return err
			}
			dir, ok := whole[l.serial]
			if !ok {
				return fmt.Errorf("no token file holds serial %s", l.serial)
			}
			return os.Truncate(filepath.Join(dir, "token.object"), 0)
		})
	}
	c.run()
	c.check()
	c.summary()
	if emptyErr != nil {
		t.Fatalf("emptying the token file: %v", emptyErr)
	}
	if emptied == "" {
		t.Fatal("the lane never held an issued token to empty the file of")
	}
	if len(c.replaced) != 1 {
		t.Fatalf("%d tokens replaced, want 1 (%s)", len(c.replaced), c.replacedSummary())
	}
	r := c.replaced[0]
	if r.serial != emptied || r.why != "empty" || r.lane != 0 {
		t.Errorf("replaced token %s of lane %d (%s), want %s of lane 0 (empty)", r.serial, r.lane, r.why, emptied)
	}
	rec := c.jobs[r.job]
	if rec == nil || rec.final.State != jobs.StateCancelled {
		t.Fatalf("the job waiting for the lost token: %+v, want it cancelled", rec)
	}
	if !slices.ContainsFunc(rec.final.Timeline, func(ev client.JobEvent) bool {
		return ev.To == jobs.StateCancelled && strings.Contains(ev.Reason, emptied) && strings.Contains(ev.Reason, "token.object")
	}) {
		t.Errorf("job %s's cancellation does not name the lost token %s and its file: timeline %+v", r.job, emptied, rec.final.Timeline)
	}
	if _, err := os.Stat(r.dir); !os.IsNotExist(err) {
		t.Errorf("the damaged token's directory %s is still there (%v)", r.dir, err)
	}
	l := c.lanes[0]
	if l.serial == "" || l.serial == emptied || !slices.Equal(l.lost, []string{emptied}) {
		t.Errorf("lane 0 ended on token %q (lost %v), want a new token after losing %s", l.serial, l.lost, emptied)
	}
	if n := int(c.created.Load()); n != p.jobs {
		t.Errorf("%d of %d jobs created", n, p.jobs)
	}
}

// TestLostTokenFileOnlyWhenItsFileWasEmptied: on a real SoftHSM2 store, a token counts as
// lost to an emptied file only when its serial is no longer listed and a token file the
// serial was in (or one never seen whole) is damaged. A token whose directory went whole,
// or whose file is whole, does not; the checker reports such a lane's token missing.
func TestLostTokenFileOnlyWhenItsFileWasEmptied(t *testing.T) {
	a := &agentProc{id: "ws-lost", store: newSoftStore(t)}
	for _, label := range []string{"A", "B", "C"} {
		cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "1234567890123456", "--pin", "123456789012")
		cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+a.store.conf)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("softhsm2-util --init-token %s: %v\n%s", label, err, out)
		}
	}
	whole, _, err := a.noteTokens()
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) != 3 {
		t.Fatalf("%d whole token files, want 3: %v", len(whole), whole)
	}
	serials := make([]string, 0, 3)
	for s := range whole {
		serials = append(serials, s)
	}
	slices.Sort(serials)
	gone, emptied, cut := serials[0], serials[1], serials[2]

	lost := func(serial string) (string, string) {
		t.Helper()
		dir, why, err := lostTokenFile(a, serial)
		if err != nil {
			t.Fatal(err)
		}
		return dir, why
	}
	if dir, why := lost(gone); dir != "" || why != "pkcs11-tool lists it" {
		t.Errorf("a token present: lost in %q (%s)", dir, why)
	}
	// Its directory removed whole: missing, but no file of it damaged.
	if err := os.RemoveAll(whole[gone]); err != nil {
		t.Fatal(err)
	}
	if dir, why := lost(gone); dir != "" {
		t.Errorf("a token whose directory was removed whole counts as lost to an emptied file, in %s", dir)
	} else {
		t.Logf("a token whose directory was removed: not lost to an emptied file: %s", why)
	}
	// Emptied, as a kill inside SoftHSM2's rewrite leaves it.
	if err := os.Truncate(filepath.Join(whole[emptied], "token.object"), 0); err != nil {
		t.Fatal(err)
	}
	// Cut short in the middle, past its serial.
	file := filepath.Join(whole[cut], "token.object")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b[:len(b)-20], 0o600); err != nil {
		t.Fatal(err)
	}
	if dir, why := lost(emptied); dir != whole[emptied] {
		t.Errorf("the emptied token: lost in %q (%s), want %s", dir, why, whole[emptied])
	}
	if dir, why := lost(cut); dir != whole[cut] {
		t.Errorf("the token cut short: lost in %q (%s), want %s", dir, why, whole[cut])
	}
	// The removed token still does not take another's damaged file: both were seen whole
	// under their own serials.
	if dir, _ := lost(gone); dir != "" {
		t.Errorf("a token whose directory was removed whole takes the damaged file in %s", dir)
	}
	// A damaged file nobody saw whole may be any lost token's; one whose file is whole is
	// not lost.
	fresh := &agentProc{id: "ws-lost-fresh", store: a.store}
	if dir, why, err := lostTokenFile(fresh, "0123456789abcdef"); err != nil || dir != whole[emptied] {
		t.Errorf("a serial never seen, with an emptied file nobody saw whole: lost in %q (%s, %v), want %s", dir, why, err, whole[emptied])
	}

	// The checker reports a lane's token gone without a replacement as before.
	c := &campaign{t: t, agents: []*agentProc{a}}
	c.lanes = []*lane{{c: c, agent: a, serial: gone, state: tokenWiped}}
	v := c.checkTokens(nil)
	if !slices.ContainsFunc(v.problems, func(p string) bool { return strings.Contains(p, "lists 0 tokens with serial "+gone) }) {
		t.Errorf("the checker does not report lane's token %s gone: %v", gone, v.problems)
	}
}
