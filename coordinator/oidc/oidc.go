// Package oidc is the coordinator's OpenID Connect relying party, for signing in to the
// web console with an organisation's identity provider.
//
// New reads the provider's discovery document. Start begins an authorization-code flow
// with PKCE (S256), a random state and a random nonce, and gives the URL to send the
// browser to and the Flow for the console to keep in a short-lived cookie. At the
// callback, FinishCallback (or Finish) checks the state in constant time, exchanges the
// code with the PKCE verifier, verifies the ID token (signature against the provider's
// published keys, issuer, audience = client ID, expiry with Leeway, nonce) and reads the
// username from the configured claim.
//
// Every failure wraps one of the Err* values of this package, so the console can tell the
// person what went wrong without parsing messages.
package oidc

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Defaults for the optional configuration fields.
const (
	DefaultUsernameClaim = "preferred_username"
	// Leeway is the clock difference tolerated between the provider and the coordinator
	// when checking an ID token's expiry.
	Leeway = time.Minute
)

// DefaultScopes are requested when Config.Scopes is empty.
var DefaultScopes = []string{gooidc.ScopeOpenID, "profile", "email"}

// signingAlgs are the ID token signature algorithms accepted when the provider lists them.
var signingAlgs = []string{
	gooidc.RS256, gooidc.RS384, gooidc.RS512,
	gooidc.ES256, gooidc.ES384, gooidc.ES512,
	gooidc.PS256, gooidc.PS384, gooidc.PS512,
	gooidc.EdDSA,
}

// Config is the relying party's configuration (console.oidc.* in the coordinator's
// configuration; the caller reads ClientSecret from client_secret_file).
type Config struct {
	Issuer       string
	ClientID     string
	ClientSecret string // empty for a public client (PKCE only)
	RedirectURL  string // https://COORDINATOR/ui/oidc/callback
	Scopes       []string
	// UsernameClaim names the ID token claim that holds the coordinator username.
	UsernameClaim string
}

// Identity is what the identity provider vouched for, once the ID token verified.
type Identity struct{ Issuer, Subject, Username, Email string }

// Validate checks the configuration; an error is a *ConfigError naming the field (the
// first of Problems).
func (c Config) Validate() error {
	if p := c.Problems(); len(p) > 0 {
		return p[0]
	}
	return nil
}

// Problems lists everything wrong with the configuration, each naming its field (scopes[i]
// for one scope), so that a configuration file's reader can report them all at once.
func (c Config) Problems() []*ConfigError {
	var out []*ConfigError
	bad := func(field, format string, args ...any) {
		out = append(out, &ConfigError{Field: field, Problem: fmt.Sprintf(format, args...)})
	}
	if p := checkURL(c.Issuer); p != "" {
		bad("issuer", "%q %s: set the provider's issuer URL, as its discovery document names it (e.g. https://idp.example.org/realms/acme)", c.Issuer, p)
	}
	if strings.TrimSpace(c.ClientID) == "" {
		bad("client_id", "is required: the client ID the provider registered for the console")
	}
	if c.ClientSecret != strings.TrimSpace(c.ClientSecret) {
		bad("client_secret_file", "the secret starts or ends with white space or a line end: remove it from the file")
	}
	if p := checkURL(c.RedirectURL); p != "" {
		bad("redirect_url", "%q %s: set the console's callback, https://COORDINATOR/ui/oidc/callback, registered with the provider", c.RedirectURL, p)
	}
	if len(c.Scopes) > 0 && !slices.Contains(c.Scopes, gooidc.ScopeOpenID) {
		bad("scopes", "%v lacks openid, without which the provider sends no ID token", c.Scopes)
	}
	for i, s := range c.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			bad(fmt.Sprintf("scopes[%d]", i), "%q is not a scope name: give one scope per list item, without spaces", s)
		}
	}
	if c.UsernameClaim != "" && !claimNameRE.MatchString(c.UsernameClaim) {
		bad("username_claim", "%q is not a claim name (e.g. preferred_username, email, upn)", c.UsernameClaim)
	}
	return out
}

