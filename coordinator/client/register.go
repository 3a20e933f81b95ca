package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// Register returns the crypto-device register of an organisation ("" for the reader's
// own, or every organisation for a reader of all).
func (c *Client) Register(ctx context.Context, organization string) (Register, error) {
	q := url.Values{}
	set(q, "organization", organization)
	var r Register
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/register", query: q, out: &r})
	return r, err
}

// ExportRegister returns the crypto-device register as the server renders it: format
// api.RegisterCSV or api.RegisterPDF.
func (c *Client) ExportRegister(ctx context.Context, organization, format string) ([]byte, error) {
	types := map[string]string{api.RegisterCSV: "text/csv", api.RegisterPDF: "application/pdf"}
	ctype, ok := types[format]
	if !ok {
		return nil, fmt.Errorf("register export: format %q: want csv or pdf", format)
	}
	q := url.Values{"format": {format}}
	set(q, "organization", organization)
	var b []byte
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/register", query: q, raw: &b, rawWant: ctype})
	return b, err
}
