package coordinator_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/console"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/oidc/oidctest"
)

// TestConsoleMounted: console.enabled serves the console under /ui/ next to the API,
// counted in the request metrics by route; without it /ui is not served.
func TestConsoleMounted(t *testing.T) {
	t.Parallel()
	for _, enabled := range []bool{true, false} {
		cfg := localConfig(filepath.Join(t.TempDir(), "data"))
		cfg.Broker.URL = coordinatortest.NoBroker
		cfg.Console.Enabled = enabled
		r := start(t, cfg)
		base := r.srv.URL()
		resp, err := http.Get(base + "/ui/signin")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if !enabled {
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("console off: /ui/signin answers %d", resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") != console.ContentSecurityPolicy {
			t.Fatalf("console on: /ui/signin answers %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
		}
		// The API is untouched.
		if status, _ := get(t, http.DefaultClient, base+"/healthz", ""); status != http.StatusOK {
			t.Errorf("healthz: %d", status)
		}
		_, metrics := get(t, http.DefaultClient, base+"/metrics", "")
		if !strings.Contains(string(metrics), `tokenfleet_coordinator_http_requests_total{code="200",method="GET",route="/ui/signin"} 1`) {
			t.Errorf("the console's request is not counted by route:\n%s", grepLines(string(metrics), "http_requests_total"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestConsoleSingleSignOn: with console.oidc set, the coordinator reads the provider's
// discovery document at start and the sign-in page offers single sign-on.
func TestConsoleSingleSignOn(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "client.secret")
	if err := os.WriteFile(secret, []byte(idp.Mock.ClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := localConfig(filepath.Join(dir, "data"))
	cfg.Broker.URL = coordinatortest.NoBroker
	cfg.Console.OIDC.Issuer = idp.Issuer()
	cfg.Console.OIDC.ClientID = idp.Mock.ClientID
	cfg.Console.OIDC.ClientSecretFile = secret
	cfg.Console.OIDC.RedirectURL = "http://127.0.0.1:8443/ui/oidc/callback"
	r := start(t, cfg)
	status, body := get(t, http.DefaultClient, r.srv.URL()+"/ui/signin", "")
	if status != http.StatusOK || !strings.Contains(string(body), `href="/ui/oidc/start?next=`) {
		t.Fatalf("sign-in page: %d\n%s", status, body)
	}

	// A provider that does not answer stops the start, naming the setting.
	idp.Stop()
	cfg.DataDir = filepath.Join(dir, "data2")
	if _, err := coordinator.New(cfg, testLogger(t)); err == nil || !strings.Contains(err.Error(), "console.oidc.issuer") {
		t.Fatalf("start with an unreachable provider: %v", err)
	}
}

// TestConsoleCookiesSecureBehindProxy: a coordinator on plain HTTP behind a TLS-terminating
// proxy still marks its cookies Secure when browsers come back from the identity provider
// to an https redirect_url: they use HTTPS, and a cookie sent over plain HTTP could be read
// on the way.
func TestConsoleCookiesSecureBehindProxy(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t)
	dir := t.TempDir()
	cfg := localConfig(filepath.Join(dir, "data"))
	cfg.Broker.URL = coordinatortest.NoBroker
	cfg.Console.OIDC.Issuer = idp.Issuer()
	cfg.Console.OIDC.ClientID = idp.Mock.ClientID
	cfg.Console.OIDC.RedirectURL = "https://coordinator.example.org/ui/oidc/callback"
	r := start(t, cfg)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(r.srv.URL() + "/ui/oidc/start")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	cookies := resp.Cookies()
	if len(cookies) == 0 {
		t.Fatalf("no flow cookie: %d", resp.StatusCode)
	}
	for _, ck := range cookies {
		if !ck.Secure {
			t.Errorf("cookie %s is not Secure behind an https redirect_url", ck.Name)
		}
	}
	resp, err = c.Get(r.srv.URL() + "/ui/jobs")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/signin") {
		t.Fatalf("signed out: %d to %q", resp.StatusCode, loc)
	}
}
