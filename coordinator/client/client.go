// Package client is a typed Go client of the coordinator's HTTP API
// (coordinator/api/openapi.yaml): one context-first method per endpoint, iterators that
// walk paginated lists, and *Error for the API's error responses, which carry the server's
// stable code. It is what tokenfleetctl, the tests and the demo use to talk to a
// coordinator.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// maxResponseBytes bounds what the client reads from one response. An audit page of 5000
// entries stays well below it; a larger body means something other than the coordinator
// is answering.
const maxResponseBytes = 64 << 20

// DefaultTimeout is the request timeout of the http.Client New makes when none is given.
const DefaultTimeout = 60 * time.Second

// Client talks to one coordinator as one caller. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	token     string
	hc        *http.Client
	userAgent string
}

// Option configures a Client.
type Option func(*Client) error

// WithHTTPClient makes the client send its requests with hc (its transport, timeouts,
// proxies). It replaces what WithRootCAs set up, so pass only one of the two.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return errors.New("client: WithHTTPClient: nil http.Client")
		}
		c.hc = hc
		return nil
	}
}

// WithRootCAs makes the client trust the coordinator certificates that chain to pool
// instead of the system roots: coordinators usually run behind an internal CA.
func WithRootCAs(pool *x509.CertPool) Option {
	return func(c *Client) error {
		if pool == nil {
			return errors.New("client: WithRootCAs: nil pool")
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		c.hc = &http.Client{Transport: tr, Timeout: DefaultTimeout}
		return nil
	}
}

// WithUserAgent sets the User-Agent header, so the coordinator's logs tell callers apart.
func WithUserAgent(ua string) Option {
	return func(c *Client) error {
		c.userAgent = ua
		return nil
	}
}

// New returns a client of the coordinator at baseURL (scheme and host, and a path prefix
// when the coordinator is served below one) that authenticates with the API token. The
// token may be empty for Health alone.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	baseURL = strings.TrimSpace(baseURL)
	if !strings.Contains(baseURL, "://") {
		return nil, fmt.Errorf("client: coordinator URL %q: want an http:// or https:// URL", baseURL)
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: coordinator URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("client: coordinator URL %q: want an http:// or https:// URL", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("client: coordinator URL %q has no host", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: coordinator URL %q: a query or fragment has no meaning here", baseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	if strings.ContainsAny(token, "\r\n") {
		return nil, errors.New("client: the API token contains a line break")
	}
	c := &Client{base: u, token: token, hc: &http.Client{Timeout: DefaultTimeout}, userAgent: "tokenfleet-client"}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// BaseURL returns the coordinator's URL as the client uses it.
func (c *Client) BaseURL() string { return c.base.String() }

// Error is an error response of the API: the HTTP status and the server's error object.
// Code is stable (see the Error schema of the OpenAPI file); match on it, never on Message.
type Error struct {
	Status  int
	Code    string
	Message string
	Field   string // the request field at fault, when the server names one
	// Entries name each refused entry of a batch request (EnrolAgents), which the server
	// refused whole.
	Entries []ErrorEntry
}

func (e *Error) Error() string {
	if e.Field != "" && !strings.Contains(e.Message, e.Field) {
		return e.Code + ": " + e.Field + ": " + e.Message
	}
	return e.Code + ": " + e.Message
}

// ErrorCode returns the API error code of err, or "" when err is not an *Error.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// UnexpectedResponseError is a response that is not the API's: a body that is not the JSON
// the endpoint returns, typically an HTML page from a proxy, a login portal or another
// web server at that address.
type UnexpectedResponseError struct {
	Status      int
	ContentType string
	URL         string
	Snippet     string // the start of the body, for logs
}

func (e *UnexpectedResponseError) Error() string {
	ct := e.ContentType
	if ct == "" {
		ct = "no content type"
	}
	return fmt.Sprintf("HTTP %d %s with a %s body from %s: not a tokenfleet coordinator answer (wrong URL, or a proxy in the way?)",
		e.Status, http.StatusText(e.Status), ct, e.URL)
}

// request describes one API call.
type request struct {
	method  string
	path    string // below the base URL, already escaped
	query   url.Values
	body    any    // encoded as JSON when not nil
	rawBody []byte // sent as is with rawType
	rawType string
	want    []int // statuses whose body decodes into out; 200 when empty
	out     any   // decoded from the body when not nil
	noAuth  bool
	header  http.Header // sent besides the client's own headers
	// resend is how many more times a request lost in transport (the connection closed
	// before an answer) is sent. Only for requests the server answers the same every
	// time, such as a job creation with an idempotency key.
	resend int
	// got receives the answer's headers when not nil.
	got *http.Header
	// raw receives the body as it came, of the content type rawWant, when not nil (a file
	// the server renders: the register as CSV or PDF).
	raw     *[]byte
	rawWant string
}

// resendWait is the first pause before a request lost in transport is sent again; each
// further one waits longer.
const resendWait = 200 * time.Millisecond

// do runs r and decodes the answer into r.out.
func (c *Client) do(ctx context.Context, r request) (int, error) {
	// r.path is escaped already: join strings, so the escaping survives as written.
	target := c.base.String() + r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	var body []byte
	contentType := ""
	switch {
	case r.body != nil:
		b, err := json.Marshal(r.body)
		if err != nil {
			return 0, fmt.Errorf("%s %s: encoding the request: %w", r.method, r.path, err)
		}
		body, contentType = b, "application/json"
	case r.rawBody != nil:
		body, contentType = r.rawBody, r.rawType
	}
	if !r.noAuth && c.token == "" {
		return 0, errors.New("no API token: the coordinator needs one for " + r.path)
	}
	var resp *http.Response
	for attempt := 0; ; attempt++ {
		var err error
		resp, err = c.send(ctx, r, target, body, contentType)
		if err == nil {
			break
		}
		// url.Error repeats method and URL; say what failed once, plainly.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return 0, fmt.Errorf("%s %s: %w", r.method, r.path, ctxErr)
		}
		if attempt >= r.resend || !lostInTransport(err) {
			return 0, fmt.Errorf("cannot reach the coordinator at %s: %w", c.base.Redacted(), err)
		}
		wait := time.NewTimer(time.Duration(attempt+1) * resendWait)
		select {
		case <-ctx.Done():
			wait.Stop()
			return 0, fmt.Errorf("%s %s: %w", r.method, r.path, ctx.Err())
		case <-wait.C:
		}
	}
	defer func() { _ = resp.Body.Close() }()
	if r.got != nil {
		*r.got = resp.Header
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: reading the response: %w", r.method, r.path, err)
	}
	if len(data) > maxResponseBytes {
		return resp.StatusCode, fmt.Errorf("%s %s: the response is larger than %d MiB", r.method, r.path, maxResponseBytes>>20)
	}

	want := r.want
	if len(want) == 0 {
		want = []int{http.StatusOK}
	}
	if !slices.Contains(want, resp.StatusCode) {
		return resp.StatusCode, c.decodeError(resp, data)
	}
	if r.raw != nil {
		if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != r.rawWant {
			return resp.StatusCode, c.unexpected(resp, data)
		}
		*r.raw = data
		return resp.StatusCode, nil
	}
	if r.out == nil {
		return resp.StatusCode, nil
	}
	if !isJSON(resp.Header.Get("Content-Type")) {
		return resp.StatusCode, c.unexpected(resp, data)
	}
	if err := json.Unmarshal(data, r.out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: decoding the response: %w", r.method, r.path, err)
	}
	return resp.StatusCode, nil
}

// send sends r once.
func (c *Client) send(ctx context.Context, r request, target string, body []byte, contentType string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if !r.noAuth {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.hc.Do(req)
}

// lostInTransport reports whether err says the connection ended before an answer came:
// the request may or may not have reached the server.
func lostInTransport(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// decodeError turns a response with an unexpected status into *Error, or into
// *UnexpectedResponseError when the body is not the API's error object.
func (c *Client) decodeError(resp *http.Response, data []byte) error {
	if isJSON(resp.Header.Get("Content-Type")) {
		var eb api.ErrorResponse
		if err := json.Unmarshal(data, &eb); err == nil && eb.Error.Code != "" {
			return &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message, Field: eb.Error.Field,
				Entries: eb.Error.Entries}
		}
	}
	return c.unexpected(resp, data)
}

func (c *Client) unexpected(resp *http.Response, data []byte) error {
	snippet := string(data)
	if len(snippet) > 200 {
		snippet = snippet[:200]
	}
	u := *resp.Request.URL
	u.RawQuery = ""
	return &UnexpectedResponseError{
		Status:      resp.StatusCode,
		ContentType: resp.Header.Get("Content-Type"),
		URL:         u.Redacted(),
		Snippet:     snippet,
	}
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}
