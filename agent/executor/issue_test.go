//go:build cgo

package executor

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/tokenfleet/tokenfleet/agent/inventory"
	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

func inventoryOptions() inventory.Options {
	return inventory.Options{Modules: []string{testenv.SoftHSMModule}}
}

// issueBlank is the dispatch of an issue job that initialises a blank token.
func issueBlank(a *agent, ref protocol.JobRef, label string, kt protocol.KeyType) *protocol.Envelope {
	return a.coord.dispatch(ref, protocol.JobDispatch{
		Kind: protocol.KindIssue, Profile: "signature",
		Token:      protocol.TokenSelector{Blank: true},
		Initialise: true, TokenLabel: label,
		PINPolicy: policy(8, true),
		Key:       &protocol.KeyParams{Type: kt, ID: keyID(ref.JobID), Label: "signing"},
		ResultKey: a.coord.resultKey(),
	})
}

func TestIssueInitialisesABlankToken(t *testing.T) {
	a := newAgent(t, agentOptions{})
	ref := protocol.JobRef{JobID: "issue-blank", Attempt: 1}
	label := newLabel(t)
	if rc := a.submit(issueBlank(a, ref, label, protocol.KeyP256)); rc.Disposition != journal.Accepted {
		t.Fatalf("disposition %s", rc.Disposition)
	}
	res := a.result(ref)
	wantSuccess(t, res)

	want := []string{"progress:token_found", "progress:initialising", "progress:key_generated", "csr",
		"progress:csr_sent", "progress:certificate_written", "progress:verified", "result:succeeded"}
	if got := trace(a.coord.messages(ref)); !slices.Equal(got, want) {
		t.Fatalf("messages %v, want %v", got, want)
	}
	// A step's done goes with the next change: token_found in the commit that begins
	// initialise, verified in the result's. The steps that only read the token (send_csr,
	// verify) begin in the commit of their done: key_generated goes with the CSR,
	// certificate_written with the result. Messages of one commit share its time.
	wantCommits := [][]string{{"progress:token_found", "progress:initialising"},
		{"progress:key_generated", "csr", "progress:csr_sent"},
		{"progress:certificate_written", "progress:verified", "result:succeeded"}}
	if got := commits(t, a.j, ref.JobID); !slices.EqualFunc(got, wantCommits, slices.Equal) {
		t.Errorf("messages by journal commit %v, want %v", got, wantCommits)
	}
	o := res.Outputs
	if o == nil || o.TokenSerial == "" || o.KeyID != keyID(ref.JobID) || o.CertificateSerial == "" {
		t.Fatalf("outputs %+v", o)
	}
	user, so := a.pins(ref, res)
	for name, pin := range map[string]string{"user": user, "SO": so} {
		if len(pin) != 8 || strings.IndexFunc(pin, func(r rune) bool { return !unicode.IsDigit(r) }) >= 0 {
			t.Errorf("%s PIN is not 8 digits as the policy says", name)
		}
	}
	if user == so {
		t.Error("the user and SO PINs are the same")
	}
	// The key_generated report carries the key the certificate was made for.
	var pub []byte
	for _, e := range a.coord.messages(ref) {
		if p, err := protocol.DecodeBody[protocol.Progress](e); err == nil && p.Step == protocol.StepKeyGenerated {
			pub = p.PublicKey
			if p.KeyExisted || p.KeyID != keyID(ref.JobID) || p.TokenSerial != o.TokenSerial {
				t.Errorf("key_generated %+v", p)
			}
		}
	}
	if _, err := x509.ParsePKIXPublicKey(pub); err != nil {
		t.Fatalf("key_generated public key: %v", err)
	}
	a.stop()
	// Checked with tools nobody here wrote: the PINs work, the token holds one key and one
	// certificate under the job's ID, and the certificate is the one issued.
	wantOneKeyAndCertificate(t, label, user, keyID(ref.JobID))
	if err := soPINWorks(label, so, user); err != nil {
		t.Errorf("the SO PIN of the result does not work: %v", err)
	}
	der := testenv.PKCS11Tool(t, "--token-label", label, "--read-object", "--type", "cert", "--id", keyID(ref.JobID))
	cert, err := x509.ParseCertificate([]byte(der))
	if err != nil {
		t.Fatalf("certificate on the token: %v", err)
	}
	if hex.EncodeToString(cert.SerialNumber.Bytes()) != o.CertificateSerial {
		t.Errorf("certificate serial %x on the token, %s in the result", cert.SerialNumber, o.CertificateSerial)
	}
	if state := a.state(ref); state != journal.StateDone {
		t.Errorf("journal state %s", state)
	}
	if s, err := a.j.Secrets(context.Background(), ref.JobID); err != nil || len(s) != 0 {
		t.Errorf("secrets left in the journal after success: %d, %v", len(s), err)
	}
}

// commits groups a job's outbox messages by the journal commit that wrote them (the rows
// of one commit share its time), in trace's terms.
func commits(t *testing.T, j *journal.Journal, jobID string) [][]string {
	t.Helper()
	msgs, err := j.Messages(context.Background(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for i, m := range msgs {
		env, err := protocol.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		name := trace([]*protocol.Envelope{env})
		if i > 0 && m.Created.Equal(msgs[i-1].Created) {
			out[len(out)-1] = append(out[len(out)-1], name...)
		} else {
			out = append(out, name)
		}
	}
	return out
}
