package oidc_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/oidc"
	"github.com/tokenfleet/tokenfleet/coordinator/oidc/oidctest"
)

// The browser is never sent here: the tests read the redirect instead of following it.
const callback = "http://127.0.0.1:9/ui/oidc/callback"

func client() *http.Client { return &http.Client{Timeout: 30 * time.Second} }

// setup starts a provider and a relying party for it.
func setup(t *testing.T, o oidctest.Options, edit func(*oidc.Config)) (*oidctest.Provider, *oidc.Provider) {
	t.Helper()
	idp := oidctest.StartWith(t, o)
	c := idp.Config(callback)
	if edit != nil {
		edit(&c)
	}
	rp, err := oidc.New(t.Context(), c, client())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return idp, rp
}

// signIn runs a whole sign-in as the console does, the flow going through its cookie.
func signIn(t *testing.T, rp *oidc.Provider) (oidc.Identity, error) {
	t.Helper()
	flow, authURL, err := rp.Start()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	back := oidctest.Authorize(t, authURL)
	cookie, err := oidc.DecodeFlow(flow.Encode())
	if err != nil {
		t.Fatalf("DecodeFlow: %v", err)
	}
	return rp.FinishCallback(t.Context(), cookie, back.Query())
}

func wantErr(t *testing.T, err, want error, mention ...string) {
	t.Helper()
	t.Logf("error: %v", err)
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
	for _, m := range mention {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

func TestSignIn(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	idp.QueueUser(oidctest.User{Subject: "s-42", Username: "alice", Email: "alice@example.org"})

	flow, authURL, err := rp.Start()
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" ||
		q.Get("state") != flow.State || q.Get("nonce") != flow.Nonce || q.Get("redirect_uri") != callback {
		t.Fatalf("authorization URL lacks PKCE S256, state, nonce or redirect: %s", authURL)
	}
	if strings.Contains(authURL, flow.Verifier) {
		t.Fatal("the PKCE verifier is in the authorization URL")
	}
	if flow.State == flow.Nonce || len(flow.State) != 43 || len(flow.Verifier) != 43 {
		t.Fatalf("flow values are not independent 32-byte random values: %+v", flow)
	}

	back := oidctest.Authorize(t, authURL)
	if !strings.HasPrefix(back.String(), callback+"?") {
		t.Fatalf("provider redirected to %s, want the callback", back)
	}
	id, err := rp.FinishCallback(t.Context(), flow, back.Query())
	if err != nil {
		t.Fatalf("FinishCallback: %v", err)
	}
	want := oidc.Identity{Issuer: idp.Issuer(), Subject: "s-42", Username: "alice", Email: "alice@example.org"}
	if id != want {
		t.Fatalf("identity = %+v, want %+v", id, want)
	}

	// The code is spent: the same callback again is refused by the provider.
	_, err = rp.FinishCallback(t.Context(), flow, back.Query())
	wantErr(t, err, oidc.ErrProviderRefused, "token endpoint", "invalid_grant")
	if code := back.Query().Get("code"); strings.Contains(err.Error(), code) {
		t.Fatalf("error %q shows the authorization code", err)
	}
}

func TestPKCEVerifierIsChecked(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	idp.QueueUser(oidctest.User{Username: "alice"})
	flow, authURL, _ := rp.Start()
	other, _, _ := rp.Start()
	back := oidctest.Authorize(t, authURL)
	flow.Verifier = other.Verifier // a stolen code without its verifier is useless
	_, err := rp.FinishCallback(t.Context(), flow, back.Query())
	wantErr(t, err, oidc.ErrProviderRefused, "invalid_grant")
}

func TestCustomUsernameClaim(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, func(c *oidc.Config) { c.UsernameClaim = "upn" })
	idp.QueueUser(oidctest.User{Username: "bob", UsernameClaim: "upn"})
	id, err := signIn(t, rp)
	if err != nil || id.Username != "bob" || id.Email != "" {
		t.Fatalf("identity = %+v, %v; want bob without e-mail", id, err)
	}
}

func TestMissingUsernameClaim(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	idp.QueueUser(oidctest.User{Subject: "s-1", Email: "x@example.org"})
	_, err := signIn(t, rp)
	wantErr(t, err, oidc.ErrMissingClaim, `"preferred_username"`, "console.oidc.username_claim")
}

func TestUnverifiedEmailIsDropped(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	idp.QueueUser(oidctest.User{Username: "carol", Email: "carol@example.org", Override: map[string]any{"email_verified": false}})
	id, err := signIn(t, rp)
	if err != nil || id.Username != "carol" || id.Email != "" {
		t.Fatalf("identity = %+v, %v; want carol without the unverified e-mail", id, err)
	}
}

// TestUnverifiedEmailIsNoUsername: with the e-mail address as the username claim, an
// address the provider says it did not verify names nobody: anyone can type anyone's
// address into their profile at many providers, and the first sign-in links by username.
func TestUnverifiedEmailIsNoUsername(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, func(c *oidc.Config) { c.UsernameClaim = "email" })
	idp.QueueUser(oidctest.User{Username: "admin@example.org", UsernameClaim: "email", Override: map[string]any{"email_verified": false}})
	_, err := signIn(t, rp)
	wantErr(t, err, oidc.ErrMissingClaim, "email_verified")
	idp.QueueUser(oidctest.User{Username: "carol@example.org", UsernameClaim: "email", Override: map[string]any{"email_verified": true}})
	if id, err := signIn(t, rp); err != nil || id.Username != "carol@example.org" {
		t.Fatalf("verified address: %+v, %v", id, err)
	}
}

