package config_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent/config"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// A reload swaps the broker TLS client certificate: the next handshake presents the one
// read again from the files. Other changes are named as needing a restart.
func TestReloadClientCertificate(t *testing.T) {
	dir := t.TempDir()
	srvCert, srvKey := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	testenv.WriteSelfSigned(t, srvCert, srvKey, "broker", x509.ExtKeyUsageServerAuth)
	certFile, keyFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	testenv.WriteSelfSigned(t, certFile, keyFile, "ws-01 first", x509.ExtKeyUsageClientAuth)

	// A TLS server on loopback that asks for a client certificate and reports its name.
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAnyClientCert,
		MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	names := make(chan string)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			name := ""
			if tc.HandshakeContext(context.Background()) == nil && len(tc.ConnectionState().PeerCertificates) > 0 {
				name = tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			}
			_ = c.Close()
			names <- name
		}
	}()
	presented := func(r *config.Resolved) string {
		t.Helper()
		d := tls.Dialer{Config: r.Agent.Broker.TLS.Clone()}
		d.Config.InsecureSkipVerify = true //nolint:gosec // the test's server is self-signed; the client certificate is under test
		c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		_ = c.Close()
		return <-names
	}

	resolve := func(level string) *config.Resolved {
		t.Helper()
		c := config.Default()
		c.ID, c.DataDir = "ws-01", dir
		c.Broker.URL = "amqps://agent-ws-01:pw@127.0.0.1:5671/tokenfleet"
		c.Broker.CertFile, c.Broker.KeyFile = certFile, keyFile
		c.Log.Level = level
		r, err := c.Resolve()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	running := resolve("info")
	if got := presented(running); got != "ws-01 first" {
		t.Fatalf("presented %q", got)
	}
	testenv.WriteSelfSigned(t, certFile, keyFile, "ws-01 renewed", x509.ExtKeyUsageClientAuth)
	next := resolve("debug")
	next.Agent.PollInterval = 5 * time.Second
	restart := running.Reload(next)
	if got := presented(running); got != "ws-01 renewed" {
		t.Fatalf("after the reload, presented %q", got)
	}
	if running.LogLevel != zerolog.DebugLevel {
		t.Errorf("log level %v after the reload", running.LogLevel)
	}
	if len(restart) != 1 || restart[0] != "poll_interval" {
		t.Errorf("needs a restart: %q, want [poll_interval]", restart)
	}
}
