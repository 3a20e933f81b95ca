//go:build cgo && linux

package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// The fault campaign runs the coordinators and the real agents as child processes, so
// that it can kill them with SIGKILL: this test binary, started again with
// campaignRoleEnv set, is a coordinator (coordinator.New, Run) or an agent (agent.New,
// Run) configured by the JSON in campaignConfigEnv. init runs before TestMain, so the
// child never becomes a test run.
const (
	campaignRoleEnv   = "TOKENFLEET_CAMPAIGN_CHILD" // "coordinator" or "agent"
	campaignConfigEnv = "TOKENFLEET_CAMPAIGN_CONFIG"
)

// childConfig configures a campaign child.
type childConfig struct {
	DataDir   string `json:"data_dir"`
	BrokerURL string `json:"broker_url"`
	// The coordinator's.
	Listen string `json:"listen,omitempty"`
	Driver string `json:"driver,omitempty"`
	DSN    string `json:"dsn,omitempty"`
	// The agent's; its SoftHSM2 store comes with SOFTHSM2_CONF in its environment.
	AgentID string `json:"agent_id,omitempty"`
}

func init() {
	role := os.Getenv(campaignRoleEnv)
	if role == "" {
		return
	}
	os.Exit(campaignChild(role, os.Getenv(campaignConfigEnv)))
}

// campaignChild runs a coordinator or an agent until SIGTERM (or SIGKILL, which is the
// point). Its log, JSON lines at info level, goes to standard error.
func campaignChild(role, config string) int {
	var c childConfig
	if err := json.Unmarshal([]byte(config), &c); err != nil {
		fmt.Fprintf(os.Stderr, "campaign child: %s %q: %v\n", campaignConfigEnv, config, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := zerolog.New(os.Stderr).Level(zerolog.InfoLevel).With().Timestamp().Str("process", role).Logger()
	var err error
	switch role {
	case "coordinator":
		cfg := coordinator.DefaultConfig()
		cfg.Listen, cfg.DataDir = c.Listen, c.DataDir
		cfg.Database.Driver, cfg.Database.DSN = c.Driver, c.DSN
		cfg.Broker.URL, cfg.Broker.AgentUsers = c.BrokerURL, "shared"
		cfg.ExpirySweepInterval = coordinator.Duration(time.Second)
		var srv *coordinator.Server
		if srv, err = coordinator.New(cfg, log); err == nil {
			err = srv.Run(ctx)
		}
	case "agent":
		var a *agent.Agent
		a, err = agent.New(agent.Config{
			ID: c.AgentID, DataDir: c.DataDir, Modules: []string{testenv.SoftHSMModule}, NoUSB: true,
			Broker:       agent.Broker{URL: c.BrokerURL, Backoff: fastBackoff},
			PollInterval: 200 * time.Millisecond, HeartbeatInterval: time.Second,
		}, log)
		if err == nil {
			err = a.Run(ctx)
		}
	default:
		err = fmt.Errorf("unknown role %q (coordinator or agent)", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "campaign child %s: %v\n", role, err)
		return 1
	}
	return 0
}

// proc is a campaign child: started, killed with SIGKILL, started again with the same
// configuration. Its log is kept in a tailBuffer.
type proc struct {
	name string
	env  []string
	log  *tailBuffer

	mu   sync.Mutex // guards the fields below
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd ended
	err  error         // how it ended
	runs int
}

func newProc(name, role string, cfg childConfig, extraEnv ...string) *proc {
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err) // plain strings: cannot fail
	}
	env := append(os.Environ(), campaignRoleEnv+"="+role, campaignConfigEnv+"="+string(b))
	return &proc{name: name, env: append(env, extraEnv...), log: newTailBuffer(256 << 10)}
}

// start starts the child; it must not be running.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = p.env
	// A child must not outlive the test binary, whatever ends it (a test timeout too).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.runs++
	fmt.Fprintf(p.log, "--- start %d of %s ---\n", p.runs, p.name)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// live returns the running child and the channel closed when it ends; nil when none runs.
func (p *proc) live() (*exec.Cmd, <-chan struct{}) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil, nil
	}
	select {
	case <-done:
		return nil, nil
	default:
		return cmd, done
	}
}

// kill ends the child with SIGKILL and waits until it is gone. It says whether the child
// was running.
func (p *proc) kill() bool {
	cmd, done := p.live()
	if cmd == nil {
		return false
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	fmt.Fprintf(p.log, "--- %s killed with SIGKILL ---\n", p.name)
	return true
}

// stop ends the child with SIGTERM and waits until it is gone; one that does not end
// within stopLimit is killed.
func (p *proc) stop() {
	cmd, done := p.live()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		fmt.Fprintf(p.log, "--- %s stopped with SIGTERM ---\n", p.name)
	case <-time.After(stopLimit):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		fmt.Fprintf(p.log, "--- %s did not stop within %v of SIGTERM: killed ---\n", p.name, stopLimit)
	}
}

