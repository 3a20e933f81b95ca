package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// RetryRequest asks for a new attempt of a failed job.
type RetryRequest struct {
	Reason string `json:"reason,omitempty"`
	// Deadline is the new attempt's deadline; zero keeps the job's, extended when it has
	// passed.
	Deadline time.Time `json:"deadline,omitzero"`
}

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
		body: struct {
			Reason  string `json:"reason"`
			Comment string `json:"comment,omitempty"`
		}{reason, comment}, out: &out})
	return out, err
}

// CACertificate is one certificate of the CA's chain.
type CACertificate struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	SHA256    string    `json:"sha256"`
}

// CAChain is the coordinator's CA certificates, the issuing CA first.
type CAChain struct {
	PEM          string          `json:"pem"`
	Certificates []CACertificate `json:"certificates"`
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
		body: struct {
			Reason string `json:"reason,omitempty"`
		}{reason}, out: &a})
	return a, err
}
