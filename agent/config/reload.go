package config

import (
	"crypto/tls"
	"reflect"
	"sync/atomic"
)

// ClientCert is the broker TLS client certificate, read at every handshake, so that a
// reload's certificate is the one the next connection presents.
type ClientCert struct {
	p atomic.Pointer[tls.Certificate]
}

// NewClientCert holds c.
func NewClientCert(c *tls.Certificate) *ClientCert {
	h := &ClientCert{}
	h.p.Store(c)
	return h
}

// Get is a tls.Config's GetClientCertificate.
func (h *ClientCert) Get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return h.p.Load(), nil
}

// Current returns the certificate held.
func (h *ClientCert) Current() *tls.Certificate { return h.p.Load() }

// Reload applies to r, the configuration in force, what next changes that can change
// without a restart: the broker's TLS client certificate (read again from its files, so a
// renewed certificate is taken at the next connection). The log level is the caller's to
// set from next.LogLevel. It returns the settings that differ but need a restart.
func (r *Resolved) Reload(next *Resolved) (restart []string) {
	if r.ClientCert != nil && next.ClientCert != nil {
		r.ClientCert.p.Store(next.ClientCert.Current())
	} else if (r.ClientCert == nil) != (next.ClientCert == nil) {
		restart = append(restart, "broker.cert_file")
	}
	a, b := r.Agent, next.Agent
	diff := func(field string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			restart = append(restart, field)
		}
	}
	diff("id", a.ID, b.ID)
	diff("data_dir", a.DataDir, b.DataDir)
	diff("modules", a.Modules, b.Modules)
	diff("usb", a.NoUSB, b.NoUSB)
	diff("poll_interval", a.PollInterval, b.PollInterval)
	diff("heartbeat_interval", a.HeartbeatInterval, b.HeartbeatInterval)
	diff("shutdown_grace", a.ShutdownGrace, b.ShutdownGrace)
	diff("broker.url", a.Broker.URL, b.Broker.URL)
	diff("broker.queue", a.Broker.Queue, b.Broker.Queue)
	diff("broker.coordinator_users", a.Broker.CoordinatorUsers, b.Broker.CoordinatorUsers)
	diff("log.format", r.LogFormat, next.LogFormat)
	r.LogLevel = next.LogLevel
	return restart
}
