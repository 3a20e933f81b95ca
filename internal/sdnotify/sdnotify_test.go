//go:build linux

package sdnotify_test

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/internal/sdnotify"
)

// listen stands in for systemd: a datagram socket whose path goes in $NOTIFY_SOCKET.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func read(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	return string(buf[:n])
}

func TestNotifySendsOneDatagram(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn := listen(t, path)
	t.Setenv(sdnotify.SocketEnv, path)

	sent, err := sdnotify.Notify(sdnotify.Ready, sdnotify.Status("connected\nto the broker"))
	if err != nil || !sent {
		t.Fatalf("Notify = %t, %v", sent, err)
	}
	if got, want := read(t, conn), "READY=1\nSTATUS=connected to the broker"; got != want {
		t.Errorf("datagram %q, want %q", got, want)
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	name := "tokenfleet-sdnotify-test-" + strings.ReplaceAll(t.TempDir(), "/", "-")
	conn := listen(t, "\x00"+name)
	t.Setenv(sdnotify.SocketEnv, "@"+name)
	if sent, err := sdnotify.Notify(sdnotify.Stopping); err != nil || !sent {
		t.Fatalf("Notify = %t, %v", sent, err)
	}
	if got := read(t, conn); got != "STOPPING=1" {
		t.Errorf("datagram %q", got)
	}
}

func TestNotifyOutsideSystemd(t *testing.T) {
	t.Setenv(sdnotify.SocketEnv, "")
	if sent, err := sdnotify.Notify(sdnotify.Ready); sent || err != nil {
		t.Errorf("Notify without a socket = %t, %v; want false, nil", sent, err)
	}
}

func TestNotifyMissingSocket(t *testing.T) {
	t.Setenv(sdnotify.SocketEnv, filepath.Join(t.TempDir(), "gone.sock"))
	if sent, err := sdnotify.Notify(sdnotify.Ready); sent || err == nil {
		t.Errorf("Notify to a missing socket = %t, %v; want an error", sent, err)
	}
	t.Setenv(sdnotify.SocketEnv, "vsock:2:1234")
	if _, err := sdnotify.Notify(sdnotify.Ready); err == nil || !strings.Contains(err.Error(), "vsock") {
		t.Errorf("vsock address: %v", err)
	}
}
