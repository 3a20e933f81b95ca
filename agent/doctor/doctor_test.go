package doctor_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/agent/doctor"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

func TestMain(m *testing.M) { os.Exit(testenv.MainWithSoftHSM(m)) }

// check runs the one check of env named name.
func check(t *testing.T, env doctor.Env, name string) doctor.Result {
	t.Helper()
	if env.OS == "" {
		env.OS = runtime.GOOS
	}
	for _, c := range doctor.Checks(env) {
		if c.Name == name {
			return doctor.Run(context.Background(), []doctor.Check{c}, nil)[0]
		}
	}
	t.Fatalf("no check %s for %s", name, env.OS)
	return doctor.Result{}
}

func want(t *testing.T, r doctor.Result, status doctor.Status, detail, fix string) {
	t.Helper()
	if r.Status != status || !strings.Contains(r.Detail, detail) || !strings.Contains(r.Fix, fix) {
		t.Errorf("%s: %s %q (fix %q); want %s with %q (fix %q)", r.Name, r.Status, r.Detail, r.Fix, status, detail, fix)
	}
}

// The real SoftHSM2 module loads and lists its slots; a module that is not there fails
// the check, naming it, while the others are still reported.
func TestModules(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	env := doctor.Env{LoadModule: doctor.LoadModule(zerolog.Nop()), Configured: true}

	env.Modules = []string{testenv.SoftHSMModule}
	want(t, check(t, env, "modules"), doctor.Pass, testenv.SoftHSMModule+": loads; 1 slot, 1 with a token", "")

	missing := filepath.Join(t.TempDir(), "libmissing-pkcs11.so")
	env.Modules = []string{missing, testenv.SoftHSMModule}
	r := check(t, env, "modules")
	want(t, r, doctor.Fail, missing+": pkcs11: open module", "correct its path in modules (--module)")
	if !strings.Contains(r.Detail, testenv.SoftHSMModule+": loads") {
		t.Errorf("the module that loads is not reported: %q", r.Detail)
	}

	env.Modules = nil
	want(t, check(t, env, "modules"), doctor.Fail, "no PKCS#11 module is configured and none was found", "install OpenSC")
}

// The broker check logs in as the agent: an enrolled agent passes; a wrong password and a
// missing queue fail, each with the agent's own fix.
func TestBroker(t *testing.T) {
	b := testenv.NewBroker(t)
	id := testenv.UniqueUser("ws-")
	user, err := protocol.AgentUser(id)
	if err != nil {
		t.Fatal(err)
	}
	p, err := protocol.AgentPermissions(id)
	if err != nil {
		t.Fatal(err)
	}
	agentURL := b.AddUser(t, user, p.Configure, p.Write, p.Read)
	envFor := func(rawURL string) doctor.Env {
		return doctor.Env{Broker: func(ctx context.Context) error {
			return agent.CheckBroker(ctx, agent.Config{ID: id, Broker: agent.Broker{URL: rawURL}})
		}}
	}

	want(t, check(t, envFor(agentURL), "broker"), doctor.Fail, "agent "+id+" is not enrolled", "tokenfleetctl agent add "+id+" --hostname ")

	u, err := url.Parse(agentURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, "wrong")
	want(t, check(t, envFor(u.String()), "broker"), doctor.Fail, `refused user "`+user+`" (wrong password or no such user)`, "broker.password_file")

	declareQueue(t, b, id)
	want(t, check(t, envFor(agentURL), "broker"), doctor.Pass, "the broker takes the agent's credentials and has its queue", "")

	// A broker that is down is no configuration error: it says so.
	down := doctor.Env{Broker: func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return agent.CheckBroker(ctx, agent.Config{ID: id, Broker: agent.Broker{URL: "amqp://guest:guest@127.0.0.1:1/"}})
	}}
	want(t, check(t, down, "broker"), doctor.Fail, "unreachable", "check that the broker runs")
}

// declareQueue enrols agent id's queue as the coordinator does.
func declareQueue(t *testing.T, b *testenv.Broker, id string) {
	t.Helper()
	c, err := amqp.Open(context.Background(), amqp.Config{URL: b.URL, Topology: amqp.DeclareShared})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Declare(ctx, func(ch amqp.Declarer) error { return amqp.DeclareAgent(ch, id) }); err != nil {
		t.Fatal(err)
	}
}

