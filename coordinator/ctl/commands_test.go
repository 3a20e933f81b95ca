package ctl_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

func TestAPIErrorsAreOneLine(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		route  string
		status int
		body   string
		ctype  string
		want   string
	}{
		{
			name: "self approval", args: []string{"approve", "j1"}, route: "POST /api/v1/jobs/j1/approve", status: 403,
			ctype: "application/json",
			body:  `{"error":{"code":"self_approval","message":"the requester cannot approve their own request"}}`,
			want:  "tokenfleetctl: approve: self_approval: the requester cannot approve their own request\n",
		},
		{
			name: "message over several lines", args: []string{"profile", "list"}, route: "GET /api/v1/profiles", status: 500,
			ctype: "application/json",
			body:  `{"error":{"code":"internal","message":"first\nsecond"}}`,
			want:  "tokenfleetctl: profile list: internal: first; second\n",
		},
		{
			name: "proxy page", args: []string{"jobs"}, route: "GET /api/v1/jobs", status: 502, ctype: "text/html",
			body: "<html><h1>Bad Gateway</h1>\n</html>",
			want: "with a text/html body from ",
		},
		{
			name: "unknown user", args: []string{"user", "token", "nobody"}, route: "POST /api/v1/users/nobody/tokens", status: 404,
			ctype: "application/json",
			body:  `{"error":{"code":"not_found","message":"no user nobody"}}`,
			want:  "tokenfleetctl: user token: not_found: no user nobody\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t)
			api.on("GET /api/v1/jobs/j1", 200, sampleJob()) // what approve shows first
			api.routes[tt.route] = func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", tt.ctype)
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}
			r := runCtl(t, api.env(), "", tt.args...)
			if r.code != 1 {
				t.Errorf("exit %d, want 1", r.code)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tt.want)
			}
			oneLine(t, "stderr", r.stderr)
			if r.stdout != "" && tt.args[0] != "approve" {
				t.Errorf("stdout %q", r.stdout)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"jobs", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"jobs", "--state", "waiting"}, `--state "waiting": want one of pending_approval, approved`},
		{[]string{"jobs", "--kind", "mint"}, `--kind "mint": want one of issue`},
		{[]string{"jobs", "--all", "--limit", "5"}, "pass --all or --limit, not both"},
		{[]string{"jobs", "--limit", "0"}, "--limit must be at least 1"},
		{[]string{"jobs", "extra"}, `takes no arguments, got "extra"`},
		{[]string{"job", "show"}, "want ID, got 0 argument(s)"},
		{[]string{"job", "show", ""}, "ID is empty"},
		{[]string{"reject", "j1"}, "a rejection needs a reason: pass --reason"},
		{[]string{"reject", "j1", "--reason", "  "}, "a rejection needs a reason"},
		{[]string{"issue", "--holder", "alice"}, `required flag(s) "agent", "profile" not set`},
		{[]string{"issue", "--holder", "a", "--agent", "b", "--profile", "c", "--kind", "mint"}, `--kind "mint"`},
		{[]string{"issue", "--holder", "a", "--agent", "b", "--profile", "c", "--deadline", "soon"}, `--deadline "soon"`},
		{[]string{"register", "export", "--format", "xlsx", "-o", "r.xlsx"}, `--format "xlsx": want csv or pdf`},
		{[]string{"register", "export", "--format", "csv"}, "-o is required"},
		{[]string{"register", "show", "extra"}, `takes no arguments, got "extra"`},
		{[]string{"user", "create", "bob", "--role", "Boss!"}, `--role "Boss!": want one of helpdesk, approver`},
		{[]string{"user", "create", "bob", "--attr", "nokey"}, `--attr "nokey": want key=value`},
		{[]string{"user", "create", "bob", "--attr", "a=1", "--attr", "a=2"}, "--attr a given twice"},
		{[]string{"user", "token", "bob", "--expires", "soon"}, "--expires: duration"},
		{[]string{"user", "list", "--role", "Boss!"}, `--role "Boss!"`},
		{[]string{"audit", "verify", "--page-size", "0"}, "--page-size must be between 1 and 5000"},
		{[]string{"audit", "list", "--after", "-1"}, "--after must not be negative"},
		{[]string{"encryption-key", "list"}, "name the holder (--holder USER)"},
		{[]string{"encryption-key", "list", "--holder", "a", "--json", "--pem"}, "give one"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			api := newFakeAPI(t)
			r := runCtl(t, api.env(), "", tt.args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tt.want)
			}
			if !strings.Contains(r.stderr, "--help)") {
				t.Errorf("stderr %q does not point to --help", r.stderr)
			}
			oneLine(t, "stderr", r.stderr)
			if n := len(api.requests()); n != 0 {
				t.Errorf("%d requests sent for a wrong command line", n)
			}
		})
	}
}

