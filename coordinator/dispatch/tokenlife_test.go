package dispatch_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// tempProfile may issue temporary tokens, whose certificates live 7 days.
const tempProfile = `name: temp-issue
description: Any blank token; a temporary token's certificate lives a week.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
temporary: {validity: 7d}
token:
  initialize: true
  label: "tf {{.ID}}"
  any_blank: true
pin_policy: {min_length: 6, max_length: 16, so_pin_length: 16}
`

// lifeWorld is a world with an agent holding blank tokens, and the CA's files for openssl.
type lifeWorld struct {
	*world
	a   *dispatchtest.Agent
	dir string
}

// issue runs an issue job on serial through the agent to success and returns its
// certificate.
func (lw *lifeWorld) issue(j client.Job, serial string) *x509.Certificate {
	lw.t.Helper()
	is := lw.a.IssueUntilCSR(lw.a.Next(protocol.TypeDispatch, j.ID), serial)
	lw.a.Finish(is)
	lw.waitState(j.ID, jobs.StateSucceeded)
	return is.Certificate
}

// crl fetches the CRL the coordinator publishes and returns openssl's text of it, checked
// against the CA certificate.
func (lw *lifeWorld) crl(name string) string {
	lw.t.Helper()
	der := httpGet(lw.t, lw.c.DirectURL+"/crl")
	writeFile(lw.t, lw.dir, name+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})))
	out, err := openssl(lw.dir, "crl", "-in", name+".pem", "-noout", "-text", "-CAfile", "ca.pem")
	if err != nil || !strings.Contains(out, "verify OK") {
		lw.t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	return out
}

// entry is the CRL text's entry of cert ("" when the CRL does not list it).
func entry(crlText string, cert *x509.Certificate) string {
	serial := fmt.Sprintf("Serial Number: %X", cert.SerialNumber.Bytes())
	i := strings.Index(crlText, serial)
	if i < 0 {
		return ""
	}
	rest := crlText[i:]
	if j := strings.Index(rest[len(serial):], "Serial Number:"); j >= 0 {
		rest = rest[:len(serial)+j]
	}
	return rest
}

// verify is openssl's verdict on cert against the CA and the current CRL.
func (lw *lifeWorld) verify(name string, cert *x509.Certificate) (string, error) {
	lw.t.Helper()
	lw.crl("crl-" + name)
	writeFile(lw.t, lw.dir, name+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})))
	return openssl(lw.dir, "verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl-"+name+".pem", name+".pem")
}

func newLifeWorld(t *testing.T, serials ...string) *lifeWorld {
	w := newWorld(t, "shared")
	if _, err := w.admin.ApplyProfiles(w.ctx, []byte(tempProfile)); err != nil {
		t.Fatal(err)
	}
	a := w.agent("ws-life", "")
	toks := make([]protocol.Token, len(serials))
	for i, s := range serials {
		toks[i] = dispatchtest.Token(s, false)
	}
	a.Hello(toks...)
	lw := &lifeWorld{world: w, a: a, dir: t.TempDir()}
	writeFile(t, lw.dir, "ca.pem", runCtl(t, w, w.tokenOf("desk"), 0, "ca", "cert"))
	return lw
}

