package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// postWithKey posts body to path as user with the Idempotency-Key header set to keys
// (none: no header; several: the header repeated).
func (e *env) postWithKey(t *testing.T, user, path string, body any, keys ...string) response {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(context.Background(), "POST", e.srv.URL+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.tokens[user])
	if len(keys) > 0 {
		req.Header["Idempotency-Key"] = keys
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// TestCreateRolloutIdempotencyKey: as for jobs, a creation sent again with its key answers
// 200 with the rollout the first one created, Idempotent-Replayed: true, and creates and
// audits nothing; the key with another body is refused.
func TestCreateRolloutIdempotencyKey(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.rolloutWorld(t)
	const path = "/api/v1/rollouts"
	body := rolloutSpec("certs acme")

	dry := e.postWithKey(t, "ro", path, with(body, "dry_run", true), "order-7f3a")
	if d := ok[api.Rollout](t, dry, 200); d.ID != "" || dry.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("dry run with a key: %+v, replayed %q", d, dry.header.Get("Idempotent-Replayed"))
	}
	first := e.postWithKey(t, "ro", path, body, "order-7f3a")
	r := ok[api.Rollout](t, first, 201)
	if v := first.header.Get("Idempotent-Replayed"); v != "" || r.Preview == nil {
		t.Fatalf("a first request answered Idempotent-Replayed %q, preview %v", v, r.Preview)
	}
	head := e.auditHead(t)
	again := e.postWithKey(t, "ro", path, body, "order-7f3a")
	if got := ok[api.Rollout](t, again, 200); got.ID != r.ID || got.BindingHash != r.BindingHash || got.Preview != nil {
		t.Fatalf("replay answered %+v, want rollout %s as it is", got, r.ID)
	}
	if v := again.header.Get("Idempotent-Replayed"); v != "true" {
		t.Fatalf("replay answered Idempotent-Replayed: %q", v)
	}
	if h := e.auditHead(t); h != head {
		t.Fatalf("the replay audited %d entries", h-head)
	}
	wantErr(t, e.postWithKey(t, "ro", path, rolloutSpec("certs acme, again"), "order-7f3a"), 422, "idempotency_key_reused", "Idempotency-Key")
	wantErr(t, e.postWithKey(t, "ro", path, body, ""), 400, "bad_request", "Idempotency-Key")
	wantErr(t, e.postWithKey(t, "ro", path, body, "a", "b"), 400, "bad_request", "Idempotency-Key")
	wantErr(t, e.postWithKey(t, "ro", path, body, "tab\there"), 400, "bad_request", "Idempotency-Key")
	if l := ok[list[api.Rollout]](t, e.as(t, "ro", "GET", path, nil), 200); len(l.Items) != 1 {
		t.Fatalf("%d rollouts, want 1", len(l.Items))
	}
}
