// Package sdnotifytest stands in for systemd's notification socket in tests of services
// that report READY=1 and STOPPING=1.
package sdnotifytest

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Socket receives what a service tells systemd.
type Socket struct {
	// Path is the socket to name in the service's NOTIFY_SOCKET.
	Path string

	mu      sync.Mutex // guards the fields below
	states  []string
	changed chan struct{}
}

// Listen opens a notification socket in a temporary directory, closed when the test ends.
func Listen(t testing.TB) *Socket {
	t.Helper()
	n := &Socket{Path: filepath.Join(t.TempDir(), "notify.sock"), changed: make(chan struct{})}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.states = append(n.states, strings.Split(string(buf[:k]), "\n")...)
			close(n.changed)
			n.changed = make(chan struct{})
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return n
}

// Wait waits up to limit until the service sent state, counting from the start.
func (n *Socket) Wait(t testing.TB, state string, limit time.Duration) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		n.mu.Lock()
		found, changed := slices.Contains(n.states, state), n.changed
		n.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("the service never sent %s", state)
		}
	}
}

// Count says how often the service sent state.
func (n *Socket) Count(state string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, s := range n.states {
		if s == state {
			c++
		}
	}
	return c
}
