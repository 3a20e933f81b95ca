package client_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// serve starts a server that answers with h and returns a client of it.
func serve(t *testing.T, h http.HandlerFunc) *client.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, "secret-token")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func TestErrorDecoding(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		wantAPI     *client.Error // nil: want an UnexpectedResponseError
		wantText    string
	}{
		{
			name: "api error", status: 403, contentType: "application/json",
			body:     `{"error":{"code":"self_approval","message":"the requester cannot approve their own request"}}`,
			wantAPI:  &client.Error{Status: 403, Code: "self_approval", Message: "the requester cannot approve their own request"},
			wantText: "self_approval: the requester cannot approve their own request",
		},
		{
			name: "api error with field", status: 400, contentType: "application/json; charset=utf-8",
			body:     `{"error":{"code":"bad_request","message":"must not be empty","field":"holder"}}`,
			wantAPI:  &client.Error{Status: 400, Code: "bad_request", Message: "must not be empty", Field: "holder"},
			wantText: "bad_request: holder: must not be empty",
		},
		{
			name: "field already in the message", status: 400, contentType: "application/json",
			body:     `{"error":{"code":"invalid_profile","message":"approval.required: must be at most 10","field":"approval.required"}}`,
			wantAPI:  &client.Error{Status: 400, Code: "invalid_profile", Message: "approval.required: must be at most 10", Field: "approval.required"},
			wantText: "invalid_profile: approval.required: must be at most 10",
		},
		{
			name: "proxy html page", status: 502, contentType: "text/html",
			body:     "<html><body><h1>502 Bad Gateway</h1></body></html>",
			wantText: "HTTP 502 Bad Gateway with a text/html body",
		},
		{
			name: "json that is not the error shape", status: 404, contentType: "application/json",
			body:     `{"message":"no route"}`,
			wantText: "not a tokenfleet coordinator answer",
		},
		{
			name: "plain text 500", status: 500, contentType: "text/plain",
			body:     "internal error",
			wantText: "HTTP 500 Internal Server Error with a text/plain body",
		},
		{
			name: "success status with an html page", status: 200, contentType: "text/html",
			body:     "<html>login portal</html>",
			wantText: "HTTP 200 OK with a text/html body",
		},
		{
			name: "unexpected success status", status: 204, contentType: "",
			wantText: "HTTP 204 No Content with a no content type body",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serve(t, func(w http.ResponseWriter, _ *http.Request) {
				if tt.contentType != "" {
					w.Header().Set("Content-Type", tt.contentType)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			_, err := c.GetJob(context.Background(), "j1")
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not contain %q", err, tt.wantText)
			}
			var apiErr *client.Error
			var unexpected *client.UnexpectedResponseError
			switch {
			case tt.wantAPI != nil:
				if !errors.As(err, &apiErr) {
					t.Fatalf("error %T %v is not a *client.Error", err, err)
				}
				if !reflect.DeepEqual(*apiErr, *tt.wantAPI) {
					t.Errorf("got %+v, want %+v", *apiErr, *tt.wantAPI)
				}
				if got := client.ErrorCode(err); got != tt.wantAPI.Code {
					t.Errorf("ErrorCode = %q, want %q", got, tt.wantAPI.Code)
				}
			default:
				if !errors.As(err, &unexpected) {
					t.Fatalf("error %T %v is not an UnexpectedResponseError", err, err)
				}
				if unexpected.Status != tt.status {
					t.Errorf("status %d, want %d", unexpected.Status, tt.status)
				}
				if client.ErrorCode(err) != "" {
					t.Errorf("ErrorCode of a non-API error = %q", client.ErrorCode(err))
				}
			}
		})
	}
}