// claimNameRE is what a claim name may be; claim names with spaces or quotes are not
// worth supporting and would more likely be a typing error.
var claimNameRE = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{1,128}$`)

// checkURL says what is wrong with an absolute https URL (http on loopback only, for tests
// and local providers); "" when nothing is.
func checkURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return "is not an absolute https URL"
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return "is http: only a loopback address may be reached without TLS"
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return "has a query, a fragment or credentials"
	}
	return ""
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Provider is a relying party for one identity provider. It is safe for concurrent use.
type Provider struct {
	issuer        string
	clientID      string
	usernameClaim string
	oauth         oauth2.Config
	keys          gooidc.KeySet // the provider's published keys, fetched and cached
	algs          []string
	hc            *http.Client
	now           func() time.Time
}

// New reads the provider's discovery document and returns a relying party. hc carries
// every request to the provider (nil: a client with a 30 s time-out).
func New(ctx context.Context, c Config, hc *http.Client) (*Provider, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	if len(c.Scopes) == 0 {
		c.Scopes = DefaultScopes
	}
	if c.UsernameClaim == "" {
		c.UsernameClaim = DefaultUsernameClaim
	}
	disc, err := gooidc.NewProvider(gooidc.ClientContext(ctx, hc), c.Issuer)
	if err != nil {
		return nil, discoveryError(c.Issuer, err)
	}
	var meta struct {
		JWKSURI  string   `json:"jwks_uri"`
		Algs     []string `json:"id_token_signing_alg_values_supported"`
		PKCE     []string `json:"code_challenge_methods_supported"`
		AuthURL  string   `json:"authorization_endpoint"`
		TokenURL string   `json:"token_endpoint"`
	}
	if err := disc.Claims(&meta); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDiscovery, err)
	}
	for _, e := range []struct{ name, value string }{
		{"authorization_endpoint", meta.AuthURL}, {"token_endpoint", meta.TokenURL}, {"jwks_uri", meta.JWKSURI},
	} {
		if e.value == "" {
			return nil, fmt.Errorf("%w: it names no %s (is %s an OpenID Connect provider?)", ErrDiscovery, e.name, c.Issuer)
		}
	}
	// A provider that lists its PKCE methods without S256 would refuse every sign-in.
	if len(meta.PKCE) > 0 && !slices.Contains(meta.PKCE, "S256") {
		return nil, fmt.Errorf("%w: it does not support PKCE with S256 (code_challenge_methods_supported: %v)", ErrDiscovery, meta.PKCE)
	}
	var algs []string
	for _, a := range meta.Algs {
		if slices.Contains(signingAlgs, a) {
			algs = append(algs, a)
		}
	}
	return &Provider{
		issuer:        c.Issuer,
		clientID:      c.ClientID,
		usernameClaim: c.UsernameClaim,
		oauth: oauth2.Config{
			ClientID:     c.ClientID,
			ClientSecret: c.ClientSecret,
			Endpoint:     disc.Endpoint(),
			RedirectURL:  c.RedirectURL,
			Scopes:       slices.Clone(c.Scopes),
		},
		// The key set lives as long as the provider, not the discovery request.
		keys: gooidc.NewRemoteKeySet(gooidc.ClientContext(context.WithoutCancel(ctx), hc), meta.JWKSURI),
		algs: algs,
		hc:   hc,
		now:  time.Now,
	}, nil
}

func discoveryError(issuer string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%w: discovery at %s: %w", ErrUnreachable, issuer, ue.Err)
	}
	var me *gooidc.IssuerMismatchError
	if errors.As(err, &me) {
		return fmt.Errorf("%w: it names its issuer %q, the configuration says %q: set console.oidc.issuer exactly as the provider names itself",
			ErrDiscovery, me.Discovered, me.Provided)
	}
	return fmt.Errorf("%w: %s/.well-known/openid-configuration: %s (is console.oidc.issuer right?)",
		ErrDiscovery, strings.TrimSuffix(issuer, "/"), clean(err.Error(), 200))
}

// Issuer is the issuer URL, as configured and as the provider names itself.
func (p *Provider) Issuer() string { return p.issuer }

// Start begins a sign-in: the browser goes to authURL, the Flow stays in its cookie.
func (p *Provider) Start() (Flow, string, error) {
	f := Flow{
		State:    randomToken(),
		Nonce:    randomToken(),
		Verifier: oauth2.GenerateVerifier(),
		Expires:  p.now().Add(FlowTTL),
	}
	if !isRandomToken(f.Verifier) {
		return Flow{}, "", errors.New("oidc: the PKCE verifier has an unexpected shape")
	}
	authURL := p.oauth.AuthCodeURL(f.State, gooidc.Nonce(f.Nonce), oauth2.S256ChallengeOption(f.Verifier))
	return f, authURL, nil
}

// FinishCallback completes a sign-in from the callback's query: the state first, the
// issuer if the provider names it (RFC 9207, against mix-up with another provider), then
// an error the provider reported in the redirect (a *ProviderError), then the code.
func (p *Provider) FinishCallback(ctx context.Context, f Flow, q url.Values) (Identity, error) {
	if err := p.checkFlow(f, q.Get("state")); err != nil {
		return Identity{}, err
	}
	if q.Has("iss") && q.Get("iss") != p.issuer {
		return Identity{}, fmt.Errorf("%w: the callback names %q, expected %q", ErrWrongIssuer, clean(q.Get("iss"), 200), p.issuer)
	}
	if code := q.Get("error"); code != "" {
		return Identity{}, newProviderError("authorization", code, q.Get("error_description"), q.Get("error_uri"))
	}
	return p.Finish(ctx, f, q.Get("state"), q.Get("code"))
}

// Finish completes a sign-in: it checks the state, exchanges the code and verifies the ID
// token. The flow cannot be finished twice: the provider accepts a code once.
func (p *Provider) Finish(ctx context.Context, f Flow, state, code string) (Identity, error) {
	if err := p.checkFlow(f, state); err != nil {
		return Identity{}, err
	}
	if code == "" {
		return Identity{}, ErrMissingCode
	}
	rt := &recordingTransport{base: p.hc.Transport}
	hc := *p.hc
	hc.Transport = rt
	tok, err := p.oauth.Exchange(context.WithValue(ctx, oauth2.HTTPClient, &hc), code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		return Identity{}, exchangeError(err, rt.failure(), code)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return Identity{}, ErrNoIDToken
	}
	return p.verify(ctx, raw, f.Nonce)
}

func (p *Provider) checkFlow(f Flow, state string) error {
	if err := f.wellFormed(); err != nil {
		return err
	}
	if !p.now().Before(f.Expires) {
		return fmt.Errorf("%w: it was started more than %s ago", ErrFlowExpired, FlowTTL)
	}
	if state == "" || subtle.ConstantTimeCompare([]byte(state), []byte(f.State)) != 1 {
		return ErrStateMismatch
	}
	return nil
}

func exchangeError(err, network error, authCode string) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		code, desc := re.ErrorCode, re.ErrorDescription
		if code == "" && re.Response != nil {
			code, desc = "http_"+fmt.Sprint(re.Response.StatusCode), "the token endpoint answered "+re.Response.Status
		}
		// Some providers quote the code they refuse; it has no place in a log or a page.
		desc = strings.ReplaceAll(desc, authCode, "(the code)")
		return newProviderError("token", code, desc, re.ErrorURI)
	}
	if network != nil {
		return fmt.Errorf("%w: token endpoint: %w", ErrUnreachable, network)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: token endpoint: %w", ErrUnreachable, err)
	}
	return fmt.Errorf("%w (token endpoint): its answer is unusable: %w", ErrProviderRefused, err)
}

// verify checks the ID token with go-oidc, then, on a refusal, says why: the key set
// records whether the signature was the problem; with a good signature the claims that
// go-oidc refused can be read to name the cause.
func (p *Provider) verify(ctx context.Context, raw, nonce string) (Identity, error) {
	ks := &recordingKeySet{inner: p.keys}
	v := gooidc.NewVerifier(p.issuer, ks, &gooidc.Config{
		ClientID:             p.clientID,
		SupportedSigningAlgs: p.algs,
		Now:                  func() time.Time { return p.now().Add(-Leeway) },
	})
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return Identity{}, p.refusal(err, ks)
	}
	if idt.Nonce == "" || subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return Identity{}, ErrNonceMismatch
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	// OpenID Connect Core 3.1.3.7: with several audiences, azp must be this client.
	if azp, _ := claims["azp"].(string); azp != "" && azp != p.clientID || azp == "" && len(idt.Audience) > 1 {
		return Identity{}, fmt.Errorf("%w: authorized party %q, this client is %q", ErrWrongAudience, azp, p.clientID)
	}
	if idt.Subject == "" {
		return Identity{}, fmt.Errorf("%w: sub", ErrMissingClaim)
	}
	username, err := stringClaim(claims, p.usernameClaim)
	if err != nil {
		return Identity{}, err
	}
	// The first sign-in links by username: an address as the username must be one the
	// provider vouches for, or anyone could claim an account by typing its address.
	if p.usernameClaim == "email" {
		if verified, ok := claims["email_verified"].(bool); ok && !verified {
			return Identity{}, fmt.Errorf("%w: the username claim \"email\" holds %q, which the provider has not verified (email_verified false): verify the address at the provider", ErrMissingClaim, clean(username, 200))
		}
	}
	id := Identity{Issuer: idt.Issuer, Subject: idt.Subject, Username: username}
	// An address the provider says it did not verify is not vouched for.
	if email, ok := claims["email"].(string); ok {
		if verified, ok := claims["email_verified"].(bool); !ok || verified {
			id.Email = email
		}
	}
	return id, nil
}

func stringClaim(claims map[string]any, name string) (string, error) {
	v, ok := claims[name]
	if !ok {
		return "", fmt.Errorf("%w: %q (the username claim): have the provider send it (often with the profile scope), or set console.oidc.username_claim to the claim that holds the username",
			ErrMissingClaim, name)
	}
	s, ok := v.(string)
	if !ok || strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("%w: %q (the username claim) is empty or not a string", ErrMissingClaim, name)
	}
	return strings.TrimSpace(s), nil
}

// refusal turns go-oidc's refusal into one of this package's errors.
func (p *Provider) refusal(err error, ks *recordingKeySet) error {
	switch {
	case ks.err != nil:
		var ue *url.Error
		if errors.As(ks.err, &ue) {
			return fmt.Errorf("%w: fetching its signing keys: %w", ErrUnreachable, ue.Err)
		}
		return fmt.Errorf("%w: %w", ErrBadSignature, ks.err)
	case ks.payload == nil:
		// Refused before the signature was looked at: not a JWT, or an algorithm not allowed.
		return fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	var expired *gooidc.TokenExpiredError
	if errors.As(err, &expired) {
		return fmt.Errorf("%w: at %s (leeway %s)", ErrExpired, expired.Expiry.UTC().Format(time.RFC3339), Leeway)
	}
	// The signature is good, so these claims are the provider's own.
	var claims struct {
		Issuer   string   `json:"iss"`
		Audience audience `json:"aud"`
	}
	if json.Unmarshal(ks.payload, &claims) == nil {
		if claims.Issuer != p.issuer {
			return fmt.Errorf("%w: the ID token names %q, expected %q", ErrWrongIssuer, claims.Issuer, p.issuer)
		}
		if !slices.Contains(claims.Audience, p.clientID) {
			return fmt.Errorf("%w: it is for %q, this client is %q", ErrWrongAudience, []string(claims.Audience), p.clientID)
		}
	}
	return fmt.Errorf("%w: %w", ErrInvalidToken, err)
}

// audience is the aud claim: one string or a list.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*a = audience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return err
	}
	*a = l
	return nil
}

// recordingKeySet remembers, for one verification, what the signature check said: its
// error (go-oidc flattens it into a string) or the verified payload.
type recordingKeySet struct {
	inner   gooidc.KeySet
	err     error
	payload []byte
}

func (k *recordingKeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.inner.VerifySignature(ctx, jwt)
	k.payload, k.err = payload, err
	return payload, err
}

// recordingTransport remembers a network failure of one exchange: oauth2 flattens it into
// a string, and the person should hear "cannot be reached", not "refused".
type recordingTransport struct {
	base http.RoundTripper
	err  error
}

func (t *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if err != nil {
		t.err = err
	}
	return resp, err
}

func (t *recordingTransport) failure() error { return t.err }
