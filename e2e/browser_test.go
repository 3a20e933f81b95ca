//go:build cgo

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// The browser tests drive Debian's chromium through the DevTools protocol (chromedp), one
// browser with a fresh profile per person in a test, and check every page they visit with
// axe-core, injected from the copy npm ci installed (pinned in browser/package-lock.json).

// axePath is axe-core as scripts/ensure-deps.sh --browser installs it (npm ci in e2e/browser).
const axePath = "browser/node_modules/axe-core/axe.min.js"

// browserStepLimit bounds every browser step (a navigation, a wait for a text, axe on a page).
const browserStepLimit = 60 * time.Second

// installBrowserDeps is what installs Chromium and axe-core when they are missing.
const installBrowserDeps = "bash scripts/ensure-deps.sh --browser (make test runs it; as root it installs Debian's chromium and runs npm ci in e2e/browser)"

// chromiumPath is the Chromium the tests run: TOKENFLEET_CHROMIUM, else chromium on PATH.
func chromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("TOKENFLEET_CHROMIUM"); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (%v): run %s", err, installBrowserDeps)
	}
	return p
}

var axeOnce = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile(axePath)
	if err != nil {
		return "", err
	}
	return string(b), nil
})

// axeSource is axe-core's script.
func axeSource(t testing.TB) string {
	t.Helper()
	src, err := axeOnce()
	if err != nil {
		t.Fatalf("axe-core is not installed (%v): run %s", err, installBrowserDeps)
	}
	return src
}

// screenshotRoot is where screenshots go: TOKENFLEET_SCREENSHOTS, else e2e/testdata/screenshots
// (git-ignored), a folder per test, emptied when the test starts.
func screenshotRoot() string {
	if d := os.Getenv("TOKENFLEET_SCREENSHOTS"); d != "" {
		return d
	}
	abs, err := filepath.Abs(filepath.Join("testdata", "screenshots"))
	if err != nil {
		return filepath.Join("testdata", "screenshots")
	}
	return abs
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// screenshotDir is the test's screenshot folder, made empty.
func screenshotDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(screenshotRoot(), unsafeFileChars.ReplaceAllString(t.Name(), "_"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots of %s in %s", t.Name(), dir)
	return dir
}

// browser is one person's Chromium: its own process and fresh profile (chromedp gives every
// browser a new user-data-dir and removes it at the end), one tab.
type browser struct {
	t     testing.TB
	who   string          // whose browser, for messages and screenshot names
	base  string          // the site's base URL, no trailing slash
	ctx   context.Context // the tab
	shots *shotSeq        // the test's screenshots

	mu       sync.Mutex // guards the fields below
	problems []string   // console errors and exceptions, CSP refusals among them
	requests []string   // every request the tab sent, "METHOD path"
}

// shotSeq is a test's screenshot folder; it numbers the screenshots of all the test's
// browsers in the order they were taken.
type shotSeq struct {
	dir string

	mu sync.Mutex // guards n
	n  int
}

func (s *shotSeq) next() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return s.n
}

// newBrowser starts Chromium for who on the site at base. Every browser of a test writes its
// screenshots to the test's folder, numbered in the order they were taken. extra are more
// Chromium options.
func newBrowser(t testing.TB, who, base string, shots *shotSeq, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	exe := chromiumPath(t)
	axeSource(t) // fails now, naming the install command, rather than at the first page
	out := newLogBuffer()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // as root, as in CI, Chromium refuses to start with its sandbox
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-proxy-server", true), // loopback only: no proxy from the environment
		chromedp.Flag("lang", "en-GB"),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(out),
	)
	opts = append(opts, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &browser{t: t, who: who, base: strings.TrimSuffix(base, "/"), ctx: ctx, shots: shots}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		if t.Failed() {
			t.Logf("%s's Chromium said:\n%s", who, tail(withoutDBus(out.String()), 3000))
		}
	})
	messages := chromedp.Console(ctx) // subscribes now; starts the browser
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium (%s) for %s: %v\n%s\nif it is not installed: run %s", exe, who, err,
			tail(withoutDBus(out.String()), 3000), installBrowserDeps)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			b.mu.Lock()
			b.requests = append(b.requests, e.Request.Method+" "+strings.TrimPrefix(e.Request.URL, b.base))
			b.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// Failed loads are the tests' to judge (a refusal is a 403 on purpose).
			if (m.Type == chromedp.ConsoleError && m.Source != "network") || m.IsException() {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// newShots is a test's screenshot sequence, in a folder of its own.
func newShots(t testing.TB) *shotSeq {
	t.Helper()
	return &shotSeq{dir: screenshotDir(t)}
}

// do runs browser steps, failing the test with what went wrong and where the page was.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepLimit)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fail(what, err)
	}
}

