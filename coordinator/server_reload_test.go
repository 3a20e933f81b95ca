package coordinator_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// servedName is the common name of the certificate a new TLS handshake with addr gets.
func servedName(t *testing.T, addr string) string {
	t.Helper()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // the test reads the certificate, trusts nothing
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer func() { _ = conn.Close() }()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName
}

// logBuffer collects a server's JSON log lines.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// messages returns the log lines with the message, decoded.
func (b *logBuffer) messages(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(b.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && strings.Contains(m["message"].(string), msg) {
			out = append(out, m)
		}
	}
	return out
}

func startLogged(t *testing.T, cfg coordinator.Config) (running, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	srv, err := coordinator.New(cfg, zerolog.New(logs))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return running{srv: srv, stop: stop}, logs
}

// A reload takes the certificate and key from their files again: new handshakes get the
// new certificate. A reload that cannot load them keeps the running one.
func TestReloadTLSCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	testenv.WriteSelfSigned(t, certFile, keyFile, "first", x509.ExtKeyUsageServerAuth)
	cfg := localConfig(filepath.Join(dir, "data"))
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	r, logs := startLogged(t, cfg)
	if got := servedName(t, r.srv.Addr()); got != "first" {
		t.Fatalf("served %q", got)
	}

	testenv.WriteSelfSigned(t, certFile, keyFile, "renewed", x509.ExtKeyUsageServerAuth)
	if err := r.srv.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if got := servedName(t, r.srv.Addr()); got != "renewed" {
		t.Fatalf("after the reload, served %q", got)
	}
	if len(logs.messages(t, "configuration reloaded")) != 1 {
		t.Error("the reload was not logged")
	}

	if err := os.WriteFile(keyFile, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := r.srv.Reload(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), keyFile) {
		t.Fatalf("reload with a broken key: %v, want an error naming %s", err, keyFile)
	}
	if got := servedName(t, r.srv.Addr()); got != "renewed" {
		t.Fatalf("a failed reload changed the certificate: served %q", got)
	}

	bad := cfg
	bad.Log.Level = "loud"
	if err := r.srv.Reload(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Fatalf("reload with a bad level: %v", err)
	}
	plain := cfg
	plain.TLS = coordinator.TLSConfig{}
	if err := r.srv.Reload(context.Background(), plain); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("reload from HTTPS to HTTP: %v", err)
	}
}

// A reload moves the CRL to the new URL's path; settings that need a restart are named.
func TestReloadCRLURL(t *testing.T) {
	dir := t.TempDir()
	cfg := localConfig(filepath.Join(dir, "data"))
	r, logs := startLogged(t, cfg)
	base := "http://" + r.srv.Addr()
	if status, _ := get(t, http.DefaultClient, base+coordinator.DefaultCRLPath, ""); status != 200 {
		t.Fatalf("CRL at the default path: %d", status)
	}
	next := cfg
	next.CA.CRLURL = "http://pki.example.org/tokenfleet.crl"
	next.ExpirySweepInterval = coordinator.Duration(time.Minute)
	if err := r.srv.Reload(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	status, body := get(t, http.DefaultClient, base+"/tokenfleet.crl", "")
	if status != 200 {
		t.Fatalf("CRL at the new path: %d %s", status, body)
	}
	if _, err := x509.ParseRevocationList(body); err != nil {
		t.Fatalf("the new path serves no CRL: %v", err)
	}
	if status, _ := get(t, http.DefaultClient, base+coordinator.DefaultCRLPath, ""); status == 200 {
		t.Fatal("the CRL is still served at the old path")
	}
	m := logs.messages(t, "take effect only at the next start")
	if len(m) != 1 || jsonText(m[0]["fields"]) != `["expiry_sweep_interval"]` {
		t.Fatalf("restart-only settings not named: %v", m)
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// The CRL URL every certificate names is checked at start: a loopback or unspecified
// host is one relying parties elsewhere cannot reach.
func TestWarnsOfLocalCRLURL(t *testing.T) {
	for _, tc := range []struct {
		crlURL string
		warn   bool
	}{
		{"", true}, // the default: the listen address, 127.0.0.1
		{"http://0.0.0.0:8443/crl", true},
		{"http://[::1]/crl", true},
		{"http://localhost/crl", true},
		{"https://pki.example.org/crl", false},
	} {
		name := strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(tc.crlURL)
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			cfg := localConfig(filepath.Join(t.TempDir(), "data"))
			cfg.CA.CRLURL = tc.crlURL
			r, logs := startLogged(t, cfg)
			_ = r.stop()
			m := logs.messages(t, "the CRL URL named in every certificate")
			if got := len(m) == 1; got != tc.warn {
				t.Fatalf("crl_url %q: %d warnings, want warning %v", tc.crlURL, len(m), tc.warn)
			}
			if tc.warn && (m[0]["level"] != "warn" || !strings.Contains(m[0]["message"].(string), "set ca.crl_url")) {
				t.Fatalf("warning %v", m[0])
			}
		})
	}
}