func TestRequests(t *testing.T) {
	ctx := context.Background()
	type seen struct {
		method, path, rawPath, query, auth, contentType, body string
	}
	tests := []struct {
		name   string
		status int
		reply  any
		call   func(c *client.Client) error
		want   seen
	}{
		{
			name: "list jobs with filters", status: 200, reply: client.JobList{},
			call: func(c *client.Client) error {
				_, err := c.ListJobs(ctx, client.JobFilter{State: jobs.StatePendingApproval, Organization: "acme", Holder: "alice",
					Agent: "ws-01", Kind: jobs.KindIssue}, client.Page{Limit: 20, Cursor: "abc"})
				return err
			},
			want: seen{method: "GET", path: "/api/v1/jobs",
				query: "agent=ws-01&cursor=abc&holder=alice&kind=issue&limit=20&organization=acme&state=pending_approval"},
		},
		{
			name: "create job", status: 201, reply: client.Job{ID: "j1"},
			call: func(c *client.Client) error {
				j, err := c.CreateJob(ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "smartcard-logon"})
				if err == nil && j.ID != "j1" {
					t.Errorf("job ID %q", j.ID)
				}
				return err
			},
			want: seen{method: "POST", path: "/api/v1/jobs", contentType: "application/json",
				body: `{"kind":"issue","holder":"alice","agent":"ws-01","profile":"smartcard-logon"}`},
		},
		{
			name: "approve escapes the job id", status: 200, reply: client.JobDetail{},
			call: func(c *client.Client) error {
				_, err := c.Approve(ctx, "a/b c", "looks right")
				return err
			},
			want: seen{method: "POST", path: "/api/v1/jobs/a/b c/approve", rawPath: "/api/v1/jobs/a%2Fb%20c/approve",
				contentType: "application/json", body: `{"reason":"looks right"}`},
		},
		{
			name: "cancel without a reason", status: 200, reply: client.JobDetail{},
			call: func(c *client.Client) error {
				_, err := c.Cancel(ctx, "j1", "")
				return err
			},
			want: seen{method: "POST", path: "/api/v1/jobs/j1/cancel", contentType: "application/json", body: `{}`},
		},
		{
			name: "apply profiles sends yaml", status: 200, reply: client.ProfileList{},
			call: func(c *client.Client) error {
				_, err := c.ApplyProfiles(ctx, []byte("name: p\n"))
				return err
			},
			want: seen{method: "PUT", path: "/api/v1/profiles", contentType: "application/yaml", body: "name: p\n"},
		},
		{
			name: "api token", status: 201, reply: client.APITokenIssued{Token: "t"},
			call: func(c *client.Client) error {
				_, err := c.CreateAPIToken(ctx, "op1", client.APITokenCreate{Name: "laptop", ExpiresIn: "90d"})
				return err
			},
			want: seen{method: "POST", path: "/api/v1/users/op1/tokens", contentType: "application/json",
				body: `{"name":"laptop","expires_in":"90d"}`},
		},
		{
			name: "users by org and role", status: 200, reply: client.UserList{},
			call: func(c *client.Client) error {
				_, err := c.ListUsers(ctx, client.UserFilter{Organization: "acme", Role: jobs.RoleApprover}, client.Page{})
				return err
			},
			want: seen{method: "GET", path: "/api/v1/users", query: "organization=acme&role=approver"},
		},
		{
			name: "certificates by token", status: 200, reply: client.CertificateList{},
			call: func(c *client.Client) error {
				_, err := c.ListCertificates(ctx, client.CertificateFilter{Token: "ABC1"}, client.Page{})
				return err
			},
			want: seen{method: "GET", path: "/api/v1/certificates", query: "token=ABC1"},
		},
		{
			name: "audit page", status: 200, reply: client.AuditPage{},
			call: func(c *client.Client) error {
				_, err := c.ListAudit(ctx, 500, 100)
				return err
			},
			want: seen{method: "GET", path: "/api/v1/audit", query: "after_seq=500&limit=100"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got seen
			c := serve(t, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got = seen{method: r.Method, path: r.URL.Path, rawPath: r.URL.RawPath, query: r.URL.RawQuery,
					auth: r.Header.Get("Authorization"), contentType: r.Header.Get("Content-Type"), body: string(b)}
				writeJSON(w, tt.status, tt.reply)
			})
			if err := tt.call(c); err != nil {
				t.Fatal(err)
			}
			tt.want.auth = "Bearer secret-token"
			if got != tt.want {
				t.Errorf("request\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestEmptyIDRefused(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		t.Error("a request was sent")
		writeJSON(w, 200, client.JobDetail{})
	})
	if _, err := c.GetJob(context.Background(), " "); err == nil || !strings.Contains(err.Error(), "job ID is empty") {
		t.Errorf("err = %v", err)
	}
	if _, err := c.CreateAPIToken(context.Background(), "", client.APITokenCreate{}); err == nil {
		t.Error("empty username accepted")
	}
	if err := c.SetPassword(context.Background(), " ", "a long enough password"); err == nil {
		t.Error("empty username accepted")
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     client.Health
		wantCode string
	}{
		{"healthy", 200, client.Health{Status: "ok", Store: "ok"}, ""},
		{"unhealthy", 503, client.Health{Status: "unhealthy", Store: "database is locked"}, "unhealthy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serve(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "" {
					t.Error("healthz was sent a token")
				}
				writeJSON(w, tt.status, tt.body)
			})
			h, err := c.Health(context.Background())
			if h != tt.body {
				t.Errorf("health %+v, want %+v", h, tt.body)
			}
			if got := client.ErrorCode(err); got != tt.wantCode {
				t.Errorf("code %q, want %q (err %v)", got, tt.wantCode, err)
			}
			if tt.wantCode != "" && !strings.Contains(err.Error(), tt.body.Store) {
				t.Errorf("error %q does not say what the store reported", err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		url, token, wantErr string
	}{
		{"http://127.0.0.1:8443", "t", ""},
		{"https://coordinator.example/prefix/", "t", ""},
		{"127.0.0.1:8443", "t", "http:// or https://"},
		{"ftp://x", "t", "http:// or https://"},
		{"http://", "t", "no host"},
		{"http://h/?a=b", "t", "query or fragment"},
		{"http://h", "t\nX-Evil: 1", "line break"},
	}
	for _, tt := range tests {
		_, err := client.New(tt.url, tt.token)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("New(%q): %v", tt.url, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("New(%q) = %v, want an error containing %q", tt.url, err, tt.wantErr)
		}
	}
}

func TestPathPrefix(t *testing.T) {
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		writeJSON(w, 200, client.User{Username: "admin"})
	}))
	defer srv.Close()
	c, err := client.New(srv.URL+"/tokenfleet/", "t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WhoAmI(context.Background()); err != nil {
		t.Fatal(err)
	}
	if path != "/tokenfleet/api/v1/whoami" {
		t.Errorf("path %q", path)
	}
}

