package coordinator

import (
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
)

func TestAgentUsersDefault(t *testing.T) {
	for _, tc := range []struct {
		url, set string
		want     dispatch.AgentUsers
	}{
		{DefaultBrokerURL, "", dispatch.AgentUsersShared},
		{"amqp://guest:guest@localhost:5672/", "", dispatch.AgentUsersShared},
		{"amqp://tf:pw@[::1]:5672/", "", dispatch.AgentUsersShared},
		{"amqps://tf:pw@mq.example:5671/tokenfleet", "", dispatch.AgentUsersPerAgent},
		{"amqp://tf:pw@10.0.0.5:5672/", "", dispatch.AgentUsersPerAgent},
		{DefaultBrokerURL, "per_agent", dispatch.AgentUsersPerAgent},
		{"amqps://tf:pw@mq.example:5671/", "shared", dispatch.AgentUsersShared},
	} {
		c := DefaultConfig()
		c.Broker = BrokerConfig{URL: tc.url, AgentUsers: tc.set}
		if got := c.agentUsers(); got != tc.want {
			t.Errorf("%s with %q: %s, want %s", tc.url, tc.set, got, tc.want)
		}
	}
}

func TestCRLURLDefault(t *testing.T) {
	c := DefaultConfig()
	if got := c.crlURL("127.0.0.1:8443"); got != "http://127.0.0.1:8443/crl" {
		t.Errorf("plain HTTP: %s", got)
	}
	c.TLS = TLSConfig{CertFile: "c.pem", KeyFile: "k.pem"}
	if got := c.crlURL("tf.example:8443"); got != "https://tf.example:8443/crl" {
		t.Errorf("TLS: %s", got)
	}
	c.CA.CRLURL = "http://pki.example/tf.crl"
	if got := c.crlURL("tf.example:8443"); got != c.CA.CRLURL {
		t.Errorf("configured: %s", got)
	}
	if p, err := crlPath(c.CA.CRLURL); err != nil || p != "/tf.crl" {
		t.Errorf("path %q, %v", p, err)
	}
	if got := redactURL("amqp://u:hunter2@mq/"); got != "amqp://u:xxxxx@mq/" {
		t.Errorf("redacted %q", got)
	}
}
