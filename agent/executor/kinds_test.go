//go:build cgo

package executor

import (
	p11 "github.com/miekg/pkcs11"

	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/usb"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

const (
	soPIN   = "Qx7-so-PIN-4821"
	userPIN = "Wz3-user-PIN-5937"
)

// issueWith is an issue (or csr) job on the token with the serial, logging in with the
// user PIN the coordinator holds.
func issueWith(a *agent, kind protocol.JobKind, ref protocol.JobRef, serial, pin string) *protocol.Envelope {
	return a.coord.dispatch(ref, protocol.JobDispatch{
		Kind:  kind,
		Token: protocol.TokenSelector{Serial: serial},
		Key:   &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
		PINs:  &protocol.SealedPINs{UserPIN: a.coord.sealToAgent(ref, protocol.PurposeUserPIN, pin)},
	})
}

func TestIssueReinitialisesTheSelectedToken(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	// Something of the token's previous life, which initialising wipes.
	testenv.PKCS11Tool(t, "--token-label", label, "--login", "--pin", userPIN, "--keypairgen",
		"--key-type", "EC:prime256v1", "--id", "ee01", "--label", "old")
	a := newAgent(t, agentOptions{})
	ref := protocol.JobRef{JobID: "issue-reinit", Attempt: 1}
	newLabel := label + "-x"
	res := func() protocol.Result {
		a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
			Kind: protocol.KindIssue, Token: protocol.TokenSelector{Serial: serial},
			Initialise: true, TokenLabel: newLabel, PINPolicy: policy(10, false),
			Key:       &protocol.KeyParams{Type: protocol.KeyRSA2048, ID: keyID(ref.JobID)},
			PINs:      &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(ref, protocol.PurposeSOPIN, soPIN)},
			ResultKey: a.coord.resultKey(),
		}))
		return a.result(ref)
	}()
	wantSuccess(t, res)
	user, so := a.pins(ref, res)
	if len(user) != 10 || so == soPIN || user == userPIN {
		t.Fatalf("PINs not replaced per policy (lengths %d, %d)", len(user), len(so))
	}
	if res.Outputs.TokenSerial != serial {
		t.Errorf("token serial %s, want %s", res.Outputs.TokenSerial, serial)
	}
	a.stop()
	wantOneKeyAndCertificate(t, newLabel, user, keyID(ref.JobID))
	if err := userPINWorks(newLabel, userPIN); err == nil {
		t.Error("the old user PIN still works")
	}
	if err := soPINWorks(newLabel, so, user); err != nil {
		t.Errorf("new SO PIN: %v", err)
	}
}

// TestInitialiseFailingAfterTheSOPINChanged: re-initialising a token, the SO PIN change
// reaches the token but its answer is a failure. The attempt fails, and its result still
// reports the PINs the token now has (the agent checked the new SO PIN by setting the new
// user PIN with it): the coordinator would otherwise keep the SO PIN the token no longer
// has, and every later job on the token would fail on it.
func TestInitialiseFailingAfterTheSOPINChanged(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	ref := protocol.JobRef{JobID: "so-pin-changed-then-failed", Attempt: 1}
	newLabel := label + "-f"
	a.inj.FailAfter("SetPIN", p11.CKR_DEVICE_ERROR, 1)
	a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
		Kind: protocol.KindIssue, Token: protocol.TokenSelector{Serial: serial},
		Initialise: true, TokenLabel: newLabel, PINPolicy: policy(10, false),
		Key:       &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
		PINs:      &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(ref, protocol.PurposeSOPIN, soPIN)},
		ResultKey: a.coord.resultKey(),
	}))
	res := a.result(ref)
	wantFailure(t, res, protocol.CodeTokenDeviceError, true)
	user, so := a.pins(ref, res)
	a.stop()
	if so == "" || so == soPIN || user == "" {
		t.Fatalf("the failed attempt reports PINs user %t, SO %t (changed %t)", user != "", so != "", so != soPIN)
	}
	if err := soPINWorks(newLabel, so, user); err != nil {
		t.Errorf("the SO PIN the result reports: %v", err)
	}
	if err := userPINWorks(newLabel, user); err != nil {
		t.Errorf("the user PIN the result reports: %v", err)
	}
}

