package coordinator

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/brokeradmin"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// ManagementConfig points the coordinator at RabbitMQ's management HTTP API, through
// which it creates, rotates and deletes each self-enrolled agent's broker user. Without
// it, agents cannot enrol themselves: an administrator enrols each one and makes its
// broker user by hand.
type ManagementConfig struct {
	// URL is the API's base, http://127.0.0.1:15672 or https://mq.example.org:15671.
	URL string `yaml:"url"`
	// User is a broker user with the administrator tag (the least that may manage users).
	User string `yaml:"user"`
	// PasswordFile holds its password (first line), kept off the command line.
	PasswordFile string `yaml:"password_file"`
	// CAFile is the CA of an https API; empty: the system roots.
	CAFile string `yaml:"ca_file"`
	// InsecureHTTP allows http:// to a host other than this one.
	InsecureHTTP bool `yaml:"insecure_http"`
}

// managementEnabled says whether self-enrolment is configured.
func (c Config) managementEnabled() bool { return c.Broker.Management.URL != "" }

// validateManagement checks broker.management and broker.agent_url.
func (c Config) validateManagement(bad func(field, format string, args ...any)) {
	m := c.Broker.Management
	if u := c.Broker.AgentURL; u != "" {
		p, err := url.Parse(u)
		switch {
		case err != nil:
			bad("broker.agent_url", "%v", err)
		case p.Scheme != "amqp" && p.Scheme != "amqps":
			bad("broker.agent_url", "scheme %q: want amqps:// (or amqp:// on a trusted network)", p.Scheme)
		case p.User != nil:
			bad("broker.agent_url", "holds credentials: agents get their own at enrolment; give the URL without user and password")
		}
	}
	if !c.managementEnabled() {
		if m.User != "" || m.PasswordFile != "" || m.CAFile != "" {
			bad("broker.management.url", "is required when broker.management is set: the management API's base, e.g. https://mq.example.org:15671")
		}
		return
	}
	if m.User == "" {
		bad("broker.management.user", "is required: a broker user with the administrator tag")
	}
	if m.PasswordFile == "" {
		bad("broker.management.password_file", "is required: a file holding the management user's password")
	} else if _, err := readSecretFile(m.PasswordFile); err != nil {
		bad("broker.management.password_file", "%v", err)
	}
	if _, err := c.brokerVHost(); err != nil {
		bad("broker.url", "%v", err)
	}
}

// brokerVHost is the vhost of broker.url: the agents' users get their permissions there.
func (c Config) brokerVHost() (string, error) {
	u, err := url.Parse(c.Broker.URL)
	if err != nil {
		return "", err
	}
	v := strings.TrimPrefix(u.Path, "/")
	if v == "" {
		return "/", nil
	}
	return url.PathUnescape(v)
}

// agentBrokerURL is the URL agents are told at enrolment: broker.agent_url, or
// broker.url without its credentials.
func (c Config) agentBrokerURL() string {
	if c.Broker.AgentURL != "" {
		return c.Broker.AgentURL
	}
	u, err := url.Parse(c.Broker.URL)
	if err != nil {
		return ""
	}
	u.User = nil
	return u.String()
}

func readSecretFile(name string) (string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSpace(line)
	if line == "" {
		return "", fmt.Errorf("%s is empty: write the password on its first line", name)
	}
	return line, nil
}

// managementClient makes the management API client; nil, nil when not configured.
func (c Config) managementClient(log zerolog.Logger) (*brokeradmin.Client, error) {
	if !c.managementEnabled() {
		return nil, nil
	}
	m := c.Broker.Management
	password, err := readSecretFile(m.PasswordFile)
	if err != nil {
		return nil, c.fieldError("broker.management.password_file", err.Error())
	}
	vhost, err := c.brokerVHost()
	if err != nil {
		return nil, c.fieldError("broker.url", err.Error())
	}
	cl, err := brokeradmin.New(brokeradmin.Config{URL: m.URL, User: m.User, Password: password, VHost: vhost,
		CAFile: m.CAFile, AllowInsecure: m.InsecureHTTP}, log)
	if err != nil {
		return nil, c.fieldError("broker.management", err.Error())
	}
	return cl, nil
}

// setupManagement makes the broker identities of self-enrolment, nil when
// broker.management is not set. A management API that does not answer yet is logged, not
// fatal: the broker may be starting too, and enrolments say what fails meanwhile.
func (s *Server) setupManagement(ctx context.Context) (service.BrokerIdentities, error) {
	cl, err := s.cfg.managementClient(s.base.With().Str("component", "brokeradmin").Logger())
	if err != nil || cl == nil {
		if err == nil {
			s.log.Info().Msg("self-enrolment off: broker.management is not set; agents are enrolled by an administrator")
		}
		return nil, err
	}
	s.mgmt = cl
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.Check(cctx); err != nil {
		s.log.Warn().Err(err).Msg("the broker's management API is not usable yet; self-enrolment fails until it is")
	} else {
		s.log.Info().Str("url", s.cfg.Broker.Management.URL).Str("vhost", cl.VHost()).Msg("self-enrolment on: agents' broker users are provisioned through the management API")
	}
	return brokeradmin.Identities{Client: cl}, nil
}