func TestNoToken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("a request was sent without a token")
		writeJSON(w, 200, client.User{})
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WhoAmI(context.Background()); err == nil || !strings.Contains(err.Error(), "no API token") {
		t.Errorf("err = %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now
	c, err := client.New("http://"+addr, "t")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.WhoAmI(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot reach the coordinator at http://"+addr) {
		t.Errorf("err = %v", err)
	}
}

func TestCanceledContext(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, client.User{}) })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.WhoAmI(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestRootCAs(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, client.User{Username: "admin"})
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	defer srv.Close()

	untrusting, err := client.New(srv.URL, "t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusting.WhoAmI(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a certificate of an unknown CA was accepted or the error does not say so: %v", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	trusting, err := client.New(srv.URL, "t", client.WithRootCAs(pool))
	if err != nil {
		t.Fatal(err)
	}
	u, err := trusting.WhoAmI(context.Background())
	if err != nil || u.Username != "admin" {
		t.Errorf("WhoAmI = %+v, %v", u, err)
	}
}

func TestTimesDecode(t *testing.T) {
	// The server leaves unset times out or sends null; both stay zero.
	c := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"j1","state":"approved","created":"2025-03-04T05:06:07.123456Z","deadline":null}`)
	})
	d, err := c.GetJob(context.Background(), "j1")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC); !d.Created.Equal(want) || !d.Deadline.IsZero() {
		t.Errorf("created %v deadline %v", d.Created, d.Deadline)
	}
}

func TestRequestBodiesLeaveOutUnset(t *testing.T) {
	// What the client sends names only what the caller set: servers read an absent field
	// as its default, and older servers refuse fields they do not know.
	var got []string
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, strings.TrimSpace(string(b)))
		status := http.StatusOK
		if r.URL.Path == "/api/v1/jobs" {
			status = http.StatusCreated
		}
		writeJSON(w, status, map[string]any{})
	})
	ctx := context.Background()
	if _, err := c.CreateJob(ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-1", Profile: "p"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cancel(ctx, "j1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Retry(ctx, "j1", client.RetryRequest{}); err != nil {
		t.Fatal(err)
	}
	want := []string{`{"kind":"issue","holder":"alice","agent":"ws-1","profile":"p"}`, `{}`, `{}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("bodies sent:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