func TestIssueWithAWrongSOPINLeavesTheTokenAlone(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	testenv.PKCS11Tool(t, "--token-label", label, "--login", "--pin", userPIN, "--keypairgen",
		"--key-type", "EC:prime256v1", "--id", "ee02", "--label", "kept")
	a := newAgent(t, agentOptions{})
	ref := protocol.JobRef{JobID: "issue-wrong-so", Attempt: 1}
	a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
		Kind: protocol.KindIssue, Token: protocol.TokenSelector{Serial: serial},
		Initialise: true, TokenLabel: "never", PINPolicy: policy(8, true),
		Key:       &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
		PINs:      &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(ref, protocol.PurposeSOPIN, "Not-The-SO-PIN-1")},
		ResultKey: a.coord.resultKey(),
	}))
	res := a.result(ref)
	wantFailure(t, res, protocol.CodeTokenPINIncorrect, false)
	if res.Outputs != nil && res.Outputs.PINs != nil {
		t.Error("a failed initialisation reported PINs the token does not have")
	}
	a.stop()
	if objs := objects(t, label, userPIN); countObjects(objs, "Private Key", "ee02") != 1 {
		t.Fatalf("the token was changed: %v", objs)
	}
}

// factoryRegistry adds a model whose tokens SoftHSM2 plays, with factory PINs, and a fake
// USB bus on which the token with the serial sits.
func factoryRegistry(t *testing.T, serial string) FactoryPINs {
	t.Helper()
	reg, err := usb.LoadRegistry(strings.NewReader(`version: 1
sources:
  - id: test-vendor
    title: the test vendor's manual
families:
  - name: test-softhsm
    vendor: Test
    token_manufacturers: [SoftHSM]
    capabilities: [pkcs11, init-token]
    defaults:
      user_pin: "` + factoryUser + `"
      so_pin: "` + factorySO + `"
      source: test-vendor
devices:
  - id: "f055:7e57"
    model: Test token
    family: test-softhsm
    sources: [test-vendor]
`))
	if err != nil {
		t.Fatal(err)
	}
	return USBFactoryPINs{USB: fakeBus{{VID: 0xf055, PID: 0x7e57, Serial: serial}}, Registry: reg}
}

const (
	factoryUser = "Factory-User-2468"
	factorySO   = "Factory-SO-1357"
)

type fakeBus []usb.Device

func (b fakeBus) Devices(context.Context) ([]usb.Device, error) { return b, nil }

func TestIssueReplacesFactoryPINs(t *testing.T) {
	label, serial := initToken(t, factorySO, factoryUser)
	a := newAgent(t, agentOptions{factory: factoryRegistry(t, serial)})
	ref := protocol.JobRef{JobID: "issue-factory", Attempt: 1}
	a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
		Kind: protocol.KindIssue, Token: protocol.TokenSelector{Serial: serial}, FactoryPINs: true,
		PINPolicy: policy(6, true),
		Key:       &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
		ResultKey: a.coord.resultKey(),
	}))
	res := a.result(ref)
	wantSuccess(t, res)
	user, so := a.pins(ref, res)
	if user == "" || so == "" || user == factoryUser || so == factorySO {
		t.Fatal("the factory PINs were not both replaced")
	}
	a.stop()
	wantOneKeyAndCertificate(t, label, user, keyID(ref.JobID))
	if err := userPINWorks(label, factoryUser); err == nil {
		t.Error("the factory user PIN still works")
	}
	if err := soPINWorks(label, factorySO, user); err == nil {
		t.Error("the factory SO PIN still works")
	}
	if err := soPINWorks(label, so, user); err != nil {
		t.Errorf("new SO PIN: %v", err)
	}
}

