package amqp

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestLoginRefused: a wrong password and a vhost the user may not use are told apart from
// a broker that is down, as *LoginRefusedError naming the user (and the vhost), while the
// Conn keeps retrying as for any failed attempt; a broker that refuses connections is not
// a refused login.
func TestLoginRefused(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	other := testenv.NewBroker(t)
	user := testenv.UniqueUser("login-")
	good := b.AddUser(t, user, "^$", "^$", "^$")
	u, err := url.Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	wrongPassword := *u
	wrongPassword.User = url.UserPassword(user, "not-the-password")
	otherVhost := *u
	otherVhost.Path = "/" + other.VHost

	for _, tc := range []struct {
		name, url   string
		vhostDenied bool
		want        string
	}{
		{"wrong password", wrongPassword.String(), false, `the broker refused the login of user "` + user + `" (wrong password or no such user)`},
		{"vhost denied", otherVhost.String(), true, `the broker refused user "` + user + `" access to vhost "` + other.VHost + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Open(context.Background(), Config{URL: tc.url, Backoff: fastBackoff, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			waitFor(t, 60*time.Second, "the refused login", func() bool { return c.Status().Err != nil })
			err = c.Status().Err
			var le *LoginRefusedError
			if !errors.Is(err, ErrLoginRefused) || !errors.As(err, &le) {
				t.Fatalf("status error %v, want a *LoginRefusedError", err)
			}
			if le.User != user || le.VhostDenied != tc.vhostDenied || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q (%+v), want %q", err, le, tc.want)
			}
		})
	}

	// Nothing listens: not a refused login.
	c, err := Open(context.Background(), Config{URL: "amqp://guest:guest@127.0.0.1:1/", Backoff: fastBackoff, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	waitFor(t, 60*time.Second, "the failed dial", func() bool { return c.Status().Err != nil })
	if err := c.Status().Err; errors.Is(err, ErrLoginRefused) {
		t.Errorf("connection refused taken for a refused login: %v", err)
	}
}

// TestPasswordRenewedAfterRefusal: with Config.Password, each attempt asks for the
// password, and is told when the broker refused the last one's: an agent whose password
// was rotated while it was away fetches the new one and connects.
func TestPasswordRenewedAfterRefusal(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	user := testenv.UniqueUser("rotated-")
	good := b.AddUser(t, user, "^$", "^$", "^$")
	u, err := url.Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	current, _ := u.User.Password()
	u.User = url.User(user) // the URL holds no password: Password gives it
	var asked []bool
	var mu sync.Mutex
	c, err := Open(context.Background(), Config{URL: u.String(), Backoff: fastBackoff, Logger: testLogger(t),
		Password: func(_ context.Context, refused bool) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, refused)
			if !refused {
				return "the-old-password", nil
			}
			return current, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	waitFor(t, 60*time.Second, "the connection", func() bool { return c.Status().State == StateConnected })
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 || asked[0] || !asked[1] {
		t.Fatalf("asked for the password %v times with refused %v; want twice, refused the second time", len(asked), asked)
	}
}
