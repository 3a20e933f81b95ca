package ctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
)

// fixedNow is the clock of every test run, so relative times are stable.
var fixedNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// result is one run of tokenfleetctl.
type result struct {
	stdout, stderr string
	code           int
}

// runCtl runs tokenfleetctl with args, an environment and standard input.
func runCtl(t *testing.T, environ map[string]string, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := ctl.Main(context.Background(), args, ctl.Env{
		Stdin:  strings.NewReader(stdin),
		Stdout: &stdout,
		Stderr: &stderr,
		Getenv: func(k string) string { return environ[k] },
		Now:    func() time.Time { return fixedNow },
	})
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// seenRequest is what the fake API received.
type seenRequest struct {
	Method, Path, Query, Auth, ContentType, Body string
	IdempotencyKey                               string
}

// fakeAPI is a coordinator stand-in: each route answers with a fixed handler and every
// request is recorded. Tests of the real API run against the coordinator itself.
type fakeAPI struct {
	t      *testing.T
	srv    *httptest.Server
	routes map[string]http.HandlerFunc // "GET /api/v1/jobs"

	mu   sync.Mutex // guards seen
	seen []seenRequest
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{t: t, routes: map[string]http.HandlerFunc{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	f.mu.Lock()
	f.seen = append(f.seen, seenRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"), Body: string(b),
		IdempotencyKey: r.Header.Get("Idempotency-Key")})
	f.mu.Unlock()
	h, ok := f.routes[r.Method+" "+r.URL.Path]
	if !ok {
		apiError(w, http.StatusNotFound, "not_found", "no route "+r.Method+" "+r.URL.Path)
		return
	}
	h(w, r)
}

// on sets the answer of a route to a fixed JSON reply.
func (f *fakeAPI) on(route string, status int, reply any) {
	f.routes[route] = func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, status, reply) }
}

func (f *fakeAPI) requests() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenRequest(nil), f.seen...)
}

// env returns an environment pointing tokenfleetctl at the fake API.
func (f *fakeAPI) env() map[string]string {
	return map[string]string{"TOKENFLEET_URL": f.srv.URL, "TOKENFLEET_TOKEN": "test-token"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// oneLine fails unless s is exactly one line.
func oneLine(t *testing.T, what, s string) {
	t.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Errorf("%s is not one line: %q", what, s)
	}
}