func TestFactoryPINs(t *testing.T) {
	t.Run("a user PIN still the factory one is refused", func(t *testing.T) {
		label, serial := initToken(t, factorySO, factoryUser)
		a := newAgent(t, agentOptions{factory: factoryRegistry(t, serial)})
		ref := protocol.JobRef{JobID: "issue-on-factory", Attempt: 1}
		a.submit(issueWith(a, protocol.KindIssue, ref, serial, factoryUser))
		wantFailure(t, a.result(ref), protocol.CodePolicyViolation, false)
		a.stop()
		if objs := objects(t, label, factoryUser); len(objs) != 0 {
			t.Errorf("a key was made on a token with its factory PIN: %v", objs)
		}
	})
	t.Run("an escrowed key is not imported onto a token with its factory PIN", func(t *testing.T) {
		label, serial := initToken(t, factorySO, factoryUser)
		a := newAgent(t, agentOptions{factory: factoryRegistry(t, serial)})
		ref := protocol.JobRef{JobID: "import-on-factory", Attempt: 1}
		d := importDispatch(a.coord, protocol.KindServerKeygen, ref, serial, newEscrowed(t, a.coord.ca, protocol.KeyP256))
		d.PINs = &protocol.SealedPINs{UserPIN: a.coord.sealToAgent(ref, protocol.PurposeUserPIN, factoryUser)}
		a.submit(a.coord.dispatch(ref, d))
		res := a.result(ref)
		wantFailure(t, res, protocol.CodePolicyViolation, false)
		if !strings.Contains(res.Error.Message, "issue to the token first") {
			t.Errorf("message %q", res.Error.Message)
		}
		a.stop()
		if objs := objects(t, label, factoryUser); len(objs) != 0 {
			t.Errorf("a key was imported onto a token with its factory PIN: %v", objs)
		}
	})
	t.Run("an unknown model", func(t *testing.T) {
		_, serial := initToken(t, factorySO, factoryUser)
		a := newAgent(t, agentOptions{factory: factoryRegistry(t, "another-serial")})
		ref := protocol.JobRef{JobID: "issue-unknown-model", Attempt: 1}
		a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
			Kind: protocol.KindCSR, Token: protocol.TokenSelector{Serial: serial}, FactoryPINs: true,
			PINPolicy: policy(6, true), Key: &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
			ResultKey: a.coord.resultKey(),
		}))
		// The bus holds a device of the model with another serial, and several SoftHSM
		// tokens are present: nothing ties this token to the model.
		res := a.result(ref)
		wantFailure(t, res, protocol.CodeFactoryPINsUnknown, false)
	})
}