// TestTokenLifeCycle: suspended puts the token's certificate on hold in the CRL, issuing
// to it is refused, a temporary token is issued with the profile's short validity and is
// revoked when the original is reinstated, which takes the hold off the CRL; suspended
// moves on to lost (key compromise in the CRL, openssl refuses the certificate); a lost
// token can only be replaced, and the replacement's success marks it replaced; replacing
// an active token revokes its valid certificate as superseded. Every check goes through
// tokenfleetctl or the API and openssl.
func TestTokenLifeCycle(t *testing.T) {
	t.Parallel()
	lw := newLifeWorld(t, "ORIG1", "TEMP1", "NEW1", "NEW2")
	desk := lw.tokenOf("desk")
	cert := lw.issue(lw.job(jobs.KindIssue, "ws-life", "blank-issue", "ORIG1"), "ORIG1")
	if e := entry(lw.crl("start"), cert); e != "" {
		t.Fatalf("a fresh certificate on the CRL: %s", e)
	}
	if l, err := lw.desk.TokenLife(lw.ctx, "ORIG1"); err != nil || l.State != "active" || len(l.History) != 0 {
		t.Fatalf("a token never moved: %+v, %v", l, err)
	}

	// Who may move a token: not an approver; a reason is required.
	if _, err := lw.appr.SetTokenState(lw.ctx, "ORIG1", "suspended", "left at home"); apiCode(err) != "forbidden" ||
		!strings.Contains(err.Error(), "manage_tokens") {
		t.Errorf("approver suspending: %v", err)
	}
	if _, err := lw.desk.SetTokenState(lw.ctx, "ORIG1", "suspended", " "); apiCode(err) != "reason_required" {
		t.Errorf("no reason: %v", err)
	}
	if out := runCtl(t, lw.world, desk, 2, "token", "suspend", "ORIG1"); !strings.Contains(out, "--reason") {
		t.Errorf("ctl without --reason: %q", out)
	}
	if _, err := lw.desk.SetTokenState(lw.ctx, "ORIG1", "replaced", "gone"); apiCode(err) != "bad_request" {
		t.Errorf("straight to replaced: %v", err)
	}
	if _, err := lw.desk.SetTokenState(lw.ctx, "ORIG1", "active", "fine"); apiCode(err) != "illegal_transition" {
		t.Errorf("reinstating an active token: %v", err)
	}

	// Suspended: on hold in the CRL; issuing to it refused.
	if out := runCtl(t, lw.world, desk, 0, "token", "suspend", "ORIG1", "--reason", "left at home"); out != "token ORIG1 is suspended\n" {
		t.Errorf("suspend said %q", out)
	}
	if out := runCtl(t, lw.world, desk, 0, "tokens", "--search", "ORIG1"); !strings.Contains(out, "STATE") || !strings.Contains(out, " suspended ") {
		t.Errorf("tokenfleetctl tokens does not show the token suspended:\n%s", out)
	}
	if e := entry(lw.crl("held"), cert); !strings.Contains(e, "Certificate Hold") {
		t.Errorf("suspended token's certificate not on hold in the CRL: %q", e)
	}
	if out, err := lw.verify("held", cert); err == nil || !strings.Contains(out, "certificate revoked") {
		t.Errorf("openssl accepts a certificate on hold: %v\n%s", err, out)
	}
	_, err := lw.desk.CreateJob(lw.ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-life", Profile: "blank-issue", TokenSerial: "ORIG1"})
	if apiCode(err) != "token_not_active" || !strings.Contains(err.Error(), "suspended") {
		t.Errorf("issuing to a suspended token: %v", err)
	}

	// A temporary token: refused for a profile without temporary, and for another holder.
	ti := client.TokenIssue{Holder: "alice", Agent: "ws-life", Profile: "blank-issue", TokenSerial: "TEMP1"}
	if _, err := lw.desk.RequestTemporaryToken(lw.ctx, "ORIG1", ti); apiCode(err) != "bad_request" || !strings.Contains(err.Error(), "temporary") {
		t.Errorf("temporary with a profile without it: %v", err)
	}
	ti.Profile = "temp-issue"
	if _, err := lw.appr.RequestTemporaryToken(lw.ctx, "ORIG1", ti); apiCode(err) != "forbidden" || !strings.Contains(err.Error(), "manage_tokens") {
		t.Errorf("an approver asking for a temporary token: %v", err)
	}
	if _, err := lw.desk.RequestTemporaryToken(lw.ctx, "NEW1", ti); apiCode(err) != "token_not_suspended" {
		t.Errorf("temporary for an active token: %v", err)
	}
	jid := runCtl(t, lw.world, desk, 0, "token", "temporary", "ORIG1", "--holder", "alice", "--agent", "ws-life",
		"--profile", "temp-issue", "--new-token", "TEMP1")
	temp := lw.issue(client.Job{ID: strings.TrimSpace(jid)}, "TEMP1")
	if life := temp.NotAfter.Sub(temp.NotBefore); life > 7*24*time.Hour+time.Hour || life < 7*24*time.Hour-time.Hour {
		t.Errorf("temporary certificate lives %s, want the profile's 7d", life)
	}
	if l, err := lw.desk.TokenLife(lw.ctx, "TEMP1"); err != nil || l.State != "active" || l.TemporaryFor != "ORIG1" || l.Holder != "alice" {
		t.Errorf("temporary token's record: %+v, %v", l, err)
	}
	if l, _ := lw.desk.TokenLife(lw.ctx, "ORIG1"); len(l.Temporary) != 1 || l.Temporary[0].Serial != "TEMP1" {
		t.Errorf("original's temporary tokens: %+v", l.Temporary)
	}

	// Reinstated: the hold leaves the CRL; the temporary token is retired and revoked.
	runCtl(t, lw.world, desk, 0, "token", "reinstate", "ORIG1", "--reason", "back from home")
	text := lw.crl("reinstated")
	if e := entry(text, cert); e != "" {
		t.Errorf("reinstated token's certificate still on the CRL: %s", e)
	}
	if e := entry(text, temp); !strings.Contains(e, "Cessation Of Operation") {
		t.Errorf("temporary certificate not revoked when the original came back: %q", e)
	}
	if out, err := lw.verify("reinstated", cert); err != nil || !strings.Contains(out, ": OK") {
		t.Errorf("openssl refuses the reinstated certificate: %v\n%s", err, out)
	}
	if l, _ := lw.desk.TokenLife(lw.ctx, "TEMP1"); l.State != "retired" || !strings.Contains(l.Reason, "ORIG1 reinstated") {
		t.Errorf("temporary token after the original's return: %+v", l)
	}

	// Temporarily lost, then lost for good (Dogtag could not): key compromise in the CRL,
	// revoked since the suspension.
	runCtl(t, lw.world, desk, 0, "token", "suspend", "ORIG1", "--reason", "not found this morning")
	suspended, _ := lw.desk.TokenLife(lw.ctx, "ORIG1")
	runCtl(t, lw.world, desk, 0, "token", "lost", "ORIG1", "--reason", "not found after a week")
	e := entry(lw.crl("lost"), cert)
	if !strings.Contains(e, "Key Compromise") || strings.Contains(e, "Hold") {
		t.Errorf("lost token's certificate in the CRL: %q", e)
	}
	if out, err := lw.verify("lost", cert); err == nil || !strings.Contains(out, "certificate revoked") {
		t.Errorf("openssl accepts a lost token's certificate: %v\n%s", err, out)
	}
	if certs, _, err := lw.c.Store.ListCertificates(lw.ctx, store.CertificateFilter{TokenSerial: "ORIG1"}, store.Page{}); err != nil ||
		len(certs) != 1 || !certs[0].RevokedAt.Equal(suspended.ChangedAt) || certs[0].RevocationReason != 1 {
		t.Errorf("revocation %+v, want key compromise at the suspension's %v (%v)", certs, suspended.ChangedAt, err)
	}
	if _, err := lw.desk.SetTokenState(lw.ctx, "ORIG1", "active", "found it"); apiCode(err) != "illegal_transition" ||
		!strings.Contains(err.Error(), "stolen, replaced") {
		t.Errorf("lost back to active: %v", err)
	}
	_, err = lw.desk.CreateJob(lw.ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-life", Profile: "blank-issue", TokenSerial: "ORIG1"})
	if apiCode(err) != "token_not_active" {
		t.Errorf("issuing to a lost token: %v", err)
	}

	// Replacement of the lost token, in one request; its success marks the old one.
	jid = runCtl(t, lw.world, desk, 0, "token", "replace", "ORIG1", "--holder", "alice", "--agent", "ws-life",
		"--profile", "blank-issue", "--new-token", "NEW1")
	newCert := lw.issue(client.Job{ID: strings.TrimSpace(jid)}, "NEW1")
	show := runCtl(t, lw.world, desk, 0, "token", "show", "ORIG1")
	for _, want := range []string{"token ORIG1: replaced", "replaced by: NEW1", "active -> suspended  by desk: left at home",
		"suspended -> lost  by desk: not found after a week", "lost -> replaced  by system:tokenlife: replaced by token NEW1 (job " + strings.TrimSpace(jid)} {
		if !strings.Contains(show, want) {
			t.Errorf("token show lacks %q:\n%s", want, show)
		}
	}
	if _, err := lw.desk.RequestReplacement(lw.ctx, "ORIG1", client.TokenIssue{Holder: "alice", Agent: "ws-life", Profile: "blank-issue"}); apiCode(err) != "illegal_transition" {
		t.Errorf("replacing a replaced token: %v", err)
	}

	// Replacing an active token revokes its valid certificate as superseded.
	jid = runCtl(t, lw.world, desk, 0, "token", "replace", "NEW1", "--holder", "alice", "--agent", "ws-life",
		"--profile", "blank-issue", "--new-token", "NEW2")
	lw.issue(client.Job{ID: strings.TrimSpace(jid)}, "NEW2")
	if e := entry(lw.crl("superseded"), newCert); !strings.Contains(e, "Superseded") {
		t.Errorf("replaced token's certificate in the CRL: %q", e)
	}

	if n := len(lw.auditOf(audit.ActionTokenStateChanged, "")); n < 8 {
		t.Errorf("%d token.state_changed audit entries", n)
	}
	if n := len(lw.auditOf(audit.ActionCertificateHoldReleased, "")); n != 1 {
		t.Errorf("%d certificate.hold_released audit entries, want 1", n)
	}
	lw.verifyAudit()
}

// TestSuspendedTokenPickedByAgent: a job that names no token, on which the agent finds a
// suspended token (Dogtag once enrolled a temporarily lost token this way), fails at
// signing: no certificate is issued to it.
func TestSuspendedTokenPickedByAgent(t *testing.T) {
	t.Parallel()
	lw := newLifeWorld(t, "HOME1")
	lw.issue(lw.job(jobs.KindIssue, "ws-life", "blank-issue", "HOME1"), "HOME1")
	if _, err := lw.desk.SetTokenState(lw.ctx, "HOME1", "suspended", "left at home"); err != nil {
		t.Fatal(err)
	}
	j := lw.job(jobs.KindIssue, "ws-life", "blank-issue", "")
	lw.a.IssueUntilCSR(lw.a.Next(protocol.TypeDispatch, j.ID), "HOME1")
	d := lw.waitState(j.ID, jobs.StateFailed)
	if d.ErrorCode != string(protocol.CodePolicyViolation) || !strings.Contains(d.ErrorMessage, "HOME1 is suspended") {
		t.Errorf("job failed with %s: %s", d.ErrorCode, d.ErrorMessage)
	}
	if certs := lw.certificates(j.ID); len(certs) != 0 {
		t.Errorf("%d certificates issued to a suspended token", len(certs))
	}
}

// TestTokenLostEndsOpenJobs: a job sent to the agent for a token that is then declared
// lost is cancelled at once and the agent is told why; the token found again stays out of
// use (issuing refused, with the way out), and tokenfleetctl shows it. Through the API,
// tokenfleetctl and a scripted agent over the broker.
func TestTokenLostEndsOpenJobs(t *testing.T) {
	t.Parallel()
	lw := newLifeWorld(t, "GONE1")
	desk := lw.tokenOf("desk")
	lw.issue(lw.job(jobs.KindIssue, "ws-life", "blank-issue", "GONE1"), "GONE1")
	j := lw.job(jobs.KindIssue, "ws-life", "blank-issue", "GONE1")
	lw.a.Next(protocol.TypeDispatch, j.ID)

	runCtl(t, lw.world, desk, 0, "token", "lost", "GONE1", "--reason", "left on the train")
	d := lw.waitState(j.ID, jobs.StateCancelled)
	c, err := protocol.DecodeBody[protocol.Cancel](lw.a.Next(protocol.TypeCancel, j.ID))
	if err != nil {
		t.Fatal(err)
	}
	const why = "token GONE1 became lost: left on the train"
	if c.State != jobs.StateCancelled || c.Reason != why {
		t.Errorf("the agent was told %+v, want cancelled: %q", c, why)
	}
	if len(d.Timeline) == 0 || d.Timeline[len(d.Timeline)-1].Reason != why {
		t.Errorf("job timeline %+v", d.Timeline)
	}

	// Found again: it stays out of use until it is wiped.
	if out := runCtl(t, lw.world, desk, 2, "token", "found", "GONE1"); !strings.Contains(out, "--reason") {
		t.Errorf("found without a reason: %s", out)
	}
	if out := runCtl(t, lw.world, desk, 0, "token", "found", "GONE1", "--reason", "in the lost property office"); out != "token GONE1 is found\n" {
		t.Errorf("token found: %q", out)
	}
	out := runCtl(t, lw.world, desk, 1, "issue", "--holder", "alice", "--agent", "ws-life", "--profile", "blank-issue", "--token-serial", "GONE1")
	if !strings.Contains(out, "token_not_active") || !strings.Contains(out, "wipe it first") {
		t.Errorf("issuing to a found token: %s", out)
	}
	out = runCtl(t, lw.world, desk, 1, "token", "reinstate", "GONE1", "--reason", "back")
	if !strings.Contains(out, "illegal_transition") || !strings.Contains(out, "wipe") {
		t.Errorf("a found token reinstated by hand: %s", out)
	}
	show := runCtl(t, lw.world, desk, 0, "token", "show", "GONE1")
	if !strings.Contains(show, "token GONE1: found") || !strings.Contains(show, "lost -> found  by desk: in the lost property office") {
		t.Errorf("token show:\n%s", show)
	}
}
