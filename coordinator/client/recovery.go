package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// ListRecoveryCertificates lists the organisation's recovery certificates, in use first,
// each by expiry; the retired ones too when all is set.
func (c *Client) ListRecoveryCertificates(ctx context.Context, all bool) (RecoveryCertificateList, error) {
	q := url.Values{}
	if all {
		q.Set("all", "true")
	}
	var out RecoveryCertificateList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/recovery-certificates", query: q, out: &out})
	return out, err
}

// AddRecoveryCertificate adds one recovery certificate, given in PEM.
func (c *Client) AddRecoveryCertificate(ctx context.Context, pemText string) (RecoveryCertificate, error) {
	var out RecoveryCertificate
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/recovery-certificates",
		body: api.RecoveryCertificateAdd{Certificate: pemText}, want: []int{http.StatusCreated}, out: &out})
	return out, err
}

// RetireRecoveryCertificate retires one, saying why.
func (c *Client) RetireRecoveryCertificate(ctx context.Context, id, reason string) (RecoveryCertificate, error) {
	if err := needID("recovery certificate ID", id); err != nil {
		return RecoveryCertificate{}, err
	}
	var out RecoveryCertificate
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/recovery-certificates/" + url.PathEscape(id) + "/retire",
		body: api.RecoveryCertificateRetire{Reason: reason}, out: &out})
	return out, err
}
