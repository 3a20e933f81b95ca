package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// Retry starts a new attempt of a failed job (its requester, help desk or admin).
func (c *Client) Retry(ctx context.Context, id string, r RetryRequest) (JobDetail, error) {
	if err := needID("job ID", id); err != nil {
		return JobDetail{}, err
	}
	var d JobDetail
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/jobs/" + url.PathEscape(id) + "/retry", body: r, out: &d})
	return d, err
}

// RevokeCertificate revokes a certificate (admin or CA operator). reason is an RFC 5280
// reason name such as key_compromise or superseded; comment goes to the audit log.
func (c *Client) RevokeCertificate(ctx context.Context, serial, reason, comment string) (Certificate, error) {
	if err := needID("certificate serial", serial); err != nil {
		return Certificate{}, err
	}
	var out Certificate
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/certificates/" + url.PathEscape(serial) + "/revoke",
		body: api.Revoke{Reason: reason, Comment: comment}, out: &out})
	return out, err
}

// CACertificates returns the CA certificates relying parties need; no token is needed.
func (c *Client) CACertificates(ctx context.Context) (CAChain, error) {
	var out CAChain
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/ca/certificate", noAuth: true, out: &out})
	return out, err
}

// ResetAgentKey forgets the seal key recorded at the agent's first hello (admin), so that
// a reinstalled agent's next hello records its new key.
func (c *Client) ResetAgentKey(ctx context.Context, id, reason string) (Agent, error) {
	if err := needID("agent ID", id); err != nil {
		return Agent{}, err
	}
	var a Agent
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/agents/" + url.PathEscape(id) + "/reset-key",
		body: api.Reason{Reason: reason}, out: &a})
	return a, err
}
