//go:build cgo && linux

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// The checker, after Jepsen's RabbitMQ checker: with every fault over and every process
// up, it reads what the coordinator stored, what the tokens hold (OpenSC's pkcs11-tool,
// not the project's code), the audit log and the dead letters, and gives one verdict per
// property. Each verdict lists what breaks it, with the seed.

// verdict is one property and what breaks it.
type verdict struct {
	name     string
	problems []string
	note     string // what was looked at
}

// check runs every check and fails the test with the verdicts that do not hold.
func (c *campaign) check() {
	c.t.Helper()
	all := c.allJobs()
	details := c.jobDetails(all)
	certs := c.allCertificates()
	vs := []verdict{
		c.checkRun(),
		c.checkAccounted(all, details),
		c.checkOnce(details, certs),
		c.checkTokens(certs),
		c.checkAudit(),
		c.checkDeadLetters(),
		c.checkChildren(),
	}
	c.verdicts = vs
	for _, v := range vs {
		if len(v.problems) == 0 {
			continue
		}
		shown := v.problems
		if len(shown) > 30 {
			shown = append(shown[:30:30], fmt.Sprintf("... and %d more", len(v.problems)-30))
		}
		c.t.Errorf("verdict %q does not hold (variant %s, seed %d):\n  %s", v.name, c.plan.name, c.seed, strings.Join(shown, "\n  "))
	}
}

// checkRun: the run did what it was asked: every fault planned was injected, every lane
// did its jobs.
func (c *campaign) checkRun() verdict {
	v := verdict{name: "the campaign ran as planned"}
	c.mu.Lock()
	v.problems = append(v.problems, c.problems...)
	c.mu.Unlock()
	if n := int(c.faultsRun.Load()); n < c.plan.faults {
		v.problems = append(v.problems, fmt.Sprintf("%d of %d faults injected", n, c.plan.faults))
	}
	if n := int(c.created.Load()); n != c.plan.jobs {
		v.problems = append(v.problems, fmt.Sprintf("%d of %d jobs created", n, c.plan.jobs))
	}
	v.note = fmt.Sprintf("%d jobs, %d faults", c.created.Load(), c.faultsRun.Load())
	return v
}

