package ctl_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/notify/notifytest"
)

const notifyProfileYAML = `name: logon
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], scope: organization, expires_after: 48h}
`

// TestNotificationsCommand lists the outbox of a coordinator with two webhooks, one that
// answers and one that keeps failing until it is given up; and sets people's languages.
func TestNotificationsCommand(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	good := notifytest.StartWebhook(t, secret, notifytest.WebhookOptions{})
	bad := notifytest.StartWebhook(t, secret, notifytest.WebhookOptions{Respond: func(notifytest.Delivery) int { return http.StatusBadGateway }})
	dir := t.TempDir()
	sec := filepath.Join(dir, "hook.secret")
	if err := os.WriteFile(sec, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	n := coordinator.DefaultConfig().Notifications
	n.Webhooks = []coordinator.WebhookConfig{{Name: "siem", URL: good.URL, SecretFile: sec}, {Name: "chat", URL: bad.URL, SecretFile: sec}}
	n.Interval, n.RetryInitial, n.RetryMax = coordinator.Duration(100*time.Millisecond), coordinator.Duration(100*time.Millisecond), coordinator.Duration(200*time.Millisecond)
	n.MaxAttempts = 2
	inst := coordinatortest.Start(t, coordinatortest.Options{Notifications: &n})
	admin := map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": inst.AdminToken}
	ok := func(args ...string) string {
		t.Helper()
		r := runCtl(t, admin, "", args...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
		return r.stdout
	}
	fails := func(want string, args ...string) {
		t.Helper()
		r := runCtl(t, admin, "", args...)
		if r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Fatalf("%v: exit %d, stderr %q, want it to say %q", args, r.code, r.stderr, want)
		}
	}
	ok("org", "create", "acme")
	if out := ok("user", "create", "arne", "--org", "acme", "--role", "approver", "--email", "arne@acme.example", "--language", "en", "--json"); !strings.Contains(out, `"language": "en"`) {
		t.Fatalf("user create --language:\n%s", out)
	}
	ok("user", "create", "hank", "--org", "acme", "--role", "helpdesk")
	ok("user", "create", "alice", "--org", "acme", "--name", "Alice")
	if out := ok("user", "update", "hank", "--language", "fr"); !strings.Contains(out, "Language      fr\n") {
		t.Fatalf("user update --language:\n%s", out)
	}
	fails(`language: "de": notifications are written in [fr en]`, "user", "update", "hank", "--language", "de")
	p := filepath.Join(dir, "logon.yaml")
	if err := os.WriteFile(p, []byte(notifyProfileYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	ok("profile", "apply", p)
	inst.EnrolAgent(t, "ws-1", "ws-1.acme.example")
	hank := map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": strings.TrimSpace(ok("user", "token", "hank"))}
	if r := runCtl(t, hank, "", "issue", "--holder", "alice", "--agent", "ws-1", "--profile", "logon"); r.code != 0 {
		t.Fatalf("issue: %d %s", r.code, r.stderr)
	}
	notifytest.Eventually(t, 30*time.Second, "chat given up", func() bool {
		return strings.Contains(ok("notifications", "--state", "failed"), "HTTP 502")
	})
	failed := strings.Split(strings.TrimSpace(ok("notifications", "--state", "failed")), "\n")
	if len(failed) != 2 || !strings.HasPrefix(failed[0], "ID ") || !strings.Contains(failed[1], "job.approval_requested  webhook  chat       failed  2 ") {
		t.Fatalf("notifications --state failed:\n%s", strings.Join(failed, "\n"))
	}
	if len(bad.Deliveries()) != 2 {
		t.Fatalf("chat was tried %d times, want 2", len(bad.Deliveries()))
	}
	if out := ok("notifications", "--state", "sent", "--channel", "webhook"); !strings.Contains(out, "job.approval_requested  webhook  siem") {
		t.Fatalf("notifications --state sent:\n%s", out)
	}
	if out := ok("notifications", "--json"); !strings.Contains(out, `"recipient": "chat"`) || !strings.Contains(out, `"last_error": "webhook chat: HTTP 502`) {
		t.Fatalf("notifications --json:\n%s", out)
	}
	fails("--state \"lost\": want pending, sent or failed", "notifications", "--state", "lost")
	arne := map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": strings.TrimSpace(ok("user", "token", "arne"))}
	if r := runCtl(t, arne, "", "notifications"); r.code == 0 || !strings.Contains(r.stderr, "forbidden") {
		t.Fatalf("an approver lists notifications: %d %s", r.code, r.stderr)
	}
}
