package ctl_test

import (
	"bytes"
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
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// stepClock is a clock that moves on by step each time it is read.
type stepClock struct {
	mu   sync.Mutex // guards now
	now  time.Time
	step time.Duration
}

func (c *stepClock) read() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(c.step)
	return c.now
}

// runWith runs tokenfleetctl with an Env of the test's own.
func runWith(environ map[string]string, e ctl.Env, args ...string) result {
	var stdout, stderr bytes.Buffer
	e.Stdout, e.Stderr = &stdout, &stderr
	e.Getenv = func(k string) string { return environ[k] }
	if e.Now == nil {
		e.Now = func() time.Time { return fixedNow }
	}
	code := ctl.Main(context.Background(), args, e)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

func dispatchedJob() client.JobDetail {
	return client.JobDetail{Job: client.Job{ID: "j1", Kind: jobs.KindIssue, State: jobs.StateDispatched, Holder: "alice",
		Agent: "ws-01", Approvals: "1/1"}, AgentPresence: "never_connected"}
}

// TestWatchSaysTheAgentIsAway: a job waiting on an agent that never connected says so on
// its first poll, and every --remind of the clock says again how long it has waited.
func TestWatchSaysTheAgentIsAway(t *testing.T) {
	api := newFakeAPI(t)
	var polls atomic.Int32
	api.routes["GET /api/v1/jobs/j1"] = func(w http.ResponseWriter, _ *http.Request) {
		d := dispatchedJob()
		switch n := polls.Add(1); {
		case n >= 5 && n < 9:
			d.AgentPresence, d.AgentLastSeen = "offline", fixedNow.Add(-3*time.Hour) // it was there once, long ago
		case n == 9:
			d.State, d.AgentPresence, d.AgentLastSeen = jobs.StateRunning, "online", fixedNow
		case n >= 10:
			d.State = jobs.StateSucceeded
		}
		writeJSON(w, 200, d)
	}
	// Ten seconds pass between polls: a reminder every third poll at --remind 30s.
	clock := &stepClock{now: fixedNow, step: 10 * time.Second}
	r := runWith(api.env(), ctl.Env{Now: clock.read}, "job", "watch", "j1", "--interval", "100ms", "--remind", "30s")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	const never = "agent ws-01 has never connected: the job waits until tokenfleet-agent runs with --id ws-01 and reaches the broker"
	const away = "agent ws-01 is offline (last seen 3h ago): the job waits until it reconnects"
	want := []string{
		"12:00:20  sent to agent ws-01; waiting for it to start",
		"12:00:20  " + never,
		"12:00:50  watched for 40s: still sent to agent ws-01; waiting for it to start; " + never,
		"12:01:00  " + away,
		"12:01:30  watched for 1m20s: still sent to agent ws-01; waiting for it to start; " + away,
		"12:01:40  running on agent ws-01",
		"12:01:40  agent ws-01 is online",
		"12:01:50  succeeded",
	}
	if len(lines) != len(want) {
		t.Fatalf("watch printed %d lines, want %d:\n%s", len(lines), len(want), r.stdout)
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d: %q, want %q", i+1, lines[i], w)
		}
	}
}

// TestWatchGivesUp: --timeout ends in words and with its own exit status.
func TestWatchGivesUp(t *testing.T) {
	api := newFakeAPI(t)
	d := dispatchedJob()
	d.AgentPresence, d.AgentLastSeen = "offline", fixedNow.Add(-2*time.Hour)
	api.on("GET /api/v1/jobs/j1", 200, d)
	r := runCtl(t, api.env(), "", "job", "watch", "j1", "--interval", "100ms", "--timeout", "300ms")
	want := "tokenfleetctl: job watch: gave up after 300ms: job j1 is still sent to agent ws-01; waiting for it to start; " +
		"agent ws-01 is offline (last seen 2h ago): the job waits until it reconnects; the job goes on: watch it again with tokenfleetctl job watch j1\n"
	if r.code != ctl.ExitGaveUp || r.stderr != want {
		t.Errorf("exit %d, stderr %q\nwant exit %d, stderr %q", r.code, r.stderr, ctl.ExitGaveUp, want)
	}
	if strings.Contains(r.stderr, "deadline exceeded") {
		t.Errorf("stderr speaks of contexts: %q", r.stderr)
	}
}

