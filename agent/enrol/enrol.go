// Package enrol is the agent's side of self-enrolment: it exchanges an activation code
// or enrolment key for the agent's identity over the coordinator's HTTPS API, keeps what
// it is given in the data directory (readable by the service account only), and gives the
// running agent its broker password, fetching a new one when the broker refuses the old
// (the coordinator rotated it, or enabled the agent again).
package enrol

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// FileName is the enrolment record in the data directory.
const FileName = "enrolment.json"

// Record is what enrolment leaves in the data directory. The broker credentials stay
// sealed to the agent's own key, as the coordinator sent them.
type Record struct {
	Coordinator   string           `json:"coordinator"`              // the coordinator's base URL
	CAFingerprint string           `json:"ca_fingerprint,omitempty"` // the pinned TLS CA (sha256 hex)
	CAFile        string           `json:"ca_file,omitempty"`        // or a CA file, else the system roots
	AgentID       string           `json:"agent_id"`
	State         string           `json:"state"`
	Secret        string           `json:"secret"` // the agent's own secret (tfa_...)
	BrokerURL     string           `json:"broker_url"`
	Credentials   *protocol.Sealed `json:"credentials,omitempty"`
	ResultKey     []byte           `json:"result_key,omitempty"` // the coordinator's, that PINs are sealed to
	CAPEM         string           `json:"ca_pem,omitempty"`     // the tokenfleet CA's certificates
	Enrolled      time.Time        `json:"enrolled"`
}

// Load reads the record in dir; os.ErrNotExist when the agent has not enrolled.
func Load(dir string) (*Record, error) {
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("enrolment record %s: %w: enrol again with --force", filepath.Join(dir, FileName), err)
	}
	return &r, nil
}

// Save writes the record atomically, readable by its owner only.
func (r *Record) Save(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".enrolment-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, FileName))
}

// Options say how to reach the coordinator and what to enrol as.
type Options struct {
	Coordinator   string // https://coordinator.example.org:8443 (http:// only to this host)
	CAFingerprint string // SHA-256 of a certificate in the coordinator's TLS chain, hex (colons and a sha256: prefix allowed)
	CAFile        string // the coordinator's TLS CA; empty with no fingerprint: the system roots
	Code          string
	AgentID       string // "" lets the coordinator derive it from the host name (and session)
	Hostname      string
	Session       string
	Version       string
	OS            string
	DataDir       string
	Force         bool // enrol again although the data directory holds an enrolment
}

// ErrAlreadyEnrolled: the data directory holds an enrolment and Force is not set.
var ErrAlreadyEnrolled = errors.New("this agent is enrolled already")

// Enrol exchanges the code for the agent's identity and keeps it in the data directory.
// A code the coordinator refuses is an *APIError with its message.
func Enrol(ctx context.Context, o Options) (*Record, error) {
	if !o.Force {
		if r, err := Load(o.DataDir); err == nil {
			return r, fmt.Errorf("%w as %s with %s (state %s): enrolling again replaces its identity; add --force to do so",
				ErrAlreadyEnrolled, r.AgentID, r.Coordinator, r.State)
		}
	}
	c, err := newClient(o.Coordinator, o.CAFingerprint, o.CAFile)
	if err != nil {
		return nil, err
	}
	pair, err := keys.LoadOrCreate(o.DataDir)
	if err != nil {
		return nil, err
	}
	req := protocol.EnrolRequest{Code: strings.TrimSpace(o.Code), AgentID: o.AgentID, Hostname: o.Hostname,
		Session: o.Session, OS: o.OS, Version: o.Version, SealKey: pair.PublicKey()}
	var ans protocol.EnrolAnswer
	if err := c.do(ctx, http.MethodPost, "/api/v1/enrol", "", req, &ans); err != nil {
		return nil, err
	}
	r := &Record{Coordinator: c.base, CAFingerprint: c.pin, CAFile: o.CAFile, AgentID: ans.AgentID, State: ans.State,
		Secret: ans.Secret, BrokerURL: ans.BrokerURL, Credentials: ans.Credentials, ResultKey: ans.ResultKey, CAPEM: ans.CAPEM, Enrolled: time.Now().UTC()}
	if err := r.Save(o.DataDir); err != nil {
		return nil, fmt.Errorf("keeping the enrolment (the coordinator has enrolled %s; an administrator removes it before enrolling again): %w", r.AgentID, err)
	}
	return r, nil
}

// Refresh asks the coordinator for the agent's state and credentials and keeps what it
// says. A pending agent gets no credentials yet; a disabled or removed one is an
// *APIError (403).
func (r *Record) Refresh(ctx context.Context, dir string) error {
	c, err := newClient(r.Coordinator, r.CAFingerprint, r.CAFile)
	if err != nil {
		return err
	}
	var ans protocol.EnrolAnswer
	if err := c.do(ctx, http.MethodGet, "/api/v1/agents/"+url.PathEscape(r.AgentID)+"/credentials", r.Secret, nil, &ans); err != nil {
		return err
	}
	r.State = ans.State
	if ans.Credentials != nil {
		r.Credentials = ans.Credentials
	}
	if ans.BrokerURL != "" {
		r.BrokerURL = ans.BrokerURL
	}
	return r.Save(dir)
}

