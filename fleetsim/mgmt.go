package fleetsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Management reads queue depths from RabbitMQ's management HTTP API.
type Management struct {
	base  *url.URL // scheme and host
	user  string
	pass  string
	vhost string
	hc    *http.Client
}

// NewManagement makes a reader of the management API at rawURL
// (http://user:password@host:15672) for the queues of vhost.
func NewManagement(rawURL, vhost string) (*Management, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("management URL %q: want http://user:password@host:15672", rawURL)
	}
	m := &Management{base: &url.URL{Scheme: u.Scheme, Host: u.Host}, vhost: vhost, hc: &http.Client{Timeout: 5 * time.Second}}
	if u.User != nil {
		m.user = u.User.Username()
		m.pass, _ = u.User.Password()
	}
	return m, nil
}

// QueueDepth is a queue's messages (ready and unacknowledged) and consumers.
type QueueDepth struct {
	Messages  int `json:"messages"`
	Consumers int `json:"consumers"`
}

// Queue returns the depth of one queue of the vhost.
func (m *Management) Queue(ctx context.Context, name string) (QueueDepth, error) {
	var q QueueDepth
	u := m.base.JoinPath("api", "queues", m.vhost, name)
	// JoinPath escapes '/' in the vhost as the API wants only when it is encoded by hand.
	u.RawPath = "/api/queues/" + url.PathEscape(m.vhost) + "/" + url.PathEscape(name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return q, err
	}
	req.SetBasicAuth(m.user, m.pass)
	resp, err := m.hc.Do(req)
	if err != nil {
		return q, fmt.Errorf("management API: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return q, fmt.Errorf("management API: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return q, fmt.Errorf("management API: queue %s in vhost %s: %s: %s", name, m.vhost, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &q); err != nil {
		return q, fmt.Errorf("management API: queue %s: %w", name, err)
	}
	return q, nil
}

// VHostOf is the vhost an amqp:// URL names ("/" when it names none).
func VHostOf(brokerURL string) (string, error) {
	u, err := url.Parse(brokerURL)
	if err != nil {
		return "", fmt.Errorf("broker URL does not parse")
	}
	v := strings.TrimPrefix(u.Path, "/")
	if v == "" {
		return "/", nil
	}
	return url.PathUnescape(v)
}
