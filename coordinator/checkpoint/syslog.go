package checkpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"log/syslog"
	"net/url"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
)

// SyslogTag is the tag of the coordinator's syslog messages.
const SyslogTag = "tokenfleet-coordinator"

// SyslogPrefix starts every checkpoint message; the checkpoint's JSON follows, as
// tokenfleetctl audit verify --checkpoint reads it.
const SyslogPrefix = "audit checkpoint "

// SyslogSink sends each checkpoint to a syslog daemon, usually one that forwards to a
// host the coordinator's administrators do not control.
type SyslogSink struct {
	w *syslog.Writer
}

// ParseSyslogAddress turns unixgram:///dev/log, unix:///path, udp://host:port or
// tcp://host:port into log/syslog's network and address.
func ParseSyslogAddress(addr string) (network, raddr string, err error) {
	u, err := url.Parse(addr)
	if err != nil {
		return "", "", fmt.Errorf("syslog address %q: %w", addr, err)
	}
	switch u.Scheme {
	case "unix", "unixgram":
		if u.Path == "" || u.Host != "" {
			return "", "", fmt.Errorf("syslog address %q: want %s:///path/to/socket", addr, u.Scheme)
		}
		return u.Scheme, u.Path, nil
	case "udp", "tcp":
		if u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return "", "", fmt.Errorf("syslog address %q: want %s://host:port", addr, u.Scheme)
		}
		return u.Scheme, u.Host, nil
	}
	return "", "", fmt.Errorf("syslog address %q: the scheme is not one of unixgram, unix, udp, tcp", addr)
}

// DialSyslog connects to the syslog daemon at addr (ParseSyslogAddress). Messages go at
// notice level to the auth facility, where security logs are usually kept and
// forwarded.
func DialSyslog(addr string) (*SyslogSink, error) {
	network, raddr, err := ParseSyslogAddress(addr)
	if err != nil {
		return nil, err
	}
	w, err := syslog.Dial(network, raddr, syslog.LOG_NOTICE|syslog.LOG_AUTH, SyslogTag)
	if err != nil {
		return nil, fmt.Errorf("syslog %s: %w", addr, err)
	}
	return &SyslogSink{w: w}, nil
}

// Send writes the checkpoint as one message: SyslogPrefix and its JSON.
func (s *SyslogSink) Send(_ context.Context, c audit.Checkpoint) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("syslog: %w", err)
	}
	if err := s.w.Notice(SyslogPrefix + string(b)); err != nil {
		return fmt.Errorf("syslog: %w", err)
	}
	return nil
}

// Close ends the connection.
func (s *SyslogSink) Close() error { return s.w.Close() }