// BrokerCredentials opens the sealed credentials with the agent's key.
func (r *Record) BrokerCredentials(pair *keys.Pair) (protocol.BrokerCredentials, error) {
	if r.Credentials == nil {
		return protocol.BrokerCredentials{}, fmt.Errorf("agent %s has no broker credentials yet (state %s)", r.AgentID, r.State)
	}
	plain, err := pair.Open(r.Credentials, seal.Binding{Purpose: protocol.PurposeBrokerCredentials, AgentID: r.AgentID})
	if err != nil {
		return protocol.BrokerCredentials{}, fmt.Errorf("opening the broker credentials: %w", err)
	}
	var bc protocol.BrokerCredentials
	if err := json.Unmarshal(plain, &bc); err != nil || bc.User == "" || bc.Password == "" {
		return protocol.BrokerCredentials{}, errors.New("the broker credentials do not hold a user and a password")
	}
	return bc, nil
}

// Password is the broker password source of a running enrolled agent (amqp.Config's
// Password): the kept credentials, and new ones from the coordinator after the broker
// refused a login.
func Password(dir string, pair *keys.Pair) func(ctx context.Context, refused bool) (string, error) {
	return func(ctx context.Context, refused bool) (string, error) {
		r, err := Load(dir)
		if err != nil {
			return "", err
		}
		if refused || r.Credentials == nil {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := r.Refresh(cctx, dir)
			cancel()
			if err != nil {
				return "", fmt.Errorf("fetching new broker credentials from %s: %w", r.Coordinator, err)
			}
		}
		bc, err := r.BrokerCredentials(pair)
		if err != nil {
			return "", err
		}
		return bc.Password, nil
	}
}

// APIError is the coordinator refusing a request, with its code and message.
type APIError struct {
	Status  int
	Code    string
	Message string
	Field   string
}

func (e *APIError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("the coordinator refused (%s): %s: %s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("the coordinator refused (%s): %s", e.Code, e.Message)
}

type client struct {
	base string
	pin  string
	http *http.Client
}

// newClient checks the coordinator's URL and makes an HTTPS client that trusts the
// pinned CA, the CA file, or the system roots. Plain http:// is only for this host: the
// code would cross the network in clear.
func newClient(raw, fingerprint, caFile string) (*client, error) {
	u, err := url.Parse(strings.TrimRight(strings.TrimSpace(raw), "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("coordinator URL %q: want https://HOST[:PORT]", raw)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	pin := ""
	switch u.Scheme {
	case "https":
		if fingerprint != "" {
			if pin, err = normalisePin(fingerprint); err != nil {
				return nil, err
			}
			tlsConf.InsecureSkipVerify = true // verified below, against the pinned certificate
			tlsConf.VerifyConnection = pinnedVerifier(pin, u.Hostname())
		} else if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("coordinator CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("coordinator CA %s holds no PEM certificate", caFile)
			}
			tlsConf.RootCAs = pool
		}
	case "http":
		if !loopback(u.Hostname()) {
			return nil, fmt.Errorf("coordinator URL %s is plain http to another host: the code would cross the network in clear; use https://", u.Redacted())
		}
	default:
		return nil, fmt.Errorf("coordinator URL scheme %q: want https", u.Scheme)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	return &client{base: u.String(), pin: pin, http: &http.Client{Transport: tr, Timeout: time.Minute}}, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// normalisePin accepts a SHA-256 fingerprint as hex, with colons and a sha256: prefix.
func normalisePin(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "sha256:")
	s = strings.ReplaceAll(s, ":", "")
	if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("CA fingerprint %q: want the SHA-256 of the certificate, 64 hex digits", s)
	}
	return s, nil
}

// pinnedVerifier accepts a server whose chain holds the pinned certificate and whose
// leaf that certificate (as the root) vouches for, for host.
func pinnedVerifier(pin, host string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the coordinator presented no certificate")
		}
		var pinned *x509.Certificate
		for _, c := range cs.PeerCertificates {
			if sum := sha256.Sum256(c.Raw); hex.EncodeToString(sum[:]) == pin {
				pinned = c
			}
		}
		if pinned == nil {
			return fmt.Errorf("the coordinator's certificate chain does not hold the pinned certificate sha256:%s", pin)
		}
		roots := x509.NewCertPool()
		roots.AddCert(pinned)
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host})
		if err != nil {
			return fmt.Errorf("the coordinator's certificate: %w", err)
		}
		return nil
	}
}

// do sends a JSON request and decodes the answer, or the API's error.
func (c *client) do(ctx context.Context, method, path, bearer string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reaching the coordinator at %s: %w", c.base, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the coordinator's answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct {
				Code, Message, Field string
			} `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error.Code == "" {
			return &APIError{Status: resp.StatusCode, Code: http.StatusText(resp.StatusCode), Message: strings.TrimSpace(string(b))}
		}
		return &APIError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message, Field: e.Error.Field}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the coordinator's answer: %w", err)
	}
	return nil
}
