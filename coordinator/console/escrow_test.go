package console_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/tokenfleet/tokenfleet/coordinator/console"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// escrowEnv is env with two key-recovery officers (kora, kurt) and a holder who signs in
// (hugo), whose escrowed key on token T1 is active and is his encryption key.
type escrowEnv struct {
	*env
	key store.EscrowedKey
	enc store.HolderEncryptionKey
}

func newEscrowConsoleEnv(t *testing.T) *escrowEnv {
	t.Helper()
	s := defaultSetup()
	s.people = append(s.people,
		service.UserRequest{Username: "kora", DisplayName: "Kora Officer", Email: "kora@acme.example", Organization: "Acme", Roles: []jobs.Role{jobs.RoleKeyRecoveryOfficer}},
		service.UserRequest{Username: "kurt", DisplayName: "Kurt Officer", Email: "kurt@acme.example", Organization: "Acme", Roles: []jobs.Role{jobs.RoleKeyRecoveryOfficer}})
	s.signers = append(s.signers, "kora", "kurt", "hugo")
	e := &escrowEnv{env: newEnvFrom(t, s)}
	j := e.createJob("helen", "T1")
	hugo, err := e.st.GetUserByUsername(e.ctx, "hugo")
	if err != nil {
		t.Fatal(err)
	}
	der, pub := encryptionCert(t, "Hugo Holder", e.clock.Now().Add(365*24*time.Hour))
	e.tx(func(tx store.Tx) error {
		if e.key, err = tx.AddEscrowedKey(e.ctx, store.EscrowedKey{JobID: j.ID, Attempt: 1, HolderID: hugo.ID, TokenSerial: "T1", KeyID: "kid-hugo-1",
			CertificateSerial: "c0ffee", Archive: []byte(`{"version":1}`), State: store.EscrowActive, Created: e.clock.Now()}); err != nil {
			return err
		}
		e.enc, err = tx.AddHolderEncryptionKey(e.ctx, store.HolderEncryptionKey{HolderID: hugo.ID, KeyID: "kid-hugo-1", PublicKey: pub, Certificate: der,
			CertificateSerial: "c0ffee", TokenSerial: "T1", Source: store.SourceEscrowed, JobID: j.ID, EscrowedKeyID: e.key.ID, Created: e.clock.Now()})
		return err
	})
	return e
}

// encryptionCert is a self-signed P-256 key-agreement certificate and its public key.
func encryptionCert(t *testing.T, cn string, notAfter time.Time) (der, pub []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageKeyAgreement}
	if der, err = x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k); err != nil {
		t.Fatal(err)
	}
	if pub, err = x509.MarshalPKIXPublicKey(&k.PublicKey); err != nil {
		t.Fatal(err)
	}
	return der, pub
}