func TestWrongAudience(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	idp.QueueUser(oidctest.User{Username: "alice", Override: map[string]any{"aud": "another-client"}})
	_, err := signIn(t, rp)
	wantErr(t, err, oidc.ErrWrongAudience, "another-client", idp.Mock.ClientID)
}

func TestSeveralAudiences(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	cid := idp.Mock.ClientID
	// Another client in aud without azp naming this one: refused (OIDC Core 3.1.3.7).
	idp.QueueUser(oidctest.User{Username: "alice", Override: map[string]any{"aud": []string{cid, "other"}}})
	_, err := signIn(t, rp)
	wantErr(t, err, oidc.ErrWrongAudience, "authorized party")
	// With azp = this client: accepted.
	idp.QueueUser(oidctest.User{Username: "alice", Override: map[string]any{"aud": []string{cid, "other"}, "azp": cid}})
	if id, err := signIn(t, rp); err != nil || id.Username != "alice" {
		t.Fatalf("identity = %+v, %v", id, err)
	}
}

func TestWrongIssuer(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	idp.QueueUser(oidctest.User{Username: "alice", Override: map[string]any{"iss": "https://idp.elsewhere.example"}})
	_, err := signIn(t, rp)
	wantErr(t, err, oidc.ErrWrongIssuer, "idp.elsewhere.example")
}

func TestExpired(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	idp.QueueUser(oidctest.User{Username: "alice", Override: oidctest.Expired()})
	_, err := signIn(t, rp)
	wantErr(t, err, oidc.ErrExpired, "leeway")

	// Every token the provider issues is already old: its clock runs an hour behind.
	idp.FastForward(-time.Hour)
	idp.QueueUser(oidctest.User{Username: "alice"})
	_, err = signIn(t, rp)
	wantErr(t, err, oidc.ErrExpired)
}

func TestExpiryLeeway(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	// Expired 20 s ago by our clock: within the leeway for a provider whose clock is behind.
	idp.QueueUser(oidctest.User{Username: "alice", Override: map[string]any{"exp": time.Now().Add(-20 * time.Second).Unix()}})
	if id, err := signIn(t, rp); err != nil || id.Username != "alice" {
		t.Fatalf("identity = %+v, %v; want alice (within %s)", id, err, oidc.Leeway)
	}
}

func TestNonceMismatch(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	// A token minted for another sign-in (a replay): its nonce is not this flow's.
	other, _, _ := rp.Start()
	idp.QueueUser(oidctest.User{Username: "alice", Override: map[string]any{"nonce": other.Nonce}})
	_, err := signIn(t, rp)
	wantErr(t, err, oidc.ErrNonceMismatch)

	// A token without a nonce.
	idp.QueueUser(oidctest.User{Username: "alice", Override: map[string]any{"nonce": nil}})
	_, err = signIn(t, rp)
	wantErr(t, err, oidc.ErrNonceMismatch)
}

