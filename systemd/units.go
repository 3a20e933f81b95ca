// Package systemd holds tokenfleet's systemd units, so that `tokenfleet-agent install`
// writes the same hardened unit a package ships.
package systemd

import _ "embed"

// AgentUnit is tokenfleet-agent.service.
//
//go:embed tokenfleet-agent.service
var AgentUnit string

// CoordinatorUnit is tokenfleet-coordinator.service.
//
//go:embed tokenfleet-coordinator.service
var CoordinatorUnit string