// The clock check reads the coordinator's /healthz Date header: a minute and more apart
// fails, saying which clock is ahead; a few seconds pass.
func TestClock(t *testing.T) {
	var skew time.Duration
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Date", time.Now().Add(skew).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	env := doctor.Env{CoordinatorURL: srv.URL + "/", HTTPClient: srv.Client(), Now: time.Now}

	skew = 3 * time.Second
	want(t, check(t, env, "clock"), doctor.Pass, "within ", "")
	skew = -5 * time.Minute
	want(t, check(t, env, "clock"), doctor.Fail, "this machine's clock is 5m", "timedatectl set-ntp true")
	want(t, check(t, env, "clock"), doctor.Fail, "ahead of the coordinator's (more than 1m0s)", "")
	skew = 90 * time.Second
	want(t, check(t, env, "clock"), doctor.Fail, "this machine's clock is 1m", "timedatectl set-ntp true")
	want(t, check(t, env, "clock"), doctor.Fail, "behind the coordinator's (more than 1m0s)", "")

	env.CoordinatorURL = ""
	want(t, check(t, env, "clock"), doctor.Skip, "no coordinator URL", "--coordinator")
	env.CoordinatorURL = "ftp://coordinator.example.org/"
	want(t, check(t, env, "clock"), doctor.Fail, `coordinator URL "ftp://coordinator.example.org/": want http(s)://host:port`, "")
}

// The data directory must be 0700 and its key and journal 0600; each wrong mode is named
// with the chmod that fixes it.
func TestDataDir(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Fatal("the data directory's modes are checked on Unix; this test is for Unix")
	}
	dir := filepath.Join(t.TempDir(), "agent")
	env := doctor.Env{DataDir: dir}
	want(t, check(t, env, "data_dir"), doctor.Pass, "does not exist yet", "")

	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "seal-key.pem")
	journal := filepath.Join(dir, "journal.db")
	for _, f := range []string{key, journal} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want(t, check(t, env, "data_dir"), doctor.Pass, dir+" is writable and private", "")

	for path, mode := range map[string]os.FileMode{dir: 0o755, key: 0o644, journal: 0o640} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	r := check(t, env, "data_dir")
	want(t, r, doctor.Fail, dir+" has mode 0755: other users may look into it", "chmod 700 "+dir)
	want(t, r, doctor.Fail, key+" has mode 0644: other users may read it", "chmod 600 "+key)
	want(t, r, doctor.Fail, journal+" has mode 0640", "chmod 600 "+journal)
	want(t, r, doctor.Fail, "", "tokenfleetctl agent reset-key ID")

	// Off Unix the modes are not the protection (ACLs are); writability still is.
	env.OS = "windows"
	want(t, check(t, env, "data_dir"), doctor.Pass, "is writable", "")
}

// pcscd: an absent socket, a daemon that closes the connection at once (what pcscd does
// when polkit refuses access_pcsc) and one that answers the version exchange.
func TestPCSCD(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Fatal("pcscd is checked on Unix; this test is for Unix")
	}
	dir := t.TempDir()
	env := doctor.Env{PCSCSocket: filepath.Join(dir, "pcscd.comm")}
	want(t, check(t, env, "pcscd"), doctor.Fail, "pcscd's socket "+env.PCSCSocket+" does not exist", "systemctl enable --now pcscd.socket")

	ln, err := net.Listen("unix", env.PCSCSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	answer := make(chan bool, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if <-answer {
				// Read the header and the version, answer with the server's version.
				buf := make([]byte, 20)
				if _, err := io.ReadFull(c, buf); err == nil && binary.NativeEndian.Uint32(buf[4:]) == 0x11 {
					reply := make([]byte, 12)
					binary.NativeEndian.PutUint32(reply[0:], 4)
					binary.NativeEndian.PutUint32(reply[4:], 5)
					_, _ = c.Write(reply)
				}
			}
			_ = c.Close()
		}
	}()
	answer <- false
	want(t, check(t, env, "pcscd"), doctor.Fail, "closed the connection without answering: polkit refused access_pcsc", doctor.PolkitRule)
	answer <- true
	want(t, check(t, env, "pcscd"), doctor.Pass, "answers this user (protocol 4.5)", "")
	_ = ln.Close()
	<-done
}

// Exit code material: a report passes only when no check failed; skipped ones do not fail
// it, and --skip leaves a check out by name.
func TestRunAndSkip(t *testing.T) {
	fails := doctor.Check{Name: "a", Run: func(context.Context) doctor.Result { return doctor.Result{Status: doctor.Fail} }}
	passes := doctor.Check{Name: "b", Run: func(context.Context) doctor.Result { return doctor.Result{Status: doctor.Pass} }}
	if doctor.Passed(doctor.Run(context.Background(), []doctor.Check{fails, passes}, nil)) {
		t.Error("a failed check passed the report")
	}
	rs := doctor.Run(context.Background(), []doctor.Check{fails, passes}, []string{"a"})
	if !doctor.Passed(rs) || rs[0].Status != doctor.Skip || rs[0].Name != "a" || rs[1].Name != "b" {
		t.Errorf("with a skipped: %+v", rs)
	}
}
