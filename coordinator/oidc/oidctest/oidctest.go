// Package oidctest runs a real OpenID Connect provider on loopback for tests
// (github.com/oauth2-proxy/mockoidc: discovery, JWKS, authorize, token), with a queue of
// sign-ins: each visit to its authorization endpoint takes the next queued user, or the
// next queued refusal, and an empty queue refuses (access_denied), so a test signs in only
// whom it meant to.
package oidctest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/tokenfleet/tokenfleet/coordinator/oidc"
)

// User is a person the provider signs in.
type User struct {
	Subject  string // sub; "" for "sub-" + Username
	Username string // in UsernameClaim
	Email    string // with email_verified true; "" for none
	// UsernameClaim is the claim that carries Username; "" for preferred_username.
	UsernameClaim string
	// Override claims are set last, over the provider's own (aud, exp, nonce, iss...):
	// to make an ID token the relying party must refuse.
	Override map[string]any
}

// Options shape the provider.
type Options struct {
	// ForgeSignatures makes the provider sign ID tokens with a key other than the one it
	// publishes (under the same key ID): none of its tokens should verify.
	ForgeSignatures bool
	// PKCEMethods are the code challenge methods the provider accepts and lists; nil for
	// S256 alone.
	PKCEMethods []string
	// Middleware wraps every endpoint: to break the provider as a test needs.
	Middleware func(http.Handler) http.Handler
}

// Provider is a running test identity provider.
type Provider struct {
	Mock *mockoidc.MockOIDC

	// serve serialises requests: mockoidc's session store and key cache are unguarded,
	// and each authorization request must take its own queued user.
	serve sync.Mutex

	mu    sync.Mutex // guards queue
	queue []signIn
}

type signIn struct {
	user          *User
	code, message string // a refusal when user is nil
}

// Start starts a provider that stops when t ends.
func Start(t testing.TB) *Provider { return StartWith(t, Options{}) }

// StartWith starts a provider shaped by o.
func StartWith(t testing.TB, o Options) *Provider {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatalf("oidctest: new provider: %v", err)
	}
	m.CodeChallengeMethodsSupported = []string{mockoidc.CodeChallengeMethodS256}
	if o.PKCEMethods != nil {
		m.CodeChallengeMethodsSupported = o.PKCEMethods
	}
	if _, err := m.Keypair.KeyID(); err != nil { // computed once, before requests race to
		t.Fatalf("oidctest: %v", err)
	}
	p := &Provider{Mock: m}
	if o.Middleware != nil {
		if err := m.AddMiddleware(o.Middleware); err != nil {
			t.Fatalf("oidctest: %v", err)
		}
	}
	if err := m.AddMiddleware(p.authorize); err != nil {
		t.Fatalf("oidctest: %v", err)
	}
	if o.ForgeSignatures {
		mw, err := publishOtherKey(m)
		if err != nil {
			t.Fatalf("oidctest: %v", err)
		}
		if err := m.AddMiddleware(mw); err != nil {
			t.Fatalf("oidctest: %v", err)
		}
	}
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("oidctest: listen: %v", err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatalf("oidctest: start: %v", err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return p
}

// Issuer is the provider's issuer URL.
func (p *Provider) Issuer() string { return p.Mock.Issuer() }

// Config is a relying-party configuration for this provider (client ID and secret it
// accepts, username claim preferred_username).
func (p *Provider) Config(redirectURL string) oidc.Config {
	return oidc.Config{
		Issuer:       p.Mock.Issuer(),
		ClientID:     p.Mock.ClientID,
		ClientSecret: p.Mock.ClientSecret,
		RedirectURL:  redirectURL,
	}
}

// QueueUser makes the next visit to the authorization endpoint sign u in.
func (p *Provider) QueueUser(u User) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queue = append(p.queue, signIn{user: &u})
}

// QueueRefusal makes the next visit to the authorization endpoint redirect back with
// error=code (access_denied, login_required...) and error_description=message.
func (p *Provider) QueueRefusal(code, message string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queue = append(p.queue, signIn{code: code, message: message})
}

// Stop stops the provider now (it also stops when the test ends).
func (p *Provider) Stop() { _ = p.Mock.Shutdown() }