func TestIssuePrintsOnlyTheJobID(t *testing.T) {
	api := newFakeAPI(t)
	api.on("POST /api/v1/jobs", 201, client.Job{ID: "job-123", State: jobs.StatePendingApproval})
	r := runCtl(t, api.env(), "", "issue", "--holder", "alice", "--agent", "ws-01", "--profile", "smartcard-logon",
		"--token-serial", "ABC", "--deadline", "72h")
	if r.code != 0 || r.stdout != "job-123\n" || r.stderr != "" {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	var sent client.JobCreate
	if err := json.Unmarshal([]byte(api.requests()[0].Body), &sent); err != nil {
		t.Fatal(err)
	}
	want := client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "smartcard-logon",
		TokenSerial: "ABC", Deadline: fixedNow.Add(72 * time.Hour)}
	if sent != want {
		t.Errorf("sent %+v, want %+v", sent, want)
	}
	if got := api.requests()[0].Auth; got != "Bearer test-token" {
		t.Errorf("authorization %q", got)
	}
}

func TestUserTokenPrintsOnlyTheToken(t *testing.T) {
	api := newFakeAPI(t)
	api.on("POST /api/v1/users/op1/tokens", 201, client.APITokenIssued{ID: "tid", Token: "tf_secret", Username: "op1"})
	r := runCtl(t, api.env(), "", "user", "token", "op1", "--name", "laptop", "--expires", "90d")
	if r.code != 0 || r.stdout != "tf_secret\n" || r.stderr != "" {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := api.requests()[0].Body; got != `{"name":"laptop","expires_in":"90d"}` {
		t.Errorf("body %s", got)
	}
}

func TestUserCreate(t *testing.T) {
	api := newFakeAPI(t)
	api.routes["POST /api/v1/users"] = func(w http.ResponseWriter, r *http.Request) {
		var u client.UserCreate
		_ = json.NewDecoder(r.Body).Decode(&u)
		writeJSON(w, 201, client.User{ID: "u1", Username: u.Username, Organization: u.Organization, Roles: u.Roles})
	}
	r := runCtl(t, api.env(), "", "user", "create", "bob", "--name", "Bob B", "--email", "bob@acme.test", "--upn", "bob@acme.test",
		"--org", "acme", "--role", "helpdesk", "--role", "approver", "--role", "helpdesk", "--attr", "employee_id=42", "--attr", "site=a=b")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if r.stdout != "user bob created (id u1, organisation acme, roles helpdesk,approver)\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	want := `{"username":"bob","display_name":"Bob B","email":"bob@acme.test","upn":"bob@acme.test","organization":"acme","attributes":{"employee_id":"42","site":"a=b"},"roles":["helpdesk","approver"]}`
	if got := api.requests()[0].Body; got != want {
		t.Errorf("body\n got %s\nwant %s", got, want)
	}
}

func TestProfileApply(t *testing.T) {
	doc := "name: p1\nkey: {type: ec, curve: p256}\n"
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, arg, stdin string
	}{
		{"file", path, ""},
		{"standard input", "-", doc},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t)
			api.on("PUT /api/v1/profiles", 200, client.ProfileList{Items: []client.Profile{{Name: "p1", Version: 3, Key: "p256",
				ApprovalsRequired: 1, Updated: fixedNow, UpdatedBy: "admin", Description: "test"}}})
			r := runCtl(t, api.env(), tt.stdin, "profile", "apply", tt.arg)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			req := api.requests()[0]
			if req.ContentType != "application/yaml" || req.Body != doc {
				t.Errorf("sent %q as %s", req.Body, req.ContentType)
			}
			want := "NAME  VERSION  KEY   APPROVALS  CA GATE  UPDATED               BY     DESCRIPTION\n" +
				"p1    3        p256  1          no       2025-06-01T12:00:00Z  admin  test\n"
			if r.stdout != want {
				t.Errorf("stdout\n%s\nwant\n%s", r.stdout, want)
			}
		})
	}
	api := newFakeAPI(t)
	r := runCtl(t, api.env(), "", "profile", "apply", filepath.Join(t.TempDir(), "missing.yaml"))
	if r.code != 1 || !strings.Contains(r.stderr, "missing.yaml: no such file") {
		t.Errorf("exit %d stderr %q", r.code, r.stderr)
	}
}