func TestStateMismatch(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	idp.QueueUser(oidctest.User{Username: "alice"})
	flow, authURL, _ := rp.Start()
	back := oidctest.Authorize(t, authURL)

	// A callback made for another browser's flow, or with no state at all.
	other, _, _ := rp.Start()
	q := back.Query()
	_, err := rp.FinishCallback(t.Context(), other, q)
	wantErr(t, err, oidc.ErrStateMismatch)
	_, err = rp.Finish(t.Context(), flow, "", q.Get("code"))
	wantErr(t, err, oidc.ErrStateMismatch)
	forged := url.Values{"state": {other.State}, "code": {q.Get("code")}}
	_, err = rp.FinishCallback(t.Context(), flow, forged)
	wantErr(t, err, oidc.ErrStateMismatch)

	mixedUp := url.Values{"state": {flow.State}, "code": {q.Get("code")}, "iss": {"https://other-idp.example"}}
	_, err = rp.FinishCallback(t.Context(), flow, mixedUp)
	wantErr(t, err, oidc.ErrWrongIssuer, "other-idp.example")

	// Refused before the exchange: the code is still good for its own flow.
	if id, err := rp.FinishCallback(t.Context(), flow, q); err != nil || id.Username != "alice" {
		t.Fatalf("identity = %+v, %v", id, err)
	}
}

func TestFlowExpires(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	idp.QueueUser(oidctest.User{Username: "alice"})
	flow, authURL, _ := rp.Start()
	back := oidctest.Authorize(t, authURL)
	flow.Expires = time.Now().Add(-time.Second)
	_, err := rp.FinishCallback(t.Context(), flow, back.Query())
	wantErr(t, err, oidc.ErrFlowExpired)
}

func TestFlowCookie(t *testing.T) {
	t.Parallel()
	_, rp := setup(t, oidctest.Options{}, nil)
	flow, _, _ := rp.Start()
	enc := flow.Encode()
	if strings.ContainsAny(enc, ";, \"=") || len(enc) > 400 {
		t.Fatalf("encoded flow %q is not a compact cookie value", enc)
	}
	got, err := oidc.DecodeFlow(enc)
	if err != nil || got.State != flow.State || got.Nonce != flow.Nonce || got.Verifier != flow.Verifier || !got.Expires.Equal(flow.Expires) {
		t.Fatalf("DecodeFlow = %+v, %v; want %+v", got, err, flow)
	}
	for _, bad := range []string{"", "not base64!", enc[:len(enc)-4], "e30", strings.Repeat("A", 600)} {
		if _, err := oidc.DecodeFlow(bad); !errors.Is(err, oidc.ErrFlowExpired) {
			t.Errorf("DecodeFlow(%q) = %v, want ErrFlowExpired", bad, err)
		}
	}
}

func TestProviderDenies(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	idp.QueueRefusal("access_denied", "The user cancelled the sign-in\r\nX-Injected: 1")
	_, err := signIn(t, rp)
	wantErr(t, err, oidc.ErrDenied, "access_denied", "The user cancelled the sign-in")
	var pe *oidc.ProviderError
	if !errors.As(err, &pe) || pe.Endpoint != "authorization" || pe.Code != "access_denied" || strings.ContainsAny(pe.Description, "\r\n") {
		t.Fatalf("ProviderError = %+v", pe)
	}

	idp.QueueRefusal("login_required", "")
	_, err = signIn(t, rp)
	wantErr(t, err, oidc.ErrProviderRefused, "login_required")
	if errors.Is(err, oidc.ErrDenied) {
		t.Fatal("login_required is reported as access_denied")
	}
}

func TestForgedSignature(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{ForgeSignatures: true}, nil)
	idp.QueueUser(oidctest.User{Username: "alice"})
	_, err := signIn(t, rp)
	wantErr(t, err, oidc.ErrBadSignature)
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	c := oidc.Config{Issuer: "http://" + addr + "/oidc", ClientID: "c", RedirectURL: callback}
	_, err = oidc.New(t.Context(), c, client())
	wantErr(t, err, oidc.ErrUnreachable, addr)

	// The provider goes away between the start of a sign-in and its callback.
	idp, rp := setup(t, oidctest.Options{}, nil)
	idp.QueueUser(oidctest.User{Username: "alice"})
	flow, authURL, _ := rp.Start()
	back := oidctest.Authorize(t, authURL)
	idp.Stop()
	_, err = rp.FinishCallback(t.Context(), flow, back.Query())
	wantErr(t, err, oidc.ErrUnreachable, "token endpoint")
}

func TestKeysUnreachable(t *testing.T) {
	t.Parallel()
	// The provider drops the connection when asked for its keys.
	drop := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/jwks.json") {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					_ = conn.Close()
				}
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	idp, rp := setup(t, oidctest.Options{Middleware: drop}, nil)
	idp.QueueUser(oidctest.User{Username: "alice"})
	_, err := signIn(t, rp)
	wantErr(t, err, oidc.ErrUnreachable, "signing keys")
}

