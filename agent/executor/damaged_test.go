//go:build cgo

package executor

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// An agent killed while SoftHSM2 created an object on a token (SoftHSM2 writes the
// object's file, then its lock file) leaves the object's empty file without its lock;
// C_InitToken then fails with CKR_DEVICE_ERROR, and kept failing in that agent process
// until it was restarted: a real token of the fault campaign failed five wipes so. The
// test leaves the token's files as such a kill does, before the agent loads the module
// (as the killed agent's successor finds them), and wipes it while an issue runs on
// another token of the same module.
func TestWipeOfATokenWithAnObjectWriteCutShort(t *testing.T) {
	label, serial := initToken(t, soPIN, userPIN)
	testenv.PKCS11Tool(t, "--token-label", label, "--login", "--pin", userPIN, "--keypairgen",
		"--key-type", "EC:prime256v1", "--id", "ee05", "--label", "doomed")
	otherLabel, otherSerial := initToken(t, soPIN, userPIN)
	dir := testenv.SoftHSMTokenDir(t, serial)
	cut := testenv.CutObjectWriteShort(t, dir)

	a := newAgent(t, agentOptions{})
	issue := protocol.JobRef{JobID: "issue-beside-the-wipe", Attempt: 1}
	wipe := protocol.JobRef{JobID: "wipe-cut-short", Attempt: 1}
	spare := label + "-spare"
	a.submit(issueWith(a, protocol.KindIssue, issue, otherSerial, userPIN))
	a.submit(a.coord.dispatch(wipe, protocol.JobDispatch{
		Kind: protocol.KindWipe, Token: protocol.TokenSelector{Serial: serial}, TokenLabel: spare,
		PINs: &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(wipe, protocol.PurposeSOPIN, soPIN)},
	}))
	wantSuccess(t, a.result(wipe))
	wantSuccess(t, a.result(issue))
	if got, want := trace(a.coord.messages(wipe)), []string{"progress:token_found", "progress:initialising", "progress:verified", "result:succeeded"}; !slices.Equal(got, want) {
		t.Fatalf("wipe messages %v, want %v", got, want)
	}
	a.stop()
	if !bytes.Contains(a.logs.Bytes(), []byte("the module was reloaded to try again")) {
		t.Error("the wipe succeeded without reloading the module: the token was not damaged as a kill leaves it")
	}
	if _, err := os.Stat(filepath.Join(dir, cut)); !os.IsNotExist(err) {
		t.Errorf("the object cut short is still on the token: %v", err)
	}
	if tokensLabelled(t, spare) != 1 {
		t.Fatal("the token does not carry the wipe's label")
	}
	if err := soPINWorks(spare, soPIN, "Wz5-new-user-PIN"); err != nil {
		t.Fatalf("SO PIN after the wipe: %v", err)
	}
	if objs := objects(t, spare, "Wz5-new-user-PIN"); len(objs) != 0 {
		t.Fatalf("objects left after the wipe: %v", objs)
	}
	// The issue on the other token holds its key and certificate. (The two jobs run in no
	// set order: the reload may have come before, during or after the issue; the driver's
	// TestReloadBesideACallInFlight and TestInitAfterObjectWritesCutShort pin down a call
	// in flight and a login on another token across a reload.)
	wantOneKeyAndCertificate(t, otherLabel, userPIN, keyID(issue.JobID))
}
