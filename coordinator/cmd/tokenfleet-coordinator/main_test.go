package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/internal/sdnotify"
	"github.com/tokenfleet/tokenfleet/internal/sdnotify/sdnotifytest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// binary is the command, built once for the package's tests.
func binary(t *testing.T) string {
	t.Helper()
	return testenv.Binary(t, "./coordinator/cmd/tokenfleet-coordinator")
}

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// proc is a running coordinator process whose JSON log lines are read as they come.
type proc struct {
	cmd    *exec.Cmd
	raw    chan string   // stderr lines; closed at the end of output
	waited chan struct{} // closed once the process was waited for
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, nil, args...)
}

// startProcEnv starts the binary with env added to this process's environment.
func startProcEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, raw: make(chan string, 1000), waited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.raw <- sc.Text()
		}
		close(p.raw)
		_ = cmd.Wait() // the exit code is read from ProcessState
		close(p.waited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // an error only says it already ended
		<-p.waited
	})
	return p
}

// waitLog waits for a log line with the given message.
func (p *proc) waitLog(t *testing.T, msg string) map[string]any {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-p.raw:
			if !ok {
				t.Fatalf("process ended before logging %q", msg)
			}
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["message"] == msg {
				return m
			}
		case <-timeout:
			t.Fatalf("no %q log line within a minute", msg)
		}
	}
}

// exit waits for the process to end and returns its exit code and what it wrote.
func (p *proc) exit(t *testing.T) (int, string) {
	t.Helper()
	var out strings.Builder
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-p.raw:
			if ok {
				out.WriteString(line + "\n")
				continue
			}
			<-p.waited
			return p.cmd.ProcessState.ExitCode(), out.String()
		case <-timeout:
			t.Fatal("the process did not exit within a minute")
		}
	}
}

// noBroker is a broker address nothing listens on: the coordinator serves without its
// broker, and these tests leave the machine's broker alone.
const noBroker = "amqp://guest:guest@127.0.0.1:1/"

func TestServeStartsAndStopsOnSIGTERM(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	notify := sdnotifytest.Listen(t) // the unit is Type=notify: systemd waits for READY=1
	p := startProcEnv(t, []string{sdnotify.SocketEnv + "=" + notify.Path},
		"serve", "--data", dir, "--listen", "127.0.0.1:0", "--log-format", "json", "--broker", noBroker)
	notify.Wait(t, sdnotify.Ready, time.Minute)
	m := p.waitLog(t, "coordinator serving")
	addr, _ := m["listen"].(string)
	token, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://"+addr+"/api/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"username":"admin"`) {
		t.Fatalf("whoami: %d %s", resp.StatusCode, body)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, out := p.exit(t)
	if code != 0 || !strings.Contains(out, "coordinator shutting down") {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, out)
	}
	if strings.Contains(out, strings.TrimSpace(string(token))) {
		t.Fatal("the admin token was logged")
	}
	if n := notify.Count(sdnotify.Stopping); n != 1 {
		t.Errorf("STOPPING=1 sent %d times, want once", n)
	}
}

func TestServeRefusals(t *testing.T) {
	badConfig := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(badConfig, []byte("listen: 127.0.0.1:0\nlog:\n  colour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"plain HTTP off loopback", []string{"serve", "--listen", "0.0.0.0:0"}, "listen"},
		{"bad config file", []string{"serve", "--config", badConfig}, `unknown field "colour"`},
		{"missing config file", []string{"serve", "--config", "/nonexistent/tokenfleet.yaml"}, "no such file"},
		{"unknown flag", []string{"serve", "--colour"}, "unknown flag"},
		{"bad driver flag", []string{"serve", "--db-driver", "mysql"}, "database.driver"},
		{"bad broker flag", []string{"serve", "--broker", "http://mq.example/"}, "broker.url"},
		{"bad agent users flag", []string{"serve", "--agent-users", "all"}, "broker.agent_users"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startProc(t, append(tc.args, "--data", filepath.Join(t.TempDir(), "d"))...)
			code, out := p.exit(t)
			// 2: a usage or configuration error, which the unit does not restart on.
			if code != 2 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want 2; output:\n%s\nwant it to mention %q", code, out, tc.want)
			}
		})
	}
	for _, args := range [][]string{{"serv"}, {"serve", "extra"}, {"--colour"}} {
		if code, out := startProc(t, args...).exit(t); code != 2 {
			t.Errorf("%v: exit %d, want 2:\n%s", args, code, out)
		}
	}
}

// A failure at work, not in the configuration, exits 1: the unit restarts on it.
func TestServeFailureExitsOne(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A token file without its database: the coordinator refuses to bootstrap over it.
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := startProc(t, "serve", "--data", dir, "--listen", "127.0.0.1:0", "--broker", noBroker, "--log-format", "json").exit(t)
	if code != 1 || !strings.Contains(out, "admin.token exists but the database holds no user") {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, err := exec.CommandContext(context.Background(), binary(t), args...).Output()
		// The test binary is built from the module's working tree with its VCS stamp.
		if err != nil || !strings.HasPrefix(string(out), "tokenfleet-coordinator ") || !strings.Contains(string(out), "(commit ") {
			t.Errorf("%v: %v, %q", args, err, out)
		}
	}
}

func TestFlagsOverrideConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "c.yaml")
	// The file asks for an address that would be refused; the flag wins.
	cfg := "listen: 0.0.0.0:8443\ndata_dir: " + filepath.Join(dir, "from-file") + "\nlog: {format: json}\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "serve", "--config", cfgFile, "--listen", "127.0.0.1:0", "--broker", noBroker)
	p.waitLog(t, "coordinator serving")
	if _, err := os.Stat(filepath.Join(dir, "from-file", "admin.token")); err != nil {
		t.Fatalf("data_dir of the file not used: %v", err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code, out := p.exit(t); code != 0 {
		t.Fatalf("exit %d after SIGINT:\n%s", code, out)
	}
}
