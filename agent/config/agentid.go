package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// DefaultID derives an agent ID from a host name: lower-cased, with every character an
// agent ID may not hold replaced by '-', leading ones dropped, and at most
// protocol.MaxAgentIDLen bytes.
func DefaultID(hostname string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToLower(hostname) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '@', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	id := strings.TrimLeft(b.String(), "-_@")
	if len(id) > protocol.MaxAgentIDLen {
		id = id[:protocol.MaxAgentIDLen]
	}
	if err := protocol.ValidateAgentID(id); err != nil {
		return "", fmt.Errorf("no agent ID can be made of host name %q", hostname)
	}
	return id, nil
}

// idMessage is ValidateAgentID's explanation without its field prefix (the caller names
// the field).
func idMessage(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return strings.TrimPrefix(pe.Message, "agent_id: ")
	}
	return err.Error()
}
