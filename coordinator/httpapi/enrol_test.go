package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/httpapi"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// An enrolment that reached the coordinator over plain HTTP from another host is refused
// before the code is even looked at, and audited with its source; through a trusted
// TLS-terminating proxy (X-Forwarded-Proto: https) it is not refused for that.
func TestEnrolOverPlainHTTPRefused(t *testing.T) {
	e := newEnv(t)
	head := e.auditHead(t)
	priv, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := seal.MarshalPublicKey(priv.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(protocol.EnrolRequest{Code: "tfe_abc_def", Hostname: "ws-9.acme.example", SealKey: pub})
	enrol := func(h http.Handler, header map[string]string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/enrol", bytes.NewReader(body))
		req.RemoteAddr = "192.0.2.10:50123"
		req.Header.Set("Content-Type", "application/json")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	log := zerolog.Nop()
	direct, err := httpapi.New(httpapi.Options{Service: e.svc, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	w := enrol(direct, map[string]string{"X-Forwarded-Proto": "https"}) // not trusted without insecure_http
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "plain HTTP from another host is refused") {
		t.Fatalf("plain HTTP from 192.0.2.10: %d %s", w.Code, w.Body)
	}
	entries := e.auditSince(t, head, audit.ActionAgentEnrolRefused)
	if len(entries) != 1 || entries[0].Reason != "plain HTTP from 192.0.2.10" || entries[0].Actor != "anonymous" {
		t.Fatalf("audit entries: %+v", entries)
	}

	behindProxy, err := httpapi.New(httpapi.Options{Service: e.svc, Logger: log, Enrolment: httpapi.Enrolment{TrustForwardedProto: true}})
	if err != nil {
		t.Fatal(err)
	}
	// Past the transport check, this coordinator has no broker management: 503, saying so.
	w = enrol(behindProxy, map[string]string{"X-Forwarded-Proto": "https"})
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "broker.management") {
		t.Fatalf("through a TLS-terminating proxy: %d %s", w.Code, w.Body)
	}
}
