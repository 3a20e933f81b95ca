package brokeradmin

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// DefaultTimeout bounds each request when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// parallel is how many requests PutAgents keeps in flight: enough to hide the round
// trips, few enough that provisioning a whole fleet does not crowd out the broker's other
// management clients.
const parallel = 16

// Config says how to reach the management API.
type Config struct {
	// URL is the management API's base, as for the management UI: for example
	// http://127.0.0.1:15672 or https://mq.example.org:15671. A path prefix (a reverse
	// proxy's /rabbitmq) is kept; a trailing /api is accepted and dropped.
	URL string
	// User and Password are a management user's credentials. It needs the
	// "administrator" tag: in RabbitMQ 3.10 no lesser tag ("management", "policymaker",
	// "monitoring") may create users or set their permissions. Create it with
	// rabbitmqctl add_user USER PASSWORD && rabbitmqctl set_user_tags USER administrator.
	User     string
	Password string
	// VHost is the vhost the agents' users get their permissions on, the vhost of the
	// coordinator's broker.url; "/" is RabbitMQ's default vhost.
	VHost string
	// CAFile is, for https, the PEM file of the CAs to trust; empty: the system's roots.
	CAFile string
	// Timeout bounds each request; zero means DefaultTimeout.
	Timeout time.Duration
	// AllowInsecure permits http:// to a host that is not loopback: the management
	// user's password and the agents' password hashes then cross the network in clear.
	AllowInsecure bool
	// HTTPClient, when set, makes the requests (tests); CAFile must then be empty.
	HTTPClient *http.Client
	// BatchWait is how long a PutAgent waits for others to share its request to the
	// broker; zero means DefaultBatchWait. BatchMax is how many agents one request
	// carries at most; zero means DefaultBatchMax, 1 gives each agent a request of
	// its own.
	BatchWait time.Duration
	BatchMax  int
}

// Client provisions and revokes agents' broker users. It is safe for concurrent use.
type Client struct {
	base      string // scheme://host[:port][/prefix], without a trailing slash
	user      string
	password  string
	vhost     string
	timeout   time.Duration
	http      *http.Client
	own       *http.Transport // the transport New made, nil with Config.HTTPClient
	log       zerolog.Logger
	inflight  chan struct{}       // a slot per request in flight, parallel at most
	alone     chan struct{}       // a slot per PutAgent provisioned alone, parallel at most
	hash      func(string) string // passwordHash; tests make bad ones
	importMin int                 // importMin; tests import smaller batches
	batchWait time.Duration
	batchMax  int

	mu     sync.Mutex // guards the fields below
	batch  *batcher   // started by the first PutAgent
	closed bool
}

// New checks cfg and returns a client; it makes no request (Check does).
func New(cfg Config, log zerolog.Logger) (*Client, error) {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("broker management %s: %s", field, fmt.Sprintf(format, args...))
	}
	if cfg.URL == "" {
		return nil, bad("URL", "is required, for example http://127.0.0.1:15672 (enable the API with: rabbitmq-plugins enable rabbitmq_management)")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, bad("URL", "%v", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, bad("URL", "%q: the scheme must be http or https (the management API, port 15672 or 15671 with TLS, not the AMQP port)", cfg.URL)
	case u.Host == "" || u.Hostname() == "":
		return nil, bad("URL", "%q has no host", cfg.URL)
	case u.User != nil:
		return nil, bad("URL", "must not carry credentials: set the user and password fields instead")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, bad("URL", "%q: a query or fragment has no place in the API's base", cfg.URL)
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()) && !cfg.AllowInsecure:
		return nil, bad("URL", "%q is plain http to a host that is not loopback: the password would cross the network in clear; use https (the management listener's TLS port, 15671) or allow insecure http explicitly", cfg.URL)
	}
	if cfg.User == "" {
		return nil, bad("user", "is required: a management user with the administrator tag")
	}
	if cfg.Password == "" {
		return nil, bad("password", "is required for management user %q", cfg.User)
	}
	if cfg.VHost == "" {
		return nil, bad("vhost", `is required: the vhost of the coordinator's broker URL ("/" for RabbitMQ's default vhost)`)
	}
	if cfg.Timeout < 0 {
		return nil, bad("timeout", "%v is negative", cfg.Timeout)
	}
	if cfg.BatchWait < 0 {
		return nil, bad("batch wait", "%v is negative", cfg.BatchWait)
	}
	if cfg.BatchMax < 0 {
		return nil, bad("batch maximum", "%d is negative", cfg.BatchMax)
	}
	if cfg.CAFile != "" && u.Scheme != "https" {
		return nil, bad("CA file", "is set but the URL %q is not https", cfg.URL)
	}
	if cfg.CAFile != "" && cfg.HTTPClient != nil {
		return nil, bad("CA file", "and an HTTP client are both set: trust the CA in the client's transport")
	}
	base := strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/")
	base = strings.TrimSuffix(base, "/api")

	c := &Client{base: base, user: cfg.User, password: cfg.Password, vhost: cfg.VHost,
		timeout: cfg.Timeout, http: cfg.HTTPClient, log: log, inflight: make(chan struct{}, parallel),
		alone: make(chan struct{}, parallel),
		hash:  passwordHash, importMin: importMin, batchWait: cfg.BatchWait, batchMax: cfg.BatchMax}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.batchWait == 0 {
		c.batchWait = DefaultBatchWait
	}
	if c.batchMax == 0 {
		c.batchMax = DefaultBatchMax
	}
	if c.http == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = parallel // PutAgents' requests reuse their connections
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pool, err := loadCAs(cfg.CAFile)
			if err != nil {
				return nil, bad("CA file", "%v", err)
			}
			tr.TLSClientConfig.RootCAs = pool
		}
		c.own = tr
		c.http = &http.Client{Transport: tr}
	}
	return c, nil
}

// Close stops the batching of PutAgent: calls waiting for their batch fail with
// ErrClosed, requests in flight are cancelled, and Close returns when the batcher's
// goroutines have ended. It then releases the idle connections of the client's own
// transport. PutAgent and PutAgents fail after it; the other methods still work. Calling
// it again is harmless.
func (c *Client) Close() {
	c.mu.Lock()
	b := c.batch
	c.batch, c.closed = nil, true
	c.mu.Unlock()
	if b != nil {
		b.stop()
	}
	if c.own != nil {
		c.own.CloseIdleConnections()
	}
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// batcher returns the client's batcher, starting it on first use; nil once closed.
func (c *Client) batcher() *batcher {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if c.batch == nil {
		c.batch = newBatcher(c, c.batchWait, c.batchMax)
	}
	return c.batch
}

// VHost is the vhost the client grants permissions on.
func (c *Client) VHost() string { return c.vhost }

func loadCAs(path string) (*x509.CertPool, error) {
	pemData, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, errors.New(path + " holds no PEM certificate")
	}
	return pool, nil
}

// isLoopbackHost reports whether host is localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