func (c *campaign) allJobs() []client.Job {
	c.t.Helper()
	var out []client.Job
	err := c.call(c.admin, func(ctx context.Context, cl *client.Client) error {
		out = out[:0]
		for j, err := range cl.AllJobs(ctx, client.JobFilter{}, 500) {
			if err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("listing the jobs: %v (seed %d)", err, c.seed)
	}
	return out
}

func (c *campaign) jobDetails(all []client.Job) map[string]client.JobDetail {
	c.t.Helper()
	out := make(map[string]client.JobDetail, len(all))
	for _, j := range all {
		var d client.JobDetail
		err := c.call(c.admin, func(ctx context.Context, cl *client.Client) error {
			var err error
			d, err = cl.GetJob(ctx, j.ID)
			return err
		})
		if err != nil {
			c.t.Fatalf("job %s: %v (seed %d)", j.ID, err, c.seed)
		}
		out[j.ID] = d
	}
	return out
}

func (c *campaign) allCertificates() []client.Certificate {
	c.t.Helper()
	var out []client.Certificate
	err := c.call(c.admin, func(ctx context.Context, cl *client.Client) error {
		out = out[:0]
		for cert, err := range cl.AllCertificates(ctx, client.CertificateFilter{}, 500) {
			if err != nil {
				return err
			}
			out = append(out, cert)
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("listing the certificates: %v (seed %d)", err, c.seed)
	}
	return out
}

// checkAccounted: no job lost. Every job the campaign created exists and ended as the
// campaign decided: succeeded when approved (or needing no approval), rejected or
// cancelled at its gate when it decided so. No job may still wait: the campaign decided
// every gate, and every agent is up, so a job still pending approval, approved,
// dispatched, running, awaiting its certificate or installing is stuck, not waiting
// legitimately. A failed job the help desk retried maxRetries times counts as lost work.
// A job in the store the campaign did not create is one created twice (an answer lost,
// the request sent again): it must have been superseded by the campaign's own.
func (c *campaign) checkAccounted(all []client.Job, details map[string]client.JobDetail) verdict {
	v := verdict{name: "no job lost: every job exists and ended as decided"}
	c.mu.Lock()
	recs := maps.Clone(c.jobs)
	c.mu.Unlock()
	for id, rec := range recs {
		d, ok := details[id]
		if !ok {
			v.problems = append(v.problems, fmt.Sprintf("job %s (%s) was created and is gone", id, rec.kind))
			continue
		}
		want := jobs.StateSucceeded
		switch {
		case rec.lost != nil: // cancelled by the help desk: its token was lost (campaign_lost_test.go)
			want = jobs.StateCancelled
		case rec.decision == "reject":
			want = jobs.StateRejected
		case rec.decision == "cancel":
			want = jobs.StateCancelled
		}
		if d.State != want {
			v.problems = append(v.problems, fmt.Sprintf("job %s (%s, lane %d, %s) is %s, want %s: error %s %q; attempt %d after %d retries; timeline %v; steps %v",
				id, rec.kind, rec.lane, rec.decision, d.State, want, d.ErrorCode, d.ErrorMessage, d.Attempt, rec.retries, transitions(d), stepNames(d)))
		}
	}
	byID := make(map[string]client.Job, len(all))
	for _, j := range all {
		byID[j.ID] = j
	}
	for _, j := range all {
		if _, ok := recs[j.ID]; ok {
			continue
		}
		// A request sent again may itself have been sent again: follow the chain.
		end := j
		for hops := 0; end.State == jobs.StateSuperseded && recs[end.ID] == nil && hops < 10; hops++ {
			next, ok := byID[end.SupersededBy]
			if !ok {
				break
			}
			end = next
		}
		if recs[end.ID] == nil {
			v.problems = append(v.problems, fmt.Sprintf("job %s (%s for %s) is %s and the campaign did not create it (superseded by %q): created twice?",
				j.ID, j.Kind, j.Holder, j.State, j.SupersededBy))
		}
	}
	v.note = fmt.Sprintf("%d jobs created, %d in the store", len(recs), len(all))
	return v
}

// checkOnce: nothing applied twice. Per job attempt each state is entered at most once
// and at most one result ends it (the timeline is the coordinator's record of what it
// accepted); no job has more attempts than the help desk asked for; a job has at most one
// certificate per attempt, kinds that sign none have none, and no certificate serial is
// issued twice.
func (c *campaign) checkOnce(details map[string]client.JobDetail, certs []client.Certificate) verdict {
	v := verdict{name: "nothing applied twice: one result per attempt, one certificate per attempt"}
	c.mu.Lock()
	recs := maps.Clone(c.jobs)
	c.mu.Unlock()
	certsOf := map[string]int{}
	serials := map[string]string{}
	for _, cert := range certs {
		certsOf[cert.Job]++
		if other, ok := serials[cert.Serial]; ok {
			v.problems = append(v.problems, fmt.Sprintf("certificate serial %s issued twice (jobs %s and %s)", cert.Serial, other, cert.Job))
		}
		serials[cert.Serial] = cert.Job
	}
	for id, d := range details {
		type key struct {
			attempt int
			state   jobs.State
		}
		entered := map[key]int{}
		ends := map[int]int{}
		for _, ev := range d.Timeline {
			entered[key{ev.Attempt, ev.To}]++
			if ev.To == jobs.StateSucceeded || (ev.To == jobs.StateFailed && ev.From != "") {
				ends[ev.Attempt]++
			}
		}
		for k, n := range entered {
			if n > 1 {
				v.problems = append(v.problems, fmt.Sprintf("job %s attempt %d entered %s %d times: timeline %v", id, k.attempt, k.state, n, transitions(d)))
			}
		}
		for a, n := range ends {
			if n > 1 {
				v.problems = append(v.problems, fmt.Sprintf("job %s attempt %d ended %d times: timeline %v", id, a, n, transitions(d)))
			}
		}
		if rec := recs[id]; rec != nil && d.Attempt > rec.retries+1 {
			v.problems = append(v.problems, fmt.Sprintf("job %s has attempt %d, the help desk asked for %d", id, d.Attempt, rec.retries+1))
		}
		n := certsOf[id]
		signs := jobs.NeedsCertificate(d.Kind) || d.Kind == jobs.KindCSR
		switch {
		case !signs && n > 0:
			v.problems = append(v.problems, fmt.Sprintf("job %s (%s) has %d certificates; its kind signs none", id, d.Kind, n))
		case n > max(d.Attempt, 1):
			v.problems = append(v.problems, fmt.Sprintf("job %s (%s) has %d certificates for %d attempts", id, d.Kind, n, d.Attempt))
		case signs && d.State == jobs.StateSucceeded && n == 0:
			v.problems = append(v.problems, fmt.Sprintf("job %s (%s) succeeded without a certificate", id, d.Kind))
		}
	}
	v.note = fmt.Sprintf("%d jobs, %d certificates", len(details), len(certs))
	return v
}

// checkTokens: what each real token holds, as pkcs11-tool lists it, is exactly what the
// jobs that succeeded on it should have left: after an issue, renew or install, one
// private key and one certificate under the key ID of the job that made the key, the
// certificate the coordinator stored for that job byte for byte (besides the CA's); after
// a csr, the key and no certificate; after a wipe, nothing. A key of an older attempt or
// an older job left behind, or a certificate written twice, shows here. After a job that
// did not succeed (checkAccounted reports it), and no wipe since, the token need only be
// there: it holds what that job left. Every token initialised in an agent's store belongs
// to a lane, a token an issue that did not succeed initialised included: a blank token
// taken twice for one issue would be initialised and no lane's.
func (c *campaign) checkTokens(certs []client.Certificate) verdict {
	v := verdict{name: "each token holds one key and one certificate of its last job, matching the store"}
	certOf := map[string][]client.Certificate{}
	for _, cert := range certs {
		certOf[cert.Job] = append(certOf[cert.Job], cert)
	}
	tokens := 0
	for _, a := range c.agents {
		owned := map[string]*lane{}
		for _, l := range c.lanes {
			if l.agent == a && l.serial != "" {
				owned[l.serial] = l
			}
		}
		out, err := a.store.p11("--list-slots")
		if err != nil {
			v.problems = append(v.problems, fmt.Sprintf("agent %s: %v", a.id, err))
			continue
		}
		for _, s := range parseSlots(out) {
			if !s.initialized {
				continue
			}
			tokens++
			if owned[s.serial] == nil {
				v.problems = append(v.problems, fmt.Sprintf("agent %s: token %s (%q) is initialised and no lane's: an issue applied twice?", a.id, s.serial, s.label))
			}
		}
		for serial, l := range owned {
			v.problems = append(v.problems, c.checkToken(a, serial, l.expect(), certOf)...)
		}
	}
	lostProblems, left := c.checkLost()
	v.problems = append(v.problems, lostProblems...)
	simulated := 0
	for _, l := range c.lanes {
		if l.agent == nil && l.serial != "" {
			simulated++
			v.problems = append(v.problems, c.checkSimToken(l, l.expect(), certOf)...)
		}
	}
	v.note = fmt.Sprintf("%d initialised tokens on %d real agents (pkcs11-tool), %d simulated tokens, %d replaced as lost (their serials absent)",
		tokens, len(c.agents), simulated, len(c.replaced))
	if len(left) > 0 {
		v.note += fmt.Sprintf("; damaged token files no job waited for: %v", left)
	}
	return v
}

// checkToken holds one token to what its lane expects.
func (c *campaign) checkToken(a *agentProc, serial string, want laneExpect, certOf map[string][]client.Certificate) []string {
	where := fmt.Sprintf("agent %s token %s (%s)", a.id, serial, want.state)
	slot, err := slotIn(a.store, serial)
	if err != nil {
		return []string{where + ": " + err.Error()}
	}
	if want.state == tokenUnknown {
		// The lane's last job did not succeed (checkAccounted says which): what it left
		// is not the lane's to know; the token is accounted for by it.
		return nil
	}
	if want.state == tokenWiped {
		out, err := a.store.p11("--slot", slot, "--list-objects")
		if err != nil {
			return []string{where + ": " + err.Error()}
		}
		if objs := parseObjects(out); len(objs) > 0 {
			return []string{fmt.Sprintf("%s: wiped, and holds:%s", where, describeObjects(objs))}
		}
		return nil
	}
	var pin string
	err = c.call(c.operator, func(ctx context.Context, cl *client.Client) error {
		var err error
		pin, err = cl.RevealUserPIN(ctx, want.pinJob)
		return err
	})
	if err != nil {
		return []string{fmt.Sprintf("%s: the user PIN of job %s: %v", where, want.pinJob, err)}
	}
	out, err := a.store.p11("--slot", slot, "--login", "--pin", pin, "--list-objects")
	if err != nil {
		return []string{where + ": " + err.Error()}
	}
	objs := parseObjects(out)
	keyID := protocol.DeriveKeyID(want.keyJob)
	var problems []string
	wantCerts := 0
	if want.hasCert {
		wantCerts = 1
	}
	var others []object
	for _, o := range objs {
		switch {
		case (o.class == "Private Key" || o.class == "Public Key" || o.class == "Certificate") && o.id == keyID:
		case o.class == "Certificate" && o.label == caLabel:
		default:
			others = append(others, o)
		}
	}
	if count(objs, "Private Key", keyID) != 1 || count(objs, "Certificate", keyID) != wantCerts || len(others) != 0 {
		problems = append(problems, fmt.Sprintf("%s: want one private key and %d certificates with ID %s (job %s), and the CA's certificate; it holds:%s",
			where, wantCerts, keyID, want.keyJob, describeObjects(objs)))
	}
	if want.hasCert && count(objs, "Certificate", keyID) == 1 {
		file := filepath.Join(c.t.TempDir(), "cert.der")
		if _, err := a.store.p11("--slot", slot, "--read-object", "--type", "cert", "--id", keyID, "-o", file); err != nil {
			return append(problems, where+": "+err.Error())
		}
		der, err := os.ReadFile(file)
		if err != nil {
			return append(problems, where+": "+err.Error())
		}
		stored := certOf[want.keyJob]
		if !slices.ContainsFunc(stored, func(cert client.Certificate) bool { return bytes.Equal(pemDER(cert.PEM), der) }) {
			problems = append(problems, fmt.Sprintf("%s: the certificate on the token is none of the %d the coordinator stored for job %s", where, len(stored), want.keyJob))
		}
	}
	return problems
}

// slotIn finds the slot of the token with the serial in the store.
func slotIn(s softStore, serial string) (string, error) {
	out, err := s.p11("--list-slots")
	if err != nil {
		return "", err
	}
	var found []string
	for _, sl := range parseSlots(out) {
		if sl.serial == serial {
			found = append(found, sl.id)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("pkcs11-tool lists %d tokens with serial %s, want 1", len(found), serial)
	}
	return found[0], nil
}

// parseObjects reads pkcs11-tool --list-objects.
func parseObjects(out string) []object {
	var objs []object
	for _, line := range strings.Split(out, "\n") {
		if class, _, ok := strings.Cut(line, " Object;"); ok && !strings.HasPrefix(line, " ") {
			objs = append(objs, object{class: class})
			continue
		}
		if class, ok := strings.CutSuffix(line, " Object"); ok && !strings.HasPrefix(line, " ") {
			objs = append(objs, object{class: class})
			continue
		}
		if len(objs) == 0 {
			continue
		}
		o := &objs[len(objs)-1]
		key, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch key {
		case "label":
			o.label = value
		case "ID":
			o.id = value
		case "Access":
			o.access = value
		}
	}
	return objs
}

// checkAudit: the audit log verifies, with tokenfleetctl audit verify as an auditor runs
// it.
func (c *campaign) checkAudit() verdict {
	v := verdict{name: "the audit log verifies (tokenfleetctl audit verify)"}
	out := c.ctl(c.admin, "audit", "verify")
	if !strings.Contains(out, "audit log verified") {
		v.problems = append(v.problems, "tokenfleetctl audit verify: "+out)
	}
	v.note = strings.TrimSpace(out)
	return v
}

// checkDeadLetters: every message that went to the dead-letter exchange is explained:
// the coordinator refused it and audited why (message.rejected with its message ID and
// code). A message dead-lettered without a refusal (a delivery limit reached, a queue
// overflowing) is unexplained.
func (c *campaign) checkDeadLetters() verdict {
	v := verdict{name: "no dead letter unexplained"}
	dead, err := c.dead.drain()
	if err != nil {
		v.problems = append(v.problems, "reading the dead letters: "+err.Error())
		return v
	}
	codes := map[string]string{} // message ID → code the coordinator audited
	err = c.call(c.admin, func(ctx context.Context, cl *client.Client) error {
		for e, err := range cl.AuditEntries(ctx, 0, 1000) {
			if err != nil {
				return err
			}
			if e.Action != "message.rejected" {
				continue
			}
			var det map[string]any
			if json.Unmarshal(e.Details, &det) == nil {
				if id, ok := det["message_id"].(string); ok {
					codes[id] = fmt.Sprint(det["code"])
				}
			}
		}
		return nil
	})
	if err != nil {
		v.problems = append(v.problems, "reading the audit log: "+err.Error())
		return v
	}
	byCode := map[string]int{}
	for _, d := range dead {
		code, ok := codes[d.messageID]
		if !ok {
			v.problems = append(v.problems, fmt.Sprintf("dead letter %s (%s, job %s) was refused by nobody who said why: %s", d.messageID, d.typ, d.jobID, d.reason))
			continue
		}
		byCode[code]++
	}
	c.deadByCode = byCode
	v.note = fmt.Sprintf("%d dead letters, by the code of their refusal: %v", len(dead), byCode)
	return v
}

// checkChildren: no child reported a data race, a panic or a fatal error, and none ended
// by itself.
func (c *campaign) checkChildren() verdict {
	v := verdict{name: "no process raced, panicked or ended by itself"}
	for _, p := range c.procs() {
		if alarms := p.log.alarmsSeen(); len(alarms) > 0 {
			v.problems = append(v.problems, fmt.Sprintf("%s reported %v", p.name, alarms))
		}
		if ended, why := p.exited(); ended {
			v.problems = append(v.problems, fmt.Sprintf("%s ended by itself: %v", p.name, why))
		}
	}
	if c.sims != nil {
		if n := c.sims.Failed(); n > 0 {
			v.problems = append(v.problems, fmt.Sprintf("%d simulated agents ended with an error: %v", n, c.sims.Errors()))
		}
		if alarms := c.simLog.alarmsSeen(); len(alarms) > 0 {
			v.problems = append(v.problems, fmt.Sprintf("the simulated agents reported %v", alarms))
		}
	}
	v.note = fmt.Sprintf("%d processes", len(c.procs()))
	return v
}

// summary prints the run: seed, jobs by final state and kind, faults by kind, duration,
// verdicts.
func (c *campaign) summary() {
	c.mu.Lock()
	defer c.mu.Unlock()
	byState, byKind := map[string]int{}, map[string]int{}
	retried := 0
	for _, r := range c.jobs {
		byState[string(r.final.State)]++
		byKind[string(r.kind)]++
		if r.retries > 0 {
			retried++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "fault campaign summary, variant %s\n", c.plan.name)
	fmt.Fprintf(&b, "  seed:       %d (replay: %s=%d %s=%s)\n", c.set.seed, soakSeedEnv, c.set.seed, soakVariantsEnv, c.plan.name)
	fmt.Fprintf(&b, "  duration:   %v (%d real agents, %d simulated agents, %d lanes, %d coordinators)\n",
		c.duration.Round(time.Second), len(c.agents), c.plan.sims, len(c.lanes), len(c.coords))
	fmt.Fprintf(&b, "  jobs:       %d, by final state %s, by kind %s, %d retried by the help desk\n", len(c.jobs), sortedCounts(byState), sortedCounts(byKind), retried)
	total := 0
	for _, n := range c.faults {
		total += n
	}
	fmt.Fprintf(&b, "  faults:     %d, %s\n", total, sortedCounts(c.faults))
	reloads := 0
	for _, ag := range c.agents {
		reloads += ag.log.reloadsSeen()
	}
	// A wipe or initialise that met an object a killed agent left half-written on a
	// SoftHSM2 token: the agent reloaded its module and initialised again.
	fmt.Fprintf(&b, "  reloads:    %d PKCS#11 module reloads by real agents after a token initialisation failed with a device error\n", reloads)
	fmt.Fprintf(&b, "  tokens replaced: %s\n", c.replacedSummary())
	for _, v := range c.verdicts {
		ok := "holds"
		if len(v.problems) > 0 {
			ok = fmt.Sprintf("BROKEN (%d problems)", len(v.problems))
		}
		fmt.Fprintf(&b, "  verdict:    %s: %s; %s\n", v.name, ok, v.note)
	}
	c.t.Log(b.String())
}

func sortedCounts(m map[string]int) string {
	keys := slices.Collect(maps.Keys(m))
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// pemDER decodes a PEM certificate; nil when it is not one.
func pemDER(text string) []byte {
	b, _ := pem.Decode([]byte(text))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil
	}
	return b.Bytes
}
