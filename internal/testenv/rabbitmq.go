package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"
)

// RabbitMQAddr is the broker every test run shares; each test isolates itself in a vhost
// of its own.
const RabbitMQAddr = "127.0.0.1:5672"

const rabbitHint = "start it with `make test` (it starts RabbitMQ) or: rabbitmq-server -detached"

// Broker is a private vhost on the shared RabbitMQ.
type Broker struct {
	VHost string
	URL   string // amqp://guest:guest@127.0.0.1:5672/<vhost>
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b)
}

// RequireRabbitMQ fails the test when nothing listens on the broker's port.
func RequireRabbitMQ(t testing.TB) {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(context.Background(), "tcp", RabbitMQAddr)
	if err != nil {
		t.Fatalf("RabbitMQ is not reachable on %s (%v); %s", RabbitMQAddr, err, rabbitHint)
	}
	_ = c.Close()
}

// NewBroker creates a vhost of its own for the test (guest may use it) and deletes it when
// the test ends, with everything in it. Nothing outside that vhost is touched.
func NewBroker(t testing.TB) *Broker {
	t.Helper()
	RequireRabbitMQ(t)
	vhost := randomName("tokenfleet-test-")
	Run(t, "rabbitmqctl", "-q", "add_vhost", vhost)
	t.Cleanup(func() {
		if out, err := RunErr("rabbitmqctl", "-q", "delete_vhost", vhost); err != nil {
			t.Logf("deleting vhost %s: %v\n%s", vhost, err, out)
		}
	})
	Run(t, "rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
	return &Broker{VHost: vhost, URL: "amqp://guest:guest@" + RabbitMQAddr + "/" + url.PathEscape(vhost)}
}

// AddUser creates a broker user with a random password and the given permissions
// (configure, write, read regular expressions) on the broker's vhost, deleted when the
// test ends. It returns the user's AMQP URL.
func (b *Broker) AddUser(t testing.TB, user, configure, write, read string) string {
	t.Helper()
	pass := randomName("")
	Run(t, "rabbitmqctl", "-q", "add_user", user, pass)
	t.Cleanup(func() { _, _ = RunErr("rabbitmqctl", "-q", "delete_user", user) })
	Run(t, "rabbitmqctl", "-q", "set_permissions", "-p", b.VHost, user, configure, write, read)
	return fmt.Sprintf("amqp://%s:%s@%s/%s", url.PathEscape(user), pass, RabbitMQAddr, url.PathEscape(b.VHost))
}

// CloseConnections closes every client connection of the broker's vhost, as an
// operator's `rabbitmqctl close_all_connections` would, without touching other vhosts.
func (b *Broker) CloseConnections(t testing.TB, why string) {
	t.Helper()
	Run(t, "rabbitmqctl", "-q", "close_all_connections", "--vhost", b.VHost, why)
}

// UniqueUser is a broker user name no other test run uses.
func UniqueUser(prefix string) string { return randomName(prefix) }
