package brokeradmin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxBody bounds what is read of an answer: the largest this package asks for is one
// user's connection list.
const maxBody = 8 << 20

// apiPath joins the escaped segments of an API path: "users", name → /users/<name>.
// A vhost "/" becomes %2F, as the API wants.
func apiPath(segments ...string) string {
	var b strings.Builder
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// do sends one request to the API at path (from apiPath) with body as JSON, decodes a
// 2xx answer into out when out is not nil, and returns any other as *APIError. header
// adds request headers (X-Reason).
func (c *Client) do(ctx context.Context, method, path string, body, out any, header map[string]string) error {
	return c.doTimeout(ctx, c.timeout, method, path, body, out, header)
}

// doTimeout is do with its own timeout, for a request that carries many agents. It waits
// for one of the client's slots first: at most parallel requests are in flight, whatever
// the callers do at once.
func (c *Client) doTimeout(ctx context.Context, timeout time.Duration, method, path string, body, out any, header map[string]string) error {
	select {
	case c.inflight <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", method, path, ctx.Err())
	}
	defer func() { <-c.inflight }()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+"/api"+path, rd)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.user, c.password)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The URL holds no secret (New refuses credentials in it).
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return apiError(method, path, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
		}
	}
	return nil
}

// apiError reads RabbitMQ's {"error": ..., "reason": ...}; its reason is usually a
// string, sometimes a list (["no_such_user", "x"]).
func apiError(method, path string, status int, body []byte) *APIError {
	e := &APIError{Method: method, Path: path, Status: status}
	var rmq struct {
		Error  json.RawMessage `json:"error"`
		Reason json.RawMessage `json:"reason"`
	}
	if json.Unmarshal(body, &rmq) == nil && (rmq.Error != nil || rmq.Reason != nil) {
		e.Code, e.Reason = jsonText(rmq.Error), jsonText(rmq.Reason)
		return e
	}
	e.Reason = strings.TrimSpace(string(body))
	if len(e.Reason) > 200 {
		e.Reason = strings.ToValidUTF8(e.Reason[:200], "") + "..."
	}
	return e
}

func jsonText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return strings.TrimSpace(string(raw))
}