// postFile sends a multipart form with one file, as a browser's upload does.
func (b *browser) postFile(path, field, name string, content []byte, kv ...string) page {
	b.e.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for i := 0; i+1 < len(kv); i += 2 {
		if err := mw.WriteField(kv[i], kv[i+1]); err != nil {
			b.e.t.Fatal(err)
		}
	}
	fw, err := mw.CreateFormFile(field, name)
	if err != nil {
		b.e.t.Fatal(err)
	}
	if _, err := fw.Write(content); err != nil {
		b.e.t.Fatal(err)
	}
	if err := mw.Close(); err != nil {
		b.e.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, b.e.srv.URL+path, &body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return b.do(req)
}

func TestRecoveryCertificatesPage(t *testing.T) {
	t.Parallel()
	e := newEscrowConsoleEnv(t)
	admin := e.browser()
	home := admin.signIn("admin")
	if !strings.Contains(home.body, `href="/ui/recovery-certificates"`) {
		t.Fatal("the administrator's navigation lacks the backup keys")
	}
	p := admin.get("/ui/recovery-certificates")
	if p.status != http.StatusOK || !strings.Contains(text(byID(p.doc, "in-use")), "None in use") || !hasTest(p.doc, "rc-add") {
		t.Fatalf("empty list: %d %q", p.status, text(byID(p.doc, "in-use")))
	}

	// A file that is no certificate is refused, naming the field; the upload of a real one
	// adds it.
	p = admin.postFile("/ui/recovery-certificates", "file", "junk.pem", []byte("hello"), console.CSRFField, admin.csrf)
	if p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "certificate") {
		t.Fatalf("junk upload: %d %q", p.status, alerts(p.doc))
	}
	p = admin.post("/ui/recovery-certificates", admin.form("certificate", "  "))
	if p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "paste the recovery certificate") {
		t.Fatalf("empty form: %d %q", p.status, alerts(p.doc))
	}
	der, _ := encryptionCert(t, "Backup key 1", e.clock.Now().Add(60*24*time.Hour))
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	p = admin.postFile("/ui/recovery-certificates", "file", "backup-1.pem", certPEM, console.CSRFField, admin.csrf)
	if p.status != http.StatusSeeOther || p.location() != "/ui/recovery-certificates" {
		t.Fatalf("upload: %d %q %q", p.status, p.location(), alerts(p.doc))
	}
	p = admin.get("/ui/recovery-certificates")
	rows := rowsOf(p.doc, "rc-")
	if len(rows) != 1 || !strings.Contains(p.body, "Backup key 1") || !strings.Contains(p.body, "(replace soon)") ||
		!strings.Contains(text(byID(p.doc, "in-use")), "1 in use") || !strings.Contains(alerts(p.doc), "added") {
		t.Fatalf("after adding: rows %v, in use %q, alerts %q", rows, text(byID(p.doc, "in-use")), alerts(p.doc))
	}
	id := rows[0]

	// The help desk reads the list, without the forms; its POST is refused by the service.
	helen := e.browser()
	helen.signIn("helen")
	p = helen.get("/ui/recovery-certificates")
	if p.status != http.StatusOK || len(rowsOf(p.doc, "rc-")) != 1 || hasTest(p.doc, "rc-add") || hasTest(p.doc, "rc-retire") {
		t.Fatalf("help desk: %d, rows %v", p.status, rowsOf(p.doc, "rc-"))
	}
	p = helen.post("/ui/recovery-certificates/"+id+"/retire", helen.form("reason", "mine"))
	if p.status != http.StatusForbidden || alerts(p.doc) == "" {
		t.Fatalf("help desk retires: %d %q", p.status, alerts(p.doc))
	}
	// A holder without a role reads no backup keys and is not offered them.
	hugo := e.browser()
	if home := hugo.signIn("hugo"); strings.Contains(home.body, `href="/ui/recovery-certificates"`) {
		t.Fatal("a holder's navigation offers the backup keys")
	}
	if p = hugo.get("/ui/recovery-certificates"); p.status != http.StatusForbidden {
		t.Fatalf("holder: %d", p.status)
	}

	// Retiring: without the anti-forgery token, refused; without a reason, refused
	// naming it; with one, retired and kept.
	p = admin.post("/ui/recovery-certificates/"+id+"/retire", url.Values{"reason": {"officer left"}})
	if p.status != http.StatusForbidden || !strings.Contains(alerts(p.doc), "anti-forgery") {
		t.Fatalf("no CSRF token: %d %q", p.status, alerts(p.doc))
	}
	p = admin.post("/ui/recovery-certificates/"+id+"/retire", admin.form("reason", " "))
	if p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "say why") {
		t.Fatalf("no reason: %d %q", p.status, alerts(p.doc))
	}
	p = admin.post("/ui/recovery-certificates/"+id+"/retire", admin.form("reason", "officer left"))
	if p.status != http.StatusSeeOther {
		t.Fatalf("retire: %d %q", p.status, alerts(p.doc))
	}
	p = admin.get("/ui/recovery-certificates")
	if !strings.Contains(p.body, "retired by admin") || !strings.Contains(p.body, "officer left") || !strings.Contains(text(byID(p.doc, "in-use")), "None in use") {
		t.Fatalf("after retiring: %q", text(byID(p.doc, "in-use")))
	}
}

