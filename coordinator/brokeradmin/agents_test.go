package brokeradmin

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestPutAgentPermissions: the broker lists exactly protocol.AgentPermissions for the
// user, no tags, and a password hash rather than a password; a second PutAgent changes
// nothing, and removes a topic permission on another exchange that was added meanwhile.
func TestPutAgentPermissions(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	ctx := testenv.Context(t)
	c := newClient(t, b.VHost)
	u := newAgent(t)
	if err := c.PutAgent(ctx, u); err != nil {
		t.Fatal(err)
	}
	wantPerms, wantTopic := wantPermissions(t, b.VHost, u)
	check := func(when string) {
		t.Helper()
		perms, topic := permissionsOf(t, b.VHost, u.User)
		if !reflect.DeepEqual(perms, wantPerms) {
			t.Errorf("%s: permissions %v, want %v", when, perms, wantPerms)
		}
		if !reflect.DeepEqual(topic, wantTopic) {
			t.Errorf("%s: topic permissions %v, want %v", when, topic, wantTopic)
		}
	}
	check("after PutAgent")

	var user struct {
		Tags             []string `json:"tags"`
		PasswordHash     string   `json:"password_hash"`
		HashingAlgorithm string   `json:"hashing_algorithm"`
	}
	if err := admin(t).do(ctx, http.MethodGet, apiPath("users", u.User), nil, &user, nil); err != nil {
		t.Fatal(err)
	}
	if len(user.Tags) != 0 || user.HashingAlgorithm != hashingAlgorithm {
		t.Errorf("user %+v, want no tags and %s", user, hashingAlgorithm)
	}
	// The stored hash is the hash of the password under its own salt.
	raw, err := base64.StdEncoding.DecodeString(user.PasswordHash)
	if err != nil || len(raw) != 4+32 || saltedHash(raw[:4], u.Password) != user.PasswordHash {
		t.Errorf("stored password hash %q is not the salted SHA-256 of the password", user.PasswordHash)
	}

	// Someone widens the agent's rights; provisioning again puts them back.
	b.SetTopicPermissions(t, u.User, "amq.topic", ".*", ".*")
	if err := admin(t).do(ctx, http.MethodPut, apiPath("permissions", b.VHost, u.User),
		map[string]string{"configure": ".*", "write": ".*", "read": ".*"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.PutAgent(ctx, u); err != nil {
		t.Fatal(err)
	}
	check("after PutAgent again")
}

// TestAgentAccess: with what PutAgent gives it, the agent logs in with its password (and
// not with another), consumes its own queue and publishes its own events, but may not
// declare a queue, read another agent's queue or publish under another agent's key.
func TestAgentAccess(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	ctx := testenv.Context(t)
	c := newClient(t, b.VHost)
	u, victim := newAgent(t), newAgent(t)
	declareAgents(t, b, u.AgentID, victim.AgentID)
	if err := c.PutAgents(ctx, []AgentUser{u, victim}); err != nil {
		t.Fatal(err)
	}

	if _, err := dial(t, b.VHost, u.User, victim.Password); !errors.Is(err, amqp.ErrCredentials) {
		t.Errorf("login with another's password: %v, want %v", err, amqp.ErrCredentials)
	}
	conn := mustDial(t, b.VHost, u.User, u.Password)

	// Its own queue: a command the coordinator sends arrives.
	queue, _ := protocol.AgentQueue(u.AgentID)
	deliveries, err := channel(t, conn).Consume(queue, "", true, true, false, false, nil)
	if err != nil {
		t.Fatalf("consuming its own queue: %v", err)
	}
	coord := channel(t, mustDial(t, b.VHost, "guest", "guest"))
	ex, key, err := protocol.CommandRoute(protocol.CommandsExchange, u.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.PublishWithContext(ctx, ex, key, false, false, amqp.Publishing{Body: []byte("cmd")}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		if string(d.Body) != "cmd" {
			t.Errorf("got %q", d.Body)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the command did not arrive within a minute")
	}

	own, _ := protocol.EventRoutingKey(protocol.TypeProgress, u.AgentID)
	others, _ := protocol.EventRoutingKey(protocol.TypeProgress, victim.AgentID)
	victimQueue, _ := protocol.AgentQueue(victim.AgentID)
	for _, tc := range []struct {
		what    string
		op      func(*amqp.Channel) error
		refused bool
	}{
		{"publishing its own event", publish(protocol.EventsExchange, own, u.User), false},
		{"publishing under another agent's key", publish(protocol.EventsExchange, others, u.User), true},
		{"publishing to the commands exchange", publish(protocol.CommandsExchange, victim.AgentID, u.User), true},
		{"publishing into another agent's queue through the default exchange", publish(protocol.DefaultExchange, victimQueue, u.User), true},
		{"publishing into the events queue through the default exchange", publish(protocol.DefaultExchange, protocol.EventsQueue, u.User), true},
		{"declaring a queue", func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare(queue+".x", false, true, false, false, nil)
			return err
		}, true},
		{"binding its queue to another agent's key", func(ch *amqp.Channel) error {
			return ch.QueueBind(queue, victim.AgentID, protocol.CommandsExchange, false, nil)
		}, true},
		{"reading another agent's queue", func(ch *amqp.Channel) error {
			_, _, err := ch.Get(victimQueue, false)
			return err
		}, true},
	} {
		if got := refused(t, conn, tc.op); got != tc.refused {
			t.Errorf("%s: refused %v, want %v", tc.what, got, tc.refused)
		}
	}
}

// TestSetPassword: the open connection stays open and usable; a new login needs the new
// password. A user that does not exist is not created.
func TestSetPassword(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	ctx := testenv.Context(t)
	c := newClient(t, b.VHost)
	u := newAgent(t)
	declareAgents(t, b, u.AgentID)
	if err := c.PutAgent(ctx, u); err != nil {
		t.Fatal(err)
	}
	old := mustDial(t, b.VHost, u.User, u.Password)
	closed := old.NotifyClose(make(chan *amqp.Error, 1))

	next := newPassword(t)
	if err := c.SetPassword(ctx, u.User, next); err != nil {
		t.Fatal(err)
	}
	key, _ := protocol.EventRoutingKey(protocol.TypeHeartbeat, u.AgentID)
	if refused(t, old, publish(protocol.EventsExchange, key, u.User)) {
		t.Error("the open connection lost its rights")
	}
	select {
	case e := <-closed:
		t.Fatalf("the open connection was closed: %v", e)
	default:
	}
	if _, err := dial(t, b.VHost, u.User, u.Password); !errors.Is(err, amqp.ErrCredentials) {
		t.Errorf("login with the old password: %v, want %v", err, amqp.ErrCredentials)
	}
	mustDial(t, b.VHost, u.User, next)
	// The permissions are untouched.
	perms, topic := permissionsOf(t, b.VHost, u.User)
	wantPerms, wantTopic := wantPermissions(t, b.VHost, u)
	if !reflect.DeepEqual(perms, wantPerms) || !reflect.DeepEqual(topic, wantTopic) {
		t.Errorf("permissions after SetPassword: %v %v", perms, topic)
	}

	ghost := newAgent(t)
	if err := c.SetPassword(ctx, ghost.User, next); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), ghost.User) {
		t.Errorf("SetPassword of a missing user: %v, want ErrNotFound naming it", err)
	}
	if err := admin(t).do(ctx, http.MethodGet, apiPath("users", ghost.User), nil, nil, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetPassword created the missing user: %v", err)
	}
}

// TestRemoveAgent: the agent's open connections close within 5 s with the reason given,
// the user is gone and cannot log in; removing it again is no error.
func TestRemoveAgent(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	ctx := testenv.Context(t)
	c := newClient(t, b.VHost)
	u := newAgent(t)
	declareAgents(t, b, u.AgentID)
	if err := c.PutAgent(ctx, u); err != nil {
		t.Fatal(err)
	}
	var closed []chan *amqp.Error
	for range 2 {
		conn := mustDial(t, b.VHost, u.User, u.Password)
		closed = append(closed, conn.NotifyClose(make(chan *amqp.Error, 1)))
	}
	waitTracked(t, u.User, b.VHost, 2)
	n, err := c.RemoveAgent(ctx, u.User, "agent revoked by alice: laptop stolen")
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("closed %d connections, want 2", n)
	}
	for _, ch := range closed {
		e := waitClosed(t, ch, 5*time.Second)
		if e.Code != amqp.ConnectionForced || !strings.Contains(e.Reason, "laptop stolen") {
			t.Errorf("closed with %v, want CONNECTION_FORCED with the reason", e)
		}
	}
	if err := admin(t).do(ctx, http.MethodGet, apiPath("users", u.User), nil, nil, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("the user is still there: %v", err)
	}
	if _, err := dial(t, b.VHost, u.User, u.Password); !errors.Is(err, amqp.ErrCredentials) {
		t.Errorf("login of the removed user: %v, want %v", err, amqp.ErrCredentials)
	}
	if n, err := c.RemoveAgent(ctx, u.User, "again"); err != nil || n != 0 {
		t.Errorf("removing it again: %d, %v", n, err)
	}
}

