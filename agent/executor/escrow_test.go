//go:build cgo

package executor

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// escrowed is an encryption key made off the token, as the coordinator makes one for a
// server_keygen job, with the certificate its CA issued for it.
type escrowed struct {
	typ  protocol.KeyType
	key  crypto.Signer
	cert *x509.Certificate
}

func newEscrowed(t *testing.T, ca *testenv.CA, typ protocol.KeyType) escrowed {
	t.Helper()
	var key crypto.Signer
	var err error
	usage := x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment
	switch typ {
	case protocol.KeyRSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case protocol.KeyP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		usage = x509.KeyUsageKeyAgreement
	default:
		t.Fatalf("no escrowed %s keys in these tests", typ)
	}
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "Alice Martin (encryption)", Organization: []string{"Example"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: usage, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return escrowed{typ: typ, key: key, cert: cert}
}

// sealKey seals a private key (PKCS#8) to the agent for an attempt, as the coordinator
// (or a key-recovery officer's tool) does.
func (c *coordinator) sealKey(ref protocol.JobRef, key crypto.Signer) *protocol.Sealed {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err)
	}
	pub, err := seal.ParsePublicKey(c.agent.PublicKey())
	if err != nil {
		panic(err)
	}
	s, err := seal.Seal(pub, der, seal.Binding{JobID: ref.JobID, Attempt: ref.Attempt, Purpose: protocol.PurposePrivateKey})
	if err != nil {
		panic(err)
	}
	return s
}

// importDispatch is a server_keygen (or recover_key) job putting e on the token.
func importDispatch(c *coordinator, kind protocol.JobKind, ref protocol.JobRef, serial string, e escrowed) protocol.JobDispatch {
	return protocol.JobDispatch{
		Kind: kind, Profile: "encryption",
		Token:        protocol.TokenSelector{Serial: serial},
		Key:          &protocol.KeyParams{Type: e.typ, ID: keyID(ref.JobID), Label: "encryption"},
		Certificates: &protocol.CertificateChain{Certificate: e.cert.Raw, Chain: [][]byte{c.ca.Cert.Raw}},
		PrivateKey:   c.sealKey(ref, e.key),
		PINs:         &protocol.SealedPINs{UserPIN: c.sealToAgent(ref, protocol.PurposeUserPIN, userPIN)},
	}
}

func TestServerKeygenImportsTheKey(t *testing.T) {
	for _, typ := range []protocol.KeyType{protocol.KeyRSA2048, protocol.KeyP256} {
		t.Run(string(typ), func(t *testing.T) {
			label, serial := initToken(t, soPIN, userPIN)
			// A key made on the token, to show what pkcs11-tool says of a local key.
			testenv.PKCS11Tool(t, "--token-label", label, "--login", "--pin", userPIN, "--keypairgen",
				"--key-type", "EC:prime256v1", "--id", "ee01", "--label", "made here")
			a := newAgent(t, agentOptions{})
			e := newEscrowed(t, a.coord.ca, typ)
			ref := protocol.JobRef{JobID: "server-keygen-" + string(typ), Attempt: 1}
			a.submit(a.coord.dispatch(ref, importDispatch(a.coord, protocol.KindServerKeygen, ref, serial, e)))
			res := a.result(ref)
			wantSuccess(t, res)
			want := []string{"progress:token_found", "progress:key_imported", "progress:certificate_written",
				"progress:verified", "result:succeeded"}
			if got := trace(a.coord.messages(ref)); !slices.Equal(got, want) {
				t.Fatalf("messages %v, want %v", got, want)
			}
			o := res.Outputs
			if o == nil || o.TokenSerial != serial || o.KeyID != keyID(ref.JobID) ||
				o.CertificateSerial != hex.EncodeToString(e.cert.SerialNumber.Bytes()) || o.PINs != nil || o.Certificate != nil {
				t.Fatalf("outputs %+v", o)
			}
			a.stop()

			id := keyID(ref.JobID)
			objs := objects(t, label, userPIN)
			if countObjects(objs, "Private Key", id) != 1 || countObjects(objs, "Public Key", id) != 1 || countObjects(objs, "Certificate", id) != 1 {
				t.Fatalf("want one private key, public key and certificate with ID %s:\n%s", id, strings.Join(objs, "\n"))
			}
			wantImportedNotLocal(t, label, id, typ)
			dir := t.TempDir()
			certPEM := filepath.Join(dir, "cert.pem")
			if err := os.WriteFile(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.cert.Raw}), 0o600); err != nil {
				t.Fatal(err)
			}
			if typ == protocol.KeyRSA2048 {
				decryptsWhatOpenSSLEncrypts(t, label, id, certPEM, dir)
			} else {
				agreesWithOpenSSL(t, label, id, certPEM, dir)
			}
			if s, err := a.j.Secrets(context.Background(), ref.JobID); err != nil || len(s) != 0 {
				t.Errorf("secrets left in the journal: %d, %v", len(s), err)
			}
		})
	}
}

