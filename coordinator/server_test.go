package coordinator_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

// running is a server started by a test, with its stop.
type running struct {
	srv  *coordinator.Server
	stop func() error
}

func start(t *testing.T, cfg coordinator.Config) running {
	t.Helper()
	srv, err := coordinator.New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	stopped := false
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return running{srv: srv, stop: stop}
}

func localConfig(dir string) coordinator.Config {
	cfg := coordinator.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = dir
	return cfg
}

func get(t *testing.T, client *http.Client, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestFirstStartBootstrapsOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	r := start(t, localConfig(dir))

	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v, %v", st.Mode(), err)
	}
	tokenPath := filepath.Join(dir, coordinator.AdminTokenFile)
	ts, err := os.Stat(tokenPath)
	if err != nil || ts.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", ts.Mode(), err)
	}
	raw, err := os.ReadFile(tokenPath)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	status, body := get(t, http.DefaultClient, r.srv.URL()+"/api/v1/whoami", token)
	var who struct {
		Username string   `json:"username"`
		Roles    []string `json:"roles"`
	}
	if status != 200 || json.Unmarshal(body, &who) != nil || who.Username != "admin" || len(who.Roles) != 1 || who.Roles[0] != "admin" {
		t.Fatalf("whoami with the bootstrap token: %d %s", status, body)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// A second start finds the database and keeps the token; it makes no second admin.
	r2 := start(t, localConfig(dir))
	raw2, err := os.ReadFile(tokenPath)
	if err != nil || string(raw2) != string(raw) {
		t.Fatalf("token file changed on the second start: %v", err)
	}
	if status, _ := get(t, http.DefaultClient, r2.srv.URL()+"/api/v1/whoami", token); status != 200 {
		t.Fatalf("token after restart: %d", status)
	}
	users, _, err := r2.srv.Store().ListUsers(context.Background(), store.UserFilter{}, store.Page{})
	if err != nil || len(users) != 1 {
		t.Fatalf("users after restart: %d, %v", len(users), err)
	}
	// Even without its token file, a used database gets no new administrator.
	if err := r2.stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tokenPath); err != nil {
		t.Fatal(err)
	}
	r3 := start(t, localConfig(dir))
	if _, err := os.Stat(tokenPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a new token file appeared: %v", err)
	}
	_ = r3.stop()
}

func TestTokenFileWithoutDatabaseRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, coordinator.AdminTokenFile), []byte("stale\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := coordinator.New(localConfig(dir), testLogger(t))
	if err == nil || !strings.Contains(err.Error(), coordinator.AdminTokenFile) {
		t.Fatalf("got %v, want a refusal naming the token file", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, coordinator.AdminTokenFile)); string(b) != "stale\n" {
		t.Fatal("the existing token file was replaced")
	}
}

func TestPlainHTTPOnlyOnLoopback(t *testing.T) {
	tests := []struct {
		name     string
		listen   string
		insecure bool
		ok       bool
	}{
		{"ipv4 loopback", "127.0.0.1:0", false, true},
		{"localhost", "localhost:0", false, true},
		{"all interfaces", "0.0.0.0:0", false, false},
		{"empty host", ":0", false, false},
		{"other address", "192.0.2.10:8443", false, false},
		{"all interfaces forced", "0.0.0.0:0", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := localConfig(t.TempDir())
			cfg.Listen, cfg.InsecureHTTP = tc.listen, tc.insecure
			srv, err := coordinator.New(cfg, testLogger(t))
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if err := srv.Close(); err != nil {
					t.Fatal(err)
				}
				return
			}
			var fe *coordinator.FieldError
			if !errors.As(err, &fe) || fe.Field != "listen" || !strings.Contains(err.Error(), "TLS") {
				t.Fatalf("got %v, want a refusal naming listen and TLS", err)
			}
			// Refused before anything was created.
			if _, err := os.Stat(filepath.Join(cfg.DataDir, coordinator.DatabaseFile)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("database created for a refused configuration: %v", err)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8443": true, "127.9.8.7:1": true, "[::1]:8443": true, "localhost:1": true, "LocalHost:1": true,
		"0.0.0.0:1": false, ":1": false, "[::]:1": false, "10.0.0.1:1": false, "example.org:1": false, "127.0.0.1": false,
	} {
		if got := coordinator.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := testCertificate(t, dir)
	cfg := localConfig(filepath.Join(dir, "data"))
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	r := start(t, cfg)
	if !strings.HasPrefix(r.srv.URL(), "https://") {
		t.Fatalf("URL %s", r.srv.URL())
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	if status, body := get(t, client, r.srv.URL()+"/healthz", ""); status != 200 {
		t.Fatalf("healthz over TLS: %d %s", status, body)
	}
	// Plain HTTP to the TLS port gets no API answer.
	status, _ := get(t, http.DefaultClient, "http://"+r.srv.Addr()+"/healthz", "")
	if status == 200 {
		t.Fatal("plain HTTP served on the TLS listener")
	}
	// TLS on a non-loopback address needs no force flag.
	cfg2 := localConfig(filepath.Join(dir, "data2"))
	cfg2.Listen = "0.0.0.0:0"
	cfg2.TLS = cfg.TLS
	srv, err := coordinator.New(cfg2, testLogger(t))
	if err != nil {
		t.Fatalf("TLS on 0.0.0.0: %v", err)
	}
	_ = srv.Close()

	cfg3 := localConfig(filepath.Join(dir, "data3"))
	cfg3.TLS.CertFile, cfg3.TLS.KeyFile = certFile, filepath.Join(dir, "missing.key")
	var fe *coordinator.FieldError
	if _, err := coordinator.New(cfg3, testLogger(t)); !errors.As(err, &fe) || fe.Field != "tls" || !strings.Contains(err.Error(), "missing.key") {
		t.Fatalf("missing key: %v", err)
	}
}

// testCertificate writes a self-signed certificate for 127.0.0.1 and its key.
func testCertificate(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "coordinator test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("0.0.0.0")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestRunOnce(t *testing.T) {
	r := start(t, localConfig(t.TempDir()))
	// Once it answers, the first Run is serving.
	if status, _ := get(t, http.DefaultClient, r.srv.URL()+"/healthz", ""); status != 200 {
		t.Fatalf("healthz %d", status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.srv.Run(ctx); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatal("a second Run was accepted")
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Run after shutdown: %v", err)
	}
	// After Run, the store is closed and the port released.
	if _, err := net.DialTimeout("tcp", r.srv.Addr(), time.Second); err == nil {
		t.Fatal("still listening after Run returned")
	}
}

func TestHarness(t *testing.T) {
	c := coordinatortest.Start(t, coordinatortest.Options{})
	if status, body := get(t, http.DefaultClient, c.URL+"/api/v1/whoami", c.AdminToken); status != 200 {
		t.Fatalf("whoami: %d %s", status, body)
	}
	a := c.EnrolAgent(t, "ws-1", "ws-1.example")
	if got, err := c.Store.GetAgent(context.Background(), "ws-1"); err != nil || got.Hostname != a.Hostname {
		t.Fatalf("enrolled agent: %+v, %v", got, err)
	}
	// The same directory again: same data, same token.
	dir := c.DataDir
	c2 := coordinatortest.Start(t, coordinatortest.Options{Dir: dir})
	if c2.AdminToken != c.AdminToken || c2.URL == c.URL {
		t.Fatalf("second instance on %s: token kept %v, URL %s", dir, c2.AdminToken == c.AdminToken, c2.URL)
	}
}
