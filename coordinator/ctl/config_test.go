package ctl_test

import (
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// namedServer answers whoami with its own name and the token it received, so a test sees
// which URL and token tokenfleetctl chose.
func namedServer(t *testing.T, name string) *fakeAPI {
	f := newFakeAPI(t)
	f.routes["GET /api/v1/whoami"] = func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, client.User{Username: name, DisplayName: strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")})
	}
	return f
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConnectionPrecedence(t *testing.T) {
	flagSrv, envSrv, fileSrv := namedServer(t, "flag-server"), namedServer(t, "env-server"), namedServer(t, "file-server")
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	xdg := filepath.Join(dir, "xdg")
	writeFile(t, filepath.Join(xdg, "tokenfleet", "ctl.yaml"), "url: "+fileSrv.srv.URL+"\ntoken: xdg-file-token\n", 0o600)
	writeFile(t, filepath.Join(home, ".config", "tokenfleet", "ctl.yaml"), "url: "+fileSrv.srv.URL+"\ntoken: home-file-token\n", 0o600)
	writeFile(t, filepath.Join(dir, "tok"), "  flag-file-token\n", 0o600)
	writeFile(t, filepath.Join(dir, "conf", "tok"), "relative-file-token\n", 0o600)
	explicit := writeFile(t, filepath.Join(dir, "conf", "explicit.yaml"), "url: "+fileSrv.srv.URL+"\ntoken_file: tok\n", 0o600)

	tests := []struct {
		name       string
		env        map[string]string
		stdin      string
		args       []string
		wantServer string
		wantToken  string
	}{
		{
			name:       "flags beat environment and file",
			env:        map[string]string{"TOKENFLEET_URL": envSrv.srv.URL, "TOKENFLEET_TOKEN": "env-token", "XDG_CONFIG_HOME": xdg},
			args:       []string{"--url", flagSrv.srv.URL, "--token", "flag-token"},
			wantServer: "flag-server", wantToken: "flag-token",
		},
		{
			name:       "token file flag beats the environment",
			env:        map[string]string{"TOKENFLEET_URL": envSrv.srv.URL, "TOKENFLEET_TOKEN": "env-token"},
			args:       []string{"--token-file", filepath.Join(dir, "tok")},
			wantServer: "env-server", wantToken: "flag-file-token",
		},
		{
			name:       "token from standard input",
			env:        map[string]string{"TOKENFLEET_URL": envSrv.srv.URL},
			stdin:      "stdin-token\n",
			args:       []string{"--token-file", "-"},
			wantServer: "env-server", wantToken: "stdin-token",
		},
		{
			name:       "environment beats the file",
			env:        map[string]string{"TOKENFLEET_URL": envSrv.srv.URL, "TOKENFLEET_TOKEN": "env-token", "XDG_CONFIG_HOME": xdg},
			wantServer: "env-server", wantToken: "env-token",
		},
		{
			name:       "each setting on its own: URL from the environment, token from the file",
			env:        map[string]string{"TOKENFLEET_URL": envSrv.srv.URL, "XDG_CONFIG_HOME": xdg},
			wantServer: "env-server", wantToken: "xdg-file-token",
		},
		{
			name:       "XDG config before HOME",
			env:        map[string]string{"XDG_CONFIG_HOME": xdg, "HOME": home},
			wantServer: "file-server", wantToken: "xdg-file-token",
		},
		{
			name:       "HOME config without XDG",
			env:        map[string]string{"HOME": home},
			wantServer: "file-server", wantToken: "home-file-token",
		},
		{
			name:       "explicit config with a token file relative to it",
			env:        map[string]string{"XDG_CONFIG_HOME": xdg},
			args:       []string{"--config", explicit},
			wantServer: "file-server", wantToken: "relative-file-token",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{}, tt.args...), "whoami", "--json")
			r := runCtl(t, tt.env, tt.stdin, args...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stdout, `"username": "`+tt.wantServer+`"`) {
				t.Errorf("answered by the wrong server: %s", r.stdout)
			}
			if !strings.Contains(r.stdout, `"display_name": "`+tt.wantToken+`"`) {
				t.Errorf("sent the wrong token: %s", r.stdout)
			}
		})
	}
}

