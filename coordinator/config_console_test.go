package coordinator_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

func TestConsoleConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secret := filepath.Join(dir, "client.secret")
	if err := os.WriteFile(secret, []byte("s3cr3t-of-the-client\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.secret")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	// Defaults: on, 30 minutes idle, 12 hours at most, 5 attempts, 1 minute doubling to
	// an hour; no identity provider.
	def := coordinator.DefaultConfig()
	if err := def.Validate(); err != nil {
		t.Fatal(err)
	}
	want := service.SignInOptions{SessionIdle: 30 * time.Minute, SessionMax: 12 * time.Hour, LockoutAttempts: 5,
		LockoutFirst: time.Minute, LockoutMax: time.Hour, UsernameClaim: "preferred_username"}
	if got := def.SignInOptions(); got != want || !def.Console.Enabled || def.OIDCEnabled() {
		t.Fatalf("defaults %+v", got)
	}

	cfg, err := coordinator.LoadConfig(writeConfig(t, `console:
  enabled: false
  session_idle: 15m
  session_max: 8h
  lockout: {attempts: 3, first: 30s, max: 2h}
  oidc:
    issuer: https://idp.example.org/realms/acme
    client_id: tokenfleet-console
    client_secret_file: `+secret+`
    redirect_url: https://pki.example.org/ui/oidc/callback
    scopes: [openid, email]
    username_claim: upn
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid configuration refused: %v", err)
	}
	want = service.SignInOptions{SessionIdle: 15 * time.Minute, SessionMax: 8 * time.Hour, LockoutAttempts: 3,
		LockoutFirst: 30 * time.Second, LockoutMax: 2 * time.Hour, UsernameClaim: "upn"}
	if got := cfg.SignInOptions(); got != want || cfg.Console.Enabled || !cfg.OIDCEnabled() ||
		!slices.Equal(cfg.Console.OIDC.Scopes, []string{"openid", "email"}) || cfg.Console.OIDC.ClientID != "tokenfleet-console" {
		t.Fatalf("loaded %+v / %+v", got, cfg.Console)
	}
	if s, err := cfg.OIDCClientSecret(); err != nil || s != "s3cr3t-of-the-client" {
		t.Fatalf("client secret %q, %v", s, err)
	}

	oidc := func(extra string) string {
		return "console:\n  oidc:\n    issuer: https://idp.example.org\n    client_id: c\n    redirect_url: https://pki.example.org/ui/oidc/callback\n" + extra
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"idle too short", "console: {session_idle: 500ms}\n", "console.session_idle: 500ms is shorter than a second"},
		{"idle over max", "console: {session_idle: 2h, session_max: 1h}\n", "console.session_idle: 2h0m0s is longer than console.session_max 1h0m0s"},
		{"max too long", "console: {session_max: 1000h}\n", "console.session_max: 1000h0m0s is outside 1s..720h0m0s"},
		{"bare number", "console: {session_idle: 30}\n", "console.session_idle"},
		{"attempts", "console: {lockout: {attempts: 0}}\n", "console.lockout.attempts: 0 is outside 1..100"},
		{"first lock", "console: {lockout: {first: 0s}}\n", "console.lockout.first: 0s is shorter than a second"},
		{"max below first", "console: {lockout: {first: 10m, max: 5m}}\n", "console.lockout.max: 5m0s is shorter than console.lockout.first 10m0s"},
		{"max lock too long", "console: {lockout: {max: 1000h}}\n", "console.lockout.max: 1000h0m0s is longer than 168h0m0s"},
		{"oidc without issuer", "console: {oidc: {client_id: c}}\n", "console.oidc.issuer: is required"},
		{"issuer not https", "console:\n  oidc:\n    issuer: http://idp.example.org\n    client_id: c\n    redirect_url: https://pki.example.org/ui/oidc/callback\n",
			`console.oidc.issuer: "http://idp.example.org" is http: only a loopback address`},
		{"no client id", "console:\n  oidc:\n    issuer: https://idp.example.org\n    redirect_url: https://pki.example.org/ui/oidc/callback\n", "console.oidc.client_id: is required"},
		{"secret file missing", oidc("    client_secret_file: /nonexistent/secret\n"), "console.oidc.client_secret_file: open /nonexistent/secret"},
		{"secret file empty", oidc("    client_secret_file: " + empty + "\n"), "console.oidc.client_secret_file: " + empty + " is empty"},
		{"redirect elsewhere", "console:\n  oidc:\n    issuer: https://idp.example.org\n    client_id: c\n    redirect_url: https://pki.example.org/callback\n",
			"console.oidc.redirect_url: \"https://pki.example.org/callback\" does not end in /ui/oidc/callback"},
		{"no redirect", "console:\n  oidc:\n    issuer: https://idp.example.org\n    client_id: c\n", "console.oidc.redirect_url: \"\" is not an absolute https URL"},
		{"no openid scope", oidc("    scopes: [profile]\n"), "console.oidc.scopes: [profile] lacks openid"},
		{"bad scope", oidc("    scopes: [openid, 'a b']\n"), `console.oidc.scopes[1]: "a b" is not a scope name`},
		{"bad claim", oidc("    username_claim: 'user name'\n"), `console.oidc.username_claim: "user name" is not a claim name`},
		{"unknown key", "console: {oidc: {secret: x}}\n", `console.oidc.secret: unknown field "secret"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.yaml)
			cfg, err := coordinator.LoadConfig(p)
			if err == nil {
				err = cfg.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not say %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), p+":") {
				t.Errorf("error %v does not point into the file", err)
			}
		})
	}
	// An issuer on loopback may be plain HTTP (a provider on the same machine, in tests).
	cfg, err = coordinator.LoadConfig(writeConfig(t, "console:\n  oidc:\n    issuer: http://127.0.0.1:5556/dex\n    client_id: c\n    redirect_url: http://localhost:8443/ui/oidc/callback\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("loopback provider refused: %v", err)
	}
	if s, err := cfg.OIDCClientSecret(); err != nil || s != "" {
		t.Fatalf("public client's secret %q, %v", s, err)
	}
}
