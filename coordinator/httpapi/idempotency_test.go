package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
)

// createWithKey posts a job creation as user with the Idempotency-Key header set to keys
// (none: no header; several: the header repeated).
func (e *env) createWithKey(t *testing.T, user string, body any, keys ...string) response {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(context.Background(), "POST", e.srv.URL+"/api/v1/jobs", bytes.NewReader(b))
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

// jobsOf lists the jobs of a holder.
func (e *env) jobsOf(t *testing.T, holder string) []job {
	t.Helper()
	return ok[list[job]](t, e.as(t, "admin", "GET", "/api/v1/jobs?holder="+holder, nil), 200).Items
}

func TestCreateJobIdempotencyKey(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	body := map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing", "agent": "ws-1", "token_serial": "0042"}

	first := e.createWithKey(t, "hd", body, "order-7f3a")
	j := ok[job](t, first, 201)
	if v := first.header.Get("Idempotent-Replayed"); v != "" {
		t.Fatalf("a first request answered Idempotent-Replayed: %q", v)
	}
	head := e.auditHead(t)

	// The same request again: the same job, 200, marked replayed; nothing new happened.
	again := e.createWithKey(t, "hd", body, "order-7f3a")
	if got := ok[job](t, again, 200); got.ID != j.ID || got.State != "pending_approval" {
		t.Fatalf("replay answered %+v, want job %s as it is", got, j.ID)
	}
	if v := again.header.Get("Idempotent-Replayed"); v != "true" {
		t.Fatalf("replay answered Idempotent-Replayed: %q", v)
	}
	if h := e.auditHead(t); h != head {
		t.Fatalf("the replay audited %d entries", h-head)
	}
	if js := e.jobsOf(t, "ann"); len(js) != 1 || js[0].ID != j.ID || js[0].State != "pending_approval" {
		t.Fatalf("jobs after the replay: %+v", js)
	}

	// The key with another request is refused, naming the header.
	other := map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing", "agent": "ws-2"}
	er := wantErr(t, e.createWithKey(t, "hd", other, "order-7f3a"), 422, "idempotency_key_reused", "Idempotency-Key")
	if !strings.Contains(er.Error.Message, "another request") {
		t.Fatalf("reused key message: %s", er.Error.Message)
	}
	// A deadline is part of the request.
	withDeadline := map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing", "agent": "ws-1", "token_serial": "0042",
		"deadline": e.clock.now().Add(48 * 3600e9).Format("2006-01-02T15:04:05Z07:00")}
	wantErr(t, e.createWithKey(t, "hd", withDeadline, "order-7f3a"), 422, "idempotency_key_reused", "Idempotency-Key")
	if h := e.auditHead(t); h != head {
		t.Fatalf("refused requests audited %d entries", h-head)
	}

	// Keys are per requester: another user's identical key creates their own job.
	theirs := ok[job](t, e.createWithKey(t, "hd2", body, "order-7f3a"), 201)
	if theirs.ID == j.ID || theirs.Requester != "hd2" {
		t.Fatalf("another requester's key: %+v", theirs)
	}
	// ... and the first requester's replay still finds the first job, whatever became of it.
	if got := ok[job](t, e.createWithKey(t, "hd", body, "order-7f3a"), 200); got.ID != j.ID || got.State != "superseded" {
		t.Fatalf("replay after supersession: %+v", got)
	}

	// A refused request does not take its key.
	wantErr(t, e.createWithKey(t, "hd", issue("nobody", "email-signing", "ws-1"), "order-8"), 400, "bad_request", "holder")
	ok[job](t, e.createWithKey(t, "hd", issue("gina", "email-signing", "ws-2"), "order-8"), 201)

	head = e.auditHead(t)
	for _, tc := range []struct {
		name string
		keys []string
	}{
		{"empty", []string{""}},
		{"too long", []string{strings.Repeat("k", 256)}},
		{"not ASCII", []string{"clé-1"}},
		{"control character", []string{"a\tb"}},
		{"given twice", []string{"k1", "k2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			er := wantErr(t, e.createWithKey(t, "hd", body, tc.keys...), 400, "bad_request", "Idempotency-Key")
			if !strings.Contains(er.Error.Message, "printable ASCII") {
				t.Fatalf("message does not say the rule: %s", er.Error.Message)
			}
		})
	}
	ok[job](t, e.createWithKey(t, "hd", issue("gina", "email-signing", "ws-1"), strings.Repeat("~", 255)), 201)
	if n := len(e.auditSince(t, head, audit.ActionJobCreated)); n != 1 {
		t.Fatalf("%d jobs audited after the refused keys and one good one, want 1", n)
	}
}

// testIdempotentConcurrent sends one request with one key many times at once: one job is
// created, every answer is it, none is an error.
func testIdempotentConcurrent(t *testing.T, e *env) {
	e.world(t)
	body := issue("ann", "email-signing", "ws-1")
	head := e.auditHead(t)
	const racers = 8
	answers := make([]response, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() { answers[i] = e.createWithKey(t, "hd", body, "same-key") })
	}
	wg.Wait()
	created, ids := 0, map[string]bool{}
	for i, r := range answers {
		switch r.status {
		case 201:
			created++
		case 200:
			if r.header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("answer %d: 200 without Idempotent-Replayed", i)
			}
		default:
			t.Fatalf("answer %d: %s", i, r)
		}
		var j job
		if err := json.Unmarshal(r.body, &j); err != nil {
			t.Fatal(err)
		}
		ids[j.ID] = true
	}
	if created != 1 || len(ids) != 1 {
		t.Fatalf("%d created, %d distinct jobs answered; want 1 and 1", created, len(ids))
	}
	if js := e.jobsOf(t, "ann"); len(js) != 1 || !ids[js[0].ID] || js[0].State != "pending_approval" {
		t.Fatalf("jobs after the race: %+v", js)
	}
	if n := len(e.auditSince(t, head, audit.ActionJobCreated)); n != 1 {
		t.Fatalf("%d job.created entries, want 1", n)
	}
}

func TestCreateJobIdempotentConcurrentSQLite(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	testIdempotentConcurrent(t, newEnv(t))
}

func TestCreateJobIdempotentConcurrentPostgres(t *testing.T) {
	t.Parallel() // a service, store and database of its own
	testIdempotentConcurrent(t, newPostgresEnv(t))
}
