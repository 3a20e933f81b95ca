package ctl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

// Environment variables read for the connection.
const (
	EnvURL   = "TOKENFLEET_URL"
	EnvToken = "TOKENFLEET_TOKEN"
)

// connectionHelp is the precedence of connection settings, for --help.
const connectionHelp = `Connection settings, each resolved on its own, first match wins:
  coordinator URL:  --url, then $TOKENFLEET_URL, then url in the config file
  API token:        --token or --token-file, then $TOKENFLEET_TOKEN,
                    then token or token_file in the config file
  CA certificates:  --ca-file, then ca_file in the config file (PEM; only these CAs are
                    trusted for an https:// URL; without one, the system's roots)
The config file is --config FILE, else $XDG_CONFIG_HOME/tokenfleet/ctl.yaml, else
~/.config/tokenfleet/ctl.yaml (YAML, fields url, token, token_file, ca_file; relative
paths are relative to the file). A file named with --config must exist; the default one
may be absent. --token-file - reads the token from standard input.`

// fileConfig is the config file.
type fileConfig struct {
	URL       string `yaml:"url"`
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	CAFile    string `yaml:"ca_file"`
}

// connFlags are the connection flags of the command line.
type connFlags struct {
	config    string
	url       string
	token     string
	tokenFile string
	caFile    string
	timeout   time.Duration
}

// connection is the resolved connection.
type connection struct {
	url    string
	token  string
	caFile string
	source string // the config file used, for messages; "" when none
	// tokenFrom and caFrom say where the token and the CA file came from, for messages.
	tokenFrom, caFrom string
}

// defaultConfigPath returns where the config file is looked for without --config, or ""
// when neither XDG_CONFIG_HOME nor HOME is set.
func (e *env) defaultConfigPath() string {
	if d := e.getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "tokenfleet", "ctl.yaml")
	}
	if h := e.getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "tokenfleet", "ctl.yaml")
	}
	return ""
}

// loadConfigFile reads the config file; a missing default file gives an empty config.
func (e *env) loadConfigFile(f connFlags) (fileConfig, string, error) {
	path, explicit := f.config, f.config != ""
	if !explicit {
		path = e.defaultConfigPath()
		if path == "" {
			return fileConfig{}, "", nil
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return fileConfig{}, "", nil
		}
		return fileConfig{}, "", fmt.Errorf("config file: %w", err)
	}
	var c fileConfig
	if _, err := yamlstrict.Decode(path, data, &c); err != nil {
		return fileConfig{}, "", fmt.Errorf("config file %w", err)
	}
	if c.Token != "" && c.TokenFile != "" {
		return fileConfig{}, "", fmt.Errorf("config file %s: set token or token_file, not both", path)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&c.TokenFile, &c.CAFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if c.Token != "" {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			e.warnf("%s holds an API token and other users may read it (chmod 600 %s)", path, path)
		}
	}
	return c, path, nil
}

// resolve works out URL, token and CA file from flags, environment and config file.
func (e *env) resolve(f connFlags) (connection, error) {
	if f.token != "" && f.tokenFile != "" {
		return connection{}, usageErrorf("pass --token or --token-file, not both")
	}
	fc, source, err := e.loadConfigFile(f)
	if err != nil {
		return connection{}, err
	}
	where := "the config file (" + e.defaultConfigPath() + ")"
	if source != "" {
		where = source
	} else if e.defaultConfigPath() == "" {
		where = "a config file given with --config"
	}
	c := connection{source: source}

	c.url = first(f.url, e.getenv(EnvURL), fc.URL)
	if c.url == "" {
		return connection{}, fmt.Errorf("no coordinator URL: pass --url, set %s, or set url in %s", EnvURL, where)
	}

	switch {
	case f.token != "":
		c.token, c.tokenFrom = f.token, "--token"
	case f.tokenFile != "":
		c.tokenFrom = "--token-file " + f.tokenFile
		c.token, err = e.readToken(f.tokenFile)
	case e.getenv(EnvToken) != "":
		c.token, c.tokenFrom = e.getenv(EnvToken), "$"+EnvToken
	case fc.Token != "":
		c.token, c.tokenFrom = fc.Token, "token in "+source
	case fc.TokenFile != "":
		c.tokenFrom = "token_file " + fc.TokenFile + " (in " + source + ")"
		c.token, err = e.readToken(fc.TokenFile)
	}
	if err != nil {
		return connection{}, err
	}
	c.token = strings.TrimSpace(c.token)
	if c.token == "" {
		return connection{}, fmt.Errorf("no API token: pass --token or --token-file, set %s, or set token or token_file in %s", EnvToken, where)
	}

	c.caFile = first(f.caFile, fc.CAFile)
	switch {
	case strings.TrimSpace(f.caFile) != "":
		c.caFrom = "--ca-file " + c.caFile
	case c.caFile != "":
		c.caFrom = "ca_file " + c.caFile + " (in " + source + ")"
	}
	return c, nil
}

// readToken reads a token file ("-": standard input), which holds the token alone.
func (e *env) readToken(path string) (string, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(e.stdin, 64<<10))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("token file %s holds more than one word; it must hold the token alone", path)
	}
	return tok, nil
}

// newClient builds the API client for the resolved connection.
func (e *env) newClient(f connFlags) (*client.Client, error) {
	c, err := e.resolve(f)
	if err != nil {
		return nil, err
	}
	e.resolved = c
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, VerifyConnection: e.tlsSeen.record}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", c.caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	timeout := f.timeout
	if timeout <= 0 {
		timeout = client.DefaultTimeout
	}
	return client.New(c.url, c.token,
		client.WithHTTPClient(&http.Client{Transport: tr, Timeout: timeout}),
		client.WithUserAgent("tokenfleetctl"))
}

// tlsRoot records the certificate an agent enrolling through the same URL pins
// (tokenfleet-agent enrol --ca-fingerprint; enrolment-key create prints its fingerprint):
// the highest certificate of the chain this machine verified that the coordinator also
// presents. The agent finds its pin among the certificates presented, so a root the
// server does not send cannot be it.
type tlsRoot struct {
	mu       sync.Mutex // guards the fields below
	cert     *x509.Certificate
	leafOnly bool // the pinned certificate is the server's own: it changes when renewed
}

// record is a tls.Config VerifyConnection: it runs after the chain was verified, and
// refuses nothing.
func (r *tlsRoot) record(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 {
		return nil
	}
	chain := cs.VerifiedChains[0]
	for i := len(chain) - 1; i >= 0; i-- {
		for _, p := range cs.PeerCertificates {
			if p.Equal(chain[i]) {
				r.mu.Lock()
				r.cert, r.leafOnly = chain[i], i == 0 && len(chain) > 1
				r.mu.Unlock()
				return nil
			}
		}
	}
	return nil
}

// get returns the recorded certificate, and whether it is the server's own rather than a
// CA's; nil when no TLS connection was verified.
func (r *tlsRoot) get() (*x509.Certificate, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert, r.leafOnly
}

func first(vs ...string) string {
	for _, v := range vs {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}