// fail ends the test with the step that failed, the page's address and its text.
func (b *browser) fail(what string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	b.t.Fatalf("%s's browser: %s: %v\npage %s says:\n%s", b.who, what, err, loc, tail(body, 2000))
}

// run runs one browser step that returns a value.
func run[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepLimit)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fail(what, err)
	}
	return v
}

// open navigates to a path of the site and waits for its body.
func (b *browser) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitReady(chromedp.CSS("body")))
}

// path is the path of the page the tab shows.
func (b *browser) path() string {
	b.t.Helper()
	loc := run(b, "read the location", chromedp.Location())
	return strings.TrimPrefix(loc, b.base)
}

// sel is the CSS selector of the element with that data-test attribute.
func byTest(name string) string { return fmt.Sprintf(`[data-test=%q]`, name) }

// byName is the CSS selector of the form field of that name a person fills (hidden fields
// of the same name, such as a search form's, left out).
func byName(name string) string { return fmt.Sprintf(`[name=%q]:not([type=hidden])`, name) }

// click clicks the visible element with that data-test attribute.
func (b *browser) click(dataTest string) { b.t.Helper(); b.clickSel(byTest(dataTest)) }

// clickSel clicks the visible element sel.
func (b *browser) clickSel(sel string) {
	b.t.Helper()
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// clickAndLoad clicks the element with that data-test attribute and waits for the page the
// click loads; it returns the page's HTTP status.
func (b *browser) clickAndLoad(dataTest string) int64 {
	b.t.Helper()
	return b.clickLoadSel(byTest(dataTest))
}

// clickLoadSel clicks the visible element sel and waits for the page the click loads; it
// returns the page's HTTP status.
func (b *browser) clickLoadSel(sel string) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepLimit)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		b.fail("click "+sel+" and wait for the page", err)
	}
	return resp.Status
}

// keys types keys into whatever has the keyboard focus ("\t" is Tab, "\r" Enter), as a
// person at the keyboard does.
func (b *browser) keys(keys string) {
	b.t.Helper()
	b.do(fmt.Sprintf("type %q", keys), chromedp.KeyEvent(keys))
}

// keysAndLoad types keys and waits for the page they load; it returns its HTTP status.
func (b *browser) keysAndLoad(keys string) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepLimit)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.KeyEvent(keys))
	if err != nil {
		b.fail(fmt.Sprintf("type %q and wait for the page", keys), err)
	}
	return resp.Status
}

// fill types a value into the form field of that name, replacing what it held. A select
// is set to the option of that value.
func (b *browser) fill(name, value string) {
	b.t.Helper()
	sel := chromedp.CSS(byName(name))
	tag := run(b, "find field "+name, chromedp.JavascriptAttribute[string](sel, "tagName", chromedp.NodeVisible))
	if strings.EqualFold(tag, "select") {
		b.do("choose "+value+" in "+name, chromedp.SetValue(sel, value, chromedp.NodeVisible))
		return
	}
	b.typeInto(byName(name), value)
}

// typeInto focuses the visible field sel, empties it and types value at the keyboard, as a
// person does. Not chromedp.SendKeys: it reads the field's attributes while chromedp's own
// DOM event loop updates them, a data race inside chromedp that the race detector reports.
func (b *browser) typeInto(sel, value string) {
	b.t.Helper()
	b.waitVisible(sel)
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.focus(); e.value = ""; return document.activeElement === e; })()`, sel)
	if !eval[bool](b, "focus and empty "+sel, js) {
		b.t.Fatalf("%s: %s cannot take the keyboard focus", b.who, sel)
	}
	b.do("type into "+sel, chromedp.KeyEvent(value))
}

// waitText waits until the element sel holds text.
func (b *browser) waitText(sel, text string) {
	b.t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.includes(%q); })()`, sel, text)
	if _, err := b.poll(js); err != nil {
		b.fail(fmt.Sprintf("wait for %q in %s", text, sel), err)
	}
}

// waitJS waits until the expression is true in the page.
func (b *browser) waitJS(what, js string) {
	b.t.Helper()
	if _, err := b.poll(js); err != nil {
		b.fail("wait for "+what, err)
	}
}

// waitVisible waits until an element matches sel and is visible.
func (b *browser) waitVisible(sel string) {
	b.t.Helper()
	b.do("wait for "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
}

// poll waits in the page until the expression is true, checking it every 50 ms (in the page:
// a condition need not change the DOM to be seen).
func (b *browser) poll(js string) (bool, error) {
	ctx, cancel := context.WithTimeout(b.ctx, browserStepLimit)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(browserStepLimit)))
}

// text is the text of the first element that matches sel (waiting for it).
func (b *browser) text(sel string) string {
	b.t.Helper()
	return strings.TrimSpace(run(b, "read "+sel, chromedp.TextContent(chromedp.CSS(sel))))
}

