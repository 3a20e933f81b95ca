// Package coordinatortest starts a real coordinator inside a test: the whole server (store,
// service, HTTP API, dispatcher, CA, expiry sweeper) listening on a random loopback port,
// with plain HTTP and signals left alone. It stops when the test ends. Without a broker
// URL it runs with no broker: approved jobs wait in its outbox.
//
//	c := coordinatortest.Start(t, coordinatortest.Options{})
//	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
//	http.Get(c.URL + "/api/v1/whoami") ...
package coordinatortest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/api/apitest"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// Options choose where the coordinator keeps its data. The zero value is a fresh SQLite
// store in a temporary directory.
type Options struct {
	// Dir is the data directory; "" gives a new t.TempDir(). Starting again on the same
	// Dir finds the same data and the same admin token.
	Dir string
	// Driver is "sqlite" (default) or "postgres"; DSN is the PostgreSQL URL (for example
	// internal/testenv.PostgresDatabase(t)). With SQLite, DSN is normally empty.
	Driver, DSN string
	// BrokerURL is the broker (for example internal/testenv.NewBroker(t).URL). Empty: an
	// address nothing listens on, so the coordinator runs without a broker and leaves the
	// machine's alone; approved jobs then wait in its outbox.
	BrokerURL string
	// AgentUsers is the config's broker.agent_users ("per_agent" or "shared"); empty
	// takes the coordinator's default.
	AgentUsers string
	// HeartbeatTimeout is the config's broker.heartbeat_timeout: how long an agent may be
	// silent before it is shown offline; zero takes the coordinator's default.
	HeartbeatTimeout time.Duration
	// Management turns self-enrolment on: the coordinator provisions agents' broker users
	// through the shared broker's management API (guest, from localhost) on BrokerURL's
	// vhost. The users it makes are named after the agents: tests give agents IDs unique
	// to the run (internal/testenv.UniqueUser).
	Management bool
	// Notifications, if set, is the config's notifications section (e-mail and webhooks,
	// for example to servers of package notify/notifytest).
	Notifications *coordinator.NotificationsConfig
	// Configure, if set, changes the configuration last, just before the coordinator
	// starts: for the sections the options above do not cover (the console's, for one).
	Configure func(*coordinator.Config)
	// Log, if set, receives the coordinator's log at debug level, as JSON lines (tests
	// that read every log line, for example to look for secrets in them). nil: the log goes
	// to the test's output at info level.
	Log io.Writer
}

// NoBroker is the broker address of Options without a BrokerURL.
const NoBroker = "amqp://guest:guest@127.0.0.1:1/"

// Instance is a running coordinator.
type Instance struct {
	// URL is the base URL (no trailing slash) of a proxy that checks every API response
	// against the API description; DirectURL is the coordinator's own listener.
	URL        string
	DirectURL  string
	AdminToken string // the bootstrap administrator's API token
	DataDir    string
	Store      store.Store // the server's own store; closed when the test ends

	Server *coordinator.Server
}

// Start starts a coordinator and stops it when t ends; any failure to start fails t.
func Start(t testing.TB, o Options) *Instance {
	t.Helper()
	dir := o.Dir
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "data")
	}
	cfg := coordinator.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = dir
	if o.Driver != "" {
		cfg.Database.Driver = o.Driver
	}
	cfg.Database.DSN = o.DSN
	cfg.ExpirySweepInterval = coordinator.Duration(time.Second)
	cfg.Broker.URL = o.BrokerURL
	if cfg.Broker.URL == "" {
		cfg.Broker.URL = NoBroker
	}
	cfg.Broker.AgentUsers = o.AgentUsers
	if o.Management {
		pw := filepath.Join(t.TempDir(), "broker-admin.password")
		if err := os.WriteFile(pw, []byte("guest\n"), 0o600); err != nil {
			t.Fatalf("coordinatortest: %v", err)
		}
		cfg.Broker.Management = coordinator.ManagementConfig{URL: strings.TrimSuffix(testenv.ManagementURL, "/api"),
			User: "guest", PasswordFile: pw}
	}
	cfg.Broker.HeartbeatTimeout = coordinator.Duration(o.HeartbeatTimeout)
	if o.Notifications != nil {
		cfg.Notifications = *o.Notifications
	}
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	if o.Log != nil {
		log = zerolog.New(o.Log).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	}

	srv, err := coordinator.New(cfg, log)
	if err != nil {
		t.Fatalf("coordinatortest: start coordinator: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinatortest: coordinator stopped with: %v", err)
		}
	})

	token, err := os.ReadFile(filepath.Join(dir, coordinator.AdminTokenFile))
	if err != nil {
		t.Fatalf("coordinatortest: admin token: %v", err)
	}
	return &Instance{URL: validatingProxy(t, srv.URL()), DirectURL: srv.URL(), AdminToken: strings.TrimSpace(string(token)),
		DataDir: dir, Store: srv.Store(), Server: srv}
}

// validatingProxy serves the coordinator at target through a proxy that holds every API
// response to the API description (coordinator/api/openapi.yaml): one it does not allow
// fails t, the test whose request caused it. What the coordinator serves outside the API
// (the CRL, the web console under /ui) passes unchecked.
func validatingProxy(t testing.TB, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("coordinatortest: coordinator URL %q: %v", target, err)
	}
	direct := httputil.NewSingleHostReverseProxy(u)
	checked := apitest.Handler(t, direct)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/crl" || r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, "/ui/") {
			direct.ServeHTTP(w, r)
			return
		}
		checked.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	return proxy.URL
}

// EnrolAgent records an enrolled agent in the store, as enrolment will: jobs can only
// target agents the coordinator knows.
func (c *Instance) EnrolAgent(t testing.TB, id, hostname string) store.Agent {
	t.Helper()
	var a store.Agent
	err := c.Store.InTx(context.Background(), func(tx store.Tx) error {
		var err error
		a, err = tx.CreateAgent(context.Background(), store.Agent{ID: id, Hostname: hostname, OS: "linux", Version: "test"})
		return err
	})
	if err != nil {
		t.Fatalf("coordinatortest: enrol agent %s: %v", id, err)
	}
	return a
}
