package dispatch_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestIssueThroughBroker: an approved issue job reaches the agent's queue, the agent's
// CSR is signed, the certificate comes back, the result ends the job; openssl accepts the
// certificate against the CA, and lists it in the CRL once revoked.
func TestIssueThroughBroker(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-issue", "")
	a.Hello(dispatchtest.Token("BLANK1", false))
	j := w.job(jobs.KindIssue, "ws-issue", "blank-issue", "")

	denv := a.Next(protocol.TypeDispatch, j.ID)
	d, err := protocol.DecodeBody[protocol.JobDispatch](denv)
	if err != nil {
		t.Fatal(err)
	}
	if d.Kind != protocol.KindIssue || !d.Initialise || !d.Token.Blank || d.Key == nil || d.Key.Type != protocol.KeyP256 ||
		d.Key.ID != protocol.DeriveKeyID(j.ID) || d.PINPolicy == nil || d.PINPolicy.MinLength != 6 || d.PINPolicy.MaxLength != 16 ||
		d.PINPolicy.SOLength != 16 || len(d.ResultKey) == 0 || d.TokenLabel != "tf alice" || d.Deadline.IsZero() || denv.Attempt != 1 {
		t.Fatalf("dispatch %+v (attempt %d)", d, denv.Attempt)
	}
	// Dispatched once the broker confirmed it, before the agent did anything.
	det := w.waitState(j.ID, jobs.StateDispatched)
	if last := det.Timeline[len(det.Timeline)-1]; last.Actor != dispatch.ActorDispatch {
		t.Errorf("dispatched by %q", last.Actor)
	}

	is := a.IssueUntilCSR(denv, "BLANK1")
	a.Finish(is)
	det = w.waitState(j.ID, jobs.StateSucceeded)
	wantSteps := []jobs.Step{jobs.StepTokenFound, jobs.StepInitialising, jobs.StepKeyGenerated, jobs.StepCSRSent,
		jobs.StepCertificateWritten, jobs.StepVerified}
	if got := steps(det, 1); !slices.Equal(got, wantSteps) {
		t.Errorf("steps %v, want %v", got, wantSteps)
	}
	for _, s := range []jobs.State{jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate, jobs.StateInstalling, jobs.StateSucceeded} {
		if n := transitions(det, s); n != 1 {
			t.Errorf("%d transitions to %s", n, s)
		}
	}
	if det.TokenSerial != "BLANK1" || det.ErrorCode != "" {
		t.Errorf("job token %q, error %q", det.TokenSerial, det.ErrorCode)
	}

	// The certificate names come from the approved request, the key from the CSR.
	certs := w.certificates(j.ID)
	if len(certs) != 1 {
		t.Fatalf("%d certificates recorded", len(certs))
	}
	cert := is.Certificate
	if certs[0].Serial != cert.SerialNumber.Text(16) || certs[0].TokenSerial != "BLANK1" || cert.Subject.CommonName != "Alice Martin" ||
		!slices.Equal(cert.Subject.Organization, []string{"Acme"}) || !slices.Equal(cert.EmailAddresses, []string{"alice@acme.example"}) ||
		len(cert.DNSNames) != 0 || !bytes.Equal(mustPKIX(t, cert.PublicKey), dispatchtest.PublicKeyDER(t, is.Key)) {
		t.Errorf("certificate %s, SANs %v %v", cert.Subject, cert.EmailAddresses, cert.DNSNames)
	}
	if want := w.c.DirectURL + "/crl"; !slices.Equal(cert.CRLDistributionPoints, []string{want}) {
		t.Errorf("CRL distribution points %v, want %s", cert.CRLDistributionPoints, want)
	}

	// The PINs the agent set are kept sealed, open with the coordinator's result key, and
	// are nowhere in the database in clear.
	key, created, err := dispatch.LoadOrCreateResultKey(filepath.Join(w.c.DataDir, dispatch.ResultKeyFile))
	if err != nil || created {
		t.Fatalf("result key: %v (created %v)", err, created)
	}
	for purpose, want := range map[string]string{store.PINPurposeSO: is.Pins.SO, store.PINPurposeUser: is.Pins.User} {
		kept, err := w.c.Store.GetTokenPIN(w.ctx, "BLANK1", purpose)
		if err != nil {
			t.Fatal(err)
		}
		pin, err := dispatch.OpenTokenPIN(key, kept)
		if err != nil || string(pin) != want || kept.JobID != j.ID || kept.Attempt != 1 {
			t.Errorf("kept %s: %q, %v (%+v)", purpose, pin, err, kept)
		}
	}
	for _, f := range []string{coordinator.DatabaseFile, coordinator.DatabaseFile + "-wal"} {
		data, err := os.ReadFile(filepath.Join(w.c.DataDir, f))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(is.Pins.SO)) || bytes.Contains(data, []byte(is.Pins.User)) {
			t.Errorf("a PIN is in clear in %s", f)
		}
	}

	// The user PIN is shown once, to the requester (or an admin), and the reveal audited.
	if _, err := w.caop.RevealUserPIN(w.ctx, j.ID); apiCode(err) != "forbidden" {
		t.Errorf("a CA operator asking for the PIN: %v", err)
	}
	if out := runCtl(t, w, w.tokenOf("desk"), 0, "job", "pin", j.ID); out != is.Pins.User+"\n" {
		t.Errorf("job pin printed %q, want the user PIN the agent set", out)
	}
	if _, err := w.desk.RevealUserPIN(w.ctx, j.ID); apiCode(err) != "conflict" {
		t.Errorf("a second reveal: %v", err)
	}
	// A second ask names the command that gets a new PIN, as it is typed.
	unblock := "tokenfleetctl issue --kind unblock_pin --holder alice --agent ws-issue --profile blank-issue --token BLANK1\n"
	if out := runCtl(t, w, w.tokenOf("desk"), 1, "job", "pin", j.ID); !strings.HasSuffix(out, unblock) {
		t.Errorf("job pin a second time: %q, want it to end with %q", out, unblock)
	}
	if es := w.auditOf(audit.ActionPINRevealed, j.ID); len(es) != 1 || bytes.Contains(es[0].Details, []byte(is.Pins.User)) {
		t.Errorf("PIN reveal audit %+v", es)
	}

	// The CA certificate (the API serves it without a token) and openssl's verdict.
	dir := t.TempDir()
	caPEM := runCtl(t, w, w.tokenOf("desk"), 0, "ca", "cert")
	if chain, err := w.client("").CACertificates(w.ctx); err != nil || chain.PEM != caPEM || len(chain.Certificates) != 1 ||
		chain.Certificates[0].Subject != cert.Issuer.String() {
		t.Fatalf("CA certificates without a token: %+v, %v", chain, err)
	}
	writeFile(t, dir, "ca.pem", caPEM)
	writeFile(t, dir, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})))
	if out, err := openssl(dir, "verify", "-CAfile", "ca.pem", "cert.pem"); err != nil || !strings.Contains(out, "cert.pem: OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}

	// Revoked by the CA operator: the CRL at the public path lists it.
	if _, err := w.desk.RevokeCertificate(w.ctx, certs[0].Serial, "key_compromise", ""); apiCode(err) != "forbidden" {
		t.Errorf("help desk revoking: %v", err)
	}
	out := runCtl(t, w, w.tokenOf("caop"), 0, "revoke", certs[0].Serial, "--reason", "key_compromise", "--comment", "token lost")
	if !strings.Contains(out, "revoked") {
		t.Errorf("revoke said %q", out)
	}
	if _, err := w.caop.RevokeCertificate(w.ctx, certs[0].Serial, "superseded", ""); apiCode(err) != "conflict" {
		t.Errorf("revoking twice: %v", err)
	}
	crl := httpGet(t, w.c.URL+"/crl")
	writeFile(t, dir, "crl.der", string(crl))
	text, err := openssl(dir, "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text")
	if err != nil || !containsAll(text, strings.ToUpper(certs[0].Serial), "Key Compromise") {
		t.Fatalf("openssl crl: %v\n%s", err, text)
	}
	if out, err := openssl(dir, "crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"); err != nil {
		t.Fatal(out)
	}
	if out, err := openssl(dir, "verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "cert.pem"); err == nil ||
		!strings.Contains(out, "certificate revoked") {
		t.Fatalf("openssl verify with the CRL: %v\n%s", err, out)
	}
	if es := w.auditOf(audit.ActionCertificateRevoked, j.ID); len(es) != 1 || es[0].Reason != "token lost" {
		t.Errorf("revocation audit %+v", es)
	}
	if es := w.auditOf(audit.ActionCertificateIssued, j.ID); len(es) != 1 {
		t.Errorf("%d issuance audit entries", len(es))
	}

	// Presence and inventory, as tokenfleetctl shows them.
	agents := runCtl(t, w, w.c.AdminToken, 0, "agents")
	if !containsAll(agents, "ws-issue", "online", "linux/amd64", "scripted") {
		t.Errorf("agents:\n%s", agents)
	}
	if tokens := runCtl(t, w, w.c.AdminToken, 0, "tokens"); !containsAll(tokens, "BLANK1", "ws-issue", "SoftHSM v2") {
		t.Errorf("tokens:\n%s", tokens)
	}
	w.verifyAudit()
}

// TestCAOperatorGate: a profile with the CA-operator gate stops in
// awaiting_certificate after the CSR; the CA operator's approval signs it.
func TestCAOperatorGate(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-gate", "")
	j := w.job(jobs.KindIssue, "ws-gate", "gated", "")
	if j.State != jobs.StatePendingApproval {
		t.Fatalf("new gated job is %s", j.State)
	}
	if _, err := w.appr.Approve(w.ctx, j.ID, "ok"); err != nil {
		t.Fatal(err)
	}
	is := a.IssueUntilCSR(a.Next(protocol.TypeDispatch, j.ID), "GATE1")
	w.waitState(j.ID, jobs.StateAwaitingCertificate)
	if n := len(w.certificates(j.ID)); n != 0 {
		t.Fatalf("%d certificates before the CA operator decided", n)
	}
	if _, err := w.caop.Approve(w.ctx, j.ID, "checked"); err != nil {
		t.Fatal(err)
	}
	a.Finish(is)
	det := w.waitState(j.ID, jobs.StateSucceeded)
	if len(w.certificates(j.ID)) != 1 || transitions(det, jobs.StateInstalling) != 1 {
		t.Fatalf("certificates %d, timeline %+v", len(w.certificates(j.ID)), det.Timeline)
	}
}

func mustPKIX(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writeFile(t *testing.T, dir, name, data string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// openssl runs the openssl tool in dir: a verifier nobody here wrote.
func openssl(dir string, args ...string) (string, error) {
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return body
}

// runCtl runs tokenfleetctl in process as the holder of token and wants exit status code.
func runCtl(t *testing.T, w *world, token string, code int, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	env := map[string]string{"TOKENFLEET_URL": w.c.URL, "TOKENFLEET_TOKEN": token}
	got := ctl.Main(w.ctx, args, ctl.Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }})
	if got != code {
		t.Fatalf("tokenfleetctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, stdout.String(), stderr.String())
	}
	if code != 0 {
		return stderr.String()
	}
	return stdout.String()
}

// tokenOf issues an API token for a user.
func (w *world) tokenOf(username string) string {
	w.t.Helper()
	tok, err := w.admin.CreateAPIToken(w.ctx, username, client.APITokenCreate{Name: "tokenfleetctl"})
	if err != nil {
		w.t.Fatal(err)
	}
	return tok.Token
}