// wantImportedNotLocal checks with pkcs11-tool that the private key under the ID is not
// local (it was made off the token), sensitive, for decryption only; and that the key
// made on the token shows as local, so that the check can see the difference.
func wantImportedNotLocal(t *testing.T, label, id string, typ protocol.KeyType) {
	t.Helper()
	out := testenv.PKCS11Tool(t, "--token-label", label, "-O", "--login", "--pin", userPIN)
	access := map[string]string{}
	blocks := map[string]string{}
	// Each object is a line at the margin followed by indented lines.
	var objs []string
	for _, line := range strings.Split(out, "\n") {
		if line != "" && !strings.HasPrefix(line, " ") {
			objs = append(objs, "")
		}
		if len(objs) > 0 {
			objs[len(objs)-1] += line + "\n"
		}
	}
	for _, b := range objs {
		if !strings.HasPrefix(b, "Private Key Object") {
			continue
		}
		var bid, acc string
		for _, line := range strings.Split(b, "\n") {
			line = strings.TrimSpace(line)
			if v, ok := strings.CutPrefix(line, "ID:"); ok {
				bid = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "Access:"); ok {
				acc = strings.TrimSpace(v)
			}
		}
		access[bid], blocks[bid] = acc, b
	}
	if !strings.Contains(access["ee01"], "local") {
		t.Fatalf("the key made on the token is not listed as local; pkcs11-tool says:\n%s", out)
	}
	acc := access[id]
	if acc == "" || strings.Contains(acc, "local") || !strings.Contains(acc, "sensitive") ||
		strings.Contains(strings.ReplaceAll(acc, "never extractable", ""), "extractable") {
		t.Fatalf("imported key %s has access %q, want sensitive, not extractable, not local:\n%s", id, acc, blocks[id])
	}
	usage := ""
	for _, line := range strings.Split(blocks[id], "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Usage:"); ok {
			usage = v
		}
	}
	wantUse := "decrypt"
	if typ == protocol.KeyP256 {
		wantUse = "derive"
	}
	if !strings.Contains(usage, wantUse) || strings.Contains(usage, "sign") {
		t.Errorf("imported key %s has usage %q, want %s and no sign", id, usage, wantUse)
	}
}

// decryptsWhatOpenSSLEncrypts: openssl encrypts to the certificate, pkcs11-tool decrypts
// with the token's key, both RSA-OAEP (SHA-1, all SoftHSM 2.6 does) and PKCS #1 v1.5.
func decryptsWhatOpenSSLEncrypts(t *testing.T, label, id, certPEM, dir string) {
	t.Helper()
	plain := filepath.Join(dir, "plain")
	secret := []byte("tender envelope session key 0123")
	if err := os.WriteFile(plain, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct{ padding, mech string }{{"oaep", "RSA-PKCS-OAEP"}, {"pkcs1", "RSA-PKCS"}} {
		ct, out := filepath.Join(dir, "ct-"+m.padding), filepath.Join(dir, "out-"+m.padding)
		testenv.Run(t, "openssl", "pkeyutl", "-encrypt", "-certin", "-inkey", certPEM, "-in", plain, "-out", ct,
			"-pkeyopt", "rsa_padding_mode:"+m.padding)
		args := []string{"--token-label", label, "--login", "--pin", userPIN, "--decrypt", "-m", m.mech,
			"--id", id, "--input-file", ct, "--output-file", out}
		if m.mech == "RSA-PKCS-OAEP" {
			args = append(args, "--hash-algorithm", "SHA-1", "--mgf", "MGF1-SHA1")
		}
		testenv.PKCS11Tool(t, args...)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, secret) {
			t.Errorf("%s: the token decrypted %q, want %q", m.mech, got, secret)
		}
	}
}