func TestCSRThenInstallCertificate(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	csrJob := protocol.JobRef{JobID: "csr-only", Attempt: 1}
	a.submit(issueWith(a, protocol.KindCSR, csrJob, serial, userPIN))
	res := a.result(csrJob)
	wantSuccess(t, res)
	if got, want := trace(a.coord.messages(csrJob)), []string{"progress:token_found", "progress:key_generated", "csr",
		"progress:csr_sent", "result:succeeded"}; !slices.Equal(got, want) {
		t.Fatalf("csr job messages %v, want %v", got, want)
	}
	if res.Outputs == nil || res.Outputs.KeyID != keyID(csrJob.JobID) || res.Outputs.CertificateSerial != "" {
		t.Fatalf("csr outputs %+v", res.Outputs)
	}
	var csrDER []byte
	for _, e := range a.coord.messages(csrJob) {
		if s, err := protocol.DecodeBody[protocol.CSRSubmission](e); err == nil {
			csrDER = s.CSR
		}
	}
	certDER, err := a.coord.ca.Sign(csrDER, "Alice")
	if err != nil {
		t.Fatal(err)
	}
	install := func(ref protocol.JobRef, keyIDHex string, cert []byte) protocol.Result {
		a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
			Kind: protocol.KindInstallCertificate, Token: protocol.TokenSelector{Serial: serial},
			Key:          &protocol.KeyParams{ID: keyIDHex},
			Certificates: &protocol.CertificateChain{Certificate: cert, Chain: [][]byte{a.coord.ca.Cert.Raw}},
			PINs:         &protocol.SealedPINs{UserPIN: a.coord.sealToAgent(ref, protocol.PurposeUserPIN, userPIN)},
		}))
		return a.result(ref)
	}

	// A certificate for another key is refused, so is one for a key that is not there.
	other, err := a.coord.ca.Sign(csrOf(t), "Mallory")
	if err != nil {
		t.Fatal(err)
	}
	wantFailure(t, install(protocol.JobRef{JobID: "install-mismatch", Attempt: 1}, keyID(csrJob.JobID), other),
		protocol.CodeTokenCertificateKeyMismatch, false)
	wantFailure(t, install(protocol.JobRef{JobID: "install-no-key", Attempt: 1}, "0badbeef", certDER),
		protocol.CodeTokenKeyNotFound, false)

	ref := protocol.JobRef{JobID: "install", Attempt: 1}
	res = install(ref, keyID(csrJob.JobID), certDER)
	wantSuccess(t, res)
	if got, want := trace(a.coord.messages(ref)), []string{"progress:token_found", "progress:certificate_written",
		"progress:verified", "result:succeeded"}; !slices.Equal(got, want) {
		t.Fatalf("install messages %v, want %v", got, want)
	}
	cert, _ := x509.ParseCertificate(certDER)
	if res.Outputs.CertificateSerial != hex.EncodeToString(cert.SerialNumber.Bytes()) || res.Outputs.KeyID != keyID(csrJob.JobID) {
		t.Errorf("install outputs %+v", res.Outputs)
	}
	a.stop()
	wantOneKeyAndCertificate(t, label, userPIN, keyID(csrJob.JobID))
	// The issuer is on the token too, under its own ID.
	if objs := objects(t, label, userPIN); countObjects(objs, "Certificate", hex.EncodeToString(a.coord.ca.Cert.SubjectKeyId)) != 1 {
		t.Errorf("the issuer certificate is not on the token: %v", objs)
	}
}

func TestRenewKeepsTheOldKeyUntilTheNewOneIsVerified(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	first := protocol.JobRef{JobID: "renew-first", Attempt: 1}
	a.submit(issueWith(a, protocol.KindIssue, first, serial, userPIN))
	wantSuccess(t, a.result(first))

	ref := protocol.JobRef{JobID: "renew", Attempt: 1}
	a.coord.deliver = false
	a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
		Kind: protocol.KindRenew, Token: protocol.TokenSelector{Serial: serial},
		Key:  &protocol.KeyParams{Type: protocol.KeyP384, ID: keyID(ref.JobID), Replaces: keyID(first.JobID)},
		PINs: &protocol.SealedPINs{UserPIN: a.coord.sealToAgent(ref, protocol.PurposeUserPIN, userPIN)},
	}))
	a.step(ref, protocol.StepCSRSent)
	a.until("the renewal to park", func() bool { return a.state(ref) == journal.StateAwaitingCertificate })
	// Parked awaiting the certificate: both keys are there, the old certificate too.
	objs := objects(t, label, userPIN)
	if countObjects(objs, "Private Key", keyID(first.JobID)) != 1 || countObjects(objs, "Certificate", keyID(first.JobID)) != 1 ||
		countObjects(objs, "Private Key", keyID(ref.JobID)) != 1 {
		t.Fatalf("while the renewal waits: %v", objs)
	}
	for _, e := range a.coord.messages(ref) {
		if e.Type == protocol.TypeCSR {
			if err := a.coord.deliverFor(context.Background(), e, a.ex); err != nil {
				t.Fatal(err)
			}
		}
	}
	res := a.result(ref)
	wantSuccess(t, res)
	want := []string{"progress:token_found", "progress:key_generated", "csr", "progress:csr_sent",
		"progress:certificate_written", "progress:verified", "result:succeeded"}
	if got := trace(a.coord.messages(ref)); !slices.Equal(got, want) {
		t.Fatalf("renew messages %v, want %v", got, want)
	}
	a.stop()
	wantOneKeyAndCertificate(t, label, userPIN, keyID(ref.JobID))
	if objs := objects(t, label, userPIN); countObjects(objs, "Public Key", keyID(first.JobID)) != 0 ||
		countObjects(objs, "Certificate", keyID(first.JobID)) != 0 {
		t.Fatalf("the old key or certificate is left: %v", objs)
	}
}

