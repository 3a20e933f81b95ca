// Package brokeradmin is the coordinator's client for RabbitMQ's management HTTP API
// (plugin rabbitmq_management): it provisions each agent's own broker user with exactly
// protocol.AgentPermissions, changes its password, and revokes it, closing its
// connections.
//
// Why the management API and not RabbitMQ's HTTP auth back end pointed at the
// coordinator: per-agent users then live in the broker itself, so the broker keeps
// working when every coordinator is down (agents reconnect and log in, commands wait in
// their queues), and nothing broker-wide has to change (rabbitmq.conf's auth_backends)
// on a broker that other applications share. The auth back end would put a coordinator
// on the path of every connection's login and every vhost, resource and topic check.
//
// Passwords travel as RabbitMQ's own salted SHA-256 hash (rabbit_password_hashing_sha256),
// so the clear password never crosses the management API, whatever the broker's
// password_hashing_module; the broker stores the hashing algorithm per user.
//
// Enrolments arrive together when a fleet rolls out: beyond 16 PutAgent calls in
// progress at once, those that arrive within a few milliseconds of each other share one
// definitions import (POST /api/definitions), as PutAgents' agents do (batch.go says
// when that pays, what the import does and does not do, and how a batch keeps
// PutAgent's guarantees). The client keeps at most 16 requests in flight.
//
// Connections are found through the management API's per-user connection list, which
// comes from the broker's connection tracking, behind by milliseconds; the general lists
// (all connections, a vhost's connections) come from its statistics and learn of a new
// connection only after the statistics interval (5 s by default).
package brokeradmin