// agreesWithOpenSSL: the EC counterpart of encrypting to the certificate is an ECDH
// agreement with its key. openssl agrees a secret between a one-time key and the
// certificate's key, pkcs11-tool between the token's key and the one-time key: the same.
func agreesWithOpenSSL(t *testing.T, label, id, certPEM, dir string) {
	t.Helper()
	eph, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ephDER, err := x509.MarshalPKCS8PrivateKey(eph)
	if err != nil {
		t.Fatal(err)
	}
	ephPub, err := x509.MarshalPKIXPublicKey(eph.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	ephKey, ephPubDER, peer := filepath.Join(dir, "eph.pem"), filepath.Join(dir, "eph-pub.der"), filepath.Join(dir, "peer.pem")
	if err := os.WriteFile(ephKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ephDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ephPubDER, ephPub, 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "openssl", "x509", "-in", certPEM, "-pubkey", "-noout", "-out", peer)
	want, got := filepath.Join(dir, "openssl.secret"), filepath.Join(dir, "token.secret")
	testenv.Run(t, "openssl", "pkeyutl", "-derive", "-inkey", ephKey, "-peerkey", peer, "-out", want)
	testenv.PKCS11Tool(t, "--token-label", label, "--login", "--pin", userPIN, "--derive", "-m", "ECDH1-DERIVE",
		"--id", id, "--input-file", ephPubDER, "--output-file", got)
	w, err1 := os.ReadFile(want)
	g, err2 := os.ReadFile(got)
	if err1 != nil || err2 != nil || len(w) != 32 || !bytes.Equal(w, g) {
		t.Fatalf("ECDH: openssl %x (%v), token %x (%v)", w, err1, g, err2)
	}
}

// recover_key is server_keygen on the agent: an archived key onto another token.
func TestRecoverKeyImportsTheArchivedKey(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	e := newEscrowed(t, a.coord.ca, protocol.KeyRSA2048)
	ref := protocol.JobRef{JobID: "recover-key", Attempt: 2}
	a.submit(a.coord.dispatch(ref, importDispatch(a.coord, protocol.KindRecoverKey, ref, serial, e)))
	wantSuccess(t, a.result(ref))
	a.stop()
	wantOneKeyAndCertificate(t, label, userPIN, keyID(ref.JobID))
}

// Refused imports fail with their codes and leave nothing of the job on the token.
func TestServerKeygenRefusals(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	e := newEscrowed(t, a.coord.ca, protocol.KeyRSA2048)
	other := newEscrowed(t, a.coord.ca, protocol.KeyRSA2048)
	cases := []struct {
		name string
		mod  func(ref protocol.JobRef, d *protocol.JobDispatch)
		code protocol.ErrorCode
	}{
		{"key sealed for another attempt", func(ref protocol.JobRef, d *protocol.JobDispatch) {
			d.PrivateKey = a.coord.sealKey(protocol.JobRef{JobID: ref.JobID, Attempt: ref.Attempt + 1}, e.key)
		}, protocol.CodeUnsealFailed},
		{"key sealed as a PIN", func(ref protocol.JobRef, d *protocol.JobDispatch) {
			d.PrivateKey = a.coord.sealToAgent(ref, protocol.PurposeUserPIN, "not a key")
		}, protocol.CodeUnsealFailed},
		{"key of another certificate", func(ref protocol.JobRef, d *protocol.JobDispatch) {
			d.PrivateKey = a.coord.sealKey(ref, other.key)
		}, protocol.CodeKeyMismatch},
		{"certificate of another key type", func(_ protocol.JobRef, d *protocol.JobDispatch) {
			d.Key.Type = protocol.KeyRSA3072
		}, protocol.CodeKeyMismatch},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ref := protocol.JobRef{JobID: "refused-" + string(rune('a'+i)), Attempt: 2}
			d := importDispatch(a.coord, protocol.KindServerKeygen, ref, serial, e)
			tc.mod(ref, &d)
			a.submit(a.coord.dispatch(ref, d))
			wantFailure(t, a.result(ref), tc.code, false)
			if got := trace(a.coord.messages(ref)); !slices.Equal(got, []string{"progress:token_found", "result:failed"}) {
				t.Errorf("messages %v", got)
			}
			objs := objects(t, label, userPIN)
			if n := countObjects(objs, "Private Key", keyID(ref.JobID)) + countObjects(objs, "Public Key", keyID(ref.JobID)) +
				countObjects(objs, "Certificate", keyID(ref.JobID)); n != 0 {
				t.Errorf("the refused job left %d objects on the token:\n%s", n, strings.Join(objs, "\n"))
			}
		})
	}
	// Without the user PIN the dispatch is refused when it arrives (bad_request: the
	// consumer dead-letters it); nothing is journalled and nothing runs.
	t.Run("no user PIN", func(t *testing.T) {
		ref := protocol.JobRef{JobID: "refused-no-pin", Attempt: 1}
		env := a.coord.dispatch(ref, importDispatch(a.coord, protocol.KindServerKeygen, ref, serial, e))
		// As a broken or hostile coordinator would send it, past the sender's checks.
		var body map[string]json.RawMessage
		if err := json.Unmarshal(env.Body, &body); err != nil {
			t.Fatal(err)
		}
		delete(body, "pins")
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		env.Body = raw
		_, err = a.ex.Submit(context.Background(), env)
		if protocol.CodeOf(err) != protocol.CodeBadRequest || !strings.Contains(err.Error(), "pins.user_pin: required by server_keygen jobs") {
			t.Fatalf("Submit: %v", err)
		}
		if _, err := a.j.Job(context.Background(), ref); err == nil {
			t.Error("the refused dispatch was journalled")
		}
		objs := objects(t, label, userPIN)
		if n := countObjects(objs, "Private Key", keyID(ref.JobID)); n != 0 {
			t.Errorf("a key of the refused dispatch is on the token")
		}
	})
}