func TestProviderWithoutS256(t *testing.T) {
	t.Parallel()
	idp := oidctest.StartWith(t, oidctest.Options{PKCEMethods: []string{"plain"}})
	_, err := oidc.New(t.Context(), idp.Config(callback), client())
	wantErr(t, err, oidc.ErrDiscovery, "S256")
}

func TestConcurrentSignIns(t *testing.T) {
	t.Parallel()
	idp, rp := setup(t, oidctest.Options{}, nil)
	const n = 8
	want := map[string]bool{}
	for i := range n {
		name := "user" + strconv.Itoa(i)
		want[name] = true
		idp.QueueUser(oidctest.User{Username: name})
	}
	type result struct {
		id  oidc.Identity
		err error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			flow, authURL, err := rp.Start()
			if err != nil {
				results <- result{err: err}
				return
			}
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, authURL, nil)
			if err != nil {
				results <- result{err: err}
				return
			}
			resp, err := oidctest.Browser().Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			_ = resp.Body.Close()
			back, err := resp.Location()
			if err != nil {
				results <- result{err: err}
				return
			}
			id, err := rp.FinishCallback(t.Context(), flow, back.Query())
			results <- result{id, err}
		}()
	}
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatalf("sign-in: %v", r.err)
		}
		if !want[r.id.Username] {
			t.Fatalf("signed in %q twice or unqueued", r.id.Username)
		}
		delete(want, r.id.Username)
	}
}

func TestUnknownIssuer(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t)
	for _, tc := range []struct {
		issuer, mention string
	}{
		{idp.Mock.Addr() + "/nowhere", "404"},       // no discovery document there
		{idp.Issuer() + "/", "console.oidc.issuer"}, // the provider names itself without the slash
	} {
		c := idp.Config(callback)
		c.Issuer = tc.issuer
		_, err := oidc.New(t.Context(), c, client())
		wantErr(t, err, oidc.ErrDiscovery, tc.mention)
	}

	// A web server that is not an identity provider.
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html>welcome</html>"))
	}))
	t.Cleanup(web.Close)
	c := idp.Config(callback)
	c.Issuer = web.URL
	_, err := oidc.New(t.Context(), c, client())
	wantErr(t, err, oidc.ErrDiscovery, "console.oidc.issuer")
}

func TestNewHonoursContext(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := oidc.New(ctx, idp.Config(callback), client())
	wantErr(t, err, oidc.ErrUnreachable)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := oidc.Config{Issuer: "https://idp.example.org/realms/x", ClientID: "tokenfleet", ClientSecret: "s3cret", RedirectURL: "https://tf.example.org/ui/oidc/callback"}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range []struct {
		field string
		edit  func(*oidc.Config)
	}{
		{"issuer", func(c *oidc.Config) { c.Issuer = "" }},
		{"issuer", func(c *oidc.Config) { c.Issuer = "idp.example.org" }},
		{"issuer", func(c *oidc.Config) { c.Issuer = "http://idp.example.org" }},
		{"issuer", func(c *oidc.Config) { c.Issuer = "https://idp.example.org/#x" }},
		{"client_id", func(c *oidc.Config) { c.ClientID = " " }},
		{"client_secret_file", func(c *oidc.Config) { c.ClientSecret = "s3cret\n" }},
		{"redirect_url", func(c *oidc.Config) { c.RedirectURL = "/ui/oidc/callback" }},
		{"scopes", func(c *oidc.Config) { c.Scopes = []string{"profile", "email"} }},
		{"scopes", func(c *oidc.Config) { c.Scopes = []string{"openid profile"} }},
		{"username_claim", func(c *oidc.Config) { c.UsernameClaim = "user name" }},
	} {
		c := good
		tc.edit(&c)
		err := c.Validate()
		var ce *oidc.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("config %+v: error %v, want one naming %s", c, err, tc.field)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %q shows the secret", err)
		}
	}
	// Loopback may use http (tests, a provider on the same host).
	c := good
	c.Issuer, c.RedirectURL = "http://127.0.0.1:5556/dex", "http://localhost:8443/ui/oidc/callback"
	if err := c.Validate(); err != nil {
		t.Fatalf("loopback http: %v", err)
	}
}
