package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// RabbitMQAddr is the broker every test run shares; each test isolates itself in a vhost
// of its own.
const RabbitMQAddr = "127.0.0.1:5672"

const rabbitHint = "start it with `make test` (it starts RabbitMQ) or: rabbitmq-server -detached"

// Broker is a private vhost on the shared RabbitMQ.
type Broker struct {
	VHost string
	URL   string // amqp://guest:guest@127.0.0.1:5672/<vhost>

	mu    sync.Mutex // guards users
	users []string   // made by AddUser
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b)
}

// RequireRabbitMQ fails the test when nothing listens on the broker's port or its
// management API does not answer.
func RequireRabbitMQ(t testing.TB) {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(context.Background(), "tcp", RabbitMQAddr)
	if err != nil {
		t.Fatalf("RabbitMQ is not reachable on %s (%v); %s", RabbitMQAddr, err, rabbitHint)
	}
	_ = c.Close()
	if err := CheckManagementAPI(); err != nil {
		t.Fatal(err)
	}
}

// NewBroker creates a vhost of its own for the test (guest may use it) and deletes it when
// the test ends, with everything in it. Nothing outside that vhost is touched.
func NewBroker(t testing.TB) *Broker {
	t.Helper()
	RequireRabbitMQ(t)
	vhost := randomName("tokenfleet-test-")
	mgmt(t, "PUT", "/vhosts/"+url.PathEscape(vhost), map[string]any{"description": "tokenfleet test"})
	t.Cleanup(func() {
		if err := mgmtDo("DELETE", "/vhosts/"+url.PathEscape(vhost), nil, nil); err != nil {
			t.Logf("deleting vhost %s: %v", vhost, err)
		}
	})
	b := &Broker{VHost: vhost, URL: "amqp://guest:guest@" + RabbitMQAddr + "/" + url.PathEscape(vhost)}
	b.setPermissions(t, "guest", ".*", ".*", ".*")
	return b
}

func (b *Broker) setPermissions(t testing.TB, user, configure, write, read string) {
	t.Helper()
	mgmt(t, "PUT", "/permissions/"+url.PathEscape(b.VHost)+"/"+url.PathEscape(user),
		map[string]string{"configure": configure, "write": write, "read": read})
}

// AddUser creates a broker user with a random password and the given permissions
// (configure, write, read regular expressions) on the broker's vhost, deleted when the
// test ends. It returns the user's AMQP URL.
//
// Users belong to the whole broker, not to the vhost: a name must not be used by two
// test runs at once. Names from UniqueUser (or agent IDs made with it) never collide.
// A fixed name is taken under a broker-wide lock held until the test ends, so a second
// run on the same machine waits for the first to finish with it instead of overwriting
// its password or deleting the user under it.
func (b *Broker) AddUser(t testing.TB, user, configure, write, read string) string {
	t.Helper()
	if !isUniqueName(user) {
		lockName(t, "user."+user)
	}
	pass := randomName("")
	// Tags "" is an ordinary client user: no management or policy rights.
	mgmt(t, "PUT", "/users/"+url.PathEscape(user), map[string]string{"password": pass, "tags": ""})
	t.Cleanup(func() {
		if err := mgmtDo("DELETE", "/users/"+url.PathEscape(user), nil, nil); err != nil {
			t.Logf("deleting user %s: %v", user, err)
		}
	})
	b.setPermissions(t, user, configure, write, read)
	b.mu.Lock()
	b.users = append(b.users, user)
	b.mu.Unlock()
	return fmt.Sprintf("amqp://%s:%s@%s/%s", url.PathEscape(user), pass, RabbitMQAddr, url.PathEscape(b.VHost))
}

// CloseConnections closes every client connection of the broker's vhost, as an
// operator's `rabbitmqctl close_all_connections` would, without touching other vhosts.
func (b *Broker) CloseConnections(t testing.TB, why string) {
	t.Helper()
	// The management API's general connection lists lag by its statistics interval (5 s):
	// a client that just reconnected would be missed. Its per-user lists come from the
	// broker's connection tracking and are current, so ask for each user that may
	// connect to this vhost: guest and the users AddUser made.
	b.mu.Lock()
	users := append([]string{"guest"}, b.users...)
	b.mu.Unlock()
	for _, user := range users {
		for _, name := range b.trackedConnections(t, user) {
			b.closeConnection(t, user, name, why)
		}
	}
}