// register_certificate reads back the certificate an issue job left; an ID with no
// certificate fails with its code.
func TestRegisterCertificate(t *testing.T) {
	a := newAgent(t, agentOptions{})
	issued := protocol.JobRef{JobID: "register-issued", Attempt: 1}
	label := newLabel(t)
	a.submit(issueBlank(a, issued, label, protocol.KeyP256))
	ires := a.result(issued)
	wantSuccess(t, ires)
	serial := ires.Outputs.TokenSerial

	ref := protocol.JobRef{JobID: "register", Attempt: 1}
	a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
		Kind: protocol.KindRegisterCertificate, Token: protocol.TokenSelector{Serial: serial},
		Key: &protocol.KeyParams{ID: keyID(issued.JobID)},
	}))
	res := a.result(ref)
	wantSuccess(t, res)
	if got := trace(a.coord.messages(ref)); !slices.Equal(got, []string{"progress:token_found", "result:succeeded"}) {
		t.Errorf("messages %v", got)
	}
	o := res.Outputs
	if o == nil || o.TokenSerial != serial || o.KeyID != keyID(issued.JobID) || o.CertificateSerial != ires.Outputs.CertificateSerial {
		t.Fatalf("outputs %+v", o)
	}
	der := testenv.PKCS11Tool(t, "--token-label", label, "--read-object", "--type", "cert", "--id", keyID(issued.JobID))
	if !bytes.Equal(o.Certificate, []byte(der)) {
		t.Fatalf("the result's certificate (%d bytes) is not the one on the token (%d bytes)", len(o.Certificate), len(der))
	}
	if state := a.state(ref); state != journal.StateDone {
		t.Errorf("journal state %s", state)
	}

	unknown := protocol.JobRef{JobID: "register-unknown", Attempt: 1}
	a.submit(a.coord.dispatch(unknown, protocol.JobDispatch{
		Kind: protocol.KindRegisterCertificate, Token: protocol.TokenSelector{Serial: serial},
		Key: &protocol.KeyParams{ID: "0badc0de"},
	}))
	res = a.result(unknown)
	wantFailure(t, res, protocol.CodeTokenCertificateNotFound, false)
	if !strings.Contains(res.Error.Message, "no certificate with ID 0badc0de") {
		t.Errorf("message %q", res.Error.Message)
	}
	if res.Outputs != nil && res.Outputs.Certificate != nil {
		t.Errorf("a failure carries a certificate")
	}
}

