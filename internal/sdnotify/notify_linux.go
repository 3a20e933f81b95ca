package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

func send(msg string) (bool, error) {
	addr := os.Getenv(SocketEnv)
	if addr == "" {
		return false, nil
	}
	switch {
	case strings.HasPrefix(addr, "@"):
		// An abstract socket: its name starts with a NUL byte, which the variable cannot carry.
		addr = "\x00" + addr[1:]
	case !strings.HasPrefix(addr, "/"):
		// vsock: addresses are for virtual machines talking to their host's systemd.
		return false, fmt.Errorf("sdnotify: %s=%q: only file system and abstract sockets are supported", SocketEnv, addr)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	defer func() { _ = conn.Close() }() // a datagram socket has nothing left to flush
	if _, err := conn.Write([]byte(msg)); err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	return true, nil
}
