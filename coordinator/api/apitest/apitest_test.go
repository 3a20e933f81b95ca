package apitest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/api/apitest"
)

// TestDescriptionValid: openapi.yaml is valid OpenAPI 3 as kin-openapi reads it (the
// structure, every $ref resolved, path parameters declared, examples matching schemas).
func TestDescriptionValid(t *testing.T) {
	if _, err := apitest.Load(); err != nil {
		t.Fatal(err)
	}
}

// TestCheck: the validator refuses what the description does not allow, so that a test
// whose server answers with it fails.
func TestCheck(t *testing.T) {
	v, err := apitest.Load()
	if err != nil {
		t.Fatal(err)
	}
	jsonCT := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	health := `{"status":"ok","store":"ok"}`
	errBody := func(code string) string { return `{"error":{"code":"` + code + `","message":"m"}}` }
	for _, c := range []struct {
		name, method, path string
		status             int
		header             http.Header
		body               string
		wantErr            string // "" for a response the description allows
	}{
		{"documented", "GET", "/healthz", 200, jsonCT, health, ""},
		{"undocumented status", "GET", "/healthz", 201, jsonCT, health, "status is not supported"},
		{"unknown property", "GET", "/healthz", 200, jsonCT, `{"status":"ok","store":"ok","extra":1}`, "extra"},
		{"missing property", "GET", "/healthz", 200, jsonCT, `{"status":"ok"}`, "store"},
		{"value outside the enum", "GET", "/healthz", 200, jsonCT, `{"status":"fine","store":"ok"}`, "status"},
		{"undocumented content type", "GET", "/healthz", 200, http.Header{"Content-Type": {"text/html"}}, health, "text/html"},
		{"error documented", "GET", "/api/v1/jobs/j1", 404, jsonCT, errBody("not_found"), ""},
		{"error code outside the enum", "GET", "/api/v1/jobs/j1", 404, jsonCT, errBody("gone"), "gone"},
		{"error status undocumented", "GET", "/api/v1/jobs/j1", 418, jsonCT, errBody("conflict"), "status is not supported"},
		{"unknown path", "GET", "/api/v1/nothing", 404, jsonCT, errBody("not_found"), ""},
		{"unknown path, wrong code", "GET", "/api/v1/nothing", 404, jsonCT, errBody("forbidden"), "want not_found"},
		{"405 with Allow", "DELETE", "/api/v1/jobs", 405, http.Header{"Content-Type": jsonCT["Content-Type"], "Allow": {"GET, HEAD, POST"}},
			errBody("method_not_allowed"), ""},
		{"405 without Allow", "DELETE", "/api/v1/jobs", 405, jsonCT, errBody("method_not_allowed"), "Allow"},
		{"405 with a wrong Allow", "DELETE", "/api/v1/jobs/j1", 405, http.Header{"Content-Type": jsonCT["Content-Type"], "Allow": {"GET, POST"}},
			errBody("method_not_allowed"), "Allow"},
		{"404 on a known path with another method", "DELETE", "/api/v1/jobs", 404, jsonCT, errBody("not_found"), "want 405"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, c.path, nil)
			err := v.Check(req, c.status, c.header, []byte(c.body))
			switch {
			case c.wantErr == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.wantErr != "" && err == nil:
				t.Errorf("allowed; want an error naming %q", c.wantErr)
			case c.wantErr != "" && !strings.Contains(err.Error(), c.wantErr):
				t.Errorf("error %q does not name %q", err, c.wantErr)
			}
		})
	}
}

// recorder is a testing.TB that keeps what Errorf reports instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestHandler: a response the description does not allow fails the test whose request
// caused it, and reaches the client unchanged.
func TestHandler(t *testing.T) {
	rec := &recorder{TB: t}
	h := apitest.Handler(rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"status":"ok","store":"ok","uptime":3}`))
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || string(body) != `{"status":"ok","store":"ok","uptime":3}` {
		t.Errorf("the client got %d %s", res.StatusCode, body)
	}
	if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "uptime") {
		t.Errorf("reported %q; want one error naming the undocumented property", rec.errs)
	}
}
