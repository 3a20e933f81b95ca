package coordinator_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator"
)

func TestNotificationsConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pw := write("smtp.password", "hunter2hunter2\n")
	secret := write("hook.secret", "0123456789abcdef0123456789abcdef\n")
	short := write("short.secret", "tooshort\n")
	notPEM := write("ca.txt", "not a certificate\n")
	good := `notifications:
  language: en
  console_url: https://pki.example.org/
  smtp:
    host: smtp.example.org
    username: tokenfleet
    password_file: ` + pw + `
    from: "tokenfleet <pki@example.org>"
  webhooks:
    - name: siem
      url: https://siem.example.org/hooks/tokenfleet
      secret_file: ` + secret + `
    - name: chat
      url: http://127.0.0.1:9000/hook
      secret_file: ` + secret + `
      events: [job.failed, rollout.brake_tripped]
      language: fr
  max_attempts: 5
  retry_initial: 10s
  retry_max: 10m
  rate_limit: {count: 10, per: 30m}
  timeout: 20s
  sweep_interval: 12h
  crl_margin: 48h
`
	cfg, err := coordinator.LoadConfig(writeConfig(t, good))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid configuration refused: %v", err)
	}
	n := cfg.Notifications
	if n.Language != "en" || n.ConsoleURL != "https://pki.example.org/" || n.SMTP.Host != "smtp.example.org" || len(n.Webhooks) != 2 || n.Webhooks[1].Events[1] != "rollout.brake_tripped" ||
		n.MaxAttempts != 5 || time.Duration(n.RateLimit.Per) != 30*time.Minute || time.Duration(n.Interval) != 5*time.Second {
		t.Fatalf("loaded %+v", n)
	}
	def := coordinator.DefaultConfig().Notifications
	if def.Language != "fr" || def.MaxAttempts != 10 || def.RateLimit.Count != 30 || time.Duration(def.RateLimit.Per) != time.Hour {
		t.Fatalf("defaults %+v", def)
	}

	for _, tc := range []struct{ name, yaml, want string }{
		{"language", "notifications: {language: de}\n", `notifications.language: "de": notifications are written in [fr en]`},
		{"smtp without host", "notifications: {smtp: {from: a@b.c}}\n", "notifications.smtp.host: is required when notifications.smtp is set"},
		{"smtp in clear off loopback", "notifications: {smtp: {host: mail.example.org, security: none, from: a@b.c}}\n", "notifications.smtp.security: none sends mail in clear"},
		{"auth in clear", "notifications: {smtp: {host: 127.0.0.1, security: none, username: u, password_file: " + pw + ", from: a@b.c}}\n", "notifications.smtp.username: needs security starttls or tls"},
		{"unknown security", "notifications: {smtp: {host: h, security: ssl, from: a@b.c}}\n", `notifications.smtp.security: "ssl" is not starttls, tls or none`},
		{"user without password", "notifications: {smtp: {host: h, username: u, from: a@b.c}}\n", "notifications.smtp.password_file: is required with notifications.smtp.username"},
		{"password file missing", "notifications: {smtp: {host: h, username: u, password_file: /nonexistent/pw, from: a@b.c}}\n", "notifications.smtp.password_file: open /nonexistent/pw"},
		{"no from", "notifications: {smtp: {host: h}}\n", "notifications.smtp.from: is required"},
		{"bad from", "notifications: {smtp: {host: h, from: nobody}}\n", `notifications.smtp.from: "nobody" is not an address`},
		{"bad smtp CA", "notifications: {smtp: {host: h, from: a@b.c, ca_file: " + notPEM + "}}\n", "notifications.smtp.ca_file: " + notPEM + " holds no PEM certificate"},
		{"webhook name", "notifications: {webhooks: [{name: 'My Hook', url: 'https://h/x', secret_file: " + secret + "}]}\n", "notifications.webhooks[0].name:"},
		{"webhook twice", "notifications: {webhooks: [{name: a, url: 'https://h/x', secret_file: " + secret + "}, {name: a, url: 'https://h/y', secret_file: " + secret + "}]}\n", "notifications.webhooks[1].name: \"a\" is the name of an earlier webhook"},
		{"webhook http off loopback", "notifications: {webhooks: [{name: a, url: 'http://hooks.example.org/x', secret_file: " + secret + "}]}\n", "notifications.webhooks[0].url: \"http://hooks.example.org/x\": http only to a loopback address"},
		{"webhook without secret", "notifications: {webhooks: [{name: a, url: 'https://h/x'}]}\n", "notifications.webhooks[0].secret_file: is required"},
		{"webhook short secret", "notifications: {webhooks: [{name: a, url: 'https://h/x', secret_file: " + short + "}]}\n", "notifications.webhooks[0].secret_file: the secret in " + short + " is 8 characters long; give at least 16"},
		{"webhook event", "notifications: {webhooks: [{name: a, url: 'https://h/x', secret_file: " + secret + ", events: [job.done]}]}\n", `notifications.webhooks[0].events[0]: unknown event "job.done"`},
		{"webhook language", "notifications: {webhooks: [{name: a, url: 'https://h/x', secret_file: " + secret + ", language: es}]}\n", `notifications.webhooks[0].language: "es"`},
		{"max attempts", "notifications: {max_attempts: 0}\n", "notifications.max_attempts: 0 is outside 1..100"},
		{"retry max below initial", "notifications: {retry_initial: 1m, retry_max: 30s}\n", "notifications.retry_max: 30s is outside notifications.retry_initial (1m0s)..24h"},
		{"rate limit negative", "notifications: {rate_limit: {count: -1}}\n", "notifications.rate_limit.count: -1 is negative"},
		{"rate limit window", "notifications: {rate_limit: {count: 5, per: 1s}}\n", "notifications.rate_limit.per: 1s is outside 1m..168h"},
		{"timeout", "notifications: {timeout: 10ms}\n", "notifications.timeout: 10ms is outside 1s..5m"},
		{"CRL margin below the sweep", "notifications: {sweep_interval: 24h, crl_margin: 12h}\n", "notifications.crl_margin: 12h0m0s is not longer than notifications.sweep_interval 24h0m0s"},
		{"console URL relative", "notifications: {console_url: pki.example.org}\n", `notifications.console_url: console URL "pki.example.org" is not an absolute https (or http) URL`},
		{"console URL with /ui", "notifications: {console_url: 'https://pki.example.org/ui/'}\n", "notifications.console_url: console URL \"https://pki.example.org/ui/\": give the coordinator's address without /ui"},
		{"console URL with a query", "notifications: {console_url: 'https://pki.example.org/?a=b'}\n", "with no user, query or fragment"},
		{"unknown key", "notifications: {smtp: {server: h}}\n", `notifications.smtp.server: unknown field "server"`},
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
}
