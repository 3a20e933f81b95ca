package brokeradmin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// managementBase is the shared broker's management API without /api, as an operator
// configures it.
const managementBase = "http://127.0.0.1:15672"

func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
}

// newClient is a client for the broker's vhost as guest (an administrator), changed by
// mods, closed when the test ends.
func newClient(t testing.TB, vhost string, mods ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{URL: managementBase, User: "guest", Password: "guest", VHost: vhost}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// admin is a guest client for what the tests do behind the package's back.
func admin(t testing.TB) *Client {
	t.Helper()
	return newClient(t, "/")
}

// newPassword is a random password of 32 hex digits.
func newPassword(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newAgent is an agent with a run-unique ID, its conventional user and a random
// password; its user is deleted when the test ends, whatever the test did with it.
func newAgent(t testing.TB) AgentUser {
	t.Helper()
	id := testenv.UniqueUser("ws-")
	user, err := protocol.AgentUser(id)
	if err != nil {
		t.Fatal(err)
	}
	deleteUsersAtEnd(t, user)
	return AgentUser{AgentID: id, User: user, Password: newPassword(t)}
}

// deleteUsersAtEnd deletes users when the test ends; one already gone is fine.
func deleteUsersAtEnd(t testing.TB, users ...string) {
	t.Helper()
	a := admin(t)
	t.Cleanup(func() {
		ctx := context.Background()
		// One request for many; it stops at the first user that does not exist, so the
		// rest are deleted one by one.
		if len(users) > 1 && a.do(ctx, http.MethodPost, "/users/bulk-delete", map[string][]string{"users": users}, nil, nil) == nil {
			return
		}
		for _, u := range users {
			if err := a.do(ctx, http.MethodDelete, apiPath("users", u), nil, nil, nil); err != nil && !errors.Is(err, ErrNotFound) {
				t.Errorf("deleting user %s: %v", u, err)
			}
		}
	})
}

// amqpURL is the AMQP URL of user on the vhost.
func amqpURL(vhost, user, password string) string {
	u := url.URL{Scheme: "amqp", User: url.UserPassword(user, password), Host: testenv.RabbitMQAddr, Path: "/" + vhost}
	return u.String()
}

// dial opens an AMQP connection, closed when the test ends.
func dial(t testing.TB, vhost, user, password string) (*amqp.Connection, error) {
	t.Helper()
	conn, err := amqp.DialConfig(amqpURL(vhost, user, password), amqp.Config{
		Properties: amqp.Table{"connection_name": "brokeradmin test " + user},
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, nil
}

// mustDial is dial that fails the test on error.
func mustDial(t testing.TB, vhost, user, password string) *amqp.Connection {
	t.Helper()
	conn, err := dial(t, vhost, user, password)
	if err != nil {
		t.Fatalf("AMQP login of %s on vhost %s: %v", user, vhost, err)
	}
	return conn
}

// declareAgents declares, as guest, the exchanges and the agents' command queues, as
// the coordinator does.
func declareAgents(t testing.TB, b *testenv.Broker, agentIDs ...string) {
	t.Helper()
	ch := channel(t, mustDial(t, b.VHost, "guest", "guest"))
	for _, x := range protocol.SharedTopology().Exchanges {
		if err := ch.ExchangeDeclare(x.Name, x.Kind, x.Durable, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range agentIDs {
		q, err := protocol.AgentQueueSpec(id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare(q.Name, q.Durable, false, false, false, amqp.Table(q.Args)); err != nil {
			t.Fatal(err)
		}
		for _, bd := range q.Bindings {
			if err := ch.QueueBind(q.Name, bd.RoutingKey, bd.Exchange, false, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func channel(t testing.TB, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("opening a channel: %v", err)
	}
	return ch
}

// refused runs op on a fresh channel of conn and says whether the broker refused it
// with ACCESS_REFUSED: a refusal closes the channel, asynchronously for a publish, so
// the answer is whatever NotifyClose or the call itself reports first.
func refused(t testing.TB, conn *amqp.Connection, op func(*amqp.Channel) error) bool {
	t.Helper()
	ch := channel(t, conn)
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	err := op(ch)
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return ae.Code == amqp.AccessRefused
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	// A publish: refused, the channel closes; accepted, the broker confirms it.
	select {
	case e := <-closed:
		return e != nil && e.Code == amqp.AccessRefused
	case c, ok := <-confirms:
		if !ok {
			// The library closes the confirmation channel when the broker closes the
			// channel: the refusal is on its way to closed.
			e := <-closed
			return e != nil && e.Code == amqp.AccessRefused
		}
		if !c.Ack {
			t.Fatalf("publish nacked")
		}
		_ = ch.Close()
		return false
	case <-time.After(60 * time.Second):
		t.Fatal("neither a confirm nor a refusal within a minute")
	}
	return false
}

// publish is an op for refused: publish a message to exchange with key as user.
func publish(exchange, key, user string) func(*amqp.Channel) error {
	return func(ch *amqp.Channel) error {
		return ch.PublishWithContext(context.Background(), exchange, key, false, false,
			amqp.Publishing{UserId: user, Body: []byte(`{}`), ContentType: protocol.ContentType})
	}
}

// waitClosed waits up to within for conn to be closed by the broker and returns why.
func waitClosed(t testing.TB, closed <-chan *amqp.Error, within time.Duration) *amqp.Error {
	t.Helper()
	select {
	case e := <-closed:
		if e == nil {
			t.Fatal("connection closed by the client, not the broker")
		}
		return e
	case <-time.After(within):
		t.Fatalf("the connection is still open after %v", within)
	}
	return nil
}

// inflight is a transport that counts the requests in flight.
type inflight struct {
	next http.RoundTripper

	mu       sync.Mutex // guards the fields below
	now, max int
	total    int
}

func (f *inflight) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.now++
	f.total++
	f.max = max(f.max, f.now)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.now--
		f.mu.Unlock()
	}()
	return f.next.RoundTrip(r)
}

func (f *inflight) stats() (maxInFlight, total int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.max, f.total
}

// permissionsOf returns what the API lists of user's permissions and topic permissions
// on the vhost.
func permissionsOf(t testing.TB, vhost, user string) (perms, topic []map[string]string) {
	t.Helper()
	a := admin(t)
	ctx := context.Background()
	if err := a.do(ctx, http.MethodGet, apiPath("users", user, "permissions"), nil, &perms, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.do(ctx, http.MethodGet, apiPath("users", user, "topic-permissions"), nil, &topic, nil); err != nil {
		t.Fatal(err)
	}
	return perms, topic
}

// wantPermissions is what the API lists for an agent with exactly protocol.AgentPermissions.
func wantPermissions(t testing.TB, vhost string, u AgentUser) (perms, topic []map[string]string) {
	t.Helper()
	p, err := protocol.AgentPermissions(u.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	return []map[string]string{{"user": u.User, "vhost": vhost, "configure": p.Configure, "write": p.Write, "read": p.Read}},
		[]map[string]string{{"user": u.User, "vhost": vhost, "exchange": p.TopicExchange, "write": p.TopicWrite, "read": p.TopicRead}}
}

// waitTracked waits until the broker's connection tracking lists n connections of user
// on the vhost: it learns of new ones asynchronously.
func waitTracked(t testing.TB, user, vhost string, n int) {
	t.Helper()
	a := admin(t)
	got := 0
	poll(t, 60*time.Second, func() bool {
		conns, err := a.userConnections(context.Background(), user)
		if err != nil {
			t.Fatal(err)
		}
		got = 0
		for _, c := range conns {
			if c.VHost == vhost {
				got++
			}
		}
		return got == n
	}, func() string {
		return fmt.Sprintf("the broker tracks %d connections of %s on %s, want %d", got, user, vhost, n)
	})
}

// poll checks cond every few milliseconds until it holds, failing t with what's message
// when within passes first.
func poll(t testing.TB, within time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
		<-tick.C
	}
}