// A crash after the import reached the token, before the certificate was written (and
// before the journal recorded the import), resumes without a second key: the restarted
// agent finds the key under the job's ID and goes on. A crash between the public and the
// private key object leaves a public key alone, which the resumed import replaces.
func TestServerKeygenCrashAndResume(t *testing.T) {
	points := []struct {
		name, crash string
		privs, pubs int // what the dead agent left under the job's ID
	}{
		{"public key object written, private not", "after:CreateObject:CreateObject", 0, 1},
		{"key imported, not journalled", "after:CreateObject:GetAttributeValue", 1, 1},
	}
	for i, p := range points {
		t.Run(p.name, func(t *testing.T) {
			ctx := context.Background()
			label, serial := initToken(t, soPIN, userPIN)
			ref := protocol.JobRef{JobID: fmt.Sprintf("import-crash-%02d", i), Attempt: 1}
			dir, coord := journalledImport(t, ref, serial)

			runChild(t, dir, p.crash, false)
			id := keyID(ref.JobID)
			objs := objects(t, label, userPIN)
			if countObjects(objs, "Private Key", id) != p.privs || countObjects(objs, "Public Key", id) != p.pubs ||
				countObjects(objs, "Certificate", id) != 0 {
				t.Fatalf("after the crash the token holds, want %d private and %d public keys and no certificate:\n%s",
					p.privs, p.pubs, strings.Join(objs, "\n"))
			}

			a := newAgent(t, agentOptions{dir: dir, coord: coord, noRun: true})
			if n, err := a.ex.Resume(ctx); err != nil || n != 1 {
				t.Fatalf("Resume found %d jobs (%v), want 1", n, err)
			}
			a.start()
			wantSuccess(t, a.result(ref))
			a.stop()
			objs = objects(t, label, userPIN)
			if countObjects(objs, "Private Key", id) != 1 || countObjects(objs, "Public Key", id) != 1 || countObjects(objs, "Certificate", id) != 1 {
				t.Fatalf("after the resumed job the token holds, want one key pair and one certificate:\n%s", strings.Join(objs, "\n"))
			}
			msgs, err := a.j.Messages(ctx, ref.JobID)
			if err != nil {
				t.Fatal(err)
			}
			results := 0
			for _, m := range msgs {
				if m.Type == protocol.TypeResult {
					results++
				}
			}
			if results != 1 {
				t.Errorf("the attempt sent %d results, want 1", results)
			}
		})
	}
}

// journalledImport makes an agent's data directory whose journal holds a server_keygen
// dispatch of ref for the token with the serial, as the consumer leaves it before the
// agent went down.
func journalledImport(t *testing.T, ref protocol.JobRef, serial string) (dir string, coord *coordinator) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	pair, err := keys.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := testenv.NewCA("tokenfleet test issuing CA")
	if err != nil {
		t.Fatal(err)
	}
	coordKey, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	coord = newCoordinator(pair, ca, coordKey)
	j, err := journal.Open(ctx, filepath.Join(dir, journal.FileName), pair, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEscrowed(t, ca, protocol.KeyRSA2048)
	if _, err := j.RecordDispatch(ctx, coord.dispatch(ref, importDispatch(coord, protocol.KindServerKeygen, ref, serial, e))); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, coord
}

// wipeKey leaves no private part of the key it was given.
func TestWipeKey(t *testing.T) {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	wipeKey(r)
	for i, v := range append([]*big.Int{r.D, r.Precomputed.Dp, r.Precomputed.Dq, r.Precomputed.Qinv}, r.Primes...) {
		for _, w := range v.Bits() {
			if w != 0 {
				t.Fatalf("RSA part %d not wiped", i)
			}
		}
	}
	wipeKey(&rsa.PrivateKey{D: new(big.Int)}) // without precomputed values: no panic
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wipeKey(e)
	for _, w := range e.D.Bits() { //nolint:staticcheck // reading what wipeKey zeroed
		if w != 0 {
			t.Fatal("EC scalar not wiped")
		}
	}
}
