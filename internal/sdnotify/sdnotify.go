// Package sdnotify tells systemd how a Type=notify service is doing, with the datagram
// protocol of sd_notify(3): "READY=1" once the service works, "STOPPING=1" when it starts
// shutting down, "STATUS=..." for the line `systemctl status` shows.
//
// The protocol is a few lines of text in one datagram to the socket named by
// $NOTIFY_SOCKET, so it is written here rather than linked from libsystemd. Outside
// systemd (no $NOTIFY_SOCKET) and on other systems, Notify does nothing and reports false.
package sdnotify

import "strings"

// States understood by systemd.
const (
	// Ready: start-up is finished; systemd considers the unit started.
	Ready = "READY=1"
	// Stopping: the service is shutting down.
	Stopping = "STOPPING=1"
)

// SocketEnv names the environment variable systemd sets for Type=notify services.
const SocketEnv = "NOTIFY_SOCKET"

// Status is the STATUS= state: a one-line description of the service's condition.
func Status(line string) string {
	// A newline would start another assignment in the datagram.
	return "STATUS=" + strings.Join(strings.Fields(line), " ")
}

// Notify sends the states to systemd in one datagram. It reports whether they were sent:
// false, with no error, when the process was not started by systemd as a notify service.
func Notify(states ...string) (bool, error) {
	if len(states) == 0 {
		return false, nil
	}
	return send(strings.Join(states, "\n"))
}