// TestCloseConnectionsThisVhostOnly: a user with connections on two vhosts loses only
// those on the client's vhost (closed one by one, by name).
func TestCloseConnectionsThisVhostOnly(t *testing.T) {
	t.Parallel()
	b, other := testenv.NewBroker(t), testenv.NewBroker(t)
	ctx := testenv.Context(t)
	c := newClient(t, b.VHost)
	u := newAgent(t)
	if err := c.PutAgent(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := admin(t).do(ctx, http.MethodPut, apiPath("permissions", other.VHost, u.User),
		map[string]string{"configure": "^$", "write": "^$", "read": "^$"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	here := mustDial(t, b.VHost, u.User, u.Password).NotifyClose(make(chan *amqp.Error, 1))
	there := mustDial(t, other.VHost, u.User, u.Password).NotifyClose(make(chan *amqp.Error, 1))
	waitTracked(t, u.User, b.VHost, 1)
	waitTracked(t, u.User, other.VHost, 1)
	n, err := c.CloseConnections(ctx, u.User, "")
	if err != nil || n != 1 {
		t.Fatalf("CloseConnections: %d, %v; want 1", n, err)
	}
	if e := waitClosed(t, here, 5*time.Second); !strings.Contains(e.Reason, defaultReason) {
		t.Errorf("closed with %v, want the default reason", e)
	}
	select {
	case e := <-there:
		t.Errorf("the connection on the other vhost was closed: %v", e)
	default:
	}
	// The tracking forgets the closed connection asynchronously; until then the
	// statistics may still know it, and closing it again would count it.
	waitTracked(t, u.User, b.VHost, 0)
	if n, err := c.CloseConnections(ctx, u.User, ""); err != nil || n != 0 {
		t.Errorf("closing again: %d, %v; want 0", n, err)
	}
}

// TestEscaping: a vhost with a slash and a space, and a user with the same, are
// provisioned, reached and removed like any other.
func TestEscaping(t *testing.T) {
	t.Parallel()
	ctx := testenv.Context(t)
	a := admin(t)
	vhost := testenv.UniqueUser("tokenfleet-test-") + "/odd vhost"
	if err := a.do(ctx, http.MethodPut, apiPath("vhosts", vhost), map[string]string{}, nil, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.do(context.Background(), http.MethodDelete, apiPath("vhosts", vhost), nil, nil, nil); err != nil {
			t.Errorf("deleting vhost %q: %v", vhost, err)
		}
	})
	c := newClient(t, vhost)
	if err := c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	u := newAgent(t)
	u.User += "/odd user"
	deleteUsersAtEnd(t, u.User)
	if err := c.PutAgent(ctx, u); err != nil {
		t.Fatal(err)
	}
	perms, topic := permissionsOf(t, vhost, u.User)
	wantPerms, wantTopic := wantPermissions(t, vhost, u)
	if !reflect.DeepEqual(perms, wantPerms) || !reflect.DeepEqual(topic, wantTopic) {
		t.Errorf("permissions %v %v, want %v %v", perms, topic, wantPerms, wantTopic)
	}
	closed := mustDial(t, vhost, u.User, u.Password).NotifyClose(make(chan *amqp.Error, 1))
	waitTracked(t, u.User, vhost, 1)
	if n, err := c.RemoveAgent(ctx, u.User, "bye"); err != nil || n != 1 {
		t.Fatalf("RemoveAgent: %d, %v", n, err)
	}
	if e := waitClosed(t, closed, 5*time.Second); e == nil {
		t.Error("the connection closed without the broker saying why")
	}
}

// TestRefusesOtherUsers: a user with tags and the management user itself are never
// changed or deleted; a bad agent ID, user or password is refused before any request.
func TestRefusesOtherUsers(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	ctx := testenv.Context(t)
	c := newClient(t, b.VHost)
	operator := testenv.UniqueUser("operator-")
	deleteUsersAtEnd(t, operator)
	opPassword := newPassword(t)
	if err := admin(t).do(ctx, http.MethodPut, apiPath("users", operator),
		map[string]string{"password": opPassword, "tags": "management"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	id := testenv.UniqueUser("ws-")
	for _, user := range []string{operator, "guest"} {
		if err := c.PutAgent(ctx, AgentUser{AgentID: id, User: user, Password: newPassword(t)}); !errors.Is(err, ErrNotAgentUser) {
			t.Errorf("PutAgent over %s: %v, want ErrNotAgentUser", user, err)
		}
		if err := c.SetPassword(ctx, user, newPassword(t)); !errors.Is(err, ErrNotAgentUser) {
			t.Errorf("SetPassword of %s: %v, want ErrNotAgentUser", user, err)
		}
		if _, err := c.RemoveAgent(ctx, user, "x"); !errors.Is(err, ErrNotAgentUser) {
			t.Errorf("RemoveAgent of %s: %v, want ErrNotAgentUser", user, err)
		}
	}
	// The operator still logs in with its own password.
	opClient := newClient(t, b.VHost, func(cfg *Config) { cfg.User, cfg.Password = operator, opPassword })
	if err := opClient.do(ctx, http.MethodGet, "/whoami", nil, nil, nil); err != nil {
		t.Errorf("the operator's login: %v", err)
	}

	for name, tc := range map[string]struct {
		u    AgentUser
		want string
	}{
		"bad ID":         {AgentUser{AgentID: "Not An ID", Password: newPassword(t)}, "agent ID"},
		"short password": {AgentUser{AgentID: id, Password: "short"}, "shorter than 16"},
		"NUL":            {AgentUser{AgentID: id, Password: strings.Repeat("x", 16) + "\x00"}, "NUL"},
		"control char":   {AgentUser{AgentID: id, User: "a\nb", Password: newPassword(t)}, "control character"},
	} {
		if err := c.PutAgent(ctx, tc.u); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

// TestPutAgents: 200 agents are provisioned with several requests in flight, never more
// than 16; a bad agent and a user listed twice fail alone, named, and the rest succeed.
func TestPutAgents(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	ctx := testenv.Context(t)
	counter := &inflight{next: http.DefaultTransport}
	c := newClient(t, b.VHost, func(cfg *Config) { cfg.HTTPClient = &http.Client{Transport: counter} })
	us := make([]AgentUser, 200)
	users := make([]string, len(us))
	for i := range us {
		id := testenv.UniqueUser("ws-")
		user, _ := protocol.AgentUser(id)
		us[i], users[i] = AgentUser{AgentID: id, Password: newPassword(t)}, user
	}
	deleteUsersAtEnd(t, users...)
	batch := append(append([]AgentUser(nil), us...),
		AgentUser{AgentID: "Bad ID", Password: newPassword(t)},
		AgentUser{AgentID: "ws-twice", User: users[7], Password: newPassword(t)})
	err := c.PutAgents(ctx, batch)
	var agentErrs []*AgentError
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			var ae *AgentError
			if errors.As(e, &ae) {
				agentErrs = append(agentErrs, ae)
			}
		}
	}
	if len(agentErrs) != 2 || agentErrs[0].AgentID != "Bad ID" || agentErrs[1].AgentID != "ws-twice" ||
		!strings.Contains(err.Error(), "also agent "+us[7].AgentID) {
		t.Fatalf("PutAgents: %v, want the bad ID and the duplicate named", err)
	}
	maxInFlight, total := counter.stats()
	if maxInFlight < 2 || maxInFlight > parallel {
		t.Errorf("at most %d requests in flight, want between 2 and %d", maxInFlight, parallel)
	}
	t.Logf("%d requests, at most %d in flight", total, maxInFlight)

	var listed []struct {
		User string `json:"user"`
	}
	if err := admin(t).do(ctx, http.MethodGet, apiPath("vhosts", b.VHost, "permissions"), nil, &listed, nil); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, p := range listed {
		have[p.User] = true
	}
	for _, user := range users {
		if !have[user] {
			t.Errorf("user %s has no permissions on the vhost", user)
		}
	}
	// A sample logs in.
	mustDial(t, b.VHost, users[199], us[199].Password)
	if len(listed) != len(users)+1 { // and guest
		t.Errorf("%d users with permissions on the vhost, want %d", len(listed), len(users)+1)
	}
}

// TestPutAgentsCancelled: a cancelled context stops the batch and says how many were
// not provisioned.
func TestPutAgentsCancelled(t *testing.T) {
	t.Parallel()
	c := newClient(t, "fleet")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	us := []AgentUser{{AgentID: "ws-1", Password: strings.Repeat("p", 16)}, {AgentID: "ws-2", Password: strings.Repeat("p", 16)}}
	err := c.PutAgents(ctx, us)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("PutAgents with a cancelled context: %v", err)
	}
}
