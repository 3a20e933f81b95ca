package console_test

import (
	"bytes"
	"encoding/csv"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// The request form takes the document a profile requires, the approver sees it, and the
// device issued is in the register page and its exports.
func TestRegisterPageAndDocument(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	registered := strings.Replace(testProfile, "name: smartcard", "name: registered", 1) + "register: {document: required}\n"
	if _, err := e.svc.ApplyProfiles(e.ctx, e.admin, []byte(registered)); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn("helen")
	p := b.get("/ui/request")
	key := inputValue(p.doc, "idempotency_key")
	if !strings.Contains(p.body, `name="document_number"`) || !strings.Contains(p.body, `name="document_date"`) {
		t.Fatal("the request form has no document fields")
	}
	base := []string{"kind", "issue", "holder", "hugo", "profile", "registered", "agent", "ws-0001", "token_serial", "RT0077", "idempotency_key", key}
	p = b.post("/ui/request", b.form(base...))
	if p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "requires the document") {
		t.Fatalf("request without its document: %d %q", p.status, alerts(p.doc))
	}
	p = b.post("/ui/request", b.form(append(base, "document_number", "Arrêté n° 117", "document_date", "2099-01-01")...))
	if p.status != http.StatusBadRequest || !strings.Contains(alerts(p.doc), "2099-01-01 is in the future") ||
		attr(byID(p.doc, "document_date"), "aria-invalid") != "true" {
		t.Fatalf("request with a future date: %d %q", p.status, alerts(p.doc))
	}
	p = b.post("/ui/request", b.form(append(base, "document_number", "Arrêté n° 117", "document_date", "2025-01-02")...))
	if p.status != http.StatusSeeOther {
		t.Fatalf("request: %d %q", p.status, alerts(p.doc))
	}
	id := strings.TrimPrefix(p.location(), "/ui/jobs/")

	ap := e.browser()
	ap.signIn("alice")
	if card := byID(ap.get("/ui/approvals").doc, "job-"+id); card == nil || !strings.Contains(text(card), "Arrêté n° 117 of 2025-01-02") {
		t.Fatalf("the approver's card does not show the document")
	}
	if d := byID(ap.get("/ui/jobs/"+id).doc, "job-document"); d == nil || text(d) != "Arrêté n° 117 of 2025-01-02" {
		t.Fatalf("the job page does not show the document")
	}
	if _, err := e.svc.Approve(e.ctx, e.actor("alice"), id, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	e.succeed(id, "123456")

	p = ap.get("/ui/register")
	reg := byID(p.doc, "register")
	if p.status != http.StatusOK || reg == nil {
		t.Fatalf("register page: %d %q", p.status, alerts(p.doc))
	}
	for _, want := range []string{"RT0077", "Hugo Holder", "Arrêté n° 117 of 2025-01-02", "succeeded"} {
		if !strings.Contains(text(reg), want) {
			t.Errorf("the register lacks %q:\n%s", want, text(reg))
		}
	}
	p = ap.get("/ui/register/export?format=csv")
	if p.status != http.StatusOK || !strings.HasPrefix(p.header.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv export: %d %v", p.status, p.header)
	}
	rows, err := csv.NewReader(bytes.NewReader([]byte(p.body))).ReadAll()
	if err != nil || len(rows) != 2 || rows[1][0] != "RT0077" {
		t.Fatalf("csv rows %q, %v", rows, err)
	}
	if p = ap.get("/ui/register/export?format=pdf"); p.status != http.StatusOK || !strings.HasPrefix(p.body, "%PDF-") {
		t.Fatalf("pdf export: %d", p.status)
	}
	if p = ap.get("/ui/register/export?format=doc"); p.status != http.StatusBadRequest {
		t.Fatalf("unknown format: %d", p.status)
	}
	// Globex's approver may not read Acme's register.
	gx := e.browser()
	gx.signIn("gary")
	if p = gx.get("/ui/register?organization=Acme"); p.status != http.StatusForbidden || alerts(p.doc) == "" {
		t.Fatalf("Globex reads Acme's register: %d %q", p.status, alerts(p.doc))
	}
}