// TestConnectionHints: TLS and token errors name what fixes them, against real servers.
func TestConnectionHints(t *testing.T) {
	whoami := func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			apiError(w, 401, "unauthenticated", "unknown, revoked or expired API token")
			return
		}
		writeJSON(w, 200, client.User{Username: "olga", Roles: []jobs.Role{}})
	}
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(whoami))
	t.Cleanup(tlsSrv.Close)
	plain := httptest.NewServer(http.HandlerFunc(whoami))
	t.Cleanup(plain.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(t.TempDir(), "other.pem")
	if err := os.WriteFile(otherCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: selfSigned(t)}), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(url, token string) map[string]string {
		return map[string]string{"TOKENFLEET_URL": url, "TOKENFLEET_TOKEN": token}
	}
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"unknown CA", env(tlsSrv.URL, "good"), nil, []string{"certificate signed by unknown authority", "give its CA certificate (PEM) with --ca-file FILE"}},
		{"another CA", env(tlsSrv.URL, "good"), []string{"--ca-file", otherCA}, []string{"not signed by a CA in --ca-file " + otherCA}},
		{"http to TLS", env(strings.Replace(tlsSrv.URL, "https://", "http://", 1), "good"), []string{"--ca-file", caFile}, []string{"use an https:// URL in --url (or TOKENFLEET_URL)"}},
		{"TLS to http", env(strings.Replace(plain.URL, "http://", "https://", 1), "good"), nil, []string{"the server does not speak TLS", "use an http:// URL"}},
		{"token refused", env(plain.URL, "bad"), nil, []string{"unauthenticated: ", "the coordinator refused the API token from $TOKENFLEET_TOKEN: pass a valid one with --token-file FILE or TOKENFLEET_TOKEN"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runCtl(t, tt.env, "", append(tt.args, "whoami")...)
			if r.code != 1 {
				t.Errorf("exit %d, want 1", r.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not say %q", r.stderr, w)
				}
			}
			oneLine(t, "stderr", r.stderr)
		})
	}
	if r := runCtl(t, env(tlsSrv.URL, "good"), "", "--ca-file", caFile, "whoami"); r.code != 0 || !strings.Contains(r.stdout, "olga") {
		t.Errorf("with its CA: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestIssueTokenByURI: issue --token takes a serial or a PKCS#11 URI, matched against
// what the agent reported; it must name exactly one token.
func TestIssueTokenByURI(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/tokens", 200, client.TokenList{Items: []client.Token{
		{Serial: "0001", Agent: "ws-01", Label: "alice", Manufacturer: "Aktiv Co.", Model: "Rutoken ECP"},
		{Serial: "0002", Agent: "ws-01", Label: "spare", Manufacturer: "Aktiv Co.", Model: "Rutoken ECP"},
		{Serial: "0003", Agent: "ws-01", Label: "spare", Manufacturer: "Yubico", Model: "YubiKey 5"},
	}})
	api.on("POST /api/v1/jobs", 201, client.Job{ID: "j9"})
	issue := []string{"issue", "--holder", "alice", "--agent", "ws-01", "--profile", "p"}
	for _, tt := range []struct {
		token  string
		code   int
		serial string // sent in the job; "" when none is sent
		stderr string
	}{
		{token: "pkcs11:model=Rutoken%20ECP;token=spare", serial: "0002"},
		{token: "PKCS11:manufacturer=Yubico", serial: "0003"},
		{token: "0001", serial: "0001"},
		{token: "pkcs11:model=Rutoken%20ECP", code: 1, stderr: "matches 2 tokens of agent ws-01 (serials 0001, 0002): add serial=... to the URI, or pass the serial"},
		{token: "pkcs11:model=eToken", code: 1, stderr: "matches no token agent ws-01 reported (tokenfleetctl tokens --agent ws-01 lists them)"},
		{token: "tf_secret_api_token", code: 1, stderr: "pass --token-serial; the API token goes in --token-file or TOKENFLEET_TOKEN"},
		{token: "pkcs11:tokne=x", code: 2, stderr: "--token: "},
	} {
		t.Run(tt.token, func(t *testing.T) {
			before := len(api.requests())
			r := runCtl(t, api.env(), "", append(issue, "--token", tt.token)...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Fatalf("exit %d, stderr %q; want exit %d, stderr with %q", r.code, r.stderr, tt.code, tt.stderr)
			}
			var sent []string
			for _, rq := range api.requests()[before:] {
				if rq.Method == "POST" {
					var body client.JobCreate
					if err := json.Unmarshal([]byte(rq.Body), &body); err != nil {
						t.Fatal(err)
					}
					sent = append(sent, body.TokenSerial)
				}
				if rq.Method == "GET" && rq.Query != "agent=ws-01&limit=500" {
					t.Errorf("tokens asked with %q", rq.Query)
				}
			}
			if tt.serial == "" && len(sent) != 0 || tt.serial != "" && (len(sent) != 1 || sent[0] != tt.serial) {
				t.Errorf("jobs sent with serials %q, want %q", sent, tt.serial)
			}
		})
	}
	if r := runCtl(t, api.env(), "", append(issue, "--token", "0001", "--token-serial", "0001")...); r.code != 2 || !strings.Contains(r.stderr, "pass --token or --token-serial, not both") {
		t.Errorf("both: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestJobsAwaitingMe: the filter goes to the coordinator, which applies the rules.
func TestJobsAwaitingMe(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/jobs", 200, client.JobList{Items: []client.Job{}})
	r := runCtl(t, api.env(), "", "jobs", "--awaiting-me", "--state", "pending_approval")
	if r.code != 0 || r.stdout != "no jobs awaiting your decision\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if q := api.requests()[0].Query; q != "awaiting_me=true&limit=51&state=pending_approval" {
		t.Errorf("query %q", q)
	}
}

func reviewedJob() client.JobDetail {
	d := client.JobDetail{Job: client.Job{ID: "j1", Kind: jobs.KindIssue, State: jobs.StatePendingApproval, Holder: "alice",
		Organization: "acme", Profile: "smartcard-logon", ProfileHash: strings.Repeat("ab", 32), Agent: "ws-01",
		Requester: "olga", Approvals: "0/1", BindingHash: strings.Repeat("5e", 32)},
		Subject: "CN=Alice Holder,O=acme", SANs: []string{"email:alice@acme.example", "upn:alice@acme.example"},
		TokenURI: "pkcs11:serial=0001", AgentPresence: "never_connected"}
	return d
}

// TestApproveShowsAndAsks: approve prints what is approved, asks on a terminal unless
// --yes, and binds the approval to the hash it showed.
func TestApproveShowsAndAsks(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/jobs/j1", 200, reviewedJob())
	approved := reviewedJob()
	approved.State, approved.Approvals = jobs.StateApproved, "1/1"
	api.on("POST /api/v1/jobs/j1/approve", 200, approved)
	for _, tt := range []struct {
		name     string
		terminal bool
		stdin    string
		args     []string
		code     int
		asked    bool
		posted   bool
	}{
		{name: "yes on a terminal", terminal: true, stdin: "y\n", code: 0, asked: true, posted: true},
		{name: "no on a terminal", terminal: true, stdin: "n\n", code: 1, asked: true},
		{name: "nothing on a terminal", terminal: true, stdin: "", code: 1, asked: true},
		{name: "--yes on a terminal", terminal: true, args: []string{"--yes"}, code: 0, posted: true},
		{name: "no terminal", stdin: "n\n", code: 0, posted: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(api.requests())
			r := runWith(api.env(), ctl.Env{Stdin: strings.NewReader(tt.stdin), IsTerminal: func(io.Reader) bool { return tt.terminal }},
				append([]string{"approve", "j1"}, tt.args...)...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d (stderr %q)", r.code, tt.code, r.stderr)
			}
			summary := r.stdout // the start of the output, or with the question when asking
			if tt.asked {
				summary = r.stderr
			}
			for _, w := range []string{"Approving job j1 (issue, request gate, approvals 0/1):\n", "  Holder        alice (acme)\n",
				"  Subject       CN=Alice Holder,O=acme\n", "  SANs          email:alice@acme.example, upn:alice@acme.example\n",
				"  Profile       smartcard-logon (hash abababababab…)\n", "  Target        agent ws-01, token pkcs11:serial=0001\n",
				"  Requester     olga\n", "  Binding hash  " + strings.Repeat("5e", 32) + "\n"} {
				if !strings.Contains(summary, w) {
					t.Errorf("the summary does not show %q:\n%s", w, summary)
				}
			}
			if asked := strings.Contains(r.stderr, "Approve job j1? [y/N] "); asked != tt.asked {
				t.Errorf("asked %v, want %v", asked, tt.asked)
			}
			var posts []seenRequest
			for _, rq := range api.requests()[before:] {
				if rq.Method == "POST" {
					posts = append(posts, rq)
				}
			}
			if tt.posted != (len(posts) == 1) {
				t.Fatalf("%d approvals sent, want posted %v", len(posts), tt.posted)
			}
			if tt.posted {
				if posts[0].Body != `{"binding_hash":"`+strings.Repeat("5e", 32)+`"}` {
					t.Errorf("approval body %s, want the binding hash shown", posts[0].Body)
				}
				if !strings.HasSuffix(r.stdout, "job j1 approved: state approved, approvals 1/1\n") {
					t.Errorf("stdout %q", r.stdout)
				}
			} else if !strings.Contains(r.stderr, "not approved: the job stays as it was") {
				t.Errorf("stderr %q", r.stderr)
			}
		})
	}
}

