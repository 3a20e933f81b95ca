package coordinator

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
)

// DefaultBrokerURL is the broker of a development machine: RabbitMQ on loopback with its
// guest user.
const DefaultBrokerURL = "amqp://guest:guest@127.0.0.1:5672/"

// CADir is the built-in CA's directory inside the data directory.
const CADir = "ca"

// DefaultCRLPath is the path of the CRL on the API's listener when ca.crl_url is not set.
const DefaultCRLPath = "/crl"

// BrokerConfig locates the broker.
type BrokerConfig struct {
	// URL is amqp://user:password@host:port/vhost (amqps:// for TLS).
	URL string `yaml:"url"`
	// AgentUsers is per_agent (each agent has its own broker user: the coordinator refuses
	// an event whose user_id is not its agent's) or shared (development: agents share one
	// user and sender checks rely on it only). Empty: shared when the URL's host is a
	// loopback address (the development default), per_agent otherwise.
	AgentUsers string `yaml:"agent_users"`
	// HeartbeatTimeout is how long an agent may stay silent before it is shown offline;
	// zero means dispatch.DefaultHeartbeatTimeout (three heartbeat intervals, 45s).
	HeartbeatTimeout Duration `yaml:"heartbeat_timeout"`
	// Management is RabbitMQ's management API, for self-enrolment (config_enrolment.go).
	Management ManagementConfig `yaml:"management"`
	// AgentURL is the broker URL agents are told at enrolment (no credentials); default
	// broker.url without its user and password.
	AgentURL string `yaml:"agent_url"`
}

// CAConfig configures the built-in CA.
type CAConfig struct {
	// Dir holds the CA created on first start; default DATA/ca.
	Dir string `yaml:"dir"`
	// CertFile and KeyFile name an existing CA certificate (PEM, issuing CA first) and
	// its unencrypted key instead (both or neither).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Name and Organization make the subject of a CA created on first start.
	Name         string `yaml:"name"`
	Organization string `yaml:"organization"`
	// CRLURL is where relying parties fetch the CRL, named in every certificate; the
	// coordinator serves the CRL at this URL's path on its listener, without
	// authentication. Default http(s)://LISTEN/crl.
	CRLURL string `yaml:"crl_url"`
}

// agentUsers resolves broker.agent_users.
func (c Config) agentUsers() dispatch.AgentUsers {
	switch c.Broker.AgentUsers {
	case string(dispatch.AgentUsersPerAgent):
		return dispatch.AgentUsersPerAgent
	case string(dispatch.AgentUsersShared):
		return dispatch.AgentUsersShared
	}
	if u, err := url.Parse(c.Broker.URL); err == nil && IsLoopback(net.JoinHostPort(u.Hostname(), "0")) {
		return dispatch.AgentUsersShared
	}
	return dispatch.AgentUsersPerAgent
}

// caDir is the built-in CA's directory.
func (c Config) caDir() string {
	if c.CA.Dir != "" {
		return c.CA.Dir
	}
	return filepath.Join(c.DataDir, CADir)
}

// crlURL is the CRL's public URL, for the API listening at addr.
func (c Config) crlURL(addr string) string {
	if c.CA.CRLURL != "" {
		return c.CA.CRLURL
	}
	scheme := "http"
	if c.TLSEnabled() {
		scheme = "https"
	}
	return scheme + "://" + addr + DefaultCRLPath
}

// validateDispatch checks the broker and CA sections.
func (c Config) validateDispatch(bad func(field, format string, args ...any)) {
	if c.Broker.URL == "" {
		bad("broker.url", "is required (e.g. %s)", DefaultBrokerURL)
	} else if u, err := url.Parse(c.Broker.URL); err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Host == "" {
		bad("broker.url", "%q is not an amqp:// or amqps:// URL", redactURL(c.Broker.URL))
	}
	switch c.Broker.AgentUsers {
	case "", string(dispatch.AgentUsersPerAgent), string(dispatch.AgentUsersShared):
	default:
		bad("broker.agent_users", "%q is neither %s nor %s", c.Broker.AgentUsers, dispatch.AgentUsersPerAgent, dispatch.AgentUsersShared)
	}
	if d := time.Duration(c.Broker.HeartbeatTimeout); d != 0 && (d < time.Second || d > time.Hour) {
		bad("broker.heartbeat_timeout", "%s is outside 1s..1h", d)
	}
	switch {
	case c.CA.CertFile != "" && c.CA.KeyFile == "":
		bad("ca.key_file", "is required when ca.cert_file is set")
	case c.CA.CertFile == "" && c.CA.KeyFile != "":
		bad("ca.cert_file", "is required when ca.key_file is set")
	}
	if c.CA.CRLURL != "" {
		u, err := url.Parse(c.CA.CRLURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || !strings.HasPrefix(u.Path, "/") || len(u.Path) < 2 {
			bad("ca.crl_url", "%q is not an absolute http or https URL with a path, such as http://pki.example.com/crl", c.CA.CRLURL)
		}
	}
}

// redactURL hides a URL's password, for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// crlPath is the path the CRL is served at.
func crlPath(crlURL string) (string, error) {
	u, err := url.Parse(crlURL)
	if err != nil {
		return "", fmt.Errorf("ca.crl_url: %w", err)
	}
	return u.Path, nil
}