// trackedConnections lists the connections of user to the broker's vhost.
func (b *Broker) trackedConnections(t testing.TB, user string) []string {
	t.Helper()
	var conns []struct {
		Name  string `json:"name"`
		VHost string `json:"vhost"`
	}
	if err := mgmtDo("GET", "/connections/username/"+url.PathEscape(user), nil, &conns); err != nil {
		t.Fatalf("testenv: listing connections of user %s: %v; %s", user, err, managementHint)
	}
	var names []string
	for _, c := range conns {
		if c.VHost == b.VHost { // not another test's, nor another run's
			names = append(names, c.Name)
		}
	}
	return names
}

// closeConnection closes one connection of user to the vhost. Closing goes through the
// management API's statistics, which learn of a connection up to 5 s after it opened:
// until then the API answers 404, so it retries while the connection is still open.
func (b *Broker) closeConnection(t testing.TB, user, name, why string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // generous: the broker may be busy
	for {
		err := mgmtDoReason("DELETE", "/connections/"+url.PathEscape(name), why)
		var se *statusError
		if err == nil {
			return
		}
		// 500: the connection's process ended while the API was closing it (seen on a
		// busy broker); whether it is gone is what the next look says.
		if !errors.As(err, &se) || (se.code != 404 && se.code != 500) {
			t.Fatalf("testenv: closing connection %s: %v", name, err)
		}
		if !slices.Contains(b.trackedConnections(t, user), name) {
			return // it closed by itself meanwhile
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: connection %s of vhost %s stayed unknown to the management API for a minute", name, b.VHost)
		}
		time.Sleep(100 * time.Millisecond) // polling interval until the statistics know it
	}
}

// UniqueUser is a broker user name no other test run uses.
func UniqueUser(prefix string) string {
	name := randomName(prefix)
	uniqueMu.Lock()
	uniqueNames[name] = true
	uniqueMu.Unlock()
	return name
}

var (
	uniqueMu    sync.Mutex
	uniqueNames = map[string]bool{} // names UniqueUser made in this process
)

// isUniqueName reports whether name contains one that UniqueUser made (an agent ID made
// with it gives the user "agent-<id>").
func isUniqueName(name string) bool {
	uniqueMu.Lock()
	defer uniqueMu.Unlock()
	for u := range uniqueNames {
		if strings.Contains(name, u) {
			return true
		}
	}
	return false
}

// lockWait bounds how long a test waits for another run to release a broker-wide name:
// the other run's test may be slow on a busy machine.
const lockWait = 10 * time.Minute

// lockName takes a broker-wide lock on name until the test ends. The lock is an exclusive
// queue in the default vhost: RabbitMQ lets only one connection declare it, and deletes it
// when that connection goes, so a run that crashes never leaves the lock taken.
func lockName(t testing.TB, name string) {
	t.Helper()
	queue := "tokenfleet-test-lock." + name
	conn, err := amqp.Dial("amqp://guest:guest@" + RabbitMQAddr + "/")
	if err != nil {
		t.Fatalf("testenv: lock %s: connecting to the default vhost as guest: %v; %s", name, err, rabbitHint)
	}
	t.Cleanup(func() { _ = conn.Close() })
	deadline := time.Now().Add(lockWait)
	for {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatalf("testenv: lock %s: %v", name, err)
		}
		_, err = ch.QueueDeclare(queue, false, true, true, false, nil)
		if err == nil {
			return // the channel stays open with the connection; both close at cleanup
		}
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.ResourceLocked {
			t.Fatalf("testenv: lock %s: declaring exclusive queue %s: %v", name, queue, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: another test run has held broker-wide name %s for %v", name, lockWait)
		}
		time.Sleep(100 * time.Millisecond) // polling interval while another run holds it
	}
}

// QueueCounts returns the ready messages and the consumers of a queue of the broker's
// vhost as the broker sees them now (a passive declare: exact, unlike the management
// API's statistics, which lag by seconds).
func (b *Broker) QueueCounts(t testing.TB, queue string) (ready, consumers int) {
	t.Helper()
	conn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatalf("testenv: connecting to vhost %s: %v", b.VHost, err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatalf("testenv: queue %s of vhost %s: %v", queue, b.VHost, err)
	}
	return q.Messages, q.Consumers
}
