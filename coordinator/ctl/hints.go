package ctl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// hintError is an error with what fixes it, named in the command line's own terms.
type hintError struct {
	err  error
	hint string
}

func (h hintError) Error() string { return h.err.Error() + "; " + h.hint }
func (h hintError) Unwrap() error { return h.err }

// explain adds to a failed call's error the flag or setting that fixes it, when the
// failure is one of the connection's: a CA this machine does not trust, a certificate for
// another name, TLS spoken to a plain HTTP server or the other way round, a token refused.
func (e *env) explain(err error) error {
	c := e.resolved
	if c.url == "" {
		return err // no client was made: the error is about the command line or config
	}
	scheme := ""
	if u, perr := url.Parse(c.url); perr == nil {
		scheme = u.Scheme
	}
	var (
		unknownCA  x509.UnknownAuthorityError
		hostname   x509.HostnameError
		record     tls.RecordHeaderError
		apiErr     *client.Error
		unexpected *client.UnexpectedResponseError
	)
	switch {
	case errors.As(err, &unknownCA):
		if c.caFrom != "" {
			return hintError{err, fmt.Sprintf("the coordinator's certificate is not signed by a CA in %s: give the CA that signed it with --ca-file FILE", c.caFrom)}
		}
		return hintError{err, "the coordinator's certificate is not signed by a CA this machine trusts: give its CA certificate (PEM) with --ca-file FILE, or ca_file in the config file"}
	case errors.As(err, &hostname):
		return hintError{err, "the coordinator's certificate is not for the host in the URL: use a name the certificate carries in --url (or " + EnvURL + ")"}
	case scheme == "https" && (errors.As(err, &record) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")):
		// net/http turns the record error into that text when the answer looks like HTTP.
		return hintError{err, "the server does not speak TLS: for a coordinator serving plain HTTP (on loopback), use an http:// URL in --url (or " + EnvURL + ")"}
	case errors.As(err, &unexpected) && scheme == "http" && unexpected.Status == http.StatusBadRequest &&
		strings.Contains(strings.ToLower(unexpected.Snippet), "https"):
		return hintError{err, "the coordinator speaks TLS: use an https:// URL in --url (or " + EnvURL + ")"}
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized:
		from := ""
		if c.tokenFrom != "" {
			from = " from " + c.tokenFrom
		}
		return hintError{err, fmt.Sprintf("the coordinator refused the API token%s: pass a valid one with --token-file FILE or %s (an administrator issues one with tokenfleetctl user token USERNAME)", from, EnvToken)}
	}
	return err
}