func (p *Provider) next() signIn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return signIn{code: "access_denied", message: "oidctest: no user queued for this sign-in"}
	}
	s := p.queue[0]
	p.queue = p.queue[1:]
	return s
}

// FastForward moves the provider's clock (negative: back) for the tokens it issues next.
func (p *Provider) FastForward(d time.Duration) {
	p.serve.Lock()
	defer p.serve.Unlock()
	p.Mock.FastForward(d)
}

// authorize serves one request at a time, and takes the next queued sign-in at the
// authorization endpoint: a user goes to mockoidc's own queue just before its handler pops
// it; a refusal is answered here, as a provider does (RFC 6749 4.1.2.1), since mockoidc
// answers errors with JSON instead.
func (p *Provider) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.serve.Lock()
		defer p.serve.Unlock()
		if r.URL.Path != mockoidc.AuthorizationEndpoint {
			next.ServeHTTP(w, r)
			return
		}
		s := p.next()
		if s.user != nil {
			p.Mock.QueueUser((*user)(s.user))
			next.ServeHTTP(w, r)
			return
		}
		back, err := url.Parse(r.FormValue("redirect_uri"))
		if err != nil || back.Host == "" {
			http.Error(w, "oidctest: bad redirect_uri", http.StatusBadRequest)
			return
		}
		q := back.Query()
		q.Set("error", s.code)
		q.Set("error_description", s.message)
		q.Set("state", r.FormValue("state"))
		back.RawQuery = q.Encode()
		http.Redirect(w, r, back.String(), http.StatusFound)
	})
}

// publishOtherKey serves, at the JWKS endpoint, a fresh key under the signing key's ID.
func publishOtherKey(m *mockoidc.MockOIDC) (func(http.Handler) http.Handler, error) {
	kid, err := m.Keypair.KeyID()
	if err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	other := &mockoidc.Keypair{PrivateKey: key, PublicKey: &key.PublicKey, Kid: kid}
	jwks, err := other.JWKS()
	if err != nil {
		return nil, err
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != mockoidc.JWKSEndpoint {
				next.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(jwks)
		})
	}, nil
}

// user is a User as mockoidc wants it.
type user User

func (u *user) ID() string {
	if u.Subject != "" {
		return u.Subject
	}
	return "sub-" + u.Username
}

func (u *user) claims() map[string]any {
	c := map[string]any{}
	name := u.UsernameClaim
	if name == "" {
		name = oidc.DefaultUsernameClaim
	}
	if u.Username != "" {
		c[name] = u.Username
	}
	if u.Email != "" {
		c["email"] = u.Email
		c["email_verified"] = true
	}
	return c
}

func (u *user) Userinfo([]string) ([]byte, error) {
	c := u.claims()
	c["sub"] = u.ID()
	return json.Marshal(c)
}

func (u *user) Claims(_ []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	b, err := json.Marshal(base)
	if err != nil {
		return nil, err
	}
	c := jwt.MapClaims{}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	maps.Copy(c, u.claims())
	maps.Copy(c, u.Override)
	return c, nil
}

// Browser is the browser side of a sign-in for tests without a browser: it follows no
// redirect, so that the test reads where the provider sends the person.
func Browser() *http.Client {
	return &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Authorize visits authURL as a browser would and returns where the provider redirects
// it: the callback URL, with code and state, or with error and error_description.
func Authorize(t testing.TB, authURL string) *url.URL {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, authURL, nil)
	if err != nil {
		t.Fatalf("oidctest: %v", err)
	}
	resp, err := Browser().Do(req)
	if err != nil {
		t.Fatalf("oidctest: visit the authorization endpoint: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("oidctest: the authorization endpoint answered %s, not a redirect", resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("oidctest: %v", err)
	}
	return loc
}

// Expired is an Override value making an ID token that expired an hour ago.
func Expired() map[string]any {
	past := time.Now().Add(-time.Hour)
	return map[string]any{"exp": past.Unix(), "iat": past.Add(-10 * time.Minute).Unix(), "nbf": past.Add(-10 * time.Minute).Unix()}
}
