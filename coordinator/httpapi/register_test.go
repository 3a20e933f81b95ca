package httpapi_test

import (
	"bytes"
	"encoding/csv"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/register"
)

func TestRegisterEndpoint(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)

	// A document for a profile that records none is refused, naming the field.
	req := issue("ann", "email-signing", "ws-1")
	req["document"] = map[string]string{"number": "A-1", "date": "2025-01-01"}
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/jobs", req), 400, "bad_request", "document")
	req["document"] = map[string]any{"number": "A-1", "date": "2025-01-01", "page": 3}
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/jobs", req), 400, "bad_request", "-")

	reg := ok[api.Register](t, e.as(t, "hd", "GET", "/api/v1/register", nil), 200)
	if reg.Organization != "" || reg.Items == nil || len(reg.Items) != 0 {
		t.Fatalf("empty register %+v", reg)
	}
	r := e.as(t, "hd", "GET", "/api/v1/register?format=csv", nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/csv") ||
		!strings.Contains(r.header.Get("Content-Disposition"), `filename="register-all-`) {
		t.Fatalf("csv: %d %v", r.status, r.header)
	}
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil || len(rows) != 1 || !slices.Equal(rows[0], register.CSVHeader) {
		t.Fatalf("csv rows %q, %v", rows, err)
	}
	r = e.as(t, "hd", "GET", "/api/v1/register?format=pdf", nil)
	if r.status != 200 || r.header.Get("Content-Type") != "application/pdf" || !bytes.HasPrefix(r.body, []byte("%PDF-")) {
		t.Fatalf("pdf: %d %v %q", r.status, r.header, r.body[:min(8, len(r.body))])
	}
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/register?format=xlsx", nil), 400, "bad_request", "format")
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/register?org=x", nil), 400, "bad_request", "org")
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/register?organization=Nowhere", nil), 400, "bad_request", "organization")
	wantErr(t, e.as(t, "ann", "GET", "/api/v1/register", nil), 403, "forbidden", "")
}