// pagedJobs serves n jobs in pages of the requested limit.
func pagedJobs(n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		off, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
		var l client.JobList
		for i := off; i < n && i < off+limit; i++ {
			l.Items = append(l.Items, client.Job{ID: "j" + strconv.Itoa(i), Kind: jobs.KindIssue, State: jobs.StatePendingApproval,
				Holder: "alice", Profile: "smartcard-logon", Agent: "ws-01", Approvals: "0/1", Requester: "op1", Updated: fixedNow})
		}
		if off+limit < n {
			l.NextCursor = strconv.Itoa(off + limit)
		}
		writeJSON(w, 200, l)
	}
}

func TestJobsListing(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		args      []string
		wantRows  int
		wantMore  bool
		wantQuery string // of the first request
	}{
		{"default limit", 60, nil, 50, true, "limit=51"},
		{"under the limit", 3, nil, 3, false, "limit=51"},
		{"exactly the limit", 5, []string{"--limit", "5"}, 5, false, "limit=6"},
		{"all pages", 1203, []string{"--all"}, 1203, false, "limit=500"},
		{"filters", 2, []string{"--state", "pending_approval", "--org", "acme", "--holder", "alice", "--agent", "ws-01", "--kind", "issue"}, 2, false,
			"agent=ws-01&holder=alice&kind=issue&limit=51&organization=acme&state=pending_approval"},
		{"none", 0, nil, 0, false, "limit=51"},
	}
	for _, tt := range tests {
		for _, asJSON := range []bool{false, true} {
			name := tt.name
			if asJSON {
				name += " json"
			}
			t.Run(name, func(t *testing.T) {
				api := newFakeAPI(t)
				api.routes["GET /api/v1/jobs"] = pagedJobs(tt.n)
				args := append([]string{"jobs"}, tt.args...)
				if asJSON {
					args = append(args, "--json")
				}
				r := runCtl(t, api.env(), "", args...)
				if r.code != 0 {
					t.Fatalf("exit %d: %s", r.code, r.stderr)
				}
				if q := api.requests()[0].Query; q != tt.wantQuery {
					t.Errorf("query %q, want %q", q, tt.wantQuery)
				}
				if gotMore := strings.Contains(r.stderr, "only the first"); gotMore != tt.wantMore {
					t.Errorf("more-hint %v, want %v: %q", gotMore, tt.wantMore, r.stderr)
				}
				if asJSON {
					var got []client.Job
					if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
						t.Fatalf("stdout is not a JSON array of jobs: %v\n%s", err, r.stdout)
					}
					if len(got) != tt.wantRows || (tt.wantRows > 0 && got[0].State != jobs.StatePendingApproval) {
						t.Errorf("%d jobs, want %d", len(got), tt.wantRows)
					}
					return
				}
				lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
				if tt.wantRows == 0 {
					if r.stdout != "no jobs\n" {
						t.Errorf("stdout %q", r.stdout)
					}
					return
				}
				if len(lines) != tt.wantRows+1 {
					t.Fatalf("%d lines, want a header and %d rows", len(lines), tt.wantRows)
				}
				wantHeader := "ID KIND STATE HOLDER PROFILE AGENT APPROVALS REQUESTER UPDATED"
				wantRow := "issue  pending_approval  alice   smartcard-logon  ws-01  0/1        op1        2025-06-01T12:00:00Z"
				if got := strings.Join(strings.Fields(lines[0]), " "); got != wantHeader {
					t.Errorf("header %q", lines[0])
				}
				if !strings.HasSuffix(lines[1], wantRow) {
					t.Errorf("row %q does not end with %q", lines[1], wantRow)
				}
				// Columns are aligned: every row's STATE starts where the header's does.
				col := strings.Index(lines[0], "STATE")
				for _, l := range lines[1:] {
					if l[col:col+len("pending_approval")] != "pending_approval" {
						t.Fatalf("row %q is not aligned with the header %q", l, lines[0])
					}
				}
			})
		}
	}
}