// pageText is the text the page shows.
func (b *browser) pageText() string {
	b.t.Helper()
	return run(b, "read the page", chromedp.Evaluate[string](`document.body.innerText`))
}

// eval runs a script in the page and returns its result.
func eval[T any](b *browser, what, js string) T {
	b.t.Helper()
	return run(b, what, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// screenshot writes the whole page as NN-who-name.png in the test's screenshot folder.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png := run(b, "screenshot "+name, chromedp.FullScreenshot(100))
	file := filepath.Join(b.shots.dir, fmt.Sprintf("%02d-%s-%s.png", b.shots.next(), b.who, unsafeFileChars.ReplaceAllString(name, "_")))
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// axeViolation is one rule axe-core found broken, with the elements that break it.
type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target  []any  `json:"target"`
		Summary string `json:"failureSummary"`
	} `json:"nodes"`
}

func (v axeViolation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s): %s", v.ID, v.Impact, v.Help)
	for _, n := range v.Nodes {
		fmt.Fprintf(&b, "\n    at %v: %s", n.Target, strings.ReplaceAll(n.Summary, "\n", " "))
	}
	return b.String()
}

// axeRun runs axe-core on the page as it is and returns its violations. The script is
// given through the DevTools protocol, which the page's Content-Security-Policy does not
// govern; what axe reads is the page as the person sees it.
func (b *browser) axeRun() []axeViolation {
	b.t.Helper()
	src := axeSource(b.t)
	if !eval[bool](b, "load axe-core", `typeof window.axe === "object"`) {
		b.do("inject axe-core", chromedp.Evaluate[chromedp.Void](src))
	}
	raw := eval[[]byte](b, "run axe-core", `axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations)`)
	var vs []axeViolation
	if err := json.Unmarshal(raw, &vs); err != nil {
		b.t.Fatalf("axe-core's result: %v\n%s", err, raw)
	}
	return vs
}

// axe fails the test for every serious or critical accessibility violation on the page,
// naming the rule and the elements; lesser ones are logged.
func (b *browser) axe(page string) {
	b.t.Helper()
	var bad []string
	for _, v := range b.axeRun() {
		if v.Impact == "serious" || v.Impact == "critical" {
			bad = append(bad, v.String())
			continue
		}
		b.t.Logf("axe on %s (%s): %s", page, b.who, v)
	}
	if len(bad) > 0 {
		b.t.Errorf("axe-core on %s (%s's browser, %s): %d serious or critical violations:\n  %s",
			page, b.who, b.path(), len(bad), strings.Join(bad, "\n  "))
	}
}

// checkConsole fails the test for every error the pages wrote to the console so far: an
// exception, a failed script, a resource the Content-Security-Policy refused.
func (b *browser) checkConsole() {
	b.t.Helper()
	if p := b.consoleProblems(); len(p) > 0 {
		b.t.Errorf("%s's browser console shows errors:\n  %s", b.who, strings.Join(p, "\n  "))
	}
}

// consoleProblems returns and forgets what the pages wrote to the console as errors.
func (b *browser) consoleProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

// sentRequests returns and forgets the requests the tab sent so far, "METHOD path".
func (b *browser) sentRequests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.requests
	b.requests = nil
	return r
}

// cookies are the cookies the browser holds for the site.
func (b *browser) cookies() []*network.Cookie {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepLimit)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base + "/"}})
	if err != nil {
		b.fail("read cookies", err)
	}
	return res.Cookies
}

// isPNG says whether a file is a PNG image.
func isPNG(t testing.TB, file string) bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n"))
}

// watchText starts recording, in the page, every text the element sel shows from now on
// (the element may be replaced). seenTexts reads the record; it is gone if the page was
// reloaded or left, which is how a test tells a live update from a reload.
func (b *browser) watchText(sel string) {
	b.t.Helper()
	js := fmt.Sprintf(`(() => {
		const read = () => { const e = document.querySelector(%q); return e ? e.textContent.trim() : null; };
		window.__tfSeen = [read()];
		new MutationObserver(() => {
			const v = read();
			if (v !== window.__tfSeen[window.__tfSeen.length - 1]) window.__tfSeen.push(v);
		}).observe(document.documentElement, {subtree: true, childList: true, characterData: true, attributes: true});
		return true;
	})()`, sel)
	eval[bool](b, "watch "+sel, js)
}

// seenTexts is what watchText recorded, in order; ok is false when the page was reloaded
// or left since.
func (b *browser) seenTexts() (seen []string, ok bool) {
	b.t.Helper()
	seen = eval[[]string](b, "read what was seen", `window.__tfSeen || null`)
	return seen, seen != nil
}

// withoutDBus drops Chromium's complaints that the machine has no D-Bus, which it has not
// and need not have.
func withoutDBus(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, "dbus") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
