package coordinator_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/console"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
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