const stopLimit = time.Minute

// exited says whether the child ended by itself (not killed by the campaign), and how.
func (p *proc) exited() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false, nil
	}
	select {
	case <-p.done:
	default:
		return false, nil
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signal() == syscall.SIGKILL {
			return false, nil
		}
	}
	return true, p.err
}

// tailBuffer keeps the last max bytes written to it, remembers whether a line that
// reports a data race or a panic went through, and counts the agent's PKCS#11 module
// reloads (reloadMark).
type tailBuffer struct {
	max int

	mu      sync.Mutex // guards the fields below
	buf     []byte
	alarms  []string
	reloads int
}

// reloadMark is what the PKCS#11 driver logs when a token's initialisation failed with a
// device error and it reloaded the module to try again: on SoftHSM2, an object an agent
// killed mid-write left half-made on the token.
const reloadMark = "the module was reloaded to try again"

func newTailBuffer(limit int) *tailBuffer { return &tailBuffer{max: limit} }

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, alarm := range []string{"WARNING: DATA RACE", "panic: ", "fatal error: "} {
		if strings.Contains(string(p), alarm) && len(b.alarms) < 20 {
			b.alarms = append(b.alarms, alarm)
		}
	}
	b.reloads += strings.Count(string(p), reloadMark)
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-b.max/2:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func (b *tailBuffer) reloadsSeen() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reloads
}

func (b *tailBuffer) alarmsSeen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.alarms...)
}

// coordProc is a coordinator child on a fixed loopback address (kept across restarts, so
// that clients find it again).
type coordProc struct {
	*proc
	url  string
	data string
}

// freeAddr finds a loopback port nothing listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func newCoordProc(t testing.TB, name, data, driver, dsn, brokerURL string) *coordProc {
	t.Helper()
	addr := freeAddr(t)
	c := &coordProc{url: "http://" + addr, data: data,
		proc: newProc(name, "coordinator", childConfig{DataDir: data, BrokerURL: brokerURL, Listen: addr, Driver: driver, DSN: dsn})}
	return c
}

// startAndWait starts the coordinator and waits until its API answers.
func (c *coordProc) startAndWait(limit time.Duration) error {
	if err := c.start(); err != nil {
		return err
	}
	return c.waitHealthy(limit)
}

// waitHealthy polls the API's health until it answers, the child ends or limit passes.
func (c *coordProc) waitHealthy(limit time.Duration) error {
	cl, err := client.New(c.url, "")
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cl.Health(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if ended, why := c.exited(); ended {
			return fmt.Errorf("%s ended while starting (%w):\n%s", c.name, why, tail(c.log.String(), 4000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer at %s within %v: %w\n%s", c.name, c.url, limit, err, tail(c.log.String(), 4000))
		}
		<-tick.C
	}
}

// adminToken reads the bootstrap administrator's token the coordinator wrote.
func (c *coordProc) adminToken(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.data, coordinator.AdminTokenFile))
	if err != nil {
		t.Fatalf("%s: admin token: %v", c.name, err)
	}
	return strings.TrimSpace(string(b))
}

// copyDataDir copies a coordinator's data directory (CA, result key, admin token,
// checkpoint key) for a second coordinator on the same PostgreSQL database, as an
// operator copies them to every coordinator of a site.
func copyDataDir(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		if strings.HasPrefix(d.Name(), ".tmp-") || strings.HasSuffix(d.Name(), ".lock") {
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer func() { _ = in.Close() }()
		info, err := in.Stat()
		if err != nil {
			return err
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			_ = out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatalf("copying the coordinator's data directory: %v", err)
	}
}

// agentProc is a real agent child on a SoftHSM2 store of its own.
type agentProc struct {
	*proc
	id    string
	dir   string
	store softStore
	// blankMu lets one job at a time look for a blank token on the agent: two first
	// issues at once would race for the store's one free slot.
	blankMu sync.Mutex

	dirsMu sync.Mutex
	dirs   map[string]string // token directory → the serial it held when last seen whole
}

// softStore is a SoftHSM2 token store: its configuration file and token directory.
type softStore struct {
	conf, tokens string
}

// newSoftStore makes a SoftHSM2 store (on /dev/shm when there is one) removed when the
// test ends. Unlike newTokenStore it does not point this process at it: each agent of the
// campaign has its own, and the checks name it in pkcs11-tool's environment.
func newSoftStore(t testing.TB) softStore {
	t.Helper()
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "tokenfleet-campaign-softhsm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s := softStore{conf: filepath.Join(dir, "softhsm2.conf"), tokens: filepath.Join(dir, "tokens")}
	if err := os.Mkdir(s.tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", s.tokens)
	if err := os.WriteFile(s.conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// p11 runs pkcs11-tool on the store.
func (s softStore) p11(args ...string) (string, error) {
	cmd := exec.Command("pkcs11-tool", append([]string{"--module", testenv.SoftHSMModule}, args...)...)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+s.conf)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("pkcs11-tool %s: %w: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}
