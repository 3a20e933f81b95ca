package client_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// dropFirstCreate stands in front of a coordinator: it passes requests on, except that the
// first job creation's answer (or the first POST to path, when set) is lost — the
// coordinator handled it, then the connection closes with no answer, as when a proxy or
// the network fails at the wrong time.
type dropFirstCreate struct {
	target string
	path   string // "" for /api/v1/jobs

	mu      sync.Mutex // guards the fields below
	dropped bool
	keys    []string // Idempotency-Key of each job creation, in order
}

func (p *dropFirstCreate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	path := p.path
	if path == "" {
		path = "/api/v1/jobs"
	}
	if r.Method == http.MethodPost && r.URL.Path == path {
		p.mu.Lock()
		p.keys = append(p.keys, r.Header.Get("Idempotency-Key"))
		drop := !p.dropped
		p.dropped = true
		p.mu.Unlock()
		if drop {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err) // httptest's server always hijacks
			}
			_ = conn.Close()
			return
		}
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

func (p *dropFirstCreate) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.keys...)
}

// TestCreateJobLostAnswer: the coordinator created the job but the answer was lost; the
// client sends the request again with the same key and gets that job, and the coordinator
// holds one job, not two.
func TestCreateJobLostAnswer(t *testing.T) {
	ctx := context.Background()
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	inst.EnrolAgent(t, "ws-01", "ws-01.acme.example")
	admin := must(client.New(inst.URL, inst.AdminToken))(t)
	must(admin.CreateOrg(ctx, "acme"))(t)
	must(admin.CreateUser(ctx, client.UserCreate{Username: "alice", DisplayName: "Alice Holder", Email: "alice@acme.example",
		UPN: "alice@acme.example", Organization: "acme", Attributes: map[string]string{"employee_id": "42"}}))(t)
	must(admin.ApplyProfiles(ctx, exampleProfile(t, "smartcard-logon")))(t)

	proxy := &dropFirstCreate{target: inst.URL}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	c := must(client.New(srv.URL, inst.AdminToken))(t)

	req := client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "smartcard-logon"}
	j := must(c.CreateJob(ctx, req))(t)
	keys := proxy.seen()
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] {
		t.Fatalf("keys sent %q: want the request twice with one key", keys)
	}
	all := must(client.Collect(admin.AllJobs(ctx, client.JobFilter{Holder: "alice"}, 0)))(t)
	if len(all) != 1 || all[0].ID != j.ID || all[0].State != jobs.StatePendingApproval {
		t.Fatalf("jobs on the coordinator: %+v, want only %s, pending", all, j.ID)
	}

	// Each call has its own key: a second call is a second request.
	j2 := must(c.CreateJob(ctx, req))(t)
	keys = proxy.seen()
	if len(keys) != 3 || keys[2] == "" || keys[2] == keys[0] || j2.ID == j.ID {
		t.Fatalf("second call: keys %q, job %s after %s", keys, j2.ID, j.ID)
	}

	// A caller's own key: the same run again finds its job; the key with another request
	// is refused.
	k, replayed, err := c.CreateJobWithKey(ctx, req, "nightly-2026-12-06")
	if err != nil || replayed {
		t.Fatalf("first run: %v, replayed %v", err, replayed)
	}
	again, replayed, err := c.CreateJobWithKey(ctx, req, "nightly-2026-12-06")
	if err != nil || !replayed || again.ID != k.ID {
		t.Fatalf("second run: %+v, replayed %v, %v; want job %s replayed", again, replayed, err, k.ID)
	}
	_, _, err = c.CreateJobWithKey(ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01",
		Profile: "smartcard-logon", TokenSerial: "T1"}, "nightly-2026-12-06")
	wantCode(t, err, "idempotency_key_reused")
}

// TestCreateJobResendBounded: a server that never answers is not asked forever.
func TestCreateJobResendBounded(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		_ = conn.Close()
	}))
	t.Cleanup(srv.Close)
	c := must(client.New(srv.URL, "secret-token"))(t)
	_, err := c.CreateJob(context.Background(), client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-1", Profile: "p"})
	if err == nil {
		t.Fatal("no error from a server that never answers")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) < 2 || len(keys) > 8 {
		t.Fatalf("sent %d times, want a few", len(keys))
	}
	for _, k := range keys {
		if k != keys[0] || k == "" {
			t.Fatalf("keys %q: want one key throughout", keys)
		}
	}
}

// TestOtherRequestsNotResent: only job creation is sent again; a lost approve is reported.
func TestOtherRequestsNotResent(t *testing.T) {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		_ = conn.Close()
	}))
	t.Cleanup(srv.Close)
	c := must(client.New(srv.URL, "secret-token"))(t)
	if _, err := c.Approve(context.Background(), "j1", "ok"); err == nil {
		t.Fatal("no error from a server that never answers")
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 1 {
		t.Fatalf("approve sent %d times, want once", n)
	}
}