func sampleJob() client.JobDetail {
	t0 := fixedNow.Add(-2 * time.Hour)
	return client.JobDetail{
		Job: client.Job{ID: "j1", Kind: jobs.KindIssue, State: jobs.StateApproved, Holder: "alice", Profile: "smartcard-logon",
			ProfileHash: "0123456789abcdef0123", Agent: "ws-01", Requester: "op1", Organization: "acme", Attempt: 1,
			Approvals: "1/1", Deadline: fixedNow.Add(70 * time.Hour), Created: t0, Updated: t0.Add(time.Hour)},
		ApprovalList: []client.JobApproval{
			{Gate: jobs.GateRequest, Approver: "appr1", Decision: jobs.VerdictApprove, Reason: "ok\x1b[31m red", At: t0.Add(time.Hour), Valid: true},
		},
		Timeline: []client.JobEvent{
			{To: jobs.StatePendingApproval, Attempt: 1, Actor: "op1", At: t0},
			{From: jobs.StatePendingApproval, To: jobs.StateApproved, Attempt: 1, Actor: "appr1", Reason: "approvals complete", At: t0.Add(time.Hour)},
		},
	}
}

func TestJobShow(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/jobs/j1", 200, sampleJob())
	r := runCtl(t, api.env(), "", "job", "show", "j1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	want := `Job           j1
Kind          issue
State         approved
Holder        alice
Organization  acme
Profile       smartcard-logon (hash 0123456789ab…)
Agent         ws-01
Token         any the profile allows
Requester     op1
Approvals     1/1
Attempt       1
Deadline      2025-06-04T10:00:00Z (in 3d)
Created       2025-06-01T10:00:00Z (2h ago)
Updated       2025-06-01T11:00:00Z (1h ago)

Approvals:
  GATE     APPROVER  DECISION  VALID  AT                    REASON
  request  appr1     approve   yes    2025-06-01T11:00:00Z  ok\x1b[31m red

Timeline:
  AT                    FROM              TO                ATTEMPT  ACTOR  REASON
  2025-06-01T10:00:00Z  (new)             pending_approval  1        op1    -
  2025-06-01T11:00:00Z  pending_approval  approved          1        appr1  approvals complete

Steps:
  none yet
`
	if r.stdout != want {
		t.Errorf("stdout\n%s\nwant\n%s", r.stdout, want)
	}

	r = runCtl(t, api.env(), "", "job", "show", "j1", "--json")
	var got client.JobDetail
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != "j1" || len(got.ApprovalList) != 1 || len(got.Timeline) != 2 || !got.Deadline.Equal(sampleJob().Deadline) {
		t.Errorf("json %+v", got)
	}
}

func TestDecisions(t *testing.T) {
	pending := sampleJob()
	pending.State, pending.Approvals = jobs.StatePendingApproval, "1/2"
	rejected := sampleJob()
	rejected.State, rejected.Approvals = jobs.StateRejected, ""
	cancelled := sampleJob()
	cancelled.State, cancelled.Approvals = jobs.StateCancelled, ""
	hash := strings.Repeat("b1", 32)
	reviewed := sampleJob()
	reviewed.State, reviewed.Approvals, reviewed.BindingHash = jobs.StatePendingApproval, "0/1", hash
	tests := []struct {
		args     []string
		route    string
		reply    client.JobDetail
		wantBody string
		want     string
	}{
		// approve binds the approval to the binding hash of the job it read first.
		{[]string{"approve", "j1"}, "POST /api/v1/jobs/j1/approve", sampleJob(), `{"binding_hash":"` + hash + `"}`, "job j1 approved: state approved, approvals 1/1\n"},
		{[]string{"approve", "j1", "--reason", "checked ID"}, "POST /api/v1/jobs/j1/approve", pending, `{"reason":"checked ID","binding_hash":"` + hash + `"}`,
			"job j1: approval recorded; still pending_approval, approvals 1/2\n"},
		{[]string{"reject", "j1", "--reason", "not employed here"}, "POST /api/v1/jobs/j1/reject", rejected, `{"reason":"not employed here"}`,
			"job j1 rejected: state rejected\n"},
		{[]string{"cancel", "j1"}, "POST /api/v1/jobs/j1/cancel", cancelled, `{}`, "job j1 cancelled: state cancelled\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			api := newFakeAPI(t)
			api.on(tt.route, 200, tt.reply)
			api.on("GET /api/v1/jobs/j1", 200, reviewed)
			r := runCtl(t, api.env(), "", tt.args...)
			// approve shows what it approves first.
			if r.code != 0 || !strings.HasSuffix(r.stdout, tt.want) || (tt.args[0] != "approve") != (r.stdout == tt.want) {
				t.Errorf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
			}
			reqs := api.requests()
			if got := reqs[len(reqs)-1].Body; got != tt.wantBody {
				t.Errorf("body %s, want %s", got, tt.wantBody)
			}
			r = runCtl(t, api.env(), "", append(tt.args, "--json")...)
			var d client.JobDetail
			if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.State != tt.reply.State {
				t.Errorf("json %q: %v", r.stdout, err)
			}
		})
	}
}

func TestFleetListings(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/agents", 200, client.AgentList{Items: []client.Agent{
		{ID: "ws-01", Hostname: "ws-01.acme.test", OS: "linux", Version: "1.0.0", Online: true, LastSeen: fixedNow.Add(-3 * time.Minute), Approved: true,
			Enrolled: fixedNow.Add(-48 * time.Hour), State: "active", Tags: []string{"site:paris", "laptop"}},
		{ID: "ws-02", Hostname: "ws-02.acme.test", OS: "windows", Version: "1.0.0", LastSeen: fixedNow.Add(-72 * time.Hour), State: "pending"},
	}})
	api.on("GET /api/v1/tokens", 200, client.TokenList{Items: []client.Token{
		{Serial: "ABC123", Agent: "ws-01", Label: "alice\tsmith", Manufacturer: "SoftHSM project", Model: "SoftHSM v2", LastSeen: fixedNow.Add(-10 * time.Second)},
	}})
	api.on("GET /api/v1/certificates", 200, client.CertificateList{Items: []client.Certificate{
		{Serial: "1a", Holder: "alice", Profile: "smartcard-logon", Subject: "CN=Alice", TokenSerial: "ABC123", NotAfter: fixedNow.Add(24 * time.Hour)},
		{Serial: "1b", Holder: "alice", Profile: "smartcard-logon", Subject: "CN=Alice", NotAfter: fixedNow.Add(-time.Hour)},
		{Serial: "1c", Holder: "bob", Profile: "email-signing", Subject: "CN=Bob", NotAfter: fixedNow.Add(time.Hour), RevokedAt: fixedNow.Add(-time.Minute)},
	}})
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"agents"}, `ID     HOSTNAME         OS       VERSION  STATE    PRESENCE  LAST SEEN  TAGS               ENROLLED
ws-01  ws-01.acme.test  linux    1.0.0    active   online    3m ago     site:paris,laptop  2025-05-30T12:00:00Z
ws-02  ws-02.acme.test  windows  1.0.0    pending  offline   3d ago     -                  -
`},
		{[]string{"tokens", "--agent", "ws-01"}, `SERIAL  AGENT  LABEL         MANUFACTURER     MODEL       STATE   LAST SEEN
ABC123  ws-01  alice\tsmith  SoftHSM project  SoftHSM v2  active  10s ago
`},
		{[]string{"certs", "--holder", "alice"}, `SERIAL  HOLDER  PROFILE          SUBJECT   TOKEN   NOT AFTER             STATUS
1a      alice   smartcard-logon  CN=Alice  ABC123  2025-06-02T12:00:00Z  valid
1b      alice   smartcard-logon  CN=Alice  -       2025-06-01T11:00:00Z  expired
1c      bob     email-signing    CN=Bob    -       2025-06-01T13:00:00Z  revoked 2025-06-01T11:59:00Z
`},
	}
	for _, tt := range tests {
		r := runCtl(t, api.env(), "", tt.args...)
		if r.code != 0 || r.stdout != tt.want {
			t.Errorf("%v: exit %d stderr %q stdout\n%s\nwant\n%s", tt.args, r.code, r.stderr, r.stdout, tt.want)
		}
		r = runCtl(t, api.env(), "", append(tt.args, "--json")...)
		var items []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &items); err != nil || len(items) == 0 {
			t.Errorf("%v --json: %v\n%s", tt.args, err, r.stdout)
		}
	}
	for _, args := range [][]string{{"agents", "--pending"}, {"agents", "--state", "disabled"},
		{"agents", "--offline", "--search", "ws-0"}, {"tokens", "--holder", "alice", "--model", "yubi", "--search", "AB"},
		{"certs", "--profile", "smartcard-logon", "--valid", "--expiring", "30d"}} {
		if r := runCtl(t, api.env(), "", args...); r.code != 0 {
			t.Errorf("%v: exit %d stderr %q", args, r.code, r.stderr)
		}
	}
	for _, args := range [][]string{{"agents", "--online", "--offline"}, {"certs", "--revoked", "--valid"}, {"certs", "--expiring", "soon"}} {
		if r := runCtl(t, api.env(), "", args...); r.code != 2 {
			t.Errorf("%v: exit %d stderr %q", args, r.code, r.stderr)
		}
	}
	var queries []string
	for _, req := range api.requests() {
		queries = append(queries, req.Path+"?"+req.Query)
	}
	for _, want := range []string{"/api/v1/tokens?agent=ws-01&limit=51", "/api/v1/certificates?holder=alice&limit=51",
		"/api/v1/agents?limit=51&state=pending", "/api/v1/agents?limit=51&state=disabled",
		"/api/v1/agents?limit=51&online=false&q=ws-0", "/api/v1/tokens?holder=alice&limit=51&model=yubi&q=AB",
		"/api/v1/certificates?expires_before=" + url.QueryEscape(fixedNow.Add(30*24*time.Hour).UTC().Format(time.RFC3339)) +
			"&limit=51&profile=smartcard-logon&revoked=false"} {
		if !strings.Contains(strings.Join(queries, " "), want) {
			t.Errorf("no request %s among %v", want, queries)
		}
	}
}

func TestWhoAmIAndLists(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/whoami", 200, client.User{ID: "u1", Username: "op1", DisplayName: "Olga Operator", Organization: "acme",
		Roles: []jobs.Role{jobs.RoleHelpdesk}, Attributes: map[string]string{"site": "paris", "floor": "3"}, Created: fixedNow})
	api.on("GET /api/v1/orgs", 200, client.OrgList{Items: []client.Org{{ID: "o1", Name: "acme", Created: fixedNow}}})
	api.on("GET /api/v1/users", 200, client.UserList{Items: []client.User{{Username: "op1", Organization: "acme",
		Roles: []jobs.Role{jobs.RoleHelpdesk, jobs.RoleApprover}, Email: "op1@acme.test"}}})
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"whoami"}, `Username         op1
ID               u1
Name             Olga Operator
Email            -
UPN              -
Organization     acme
Roles            helpdesk
Attribute floor  3
Attribute site   paris
Disabled         no
Created          2025-06-01T12:00:00Z
`},
		{[]string{"org", "list"}, "NAME  ID  CREATED\nacme  o1  2025-06-01T12:00:00Z\n"},
		{[]string{"user", "list", "--org", "acme", "--role", "helpdesk"}, `USERNAME  NAME  ORGANISATION  ROLES              EMAIL          UPN  STATUS
op1       -     acme          helpdesk,approver  op1@acme.test  -    active
`},
	}
	for _, tt := range tests {
		r := runCtl(t, api.env(), "", tt.args...)
		if r.code != 0 || r.stdout != tt.want {
			t.Errorf("%v: exit %d stderr %q stdout\n%s\nwant\n%s", tt.args, r.code, r.stderr, r.stdout, tt.want)
		}
	}
	if q := api.requests()[2].Query; q != "limit=51&organization=acme&role=helpdesk" {
		t.Errorf("user list query %q", q)
	}
	if r := runCtl(t, api.env(), "", "user", "list", "--search", "olga"); r.code != 0 {
		t.Fatalf("user list --search: exit %d stderr %q", r.code, r.stderr)
	}
	if reqs := api.requests(); reqs[len(reqs)-1].Query != "limit=51&q=olga" {
		t.Errorf("user list --search query %q", reqs[len(reqs)-1].Query)
	}
}

func TestShowCommands(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/profiles/smartcard-logon", 200, client.Profile{Name: "smartcard-logon", Version: 2, Hash: "abc",
		Updated: fixedNow, UpdatedBy: "admin", YAML: "name: smartcard-logon\n"})
	api.on("GET /api/v1/users/alice", 200, client.User{ID: "u9", Username: "alice", DisplayName: "Alice Holder",
		Email: "alice@acme.example", UPN: "alice@acme.example", Organization: "acme", Created: fixedNow})
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"profile", "show", "smartcard-logon"},
			"# smartcard-logon version 2, hash abc, updated 2025-06-01T12:00:00Z by admin\nname: smartcard-logon\n"},
		{[]string{"user", "show", "alice"}, `Username      alice
ID            u9
Name          Alice Holder
Email         alice@acme.example
UPN           alice@acme.example
Organization  acme
Roles         -
Disabled      no
Created       2025-06-01T12:00:00Z
`},
	}
	for _, tt := range tests {
		r := runCtl(t, api.env(), "", tt.args...)
		if r.code != 0 || r.stdout != tt.want {
			t.Errorf("%v: exit %d stderr %q stdout\n%s\nwant\n%s", tt.args, r.code, r.stderr, r.stdout, tt.want)
		}
		r = runCtl(t, api.env(), "", append(tt.args, "--json")...)
		var obj map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &obj); err != nil || obj["name"] == nil && obj["username"] == nil {
			t.Errorf("%v --json: %v\n%s", tt.args, err, r.stdout)
		}
	}
}
