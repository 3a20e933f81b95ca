package oidc

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Sign-in failures, one per cause, for errors.Is. Each error returned by New, Finish or
// FinishCallback wraps exactly one of them (a *ProviderError wraps ErrDenied or
// ErrProviderRefused), with details (which claim, which audience) in its message. No
// message holds a code, verifier, token or secret.
var (
	// ErrUnreachable: the identity provider (discovery, keys or token endpoint) did not
	// answer over the network.
	ErrUnreachable = errors.New("the identity provider cannot be reached")
	// ErrDiscovery: the provider answered, but not with a usable discovery document for
	// the configured issuer (wrong issuer URL, not an OpenID Connect provider).
	ErrDiscovery = errors.New("the identity provider's discovery document is unusable")
	// ErrStateMismatch: the callback's state is not the one this browser's flow started
	// with (a forged or crossed callback, or a second tab's sign-in).
	ErrStateMismatch = errors.New("the sign-in response does not belong to this browser's sign-in (state mismatch)")
	// ErrFlowExpired: the flow is older than FlowTTL, or missing or unreadable.
	ErrFlowExpired = errors.New("the sign-in took too long or was not started in this browser")
	// ErrDenied: the provider sent the browser back with access_denied (the person
	// declined, or is not allowed to use this client).
	ErrDenied = errors.New("the identity provider denied the sign-in")
	// ErrProviderRefused: the provider reported an error other than access_denied, at its
	// authorization endpoint (in the redirect) or its token endpoint.
	ErrProviderRefused = errors.New("the identity provider refused the sign-in")
	// ErrMissingCode: the callback has neither a code nor an error.
	ErrMissingCode = errors.New("the sign-in response has no authorization code")
	// ErrNoIDToken: the token endpoint answered without an ID token.
	ErrNoIDToken = errors.New("the identity provider returned no ID token")
	// ErrBadSignature: the ID token is not signed by a key the provider publishes.
	ErrBadSignature = errors.New("the ID token's signature does not verify against the identity provider's keys")
	// ErrWrongIssuer: the ID token, or the callback (RFC 9207), names another issuer.
	ErrWrongIssuer = errors.New("the sign-in answer comes from another issuer")
	// ErrWrongAudience: the ID token is not meant for this client.
	ErrWrongAudience = errors.New("the ID token is meant for another client (wrong audience)")
	// ErrExpired: the ID token's expiry (plus Leeway) has passed.
	ErrExpired = errors.New("the ID token has expired")
	// ErrNonceMismatch: the ID token was not issued for this flow (replayed or crossed).
	ErrNonceMismatch = errors.New("the ID token was not issued for this sign-in (nonce mismatch)")
	// ErrMissingClaim: a claim the coordinator needs (the username claim, sub) is absent
	// or empty; the message names it.
	ErrMissingClaim = errors.New("the ID token lacks a required claim")
	// ErrInvalidToken: the ID token is malformed or refused for another reason.
	ErrInvalidToken = errors.New("the ID token is invalid")
)

// ProviderError is an OAuth 2.0 error response (RFC 6749 4.1.2.1 and 5.2) from the
// provider: in the redirect to the callback, or from the token endpoint. It wraps ErrDenied
// for access_denied, ErrProviderRefused otherwise.
type ProviderError struct {
	Endpoint    string // "authorization" (in the redirect) or "token"
	Code        string // the error code, e.g. access_denied, invalid_grant
	Description string // error_description, cleaned of control characters and cut short
	URI         string // error_uri, if any
}

func (e *ProviderError) Error() string {
	var b strings.Builder
	if e.Code == "access_denied" {
		b.WriteString(ErrDenied.Error())
	} else {
		b.WriteString(ErrProviderRefused.Error())
	}
	fmt.Fprintf(&b, " (%s endpoint): %s", e.Endpoint, e.Code)
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	if e.URI != "" {
		fmt.Fprintf(&b, " (see %s)", e.URI)
	}
	return b.String()
}

func (e *ProviderError) Unwrap() error {
	if e.Code == "access_denied" {
		return ErrDenied
	}
	return ErrProviderRefused
}

func newProviderError(endpoint, code, description, uri string) *ProviderError {
	if code == "" {
		code = "unknown_error"
	}
	return &ProviderError{
		Endpoint:    endpoint,
		Code:        clean(code, 64),
		Description: clean(description, 300),
		URI:         clean(uri, 200),
	}
}

// clean makes provider text safe to log and show: printable runes only, at most n.
// The provider's words reach a page and a log line; a newline there could forge either.
func clean(s string, n int) string {
	var b strings.Builder
	count := 0
	for _, r := range s {
		if count == n {
			b.WriteString("…")
			break
		}
		if !unicode.IsPrint(r) {
			r = ' '
		}
		b.WriteRune(r)
		count++
	}
	return strings.TrimSpace(b.String())
}

// ConfigError names the configuration field that is wrong and how to fix it. Field is
// the key under console.oidc (issuer, client_id, ...).
type ConfigError struct {
	Field   string
	Problem string
}

func (e *ConfigError) Error() string {
	return "oidc configuration: " + e.Field + ": " + e.Problem
}
