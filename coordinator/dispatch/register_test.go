package dispatch_test

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/register"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

const registeredProfile = `name: registered
description: A blank token for a holder, on a document, approved.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
token:
  initialize: true
  label: "tf {{.ID}}"
  any_blank: true
pin_policy: {min_length: 6, max_length: 16, so_pin_length: 16}
approval: {required: 1, roles: [approver], expires_after: 72h}
register: {document: required}
`

// TestRegisterThroughBroker: an issue on a document, approved, runs on the agent (the
// binding hash the signer checks covers the document), and the device is in the register
// the API and tokenfleetctl export.
func TestRegisterThroughBroker(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	if _, err := w.admin.ApplyProfiles(w.ctx, []byte(registeredProfile)); err != nil {
		t.Fatal(err)
	}
	a := w.agent("ws-reg", "")
	a.Hello(dispatchtest.Token("REG0042", false))

	req := client.JobCreate{Kind: jobs.KindIssue, Holder: w.holder, Agent: "ws-reg", Profile: "registered"}
	if _, err := w.desk.CreateJob(w.ctx, req); apiCode(err) != "bad_request" || !strings.Contains(err.Error(), "requires the document") {
		t.Fatalf("an issue without its document: %v", err)
	}
	req.Document = &client.Document{Number: "Arrêté n° 2025-117", Date: "2025-12-01"}
	j, err := w.desk.CreateJob(w.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	seen, err := w.appr.GetJob(w.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if seen.Document == nil || *seen.Document != *req.Document {
		t.Fatalf("the approver sees document %+v", seen.Document)
	}
	if out := runCtl(t, w, w.tokenOf("boss"), 0, "job", "show", j.ID); !strings.Contains(out, "Arrêté n° 2025-117 of 2025-12-01") {
		t.Errorf("job show does not show the document:\n%s", out)
	}
	if _, err := w.appr.ApproveReviewed(w.ctx, j.ID, client.Decision{BindingHash: seen.BindingHash}); err != nil {
		t.Fatal(err)
	}
	denv := a.Next(protocol.TypeDispatch, j.ID)
	a.Finish(a.IssueUntilCSR(denv, "REG0042"))
	w.waitState(j.ID, jobs.StateSucceeded)

	reg, err := w.appr.Register(w.ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if reg.Organization != "Acme" || len(reg.Items) != 1 {
		t.Fatalf("register %+v", reg)
	}
	if it := reg.Items[0]; it.TokenSerial != "REG0042" || it.Holder != "alice" || it.HolderName != "Alice Martin" ||
		it.Document == nil || *it.Document != *req.Document || it.State != "issued" || it.Job != j.ID || len(it.History) == 0 {
		t.Fatalf("entry %+v", it)
	}

	dir := t.TempDir()
	csvFile, pdfFile := filepath.Join(dir, "register.csv"), filepath.Join(dir, "register.pdf")
	runCtl(t, w, w.tokenOf("boss"), 0, "register", "export", "--format", "csv", "-o", csvFile)
	runCtl(t, w, w.tokenOf("boss"), 0, "register", "export", "--format", "pdf", "-o", pdfFile)
	f, err := os.Open(csvFile)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("the exported CSV does not parse: %v", err)
	}
	if len(rows) != 2 || !slices.Equal(rows[0], register.CSVHeader) || rows[1][0] != "REG0042" || !slices.Contains(rows[1], "Arrêté n° 2025-117") {
		t.Fatalf("CSV rows %q", rows)
	}
	text := testenv.PDFText(t, pdfFile)
	for _, want := range []string{"Crypto-device register — Acme", "REG0042", "Alice Martin (alice)", "Arrêté n° 2025-117"} {
		if !strings.Contains(text, want) {
			t.Errorf("the exported PDF lacks %q:\n%s", want, text)
		}
	}
	// A reader without a role reads no register.
	if _, err := w.client(w.tokenOf("alice")).Register(w.ctx, ""); apiCode(err) != "forbidden" {
		t.Errorf("a holder reads the register: %v", err)
	}
}
