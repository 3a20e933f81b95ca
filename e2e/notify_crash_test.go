//go:build cgo && linux

package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/notify/notifytest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// binCoordinator is the tokenfleet-coordinator program run with a configuration file,
// killed with SIGKILL and started again on the same data.
type binCoordinator struct {
	t      *testing.T
	bin    string
	config string
	url    string

	mu   sync.Mutex // guards cmd, log, done
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
}

func (c *binCoordinator) start() {
	c.t.Helper()
	c.mu.Lock()
	cmd := exec.Command(c.bin, "serve", "--config", c.config)
	log := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = &lockedWriter{w: log}, &lockedWriter{w: log}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.mu.Unlock()
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // how it ended is the test's business: it kills it
		close(done)
	}()
	c.cmd, c.log, c.done = cmd, log, done
	c.mu.Unlock()
	cl, err := client.New(c.url, "")
	if err != nil {
		c.t.Fatal(err)
	}
	eventually(c.t, "the coordinator answers", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := cl.Health(ctx)
		select {
		case <-done:
			c.t.Fatalf("the coordinator ended while starting:\n%s", c.logText())
		default:
		}
		return err == nil, fmt.Sprint(err)
	})
}

// kill ends the coordinator with SIGKILL: no shutdown, nothing flushed.
func (c *binCoordinator) kill() {
	c.t.Helper()
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (c *binCoordinator) logText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestNotificationSentOnceAfterCrash kills the real coordinator program (SIGKILL) while
// its sender is in the middle of delivering a notice (the receiver holds the request)
// and before it delivered the other: once started again, each is delivered exactly once,
// with the same delivery ID as the interrupted attempt.
func TestNotificationSentOnceAfterCrash(t *testing.T) {
	bin := testenv.Binary(t, "./coordinator/cmd/tokenfleet-coordinator")
	var holding atomic.Bool // while set, the receivers hold the first delivery until released
	holding.Store(true)
	held := make(chan string, 2)
	release := make(chan struct{})
	hold := func(what string) bool {
		if !holding.CompareAndSwap(true, false) {
			return false
		}
		held <- what
		<-release
		return true
	}
	var heldMessageID atomic.Value // the Message-ID of the e-mail held, if it was one
	smtpSrv := notifytest.StartSMTP(t, notifytest.SMTPOptions{NoTLS: true, Accept: func(m notifytest.Message) error {
		if holding.Load() {
			heldMessageID.Store(m.Header.Get("Message-ID"))
		}
		if hold("e-mail") {
			return &smtp.SMTPError{Code: 451, Message: "held by the test"}
		}
		return nil
	}})
	secret := []byte("crash-webhook-secret-0123456789")
	hook := notifytest.StartWebhook(t, secret, notifytest.WebhookOptions{Respond: func(notifytest.Delivery) int {
		if hold("webhook") {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	}})

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	sec := filepath.Join(dir, "hook.secret")
	if err := os.WriteFile(sec, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	config := filepath.Join(dir, "coordinator.yaml")
	yaml := fmt.Sprintf(`listen: %s
data_dir: %s
log: {format: json}
broker: {url: "amqp://guest:guest@127.0.0.1:1/"}
notifications:
  smtp: {host: 127.0.0.1, port: %d, security: none, from: "tokenfleet <pki@acme.example>"}
  webhooks:
    - {name: siem, url: %q, secret_file: %s}
  interval: 100ms
  timeout: 2s
  retry_initial: 100ms
`, addr, data, smtpSrv.Port, hook.URL, sec)
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &binCoordinator{t: t, bin: bin, config: config, url: "http://" + addr}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("coordinator log:\n%s", tail(c.logText(), 6000))
		}
	})
	c.start()
	tokenBytes, err := os.ReadFile(filepath.Join(data, coordinator.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(tokenBytes))
	run := func(token string, args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		vars := map[string]string{"TOKENFLEET_URL": c.url, "TOKENFLEET_TOKEN": token, "HOME": t.TempDir()}
		if code := ctl.Main(context.Background(), args, ctl.Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return vars[k] }}); code != ctl.ExitOK {
			t.Fatalf("tokenfleetctl %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	run(admin, "org", "create", org)
	run(admin, "user", "create", operator, "--org", org, "--role", "helpdesk")
	run(admin, "user", "create", approver, "--org", org, "--role", "approver", "--email", "arne@acme.example")
	run(admin, "user", "create", holder, "--org", org, "--name", "Alice Holder", "--upn", "alice@acme.example")
	profile := filepath.Join(dir, "profile.yaml")
	if err := os.WriteFile(profile, []byte(profileYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	run(admin, "profile", "apply", profile)
	run(admin, "agent", "add", "ws-crash", "--hostname", "ws-crash.acme.example")
	op := strings.TrimSpace(run(admin, "user", "token", operator))
	jobID := strings.TrimSpace(run(op, "issue", "--holder", holder, "--agent", "ws-crash", "--profile", profileName))

	// The request's notices, an e-mail to the approver and a webhook call, are committed
	// with the job; the sender takes one, and the receiver holds it.
	var first string
	select {
	case first = <-held:
	case <-time.After(waitLimit):
		t.Fatalf("no delivery began within %v", waitLimit)
	}
	c.kill()
	t.Logf("killed while the %s was held", first)
	close(release)
	if n := len(smtpSrv.Messages()); n != 0 {
		t.Fatalf("an e-mail was delivered before the kill: %d", n)
	}
	c.start()
	cl, err := client.New(c.url, admin)
	if err != nil {
		t.Fatal(err)
	}
	var sent []client.Notification
	eventually(t, "both notices sent after the restart", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l, err := cl.ListNotifications(ctx, client.NotificationFilter{State: "sent"}, client.Page{})
		if err != nil {
			return false, err.Error()
		}
		sent = l.Items
		return len(sent) == 2, fmt.Sprintf("%d sent", len(sent))
	})
	// Exactly once: one e-mail accepted, one webhook call answered 2xx; every attempt at
	// the webhook carried its notice's ID.
	msgs := smtpSrv.Messages()
	if len(msgs) != 1 || msgs[0].To[0] != "arne@acme.example" || !strings.Contains(msgs[0].Body, jobID) {
		t.Fatalf("e-mails accepted: %d, want the approver's one", len(msgs))
	}
	var hookID string
	for _, n := range sent {
		if n.Channel == "webhook" {
			hookID = n.ID
		}
	}
	deliveries := hook.Deliveries()
	wantCalls := 1
	if first == "webhook" {
		wantCalls = 2 // the held call, then the one after the restart
	}
	if len(deliveries) != wantCalls {
		t.Fatalf("%d webhook calls, want %d (the first delivery held was the %s)", len(deliveries), wantCalls, first)
	}
	for _, d := range deliveries {
		if d.ID != hookID || d.Verified != nil || d.Event != "job.approval_requested" {
			t.Fatalf("webhook call %s (%s), signature %v; want delivery %s", d.ID, d.Event, d.Verified, hookID)
		}
	}
	if first == "e-mail" {
		// The held e-mail went out with the same Message-ID after the restart, for the
		// mail system's dedupe.
		if id, held := msgs[0].Header.Get("Message-ID"), heldMessageID.Load(); id == "" || id != held {
			t.Fatalf("Message-ID %q after the restart, %v held", id, held)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, state := range []string{"pending", "failed"} {
		l, err := cl.ListNotifications(ctx, client.NotificationFilter{State: state}, client.Page{})
		if err != nil || len(l.Items) != 0 {
			t.Fatalf("%s notifications after the restart: %d, %v", state, len(l.Items), err)
		}
	}
	c.kill()
}
