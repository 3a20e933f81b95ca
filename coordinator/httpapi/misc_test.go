package httpapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func TestRoutes(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	tests := []struct {
		method, path string
		status       int
		code         string
		allow        string // the Allow header of a 405 (RFC 9110): the methods the path takes
	}{
		{"GET", "/api/v1/nothing", 404, "not_found", ""},
		{"GET", "/", 404, "not_found", ""},
		{"DELETE", "/api/v1/jobs", 405, "method_not_allowed", "GET, HEAD, POST"},
		{"PUT", "/api/v1/orgs", 405, "method_not_allowed", "GET, HEAD, POST"},
		{"GET", "/api/v1/jobs/x/approve", 405, "method_not_allowed", "POST"},
		{"POST", "/healthz", 405, "method_not_allowed", "GET, HEAD"},
		{"POST", "/api/v1/profiles", 405, "method_not_allowed", "GET, HEAD, PUT"},
		{"DELETE", "/api/v1/audit/checkpoints", 405, "method_not_allowed", "GET, HEAD, POST"},
	}
	for _, tc := range tests {
		r := e.do(t, tc.method, tc.path, e.admin, nil)
		wantErr(t, r, tc.status, tc.code, "")
		if got := r.header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
	}
	// Unknown routes answer the same with or without a token: nothing to authenticate.
	wantErr(t, e.do(t, "GET", "/api/v1/nothing", "", nil), 404, "not_found", "")
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	h := ok[struct {
		Status string `json:"status"`
		Store  string `json:"store"`
	}](t, e.do(t, "GET", "/healthz", "", nil), 200)
	if h.Status != "ok" || h.Store != "ok" {
		t.Fatalf("health %+v", h)
	}
	j := e.newJob(t, "hd", issue("ann", "email-signing", "ws-1"))
	ok[jobDetail](t, e.as(t, "ap1", "POST", "/api/v1/jobs/"+j.ID+"/approve", nil), 200)
	wantErr(t, e.as(t, "apg", "POST", "/api/v1/jobs/"+j.ID+"/approve", nil), 409, "not_pending", "")
	e.do(t, "GET", "/api/v1/whoami", "", nil)

	r := e.do(t, "GET", "/metrics", "", nil)
	if r.status != 200 {
		t.Fatalf("metrics: %s", r)
	}
	text := string(r.body)
	for _, want := range []string{
		`tokenfleet_coordinator_http_requests_total{code="201",method="POST",route="/api/v1/jobs"} 1`,
		`tokenfleet_coordinator_http_requests_total{code="200",method="POST",route="/api/v1/jobs/{id}/approve"} 1`,
		`tokenfleet_coordinator_http_requests_total{code="401",method="GET",route="/api/v1/whoami"} 1`,
		`tokenfleet_coordinator_http_request_duration_seconds_count{method="POST",route="/api/v1/jobs"} 1`,
		`tokenfleet_coordinator_job_transitions_total{from="pending_approval",to="approved"} 1`,
		`tokenfleet_coordinator_approval_decisions_total{gate="request",verdict="approve"} 1`,
		`tokenfleet_coordinator_access_denials_total{code="not_pending"} 1`,
		`tokenfleet_coordinator_access_denials_total{code="unauthenticated"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, j.ID) {
		t.Error("a job ID became a metric label")
	}
}

func TestAuditEndpoint(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	j := e.newJob(t, "hd", issue("ann", "email-signing", "ws-1"))
	ok[jobDetail](t, e.as(t, "ap1", "POST", "/api/v1/jobs/"+j.ID+"/approve", map[string]string{"reason": "<looks fine> & \"ok\""}), 200)

	type page struct {
		Items []struct {
			Seq      int64           `json:"seq"`
			Time     time.Time       `json:"time"`
			Actor    string          `json:"actor"`
			Name     string          `json:"actor_name"`
			Action   string          `json:"action"`
			Job      string          `json:"job"`
			Target   string          `json:"target"`
			Reason   string          `json:"reason"`
			Details  json.RawMessage `json:"details"`
			PrevHash string          `json:"prev_hash"`
			Hash     string          `json:"hash"`
		} `json:"items"`
		NextAfterSeq int64 `json:"next_after_seq"`
	}
	// Read the whole log in small pages, as a client verifying it would, and verify it.
	var entries []audit.Entry
	after := int64(0)
	for pages := 0; ; pages++ {
		p := ok[page](t, e.as(t, "aud", "GET", "/api/v1/audit?limit=7&after_seq="+itoa(after), nil), 200)
		if len(p.Items) > 7 || pages > 100 {
			t.Fatalf("page of %d", len(p.Items))
		}
		for _, it := range p.Items {
			entries = append(entries, audit.Entry{Seq: it.Seq, Time: it.Time, Actor: it.Actor, Action: it.Action, JobID: it.Job,
				Target: it.Target, Reason: it.Reason, Details: it.Details, PrevHash: it.PrevHash, Hash: it.Hash})
		}
		if p.NextAfterSeq == 0 {
			break
		}
		after = p.NextAfterSeq
	}
	if err := audit.Verify(entries); err != nil {
		t.Fatalf("the chain served by the API does not verify: %v", err)
	}
	if int64(len(entries)) != e.auditHead(t) {
		t.Fatalf("read %d entries of %d", len(entries), e.auditHead(t))
	}
	p := ok[page](t, e.as(t, "admin", "GET", "/api/v1/audit?after_seq=2&limit=1", nil), 200)
	if len(p.Items) != 1 || p.Items[0].Seq != 3 || p.NextAfterSeq != 3 {
		t.Fatalf("page after 2: %+v", p)
	}
	for _, q := range []string{"limit=0", "limit=5001", "after_seq=-1", "after_seq=x", "cursor=abc"} {
		wantErr(t, e.as(t, "aud", "GET", "/api/v1/audit?"+q, nil), 400, "bad_request", "-")
	}
	for _, who := range []string{"hd", "ap1", "ca", "ann"} {
		wantErr(t, e.as(t, who, "GET", "/api/v1/audit", nil), 403, "forbidden", "")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestFleetLists(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	ctx := context.Background()
	der := testCertificate(t)
	err := e.st.InTx(ctx, func(tx store.Tx) error {
		if err := tx.RecordAgentSeen(ctx, "ws-1", e.clock.now(), true); err != nil {
			return err
		}
		if _, err := tx.UpsertToken(ctx, store.Token{Serial: "0042", AgentID: "ws-1", Label: "Ann", Manufacturer: "SoftHSM project",
			Model: "SoftHSM v2", Flags: json.RawMessage(`{"initialized":true}`), LastSeen: e.clock.now()}); err != nil {
			return err
		}
		_, err := tx.AddCertificate(ctx, store.Certificate{Serial: "0a1b", HolderID: e.user(t, "ann").ID, Profile: "email-signing",
			TokenSerial: "0042", AgentID: "ws-1", Subject: "CN=Ann Martin", Issuer: "CN=tokenfleet test CA",
			NotBefore: e.clock.now(), NotAfter: e.clock.now().Add(365 * 24 * time.Hour), DER: der})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	type agent struct {
		ID       string    `json:"id"`
		Hostname string    `json:"hostname"`
		OS       string    `json:"os"`
		Version  string    `json:"version"`
		Online   bool      `json:"online"`
		LastSeen time.Time `json:"last_seen"`
		Enrolled time.Time `json:"enrolled"`
		Approved bool      `json:"approved"`
		State    string    `json:"state"`
	}
	as := ok[list[agent]](t, e.as(t, "hd", "GET", "/api/v1/agents", nil), 200)
	if len(as.Items) != 2 || as.Items[0].ID != "ws-1" || !as.Items[0].Online || as.Items[1].Online || !as.Items[0].Approved {
		t.Fatalf("agents %+v", as)
	}
	as = ok[list[agent]](t, e.as(t, "aud", "GET", "/api/v1/agents?limit=1", nil), 200)
	if len(as.Items) != 1 || as.NextCursor == "" {
		t.Fatalf("agents page %+v", as)
	}
	type token struct {
		Serial       string          `json:"serial"`
		Agent        string          `json:"agent"`
		Label        string          `json:"label"`
		Manufacturer string          `json:"manufacturer"`
		Model        string          `json:"model"`
		URI          string          `json:"uri"`
		Flags        json.RawMessage `json:"flags"`
		LastSeen     time.Time       `json:"last_seen"`
		State        string          `json:"state"`
	}
	ts := ok[list[token]](t, e.as(t, "hd", "GET", "/api/v1/tokens?agent=ws-1", nil), 200)
	if len(ts.Items) != 1 || ts.Items[0].Serial != "0042" || string(ts.Items[0].Flags) != `{"initialized":true}` || ts.Items[0].State != "active" {
		t.Fatalf("tokens %+v", ts)
	}
	if ts = ok[list[token]](t, e.as(t, "hd", "GET", "/api/v1/tokens?agent=ws-2", nil), 200); len(ts.Items) != 0 {
		t.Fatalf("tokens of ws-2 %+v", ts)
	}
	type cert struct {
		Serial      string    `json:"serial"`
		Job         string    `json:"job"`
		Holder      string    `json:"holder"`
		Profile     string    `json:"profile"`
		TokenSerial string    `json:"token_serial"`
		Agent       string    `json:"agent"`
		Subject     string    `json:"subject"`
		Issuer      string    `json:"issuer"`
		NotBefore   time.Time `json:"not_before"`
		NotAfter    time.Time `json:"not_after"`
		RevokedAt   time.Time `json:"revoked_at"`
		PEM         string    `json:"pem"`
	}
	cs := ok[list[cert]](t, e.as(t, "ca", "GET", "/api/v1/certificates?holder=ann", nil), 200)
	if len(cs.Items) != 1 || cs.Items[0].Holder != "ann" || cs.Items[0].TokenSerial != "0042" {
		t.Fatalf("certificates %+v", cs)
	}
	block, _ := pem.Decode([]byte(cs.Items[0].PEM))
	if block == nil || block.Type != "CERTIFICATE" || string(block.Bytes) != string(der) {
		t.Fatal("certificate PEM does not hold the stored DER")
	}
	for _, q := range []string{"token=0042", "agent=ws-1"} {
		if cs = ok[list[cert]](t, e.as(t, "hd", "GET", "/api/v1/certificates?"+q, nil), 200); len(cs.Items) != 1 {
			t.Errorf("%s: %d certificates", q, len(cs.Items))
		}
	}
	if cs = ok[list[cert]](t, e.as(t, "hd", "GET", "/api/v1/certificates?holder=gina", nil), 200); len(cs.Items) != 0 {
		t.Fatalf("gina's certificates %+v", cs)
	}
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/certificates?holder=nobody", nil), 400, "bad_request", "holder")
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/tokens?serial=1", nil), 400, "bad_request", "serial")
	for _, path := range []string{"/api/v1/agents", "/api/v1/tokens", "/api/v1/certificates"} {
		wantErr(t, e.as(t, "ap1", "GET", path, nil), 403, "forbidden", "")
	}
	wantErr(t, e.as(t, "ca", "GET", "/api/v1/agents", nil), 403, "forbidden", "")
}

func testCertificate(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x0a1b), Subject: pkix.Name{CommonName: "Ann Martin"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestBodyReadErrors(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	// A body that is declared JSON but is something else.
	r := e.doCT(t, "POST", "/api/v1/orgs", e.admin, "text/html", `{"name":"x"}`)
	wantErr(t, r, 415, "unsupported_media_type", "Content-Type")
	// Exactly at the limit is read; one byte more is refused.
	name := strings.Repeat("a", 1<<20-len(`{"name":""}`))
	r = e.do(t, "POST", "/api/v1/orgs", e.admin, `{"name":"`+name+`"}`)
	wantErr(t, r, 400, "bad_request", "name") // read, then refused as too long a name
	r = e.do(t, "POST", "/api/v1/orgs", e.admin, `{"name":"`+name+`a"}`)
	wantErr(t, r, 413, "too_large", "")
	// The connection still works after a refused body.
	req, _ := http.NewRequestWithContext(context.Background(), "GET", e.srv.URL+"/healthz", nil)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("health after refused body: %d", resp.StatusCode)
	}
}

func TestHealthUnhealthy(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	h := ok[struct {
		Status string `json:"status"`
		Store  string `json:"store"`
	}](t, e.do(t, "GET", "/healthz", "", nil), 503)
	if h.Status != "unhealthy" {
		t.Fatalf("health %+v", h)
	}
	// Without a store nothing authenticates, and the error says nothing about why.
	r := e.do(t, "GET", "/api/v1/whoami", e.admin, nil)
	er := wantErr(t, r, 500, "internal", "")
	if er.Error.Message != "internal error" {
		t.Fatalf("internal error shows %q", er.Error.Message)
	}
}