func TestConnectionErrors(t *testing.T) {
	srv := namedServer(t, "s")
	dir := t.TempDir()
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), "url: "+srv.srv.URL+"\ntoken: t\nproxy: x\n", 0o600)
	both := writeFile(t, filepath.Join(dir, "both.yaml"), "url: "+srv.srv.URL+"\ntoken: t\ntoken_file: f\n", 0o600)
	noToken := writeFile(t, filepath.Join(dir, "notoken.yaml"), "url: "+srv.srv.URL+"\n", 0o600)
	emptyTok := writeFile(t, filepath.Join(dir, "empty"), "\n", 0o600)
	notPEM := writeFile(t, filepath.Join(dir, "ca.pem"), "not a certificate\n", 0o600)

	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		want     string
	}{
		{"no URL anywhere", map[string]string{"HOME": dir}, nil, 1,
			"tokenfleetctl: whoami: no coordinator URL: pass --url, set TOKENFLEET_URL, or set url in the config file (" + filepath.Join(dir, ".config", "tokenfleet", "ctl.yaml") + ")"},
		{"no token anywhere", map[string]string{"TOKENFLEET_URL": srv.srv.URL}, nil, 1,
			"no API token: pass --token or --token-file, set TOKENFLEET_TOKEN, or set token or token_file in a config file given with --config"},
		{"no token in the config file", nil, []string{"--config", noToken}, 1,
			"no API token: pass --token or --token-file, set TOKENFLEET_TOKEN, or set token or token_file in " + noToken},
		{"explicit config file missing", nil, []string{"--config", filepath.Join(dir, "nope.yaml")}, 1,
			"config file: open " + filepath.Join(dir, "nope.yaml")},
		{"unknown field in the config file", nil, []string{"--config", bad}, 1, "config file " + bad + `:3:1: proxy: unknown field "proxy" (known fields: url, token, token_file, ca_file)`},
		{"token and token_file in the config file", nil, []string{"--config", both}, 1, "set token or token_file, not both"},
		{"token and token file flags", nil, []string{"--url", srv.srv.URL, "--token", "a", "--token-file", emptyTok}, 2,
			"pass --token or --token-file, not both"},
		{"empty token file", nil, []string{"--url", srv.srv.URL, "--token-file", emptyTok}, 1, "token file " + emptyTok + " is empty"},
		{"CA file without a certificate", nil, []string{"--url", srv.srv.URL, "--token", "t", "--ca-file", notPEM}, 1,
			"CA file " + notPEM + " holds no PEM certificate"},
		{"URL without a scheme", nil, []string{"--url", "127.0.0.1:8443", "--token", "t"}, 1, "want an http:// or https:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCtl(t, tt.env, "", append(tt.args, "whoami")...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d", r.code, tt.wantCode)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tt.want)
			}
			oneLine(t, "stderr", r.stderr)
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
		})
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("%d requests were sent despite the errors", n)
	}
}

func TestReadableConfigWarns(t *testing.T) {
	srv := namedServer(t, "s")
	path := writeFile(t, filepath.Join(t.TempDir(), "ctl.yaml"), "url: "+srv.srv.URL+"\ntoken: t\n", 0o644)
	r := runCtl(t, nil, "", "--config", path, "whoami")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "warning: "+path+" holds an API token and other users may read it (chmod 600 "+path+")") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestCAFile(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, client.User{Username: "tls-server"})
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := writeFile(t, filepath.Join(dir, "ca.pem"),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})), 0o644)
	conf := writeFile(t, filepath.Join(dir, "ctl.yaml"), "url: "+srv.URL+"\ntoken: t\nca_file: ca.pem\n", 0o600)

	r := runCtl(t, nil, "", "--url", srv.URL, "--token", "t", "whoami")
	if r.code != 1 || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("a server of an unknown CA: exit %d stderr %q", r.code, r.stderr)
	}
	for _, args := range [][]string{
		{"--url", srv.URL, "--token", "t", "--ca-file", ca, "whoami"},
		{"--config", conf, "whoami"},
	} {
		r = runCtl(t, nil, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "tls-server") {
			t.Errorf("%v: exit %d stderr %q", args, r.code, r.stderr)
		}
	}
}