// TestAuditListNamesActors: the table shows usernames, --json keeps the IDs as well.
func TestAuditListNamesActors(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/audit", 200, client.AuditPage{Items: []client.AuditEntry{
		{Seq: 1, Time: fixedNow, Actor: "u7k3q", ActorName: "olga", Action: "job.created", Job: "j1"},
		{Seq: 2, Time: fixedNow, Actor: "system:expiry", ActorName: "system:expiry", Action: "job.expired", Job: "j1"},
	}})
	r := runCtl(t, api.env(), "", "audit", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "\n1    2025-06-01T12:00:00Z  olga           job.created") ||
		!strings.Contains(r.stdout, "system:expiry  job.expired") || strings.Contains(r.stdout, "u7k3q") {
		t.Errorf("exit %d, stdout:\n%s", r.code, r.stdout)
	}
	r = runCtl(t, api.env(), "", "audit", "list", "--json")
	if !strings.Contains(r.stdout, `"actor": "u7k3q"`) || !strings.Contains(r.stdout, `"actor_name": "olga"`) {
		t.Errorf("--json:\n%s", r.stdout)
	}
}

// TestJobShowNamesTheToken: job show gives the token's URI, the names approved and the
// agent's presence.
func TestJobShowNamesTheToken(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/jobs/j1", 200, reviewedJob())
	r := runCtl(t, api.env(), "", "job", "show", "j1")
	for _, w := range []string{"Agent         ws-01 (never connected)\n", "Token URI     pkcs11:serial=0001\n",
		"Subject       CN=Alice Holder,O=acme\n", "Binding hash  " + strings.Repeat("5e", 32) + "\n"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("job show does not show %q:\n%s", w, r.stdout)
		}
	}
}

// selfSigned is a CA certificate of its own, that signed nothing the servers present.
func selfSigned(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another CA"}, NotBefore: fixedNow.Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
