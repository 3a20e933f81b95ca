package coordinator

import (
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/oidc"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// ConsoleConfig configures the web console under /ui and how people sign in to it.
type ConsoleConfig struct {
	// Enabled serves the console (default true). Nobody can sign in before a password is
	// set (tokenfleetctl user password) or an identity provider is configured.
	Enabled bool `yaml:"enabled"`
	// SessionIdle ends a session not used for this long (default 30m).
	SessionIdle Duration `yaml:"session_idle"`
	// SessionMax ends a session this long after sign-in, used or not (default 12h).
	SessionMax Duration      `yaml:"session_max"`
	Lockout    LockoutConfig `yaml:"lockout"`
	// OIDC signs people in through an OpenID Connect identity provider; off unless the
	// issuer is set.
	OIDC OIDCConfig `yaml:"oidc"`
}

// LockoutConfig locks password sign-in after wrong passwords: after Attempts in a row,
// for First, then twice as long at each further lock, at most Max; a success resets it.
type LockoutConfig struct {
	Attempts int      `yaml:"attempts"` // default 5
	First    Duration `yaml:"first"`    // default 1m
	Max      Duration `yaml:"max"`      // default 1h
}

// OIDCConfig is the console's OpenID Connect relying party.
type OIDCConfig struct {
	// Issuer is the provider's issuer URL (its discovery document is under it).
	Issuer   string `yaml:"issuer"`
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the client secret on its first line; empty for a public
	// client (PKCE only).
	ClientSecretFile string `yaml:"client_secret_file"`
	// RedirectURL is the console's callback as the browser reaches it:
	// https://COORDINATOR/ui/oidc/callback, registered with the provider.
	RedirectURL string   `yaml:"redirect_url"`
	Scopes      []string `yaml:"scopes"` // default openid, profile, email
	// UsernameClaim is the ID token claim matched against tokenfleet usernames at an
	// identity's first sign-in (default preferred_username).
	UsernameClaim string `yaml:"username_claim"`
}

// OIDCCallbackPath is the console's path the identity provider sends the browser back to.
const OIDCCallbackPath = "/ui/oidc/callback"

// Console limits.
const (
	maxSessionMax      = 30 * 24 * time.Hour
	maxLockoutAttempts = 100
	maxLockout         = 7 * 24 * time.Hour
)

func defaultConsole() ConsoleConfig {
	return ConsoleConfig{Enabled: true, SessionIdle: Duration(service.DefaultSessionIdle), SessionMax: Duration(service.DefaultSessionMax),
		Lockout: LockoutConfig{Attempts: service.DefaultLockoutAttempts, First: Duration(service.DefaultLockoutFirst), Max: Duration(service.DefaultLockoutMax)},
		OIDC:    OIDCConfig{Scopes: slices.Clone(oidc.DefaultScopes), UsernameClaim: oidc.DefaultUsernameClaim}}
}

// OIDCEnabled reports whether the console signs people in through an identity provider.
func (c Config) OIDCEnabled() bool { return c.Console.OIDC.Issuer != "" }

// ConsoleOverHTTPS reports whether browsers reach the console over HTTPS: the coordinator
// serves TLS, or (behind a TLS-terminating proxy) the identity provider sends them back
// to an https redirect_url. Its cookies are then Secure.
func (c Config) ConsoleOverHTTPS() bool {
	if c.TLSEnabled() {
		return true
	}
	u, err := url.Parse(c.Console.OIDC.RedirectURL)
	return c.OIDCEnabled() && err == nil && u.Scheme == "https"
}

// OIDCClientSecret reads the identity provider's client secret; "" for a public client.
func (c Config) OIDCClientSecret() (string, error) {
	name := c.Console.OIDC.ClientSecretFile
	if name == "" {
		return "", nil
	}
	s, err := readSecretFile(name)
	if err != nil {
		return "", c.fieldError("console.oidc.client_secret_file", err.Error())
	}
	return s, nil
}

// signInOptions is the service's side of the console section.
func (c Config) signInOptions() service.SignInOptions {
	k := c.Console
	return service.SignInOptions{SessionIdle: time.Duration(k.SessionIdle), SessionMax: time.Duration(k.SessionMax),
		LockoutAttempts: k.Lockout.Attempts, LockoutFirst: time.Duration(k.Lockout.First), LockoutMax: time.Duration(k.Lockout.Max),
		UsernameClaim: k.OIDC.UsernameClaim}
}

// validateConsole checks the console section.
func (c Config) validateConsole(bad func(field, format string, args ...any)) {
	k := c.Console
	idle, maxLife := time.Duration(k.SessionIdle), time.Duration(k.SessionMax)
	switch {
	case idle < time.Second:
		bad("console.session_idle", "%s is shorter than a second (e.g. 30m)", idle)
	case maxLife < time.Second || maxLife > maxSessionMax:
		bad("console.session_max", "%s is outside 1s..%s (e.g. 12h)", maxLife, maxSessionMax)
	case idle > maxLife:
		bad("console.session_idle", "%s is longer than console.session_max %s: a session ends at the shorter of the two", idle, maxLife)
	}
	l := k.Lockout
	if l.Attempts < 1 || l.Attempts > maxLockoutAttempts {
		bad("console.lockout.attempts", "%d is outside 1..%d (wrong passwords in a row before sign-in is locked; e.g. 5)", l.Attempts, maxLockoutAttempts)
	}
	switch first, last := time.Duration(l.First), time.Duration(l.Max); {
	case first < time.Second:
		bad("console.lockout.first", "%s is shorter than a second (e.g. 1m)", first)
	case last < first:
		bad("console.lockout.max", "%s is shorter than console.lockout.first %s; locks double from the first up to the max", last, first)
	case last > maxLockout:
		bad("console.lockout.max", "%s is longer than %s", last, maxLockout)
	}
	c.validateOIDC(bad)
}

func (c Config) validateOIDC(bad func(field, format string, args ...any)) {
	o := c.Console.OIDC
	if o.Issuer == "" {
		if o.ClientID != "" || o.ClientSecretFile != "" || o.RedirectURL != "" {
			bad("console.oidc.issuer", "is required when the other console.oidc settings are set: the provider's issuer URL (e.g. https://idp.example.org/realms/acme)")
		}
		return
	}
	var secret string
	if o.ClientSecretFile != "" {
		var err error
		if secret, err = readSecretFile(o.ClientSecretFile); err != nil {
			bad("console.oidc.client_secret_file", "%v", err)
		}
	}
	// The relying party owns the rules; the file adds its field names.
	for _, p := range o.relyingParty(secret).Problems() {
		bad("console.oidc."+p.Field, "%s", p.Problem)
	}
	if u, err := url.Parse(o.RedirectURL); err == nil && u.Host != "" && !strings.HasSuffix(u.Path, OIDCCallbackPath) {
		bad("console.oidc.redirect_url", "%q does not end in %s, the console's callback", o.RedirectURL, OIDCCallbackPath)
	}
	if len(o.Scopes) == 0 {
		bad("console.oidc.scopes", "is empty: list at least openid")
	}
	if o.UsernameClaim == "" {
		bad("console.oidc.username_claim", "is empty: name the ID token claim that holds the username (e.g. preferred_username)")
	}
}

// relyingParty is the oidc package's configuration from this section.
func (o OIDCConfig) relyingParty(secret string) oidc.Config {
	return oidc.Config{Issuer: o.Issuer, ClientID: o.ClientID, ClientSecret: secret, RedirectURL: o.RedirectURL,
		Scopes: o.Scopes, UsernameClaim: o.UsernameClaim}
}
