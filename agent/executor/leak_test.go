//go:build cgo

package executor

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestPINsNeverLeak runs jobs that use, generate and replace PINs, one of them failing on
// a wrong PIN, then searches every log line (the executor's, the journal's and the PKCS#11
// driver's, at debug level), the journal's files byte for byte and every message the
// agent produced for each PIN involved, in clear, base64 and hex.
func TestPINsNeverLeak(t *testing.T) {
	ctx := context.Background()
	_, plain := initToken(t, soPIN, userPIN)
	_, factoryTok := initToken(t, factorySO, factoryUser)
	a := newAgent(t, agentOptions{factory: factoryRegistry(t, factoryTok)})
	pins := map[string]string{
		"dispatched SO PIN": soPIN, "dispatched user PIN": userPIN,
		"factory user PIN": factoryUser, "factory SO PIN": factorySO,
		"wrong PIN": "Wrong-PIN-Leak-77",
	}
	var refs []protocol.JobRef
	run := func(ref protocol.JobRef, env *protocol.Envelope) protocol.Result {
		refs = append(refs, ref)
		a.submit(env)
		return a.result(ref)
	}

	blank := protocol.JobRef{JobID: "leak-blank", Attempt: 1}
	res := run(blank, issueBlank(a, blank, newLabel(t), protocol.KeyP256))
	wantSuccess(t, res)
	pins["generated user PIN"], pins["generated SO PIN"] = a.pins(blank, res)

	factory := protocol.JobRef{JobID: "leak-factory", Attempt: 1}
	res = run(factory, a.coord.dispatch(factory, protocol.JobDispatch{
		Kind: protocol.KindIssue, Token: protocol.TokenSelector{Serial: factoryTok}, FactoryPINs: true,
		PINPolicy: policy(12, false), Key: &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(factory.JobID)},
		ResultKey: a.coord.resultKey(),
	}))
	wantSuccess(t, res)
	pins["replacing user PIN"], pins["replacing SO PIN"] = a.pins(factory, res)

	wrong := protocol.JobRef{JobID: "leak-wrong", Attempt: 1}
	wantFailure(t, run(wrong, issueWith(a, protocol.KindIssue, wrong, plain, pins["wrong PIN"])), protocol.CodeTokenPINIncorrect, false)

	unblock := protocol.JobRef{JobID: "leak-unblock", Attempt: 1}
	res = run(unblock, a.coord.dispatch(unblock, protocol.JobDispatch{
		Kind: protocol.KindUnblockPIN, Token: protocol.TokenSelector{Serial: plain},
		PINs:      &protocol.SealedPINs{SOPIN: a.coord.sealToAgent(unblock, protocol.PurposeSOPIN, soPIN)},
		PINPolicy: policy(9, true), ResultKey: a.coord.resultKey(),
	}))
	wantSuccess(t, res)
	pins["unblocked user PIN"], _ = a.pins(unblock, res)

	issue := protocol.JobRef{JobID: "leak-issue", Attempt: 1}
	wantSuccess(t, run(issue, issueWith(a, protocol.KindIssue, issue, plain, pins["unblocked user PIN"])))
	a.stop()

	logs := a.logs.Bytes()
	if !bytes.Contains(logs, []byte(`"op":"login"`)) || !bytes.Contains(logs, []byte("job finished")) {
		t.Fatalf("the log capture misses the driver's or the executor's lines:\n%s", tail(logs, 2000))
	}
	places := map[string][]byte{"the log": logs}
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(filepath.Join(a.dir, journal.FileName+suffix))
		if err != nil {
			t.Fatal(err)
		}
		places["the journal file"+suffix] = data
	}
	for _, ref := range refs {
		msgs, err := a.j.Messages(ctx, ref.JobID)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			t.Fatalf("no messages for %s", ref.JobID)
		}
		for _, m := range msgs {
			places["message "+string(m.Type)+" of "+ref.JobID] = m.Data
		}
	}
	for what, pin := range pins {
		if len(pin) < 6 {
			t.Fatalf("%s is too short to search for meaningfully", what)
		}
		for where, data := range places {
			for _, form := range leakForms(pin) {
				if bytes.Contains(data, []byte(form)) {
					t.Errorf("%s found in %s (as %q)", what, where, form)
				}
			}
		}
	}
}

func leakForms(pin string) []string {
	b64 := base64.StdEncoding.EncodeToString([]byte(pin))
	return []string{pin, b64, strings.TrimRight(b64, "="), base64.URLEncoding.EncodeToString([]byte(pin)), hex.EncodeToString([]byte(pin))}
}
