package console_test

import (
	"bufio"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/html"

	"github.com/tokenfleet/tokenfleet/coordinator/console"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/oidc"
	"github.com/tokenfleet/tokenfleet/coordinator/oidc/oidctest"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// clock is the service's and the console's time, moved by the tests.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// pinIssuer opens kept PINs with a result key, as the dispatcher does; it signs nothing
// (the tests move jobs past the CA themselves).
type pinIssuer struct{ key *ecdh.PrivateKey }

func (pinIssuer) CAGatePassed(context.Context, *service.JobTx, store.Job) error { return nil }
func (p pinIssuer) OpenTokenPIN(tp store.TokenPIN) ([]byte, error) {
	return dispatch.OpenTokenPIN(p.key, tp)
}

const password = "correct horse battery staple"

const testProfile = `name: smartcard
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
sans:
  email: true
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 365d
token:
  initialize: true
  label: "{{.Name}}"
pin_policy: {min_length: 6, max_length: 8, so_pin_length: 16}
approval: {required: 1, roles: [approver], expires_after: 72h}
`

// env is a console over a real service on SQLite, with two organisations and their
// people, a profile and an enrolled agent.
type env struct {
	t     *testing.T
	ctx   context.Context
	svc   *service.Service
	st    store.Store
	clock *clock
	key   *ecdh.PrivateKey
	srv   *httptest.Server
	admin service.Actor
	stop  chan struct{} // closing it stops the console's streams, as a server shutdown does
}

// setup is what a test environment is made of.
type setup struct {
	idp      *oidctest.Provider // single sign-on through it (nil: none)
	dsn      string             // the database file ("": one in a temporary directory)
	people   []service.UserRequest
	signers  []string // the people given the test password
	profiles string   // the profile document applied
	agentVer string   // the version ws-0001 reports
	// service, when set, changes the service's options (another issuer, a checkpoint key).
	service func(st store.Store, key *ecdh.PrivateKey, o *service.Options)
}

// defaultSetup is newEnv's: two organisations' people, a profile and an enrolled agent.
func defaultSetup() setup {
	return setup{
		people: []service.UserRequest{
			{Username: "helen", DisplayName: "Helen Desk", Email: "helen@acme.example", Organization: "Acme", Roles: []jobs.Role{jobs.RoleHelpdesk}},
			{Username: "alice", DisplayName: "Alice Approver", Email: "alice@acme.example", Organization: "Acme", Roles: []jobs.Role{jobs.RoleApprover}},
			{Username: "gary", DisplayName: "Gary Globex", Email: "gary@globex.example", Organization: "Globex", Roles: []jobs.Role{jobs.RoleApprover}},
			{Username: "sam", DisplayName: "Sam Both", Email: "sam@acme.example", Organization: "Acme", Roles: []jobs.Role{jobs.RoleHelpdesk, jobs.RoleApprover}},
			{Username: "hugo", DisplayName: "Hugo Holder", Email: "hugo@acme.example", Organization: "Acme"},
		},
		signers:  []string{"admin", "helen", "alice", "gary", "sam"},
		profiles: testProfile,
		agentVer: "test",
	}
}

func newEnv(t *testing.T) *env { return newEnvFrom(t, defaultSetup()) }

// newEnvWith is newEnv with single sign-on through idp (nil: none).
func newEnvWith(t *testing.T, idp *oidctest.Provider) *env {
	s := defaultSetup()
	s.idp = idp
	return newEnvFrom(t, s)
}

// newEnvFrom is a console over a real service on SQLite, made of s.
func newEnvFrom(t *testing.T, s setup) *env {
	t.Helper()
	ctx := context.Background()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	dsn := s.dsn
	if dsn == "" {
		dsn = filepath.Join(t.TempDir(), "c.db")
	}
	st, err := store.Open(ctx, store.Config{Driver: store.DriverSQLite, DSN: dsn}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Now().UTC().Truncate(time.Second)}
	so := service.Options{Store: st, Logger: log, Now: clk.Now, Issuer: pinIssuer{key},
		// Cheap hashes: the tests sign in often.
		SignIn: service.SignInOptions{Password: service.PasswordParams{Memory: 8 * 1024, Time: 1, Threads: 1}}}
	if s.service != nil {
		s.service(st, key, &so)
	}
	svc, err := service.New(so)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, svc: svc, st: st, clock: clk, key: key, stop: make(chan struct{})}
	if _, err := svc.Bootstrap(ctx, func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	e.admin = e.actor(service.BootstrapUsername)
	for _, org := range []string{"Acme", "Globex"} {
		if _, err := svc.CreateOrganization(ctx, e.admin, org); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range s.people {
		if _, err := svc.CreateUser(ctx, e.admin, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range s.signers {
		if err := svc.SetPassword(ctx, e.admin, name, password); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.ApplyProfiles(ctx, e.admin, []byte(s.profiles)); err != nil {
		t.Fatal(err)
	}
	e.tx(func(tx store.Tx) error {
		_, err := tx.CreateAgent(ctx, store.Agent{ID: "ws-0001", Hostname: "reception-pc", OS: "linux", Version: s.agentVer})
		return err
	})
	// The server first: the relying party needs the callback's URL.
	var h http.Handler
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(e.srv.Close)
	o := console.Options{Service: svc, Logger: log, Now: clk.Now, Stop: e.stop}
	if s.idp != nil {
		if o.OIDC, err = oidc.New(ctx, s.idp.Config(e.srv.URL+"/ui/oidc/callback"), nil); err != nil {
			t.Fatal(err)
		}
		o.OIDCName = "Acme SSO"
	}
	if h, err = console.New(o); err != nil {
		t.Fatal(err)
	}
	return e
}

// tx runs fn in a store transaction, setting the scene.
func (e *env) tx(fn func(tx store.Tx) error) {
	e.t.Helper()
	if err := e.st.InTx(e.ctx, fn); err != nil {
		e.t.Fatal(err)
	}
}

// actor is a stored user as an actor, for setting the scene through the service.
func (e *env) actor(username string) service.Actor {
	e.t.Helper()
	u, err := e.st.GetUserByUsername(e.ctx, username)
	if err != nil {
		e.t.Fatal(err)
	}
	return service.ActorFor(u)
}

// createJob queues an issue job for hugo on ws-0001 with token serial.
func (e *env) createJob(by, serial string) service.Job {
	e.t.Helper()
	j, err := e.svc.CreateJob(e.ctx, e.actor(by), service.JobRequest{Kind: jobs.KindIssue, Holder: "hugo", Agent: "ws-0001",
		Profile: "smartcard", TokenSerial: serial})
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

// browser is one person's browser: a cookie jar, no automatic redirects (the tests look
// at each one), and the last page's anti-forgery token.
type browser struct {
	e    *env
	c    *http.Client
	csrf string
}

func (e *env) browser() *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &browser{e: e, c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// page is a response read whole.
type page struct {
	status int
	header http.Header
	body   string
	doc    *html.Node
}

func (p page) location() string { return p.header.Get("Location") }

func (b *browser) do(req *http.Request) page {
	b.e.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	p := page{status: resp.StatusCode, header: resp.Header, body: string(body)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		p.doc = checkHTML(b.e.t, req.URL.Path, p.body)
		if tok := inputValue(p.doc, console.CSRFField); tok != "" {
			b.csrf = tok
		}
	}
	return p
}

func (b *browser) get(path string) page {
	b.e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.e.srv.URL+path, nil)
	if err != nil {
		b.e.t.Fatal(err)
	}
	return b.do(req)
}

// post sends a form as a same-origin browser does (Sec-Fetch-Site: same-origin).
func (b *browser) post(path string, form url.Values) page {
	b.e.t.Helper()
	return b.postWith(path, form, "same-origin")
}

func (b *browser) postWith(path string, form url.Values, fetchSite string) page {
	b.e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if fetchSite != "" {
		req.Header.Set("Sec-Fetch-Site", fetchSite)
	}
	return b.do(req)
}

// form is values with the anti-forgery token of the last page.
func (b *browser) form(kv ...string) url.Values {
	v := url.Values{console.CSRFField: {b.csrf}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

// signIn signs username in and lands on the home page.
func (b *browser) signIn(username string) page {
	b.e.t.Helper()
	p := b.get("/ui/signin")
	if p.status != http.StatusOK {
		b.e.t.Fatalf("sign-in page: %d", p.status)
	}
	p = b.post("/ui/signin", url.Values{"username": {username}, "password": {password}, "next": {"/ui/"}})
	if p.status != http.StatusSeeOther || p.location() != "/ui/" {
		b.e.t.Fatalf("sign in %s: %d to %q: %s", username, p.status, p.location(), alerts(p.doc))
	}
	home := b.get("/ui/")
	if home.status != http.StatusOK || !strings.Contains(home.body, "Signed in as <strong>"+username+"</strong>") {
		b.e.t.Fatalf("home after signing in %s: %d\n%s", username, home.status, home.body)
	}
	return home
}

// checkHTML parses a page and holds it to the console's rules: well-formed, no inline
// script or style (the CSP would block them), every form field labelled.
func checkHTML(t *testing.T, path, body string) *html.Node {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s: HTML does not parse: %v", path, err)
	}
	// html.Parse forgives; the tokenizer finds stray end tags the parser would mend.
	z := html.NewTokenizer(strings.NewReader(body))
	var open []string
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			if !errors.Is(z.Err(), io.EOF) {
				t.Fatalf("%s: %v", path, z.Err())
			}
			break
		}
		name, _ := z.TagName()
		tag := string(name)
		switch tt {
		case html.StartTagToken:
			if !voidElement[tag] {
				open = append(open, tag)
			}
		case html.EndTagToken:
			if len(open) == 0 || open[len(open)-1] != tag {
				t.Fatalf("%s: </%s> closes %v", path, tag, open)
			}
			open = open[:len(open)-1]
		}
	}
	if len(open) != 0 {
		t.Fatalf("%s: unclosed elements %v", path, open)
	}
	labels := map[string]bool{}
	walk(doc, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "label" {
			labels[attr(n, "for")] = true
		}
	})
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		if n.Data == "script" && (attr(n, "src") == "" || n.FirstChild != nil) {
			t.Errorf("%s: inline script", path)
		}
		if n.Data == "style" {
			t.Errorf("%s: inline <style>", path)
		}
		for _, a := range n.Attr {
			if a.Key == "style" || strings.HasPrefix(a.Key, "on") {
				t.Errorf("%s: <%s %s=...> inline", path, n.Data, a.Key)
			}
		}
		if (n.Data == "input" || n.Data == "select" || n.Data == "textarea") && attr(n, "type") != "hidden" {
			inLabel := false
			for p := n.Parent; p != nil; p = p.Parent {
				if p.Type == html.ElementNode && p.Data == "label" {
					inLabel = true
				}
			}
			if !inLabel && !labels[attr(n, "id")] {
				t.Errorf("%s: <%s name=%q> has no label", path, n.Data, attr(n, "name"))
			}
		}
	})
	return doc
}

var voidElement = map[string]bool{"area": true, "base": true, "br": true, "col": true, "embed": true, "hr": true, "img": true,
	"input": true, "link": true, "meta": true, "source": true, "track": true, "wbr": true}

func walk(n *html.Node, f func(*html.Node)) {
	f(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, f)
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func text(n *html.Node) string {
	var b strings.Builder
	walk(n, func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
	})
	return strings.Join(strings.Fields(b.String()), " ")
}

// inputValue is the value of the first input named name.
func inputValue(doc *html.Node, name string) string {
	v := ""
	walk(doc, func(n *html.Node) {
		if v == "" && n.Type == html.ElementNode && n.Data == "input" && attr(n, "name") == name {
			v = attr(n, "value")
		}
	})
	return v
}

// byID finds the element with this id.
func byID(doc *html.Node, id string) *html.Node {
	var out *html.Node
	if doc == nil {
		return nil
	}
	walk(doc, func(n *html.Node) {
		if out == nil && n.Type == html.ElementNode && attr(n, "id") == id {
			out = n
		}
	})
	return out
}

// alerts is the text of every role="alert" element.
func alerts(doc *html.Node) string {
	var out []string
	if doc == nil {
		return ""
	}
	walk(doc, func(n *html.Node) {
		if n.Type == html.ElementNode && attr(n, "role") == "alert" {
			out = append(out, text(n))
		}
	})
	return strings.Join(out, " | ")
}

// succeed moves an approved job through its run to succeeded, as the dispatcher does on
// the agent's reports, and keeps the user PIN the agent set, sealed to the result key.
func (e *env) succeed(id, pin string) {
	e.t.Helper()
	err := e.svc.UpdateJobs(e.ctx, func(jt *service.JobTx) error {
		j, err := jt.GetJob(e.ctx, id)
		if err != nil {
			return err
		}
		by := store.JobChange{Actor: service.AgentActor("ws-0001")}
		for _, to := range []jobs.State{jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate, jobs.StateInstalling, jobs.StateSucceeded} {
			if j, err = jt.Transition(e.ctx, j, to, by); err != nil {
				return err
			}
		}
		if _, err := jt.AddCertificate(e.ctx, store.Certificate{Serial: "1a2b3c", JobID: j.ID, HolderID: j.HolderID, Profile: j.ProfileName,
			TokenSerial: j.TokenSerial, AgentID: j.AgentID, Subject: "CN=Hugo Holder", Issuer: "CN=tokenfleet test CA",
			NotBefore: jt.Now(), NotAfter: jt.Now().Add(365 * 24 * time.Hour), DER: []byte{0x30, 0x00}, Created: jt.Now()}); err != nil {
			return err
		}
		sealed, err := seal.Seal(e.key.PublicKey(), []byte(pin), seal.Binding{JobID: j.ID, Attempt: uint32(j.Attempt), Purpose: protocol.SealPurpose(store.PINPurposeUser)})
		if err != nil {
			return err
		}
		raw, err := json.Marshal(sealed)
		if err != nil {
			return err
		}
		_, err = jt.AddTokenPIN(e.ctx, store.TokenPIN{TokenSerial: j.TokenSerial, Purpose: store.PINPurposeUser, JobID: j.ID,
			Attempt: j.Attempt, Sealed: raw, Recorded: jt.Now()})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// sse reads a Server-Sent Events stream.
type sse struct{ r *bufio.Reader }

// stream opens the job's live stream in b's session, as the job page does; it is closed
// when the test ends.
func (b *browser) stream(jobID string) *sse {
	t := b.e.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.e.srv.URL+"/ui/jobs/"+jobID+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := *b.c
	c.Timeout = 0 // a stream; the context ends it
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sse{r: bufio.NewReader(resp.Body)}
}

type jobEvent struct {
	State      string `json:"state"`
	StateLabel string `json:"state_label"`
	HTML       string `json:"html"`
}

// next returns the next "job" event's data; it fails the test at the stream's end.
func (s *sse) next(t *testing.T) jobEvent {
	t.Helper()
	var data, event string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream ended: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if event == "job" {
				var ev jobEvent
				if err := json.Unmarshal([]byte(data), &ev); err != nil {
					t.Fatalf("event data %q: %v", data, err)
				}
				return ev
			}
			data, event = "", ""
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
}