func TestEscrowedKeysPageAndRecovery(t *testing.T) {
	t.Parallel()
	e := newEscrowConsoleEnv(t)
	helen := e.browser()
	home := helen.signIn("helen")
	if !strings.Contains(home.body, `href="/ui/escrow"`) {
		t.Fatal("the help desk's navigation lacks the escrowed keys")
	}
	p := helen.get("/ui/escrow?holder=hugo")
	if p.status != http.StatusOK || len(rowsOf(p.doc, "ek-")) != 1 || !strings.Contains(p.body, "never recovered") || !hasTest(p.doc, "ek-recover") {
		t.Fatalf("hugo's escrowed keys: %d %v %q", p.status, rowsOf(p.doc, "ek-"), alerts(p.doc))
	}
	if enc := rowsOf(p.doc, "enc-"); len(enc) != 1 || enc[0] != e.enc.ID || !strings.Contains(p.body, "CN=Hugo Holder") || !hasTest(p.doc, "enc-download") {
		t.Fatalf("hugo's encryption keys: %v", enc)
	}
	if p = helen.get("/ui/escrow?token=T1"); len(rowsOf(p.doc, "ek-")) != 1 {
		t.Fatalf("the keys on T1: %v", rowsOf(p.doc, "ek-"))
	}
	if p = helen.get("/ui/escrow?holder=nobody"); p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "nobody") {
		t.Fatalf("unknown holder: %d %q", p.status, alerts(p.doc))
	}

	// A recovery without a reason is refused with the form kept open; to a token without
	// naming it, refused naming the field.
	rec := "/ui/escrow/" + e.key.ID + "/recover"
	p = helen.post(rec, helen.form("target", "officer", "reason", "", "back", "/ui/escrow?holder=hugo"))
	if p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "reason") || len(rowsOf(p.doc, "ek-")) != 1 {
		t.Fatalf("no reason: %d %q", p.status, alerts(p.doc))
	}
	p = helen.post(rec, helen.form("target", "token", "reason", "T1 lost", "back", "/ui/escrow?holder=hugo"))
	if p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "token_serial") {
		t.Fatalf("token without serial: %d %q", p.status, alerts(p.doc))
	}
	p = helen.post(rec, helen.form("target", "officer", "reason", "T1 lost, hugo must read old mail"))
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.location(), "/ui/jobs/") {
		t.Fatalf("recovery: %d %q %q", p.status, p.location(), alerts(p.doc))
	}
	jobID := strings.TrimPrefix(p.location(), "/ui/jobs/")

	// The job shows the key, the target and the officers' approvals; no command yet.
	p = helen.get("/ui/jobs/" + jobID)
	if !strings.Contains(text(byID(p.doc, "recovery-key")), e.key.ID) || !strings.Contains(text(byID(p.doc, "recovery-target")), "PKCS#12") ||
		text(byID(p.doc, "recovery-approvals")) != "0 of 2 approvals by key-recovery officers" || hasTest(p.doc, "recovery-command") {
		t.Fatalf("recovery job: key %q target %q approvals %q", text(byID(p.doc, "recovery-key")), text(byID(p.doc, "recovery-target")), text(byID(p.doc, "recovery-approvals")))
	}

	// In an officer's queue, with the same facts; the first approval through the console.
	kora := e.browser()
	if home := kora.signIn("kora"); !strings.Contains(home.body, `href="/ui/escrow"`) || !strings.Contains(home.body, `href="/ui/recovery-certificates"`) {
		t.Fatal("an officer's navigation lacks the escrow pages")
	}
	p = kora.get("/ui/approvals")
	if byID(p.doc, "job-"+jobID) == nil || !strings.Contains(text(byID(p.doc, "recovery-approvals")), "0 of 2 approvals by key-recovery officers") {
		t.Fatalf("officer's queue: %q", alerts(p.doc))
	}
	j, err := e.svc.GetJob(e.ctx, e.admin, jobID)
	if err != nil {
		t.Fatal(err)
	}
	if p = kora.post("/ui/jobs/"+jobID+"/approve", kora.form("binding_hash", j.BindingHash)); p.status != http.StatusSeeOther {
		t.Fatalf("kora approves: %d %q", p.status, alerts(p.doc))
	}
	if _, err := e.svc.Approve(e.ctx, e.actor("kurt"), jobID, service.DecisionRequest{BindingHash: j.BindingHash}); err != nil {
		t.Fatal(err)
	}
	p = kora.get("/ui/jobs/" + jobID)
	cmd := text(firstTest(p.doc, "recovery-command"))
	if text(byID(p.doc, "recovery-approvals")) != "2 of 2 approvals by key-recovery officers" ||
		cmd != "tokenfleetctl recovery open "+jobID+" --recovery-key RECOVERY-KEY.pem --pkcs12 hugo.p12" ||
		!strings.Contains(text(byID(p.doc, "recovery-open")), "never reaches the coordinator") {
		t.Fatalf("approved: approvals %q, command %q", text(byID(p.doc, "recovery-approvals")), cmd)
	}

	// An approver reads no escrowed keys of the holder's certificates: refused, and not
	// offered in the navigation.
	alice := e.browser()
	if home := alice.signIn("alice"); strings.Contains(home.body, `href="/ui/escrow"`) {
		t.Fatal("an approver's navigation offers the escrowed keys")
	}
	if p = alice.get("/ui/encryption-keys/hugo/" + e.enc.ID + "/certificate.pem"); p.status != http.StatusForbidden {
		t.Fatalf("approver downloads: %d", p.status)
	}
}

func TestMyEncryptionKeys(t *testing.T) {
	t.Parallel()
	e := newEscrowConsoleEnv(t)
	hugo := e.browser()
	hugo.signIn("hugo")
	p := hugo.get("/ui/me")
	if enc := rowsOf(p.doc, "enc-"); len(enc) != 1 || text(firstTest(p.doc, "enc-current")) != "current" {
		t.Fatalf("my encryption keys: %v %q", enc, alerts(p.doc))
	}
	p = hugo.get("/ui/encryption-keys/hugo/" + e.enc.ID + "/certificate.pem")
	b, _ := pem.Decode([]byte(p.body))
	if p.status != http.StatusOK || b == nil || !bytes.Equal(b.Bytes, e.enc.Certificate) ||
		!strings.Contains(p.header.Get("Content-Disposition"), `filename="hugo-c0ffee.pem"`) {
		t.Fatalf("download: %d %q %q", p.status, p.header.Get("Content-Disposition"), p.body)
	}
	if p = hugo.get("/ui/encryption-keys/hugo/nope/certificate.pem"); p.status != http.StatusNotFound {
		t.Fatalf("unknown key: %d", p.status)
	}
	// Another holder's keys are not theirs to read.
	if p = hugo.get("/ui/encryption-keys/helen/" + e.enc.ID + "/certificate.pem"); p.status != http.StatusForbidden {
		t.Fatalf("another's keys: %d", p.status)
	}
}

// firstTest is the first element with this data-test attribute (nil when none).
func firstTest(doc *html.Node, name string) *html.Node {
	var out *html.Node
	walk(doc, func(n *html.Node) {
		if out == nil && n.Type == html.ElementNode && attr(n, "data-test") == name {
			out = n
		}
	})
	return out
}