func TestLockoutThenUnblock(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	a.inj.LimitPINTries(a.slotOf(serial), 3, 3)
	for i, want := range []protocol.ErrorCode{protocol.CodeTokenPINIncorrect, protocol.CodeTokenPINIncorrect, protocol.CodeTokenPINLocked} {
		ref := protocol.JobRef{JobID: "lockout-" + string(rune('a'+i)), Attempt: 1}
		a.submit(issueWith(a, protocol.KindIssue, ref, serial, "Wrong-PIN-000"+string(rune('0'+i))))
		wantFailure(t, a.result(ref), want, false)
	}
	// Locked: even the right PIN is refused now.
	locked := protocol.JobRef{JobID: "lockout-right-pin", Attempt: 1}
	a.submit(issueWith(a, protocol.KindIssue, locked, serial, userPIN))
	wantFailure(t, a.result(locked), protocol.CodeTokenPINLocked, false)

	unblock := protocol.JobRef{JobID: "unblock", Attempt: 1}
	a.submit(a.coord.dispatch(unblock, protocol.JobDispatch{
		Kind: protocol.KindUnblockPIN, Token: protocol.TokenSelector{Serial: serial},
		PINs:      &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(unblock, protocol.PurposeSOPIN, soPIN)},
		PINPolicy: policy(6, true), ResultKey: a.coord.resultKey(),
	}))
	res := a.result(unblock)
	wantSuccess(t, res)
	if got, want := trace(a.coord.messages(unblock)), []string{"progress:token_found", "progress:verified", "result:succeeded"}; !slices.Equal(got, want) {
		t.Fatalf("unblock messages %v, want %v", got, want)
	}
	fresh, so := a.pins(unblock, res)
	if so != "" || len(fresh) != 6 {
		t.Fatalf("unblock returned an SO PIN or a user PIN of %d characters", len(fresh))
	}
	ref := protocol.JobRef{JobID: "after-unblock", Attempt: 1}
	a.submit(issueWith(a, protocol.KindIssue, ref, serial, fresh))
	wantSuccess(t, a.result(ref))
	a.stop()
	wantOneKeyAndCertificate(t, label, fresh, keyID(ref.JobID))
}

func TestWipe(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	testenv.PKCS11Tool(t, "--token-label", label, "--login", "--pin", userPIN, "--keypairgen",
		"--key-type", "EC:prime256v1", "--id", "ee03", "--label", "doomed")
	a := newAgent(t, agentOptions{})
	ref := protocol.JobRef{JobID: "wipe", Attempt: 1}
	spare := label + "-spare"
	a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
		Kind: protocol.KindWipe, Token: protocol.TokenSelector{Serial: serial}, TokenLabel: spare,
		PINs: &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(ref, protocol.PurposeSOPIN, soPIN)},
	}))
	res := a.result(ref)
	wantSuccess(t, res)
	if got, want := trace(a.coord.messages(ref)), []string{"progress:token_found", "progress:initialising", "progress:verified", "result:succeeded"}; !slices.Equal(got, want) {
		t.Fatalf("wipe messages %v, want %v", got, want)
	}
	if res.Outputs == nil || res.Outputs.TokenSerial != serial || res.Outputs.PINs != nil {
		t.Fatalf("wipe outputs %+v", res.Outputs)
	}
	a.stop()
	if tokensLabelled(t, spare) != 1 || tokensLabelled(t, label) != 0 {
		t.Fatal("the token does not carry the new label")
	}
	// The SO PIN still works; the objects and the user PIN are gone.
	if err := soPINWorks(spare, soPIN, "Wz3-new-user-PIN"); err != nil {
		t.Fatalf("SO PIN after the wipe: %v", err)
	}
	if objs := objects(t, spare, "Wz3-new-user-PIN"); len(objs) != 0 {
		t.Fatalf("objects left after the wipe: %v", objs)
	}
}

