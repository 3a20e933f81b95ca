package testenv

import (
	"net/url"
	"testing"
)

// SetTopicPermissions restricts the routing keys a user of the broker's vhost may publish
// (write) and bind or consume (read) with on one topic exchange, as regular expressions.
// The user is deleted, with its permissions, by AddUser's cleanup.
func (b *Broker) SetTopicPermissions(t testing.TB, user, exchange, write, read string) {
	t.Helper()
	mgmt(t, "PUT", "/topic-permissions/"+url.PathEscape(b.VHost)+"/"+url.PathEscape(user),
		map[string]string{"exchange": exchange, "write": write, "read": read})
}
