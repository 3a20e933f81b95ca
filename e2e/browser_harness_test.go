//go:build cgo

package e2e_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// harnessCSP is as strict as the console's: nothing inline, nothing from elsewhere.
const harnessCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

const harnessPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Request a token</title>
<script src="/app.js" defer></script></head>
<body><main><h1>Request a token</h1>
<p>State: <span id="job-state">pending_approval</span></p>
<form method="post" action="/submit">
<input type="hidden" name="csrf" value="t0k3n">
<label for="holder">Holder</label> <input id="holder" name="holder">
<button type="submit" data-test="submit-request">Request</button>
</form></main></body></html>`

// harnessBadPage breaks two rules axe-core holds as critical: an image without a text
// alternative and a field without a label.
const harnessBadPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bad</title></head>
<body><main><h1>Bad</h1><img src="/pixel.png"><input name="nolabel"></main></body></html>`

const harnessInlinePage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Inline</title></head>
<body><main><h1>Inline</h1><script>document.title = "ran"</script></main></body></html>`

// harnessJS follows the job's state from server-sent events, as the console's job page does.
const harnessJS = `new EventSource("/events").onmessage = (e) => {
	document.getElementById("job-state").textContent = e.data;
};`

// TestBrowserHarness shows the browser harness works and its checks are not vacuous, on a
// page served here: Chromium starts as the tests start it and fills and posts a form; a
// Secure, HttpOnly cookie set over plain HTTP on 127.0.0.1 comes back (Chromium holds
// loopback as a secure context), so the console's tests run it without TLS; a form whose
// CSRF field was removed is refused; text changed by server-sent events is seen changing
// without a reload; axe-core finds nothing serious on a clean page and reports an image
// without alt text and an unlabelled field; an inline script the CSP refuses shows as a
// console error; screenshots are PNG files.
func TestBrowserHarness(t *testing.T) {
	t.Parallel()
	states := make(chan string)
	mux := http.NewServeMux()
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", harnessCSP)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = fmt.Fprint(w, body)
		}
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "sess", Value: "s3cr3t", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
		page(harnessPage)(w, r)
	})
	mux.HandleFunc("GET /bad", page(harnessBadPage))
	mux.HandleFunc("GET /inline", page(harnessInlinePage))
	mux.HandleFunc("GET /app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = fmt.Fprint(w, harnessJS)
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case s := <-states:
				_, _ = fmt.Fprintf(w, "data: %s\n\n", s)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	})
	mux.HandleFunc("POST /submit", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", harnessCSP)
		c, err := r.Cookie("sess")
		switch {
		case err != nil || c.Value != "s3cr3t":
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = fmt.Fprint(w, `<!doctype html><html lang="en"><title>No</title><main><p role="alert">No session cookie</p></main></html>`)
		case r.PostFormValue("csrf") != "t0k3n":
			w.WriteHeader(http.StatusForbidden)
			_, _ = fmt.Fprint(w, `<!doctype html><html lang="en"><title>No</title><main><p role="alert">The form has no valid CSRF token</p></main></html>`)
		default:
			_, _ = fmt.Fprintf(w, `<!doctype html><html lang="en"><title>Done</title><main><p role="alert">Requested for %s</p></main></html>`,
				r.PostFormValue("holder"))
		}
	})
	mux.HandleFunc("GET /pixel.png", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	shots := newShots(t)
	b := newBrowser(t, "tester", srv.URL, shots)
	b.open("/")
	b.axe("the form")
	b.screenshot("form")
	if cs := b.cookies(); len(cs) != 1 || cs[0].Name != "sess" || !cs[0].Secure || !cs[0].HTTPOnly {
		t.Fatalf("cookies after the first page: %+v, want sess, Secure and HttpOnly", cs)
	}

	// Live: the state changes as events come, the page is not reloaded.
	b.watchText("#job-state")
	for _, s := range []string{"running", "succeeded"} {
		states <- s
		b.waitText("#job-state", s)
	}
	if seen, ok := b.seenTexts(); !ok || !slices.Equal(seen, []string{"pending_approval", "running", "succeeded"}) {
		t.Errorf("states seen on the page: %q (kept: %v), want pending_approval, running, succeeded without a reload", seen, ok)
	}

	// The form posts with its cookie and CSRF field.
	b.fill("holder", "alice")
	b.clickAndLoad("submit-request")
	b.waitText(`[role="alert"]`, "Requested for alice")

	// Without its CSRF field, refused.
	b.open("/")
	eval[bool](b, "remove the CSRF field", `(() => { document.querySelector('[name="csrf"]').remove(); return true; })()`)
	b.clickAndLoad("submit-request")
	b.waitText(`[role="alert"]`, "no valid CSRF token")

	// axe-core reports what is wrong.
	b.open("/bad")
	var ids []string
	for _, v := range b.axeRun() {
		ids = append(ids, v.ID+"/"+v.Impact)
	}
	for _, want := range []string{"image-alt/critical", "label/critical"} {
		if !slices.Contains(ids, want) {
			t.Errorf("axe-core on a page with an image without alt and an unlabelled field found %v, not %s", ids, want)
		}
	}

	// Errors in the console are caught; the CSP refuses inline script.
	b.checkConsole()
	b.open("/inline")
	b.waitJS("the page to load", `document.readyState === "complete"`)
	if p := b.consoleProblems(); len(p) == 0 || !strings.Contains(strings.Join(p, " "), "Content Security Policy") {
		t.Errorf("an inline script under the CSP: console errors %q, want the CSP's refusal", p)
	}
	if title := eval[string](b, "title", "document.title"); title != "Inline" {
		t.Errorf("the inline script ran under the CSP (title %q)", title)
	}

	files, err := filepath.Glob(filepath.Join(shots.dir, "*.png"))
	if err != nil || len(files) != 1 || !isPNG(t, files[0]) {
		t.Fatalf("screenshots: %v (%v), want one PNG", files, err)
	}
	if _, err := os.Stat(files[0]); err != nil {
		t.Fatal(err)
	}
}