func TestInventory(t *testing.T) {
	_, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	withKey := protocol.JobRef{JobID: "inventory-issue", Attempt: 1}
	a.submit(issueWith(a, protocol.KindIssue, withKey, serial, userPIN))
	issued := a.result(withKey)
	wantSuccess(t, issued)

	all := protocol.JobRef{JobID: "inventory-all", Attempt: 1}
	a.submit(a.coord.dispatch(all, protocol.JobDispatch{Kind: protocol.KindInventory}))
	res := a.result(all)
	wantSuccess(t, res)
	if got := trace(a.coord.messages(all)); !slices.Equal(got, []string{"result:succeeded"}) {
		t.Errorf("inventory of every token: %v", got)
	}
	// Every token with a serial, up to what a result may carry (the store keeps the tokens
	// of every test of the run).
	slots, err := a.mod.Slots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	present := 0
	for _, s := range slots {
		if s.Token != nil && s.Token.Serial != "" {
			present++
		}
	}
	if want := min(present, protocol.MaxTokens); len(res.Outputs.Tokens) != want || want < 1 {
		t.Fatalf("inventory lists %d tokens, want %d", len(res.Outputs.Tokens), want)
	}

	one := protocol.JobRef{JobID: "inventory-one", Attempt: 1}
	a.submit(a.coord.dispatch(one, protocol.JobDispatch{Kind: protocol.KindInventory, Token: protocol.TokenSelector{Serial: serial}}))
	res = a.result(one)
	wantSuccess(t, res)
	if len(res.Outputs.Tokens) != 1 || res.Outputs.Tokens[0].Serial != serial {
		t.Fatalf("inventory of one token: %+v", res.Outputs.Tokens)
	}
	mine := res.Outputs.Tokens[0]
	if !mine.Flags.Initialized || !mine.Flags.UserPINInitialized || len(mine.Certificates) != 2 ||
		!slices.ContainsFunc(mine.Certificates, func(c protocol.CertificateInfo) bool {
			return c.ID == keyID(withKey.JobID) && c.Serial == issued.Outputs.CertificateSerial
		}) || !slices.ContainsFunc(mine.Keys, func(k protocol.KeyInfo) bool {
		return k.ID == keyID(withKey.JobID) && k.Public && k.Type == string(protocol.KeyP256)
	}) {
		t.Fatalf("token in the inventory: %+v", mine)
	}
	if got := trace(a.coord.messages(one)); !slices.Equal(got, []string{"progress:token_found", "result:succeeded"}) {
		t.Errorf("inventory of one token: %v", got)
	}
}

// csrOf is a CSR for a key that is on no token.
func csrOf(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "elsewhere"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// A PIN sealed for another attempt (or tampered with) does not open: the job fails before
// it touches the token.
func TestAPINSealedForAnotherAttemptIsRefused(t *testing.T) {
	_, serial := initToken(t, soPIN, userPIN)
	a := newAgent(t, agentOptions{})
	ref := protocol.JobRef{JobID: "unseal", Attempt: 2}
	other := protocol.JobRef{JobID: ref.JobID, Attempt: 1}
	a.submit(a.coord.dispatch(ref, protocol.JobDispatch{
		Kind: protocol.KindIssue, Token: protocol.TokenSelector{Serial: serial},
		Key:  &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID)},
		PINs: &protocol.SealedPINs{UserPIN: a.coord.sealToAgent(other, protocol.PurposeUserPIN, userPIN)},
	}))
	wantFailure(t, a.result(ref), protocol.CodeUnsealFailed, false)
	if got := trace(a.coord.messages(ref)); !slices.Equal(got, []string{"progress:token_found", "result:failed"}) {
		t.Errorf("messages %v", got)
	}
}
