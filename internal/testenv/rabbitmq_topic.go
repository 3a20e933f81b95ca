package testenv

import "testing"

// SetTopicPermissions restricts the routing keys a user of the broker's vhost may publish
// (write) and bind or consume (read) with on one topic exchange, as regular expressions.
// The user is deleted, with its permissions, by AddUser's cleanup.
func (b *Broker) SetTopicPermissions(t testing.TB, user, exchange, write, read string) {
	t.Helper()
	Run(t, "rabbitmqctl", "-q", "set_topic_permissions", "-p", b.VHost, user, exchange, write, read)
}
