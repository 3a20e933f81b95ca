package ctl_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// TestUserPassword: the password comes from standard input (its first line), or is asked
// twice at a terminal; never from the command line.
func TestUserPassword(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	api.routes["PUT /api/v1/users/ann/password"] = func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }
	api.routes["PUT /api/v1/users/bob/password"] = func(w http.ResponseWriter, _ *http.Request) {
		apiError(w, 400, "bad_request", "password: is 5 characters long; use at least 12")
	}
	sent := func() []string {
		var out []string
		for _, r := range api.requests() {
			out = append(out, r.Method+" "+r.Path+" "+r.Body)
		}
		return out
	}

	r := runCtl(t, api.env(), "a piped passphrase\nignored second line\n", "user", "password", "ann")
	if r.code != 0 || r.stdout != "password of ann set; their console sessions were ended\n" || r.stderr != "" {
		t.Fatalf("piped: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if s := sent(); len(s) != 1 || !strings.Contains(s[0], `{"password":"a piped passphrase"}`) {
		t.Fatalf("sent %q", s)
	}
	// Windows line endings and a last line without one.
	if r := runCtl(t, api.env(), "crlf passphrase\r\n", "user", "password", "ann"); r.code != 0 {
		t.Fatalf("CRLF: %+v", r)
	}
	if r := runCtl(t, api.env(), "no newline passphrase", "user", "password", "ann"); r.code != 0 {
		t.Fatalf("no newline: %+v", r)
	}
	if s := sent(); !strings.Contains(s[1], `"crlf passphrase"}`) || !strings.Contains(s[2], `"no newline passphrase"}`) {
		t.Fatalf("sent %q", s)
	}

	for _, tc := range []struct{ name, stdin, want string }{
		{"empty", "", "no password on standard input"},
		{"empty line", "\nsecond\n", "no password on standard input"},
		{"too long", strings.Repeat("p", 5000), "longer than 4096 bytes"},
	} {
		r := runCtl(t, api.env(), tc.stdin, "user", "password", "ann")
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q, want it to say %q", tc.name, r.code, r.stderr, tc.want)
		}
	}
	if r := runCtl(t, api.env(), "pw\n", "user", "password", "ann", "extra"); r.code != 2 {
		t.Errorf("two arguments: exit %d", r.code)
	}
	// The coordinator's refusal is shown as it is.
	r = runCtl(t, api.env(), "short\n", "user", "password", "bob")
	if r.code != 1 || !strings.Contains(r.stderr, "bad_request: password: is 5 characters long; use at least 12") {
		t.Errorf("refused: exit %d, stderr %q", r.code, r.stderr)
	}

	// At a terminal: asked twice; two different answers change nothing.
	before := len(sent())
	term := func(stdin string) result {
		return runWith(api.env(), ctl.Env{Stdin: strings.NewReader(stdin), IsTerminal: func(io.Reader) bool { return true }},
			"user", "password", "ann")
	}
	r = term("typed passphrase\ntyped passphrase\n")
	if r.code != 0 || !strings.Contains(r.stderr, "New console password for ann: ") || !strings.Contains(r.stderr, "Again: ") {
		t.Fatalf("at a terminal: exit %d, stderr %q", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "typed passphrase") || strings.Contains(r.stdout, "typed passphrase") {
		t.Fatal("the password was printed")
	}
	r = term("typed passphrase\nanother passphrase\n")
	if r.code != 2 || !strings.Contains(r.stderr, "the two passwords differ; nothing was changed") {
		t.Fatalf("different answers: exit %d, stderr %q", r.code, r.stderr)
	}
	r = term("\n")
	if r.code != 2 || !strings.Contains(r.stderr, "no password given") {
		t.Fatalf("nothing typed: exit %d, stderr %q", r.code, r.stderr)
	}
	if s := sent(); len(s) != before+1 {
		t.Fatalf("requests after the terminal runs: %q", s[before:])
	}
}

// TestUserPasswordCoordinator sets a password through the real coordinator: an
// administrator anyone's, a person their own, nobody else's.
func TestUserPasswordCoordinator(t *testing.T) {
	t.Parallel()
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	admin := map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": inst.AdminToken}
	for _, args := range [][]string{{"org", "create", "acme"}, {"user", "create", "ann", "--org", "acme"}, {"user", "create", "bob", "--org", "acme"}} {
		if r := runCtl(t, admin, "", args...); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	if r := runCtl(t, admin, "ann's first passphrase\n", "user", "password", "ann"); r.code != 0 {
		t.Fatalf("admin sets ann's: %+v", r)
	}
	tok := strings.TrimSpace(runCtl(t, admin, "", "user", "token", "ann").stdout)
	ann := map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": tok}
	if r := runCtl(t, ann, "ann's own passphrase\n", "user", "password", "ann"); r.code != 0 {
		t.Fatalf("ann sets her own: %+v", r)
	}
	if r := runCtl(t, ann, "bob's passphrase by ann\n", "user", "password", "bob"); r.code != 1 || !strings.Contains(r.stderr, "forbidden") {
		t.Fatalf("ann sets bob's: %+v", r)
	}
	if r := runCtl(t, admin, "short\n", "user", "password", "bob"); r.code != 1 || !strings.Contains(r.stderr, "at least 12") {
		t.Fatalf("short: %+v", r)
	}
	// Identity provider links: none yet, and only manage_users removes them.
	if r := runCtl(t, admin, "", "user", "unlink-oidc", "ann"); r.code != 2 || !strings.Contains(r.stderr, "--reason is required") {
		t.Fatalf("unlink without a reason: %+v", r)
	}
	if r := runCtl(t, admin, "", "user", "unlink-oidc", "ann", "--reason", "new account at the provider"); r.code != 0 ||
		r.stdout != "0 identity provider links of ann removed\n" {
		t.Fatalf("unlink: %+v", r)
	}
	svc, err := service.New(service.Options{Store: inst.Store, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SignInOIDC(context.Background(), service.OIDCIdentity{Issuer: "https://idp.example.test", Subject: "s1", Username: "ann"}, "test"); err != nil {
		t.Fatal(err)
	}
	if r := runCtl(t, admin, "", "user", "unlink-oidc", "ann", "--reason", "new account at the provider"); r.code != 0 ||
		r.stdout != "1 identity provider link of ann removed\n" {
		t.Fatalf("unlink: %+v", r)
	}
	if r := runCtl(t, ann, "", "user", "unlink-oidc", "bob", "--reason", "x"); r.code != 1 || !strings.Contains(r.stderr, "forbidden") {
		t.Fatalf("ann unlinks bob: %+v", r)
	}
	// The coordinator's store now signs ann in with her own password only.
	if _, err := svc.SignInPassword(context.Background(), "ann", "ann's own passphrase", "test"); err != nil {
		t.Fatalf("sign in with the password set: %v", err)
	}
	if _, err := svc.SignInPassword(context.Background(), "ann", "ann's first passphrase", "test"); err == nil {
		t.Fatal("the replaced password still signs in")
	}
}
