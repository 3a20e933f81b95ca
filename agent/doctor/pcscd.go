package doctor

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// DefaultPCSCSocket is where pcsc-lite's daemon listens.
const DefaultPCSCSocket = "/run/pcscd/pcscd.comm"

// PolkitRule is the polkit rule the project ships to let the agent's user reach pcscd.
const PolkitRule = "systemd/50-tokenfleet-pcscd.rules"

// pcsc-lite's client protocol: a header (body size, command) in host byte order, then the
// body. CMD_VERSION's body is the client's protocol version and a return value.
const (
	pcscCmdVersion    = 0x11
	pcscProtocolMajor = 4
	pcscProtocolMinor = 4
)

// pcscd connects to pcscd's socket and asks for its protocol version, as every PC/SC
// client does first. pcscd asks polkit whether the peer may use it (access_pcsc) as it
// accepts the connection and, when polkit says no, closes the connection without a word:
// an answer means the user is let in, whatever the versions.
func (e Env) pcscd(ctx context.Context) Result {
	path := e.PCSCSocket
	if path == "" {
		path = os.Getenv("PCSCLITE_CSOCK_NAME")
	}
	if path == "" {
		path = DefaultPCSCSocket
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fail(fmt.Sprintf("pcscd's socket %s does not exist: pcscd is not installed or not started", path),
			"install pcscd (apt-get install pcscd) and start it: systemctl enable --now pcscd.socket (tokens whose module does not use PC/SC can do without: --skip pcscd)")
	case errors.Is(err, syscall.ECONNREFUSED):
		return fail(fmt.Sprintf("nothing listens on pcscd's socket %s", path), "start pcscd: systemctl enable --now pcscd.socket")
	case errors.Is(err, os.ErrPermission):
		return fail(fmt.Sprintf("this user may not open pcscd's socket %s: %v", path, err),
			"run the check as the service's user (sudo -u tokenfleet-agent tokenfleet-agent doctor ...) and check the socket's mode (pcscd.socket's SocketMode)")
	case err != nil:
		return fail(fmt.Sprintf("connecting to pcscd's socket %s: %v", path, err), "check that pcscd runs: systemctl status pcscd")
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(Timeout))
	}
	msg := make([]byte, 8+12)
	binary.NativeEndian.PutUint32(msg[0:], 12)
	binary.NativeEndian.PutUint32(msg[4:], pcscCmdVersion)
	binary.NativeEndian.PutUint32(msg[8:], pcscProtocolMajor)
	binary.NativeEndian.PutUint32(msg[12:], pcscProtocolMinor)
	reply := make([]byte, 12)
	if _, err = conn.Write(msg); err == nil {
		_, err = io.ReadFull(conn, reply)
	}
	var ne net.Error
	switch {
	case err == nil:
		return pass(fmt.Sprintf("pcscd on %s answers this user (protocol %d.%d)",
			path, int32(binary.NativeEndian.Uint32(reply[0:])), int32(binary.NativeEndian.Uint32(reply[4:]))))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fail(fmt.Sprintf("pcscd on %s closed the connection without answering: polkit refused access_pcsc to this user (the rule for users without a login session, as a service's user is)", path),
			"install the project's polkit rule "+PolkitRule+" as /etc/polkit-1/rules.d/50-tokenfleet-pcscd.rules (it lets the tokenfleet-agent user use pcscd and its cards; a service running as another user needs the rule's subject.user changed), then check again as the service's user")
	case errors.As(err, &ne) && ne.Timeout():
		return fail(fmt.Sprintf("pcscd on %s does not answer", path), "restart pcscd: systemctl restart pcscd")
	}
	return fail(fmt.Sprintf("talking to pcscd on %s: %v", path, err), "check pcscd's log: journalctl -u pcscd")
}
