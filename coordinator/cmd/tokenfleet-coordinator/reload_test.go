package main_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// insecureTLS reads the server's certificate without trusting it.
var insecureTLS = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // the tests read the certificate, trust nothing

// servedName is the common name of the certificate a new TLS handshake with addr gets.
func servedName(t *testing.T, addr string) string {
	t.Helper()
	d := tls.Dialer{Config: insecureTLS}
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer func() { _ = conn.Close() }()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName
}

// until reads log lines up to the one with the message, and returns the lines before it
// and that line.
func (p *proc) until(t *testing.T, msg string) (before []map[string]any, line map[string]any) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case raw, ok := <-p.raw:
			if !ok {
				t.Fatalf("process ended before logging %q", msg)
			}
			var m map[string]any
			if json.Unmarshal([]byte(raw), &m) != nil {
				continue
			}
			if m["message"] == msg {
				return before, m
			}
			before = append(before, m)
		case <-timeout:
			t.Fatalf("no %q log line within a minute", msg)
		}
	}
}

func messages(lines []map[string]any) []string {
	var out []string
	for _, m := range lines {
		s, _ := m["message"].(string)
		out = append(out, s)
	}
	return out
}

// SIGHUP reloads the TLS certificate and the log level from the configuration file; a
// configuration that does not load keeps the running settings, with the reason logged.
func TestSIGHUPReloads(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	testenv.WriteSelfSigned(t, certFile, keyFile, "first", x509.ExtKeyUsageServerAuth)
	cfgFile := filepath.Join(dir, "coordinator.yaml")
	config := func(level string) string {
		return "listen: 127.0.0.1:0\ndata_dir: " + filepath.Join(dir, "data") + "\nlog: {level: " + level + ", format: json}\n" +
			"tls: {cert_file: " + certFile + ", key_file: " + keyFile + "}\nbroker: {url: \"" + noBroker + "\"}\n"
	}
	if err := os.WriteFile(cfgFile, []byte(config("info")), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "serve", "--config", cfgFile)
	startup, serving := p.until(t, "coordinator serving")
	addr, _ := serving["listen"].(string)
	// The default CRL URL is the loopback listener: said at start.
	warned := false
	for _, m := range startup {
		if strings.HasPrefix(m["message"].(string), "the CRL URL named in every certificate") && m["level"] == "warn" {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning about the loopback CRL URL at start; logged %q", messages(startup))
	}
	if got := servedName(t, addr); got != "first" {
		t.Fatalf("served %q", got)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS}}
	healthz := func() {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), "GET", "https://"+addr+"/healthz", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("healthz: %d", resp.StatusCode)
		}
	}
	healthz() // at info: no request line

	testenv.WriteSelfSigned(t, certFile, keyFile, "renewed", x509.ExtKeyUsageServerAuth)
	if err := os.WriteFile(cfgFile, []byte(config("debug")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	before, reloaded := p.until(t, "configuration reloaded")
	for _, m := range before {
		if m["message"] == "request" {
			t.Fatalf("a debug line was logged at level info: %v", m)
		}
	}
	if reloaded["log_level"] != "debug" {
		t.Errorf("reload logged %v", reloaded)
	}
	if got := servedName(t, addr); got != "renewed" {
		t.Fatalf("after SIGHUP, served %q", got)
	}
	healthz()
	_, req := p.until(t, "request") // debug now
	if req["level"] != "debug" || req["route"] == nil {
		t.Errorf("request line %v", req)
	}

	if err := os.WriteFile(cfgFile, []byte(config("debug")+"colour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, failed := p.until(t, "reload failed: the running settings stay")
	if e, _ := failed["error"].(string); !strings.Contains(e, `unknown field "colour"`) || failed["level"] != "error" {
		t.Errorf("failed reload logged %v", failed)
	}
	if got := servedName(t, addr); got != "renewed" {
		t.Fatalf("after a failed reload, served %q", got)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, out := p.exit(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, out)
	}
}
