package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// staticHandler serves the stylesheet and the script. They change only with the binary:
// a day of caching is safe enough, and a new release's pages load them again on reload.
func staticHandler() http.Handler {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix(Prefix+"static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=86400")
		files.ServeHTTP(w, r)
	})
}

// parsePages parses each page template (templates/NAME.html) together with the layout
// and the shared parts (templates/_*.html). A page defines "content", and may define
// "head" for more of the head (nothing inline: the CSP forbids it).
func parsePages(funcs template.FuncMap) (map[string]*template.Template, error) {
	entries, err := fs.ReadDir(templateFS, "templates")
	if err != nil {
		return nil, err
	}
	base := template.New("layout").Funcs(funcs)
	var pages []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == "layout.html" || strings.HasPrefix(name, "_"):
			if _, err := base.ParseFS(templateFS, "templates/"+name); err != nil {
				return nil, fmt.Errorf("console: template %s: %w", name, err)
			}
		default:
			pages = append(pages, name)
		}
	}
	out := map[string]*template.Template{}
	for _, name := range pages {
		t, err := base.Clone()
		if err != nil {
			return nil, err
		}
		if _, err := t.ParseFS(templateFS, "templates/"+name); err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		out[strings.TrimSuffix(name, path.Ext(name))] = t
	}
	return out, nil
}

// Page is what every page template gets: the layout reads the fields around Data, the
// page's own part reads Data.
type Page struct {
	Title   string
	Section string // the navigation entry to mark as current ("" for none)
	// SignedIn: Session and User are set.
	SignedIn bool
	Session  service.Session
	User     service.User
	Nav      []NavItem
	CSRF     string // the session's anti-forgery token, for forms
	Flash    string // a message left by the previous request (after a redirect)
	Error    *service.Error
	Data     any
	OIDC     bool   // single sign-on is offered
	OIDCName string // what to call it
}

// NavItem is one entry of the navigation.
type NavItem struct {
	Key, Label, Href string
}

// navigation lists the console's sections and who sees them. It mirrors the service's
// read rules for the built-in roles so that nobody is shown a page that would only
// refuse them; the service still decides on every request. A custom role's permissions
// are not read here: its holders see every read-only section, and the service says no
// where it must.
var navigation = []struct {
	NavItem
	roles []jobs.Role       // any of these built-in roles shows it
	perms []jobs.Permission // or a built-in role granting any of these
}{
	{NavItem{"home", "Home", Prefix}, nil, nil},
	{NavItem{"me", "My tokens", Prefix + "me"}, nil, nil},
	{NavItem{"approvals", "Approvals", Prefix + "approvals"}, nil, []jobs.Permission{jobs.PermApprove, jobs.PermCAOperator, jobs.PermRecoverKeys}},
	{NavItem{"request", "Request a token", Prefix + "request"}, nil, []jobs.Permission{jobs.PermRequest}},
	{NavItem{"jobs", "Jobs", Prefix + "jobs"}, readers(jobs.RoleApprover, jobs.RoleCAOperator, jobs.RoleKeyRecoveryOfficer), nil},
	{NavItem{"agents", "Agents", Prefix + "agents"}, readers(), nil},
	{NavItem{"tokens", "Tokens", Prefix + "tokens"}, readers(), nil},
	{NavItem{"certificates", "Certificates", Prefix + "certificates"}, readers(jobs.RoleCAOperator, jobs.RoleKeyRecoveryOfficer), nil},
	{NavItem{"escrow", "Escrowed keys", Prefix + "escrow"}, readers(jobs.RoleCAOperator, jobs.RoleKeyRecoveryOfficer), nil},
	{NavItem{"register", "Register", Prefix + "register"}, readers(jobs.RoleApprover, jobs.RoleCAOperator, jobs.RoleKeyRecoveryOfficer), nil},
	{NavItem{"rollouts", "Rollouts", Prefix + "rollouts"}, readers(jobs.RoleCAOperator, jobs.RoleKeyRecoveryOfficer), nil},
	{NavItem{"audit", "Audit log", Prefix + "audit"}, nil, []jobs.Permission{jobs.PermReadAudit}},
	{NavItem{"profiles", "Profiles", Prefix + "profiles"}, readers(jobs.RoleApprover, jobs.RoleCAOperator, jobs.RoleKeyRecoveryOfficer), nil},
	{NavItem{"recovery-certificates", "Backup keys", Prefix + "recovery-certificates"}, readers(jobs.RoleApprover, jobs.RoleCAOperator, jobs.RoleKeyRecoveryOfficer), nil},
	{NavItem{"notifications", "Notifications", Prefix + "notifications"}, nil, []jobs.Permission{jobs.PermManageUsers}},
}

// readers is the built-in roles that read everything, and more.
func readers(more ...jobs.Role) []jobs.Role {
	return append([]jobs.Role{jobs.RoleAdmin, jobs.RoleHelpdesk, jobs.RoleAuditor, jobs.RoleRolloutOwner}, more...)
}

// navFor is the navigation u's roles allow.
func navFor(u service.User) []NavItem {
	if u.Disabled {
		return nil
	}
	custom := false
	var perms []jobs.Permission
	for _, r := range u.Roles {
		if !r.Valid() {
			custom = true
			continue
		}
		perms = append(perms, jobs.RolePermissions(r)...)
	}
	var out []NavItem
	for _, n := range navigation {
		show := n.roles == nil && n.perms == nil
		show = show || slices.ContainsFunc(u.Roles, func(r jobs.Role) bool { return slices.Contains(n.roles, r) })
		show = show || slices.ContainsFunc(perms, func(p jobs.Permission) bool { return slices.Contains(n.perms, p) })
		show = show || (custom && n.roles != nil)
		if show {
			out = append(out, n.NavItem)
		}
	}
	return out
}

// shows reports whether u's navigation has the section key: u's roles read it.
func shows(u service.User, key string) bool {
	return slices.ContainsFunc(navFor(u), func(n NavItem) bool { return n.Key == key })
}

// can reports whether u's built-in roles grant p (for showing a form or a button; the
// service decides).
func can(u service.User, p jobs.Permission) bool {
	for _, r := range u.Roles {
		if !r.Valid() || slices.Contains(jobs.RolePermissions(r), p) {
			return true
		}
	}
	return false
}

// page renders the page template name with the layout, status 200 unless the page's
// error says otherwise. It renders into a buffer first so that a template failure is a
// clean 500, not half a page.
func (c *Console) page(w http.ResponseWriter, r *http.Request, name string, p Page) {
	c.render(w, r, http.StatusOK, name, p)
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p Page) {
	t, ok := c.pages[name]
	if !ok {
		c.log.Error().Str("template", name).Msg("console: no such page template")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if s, ok := SessionFrom(r.Context()); ok {
		p.SignedIn, p.Session, p.User, p.CSRF = true, s, s.User, s.CSRF
		p.Nav = navFor(s.User)
	}
	if p.Flash == "" {
		p.Flash = c.takeFlash(w, r)
	}
	p.OIDC, p.OIDCName = c.oidcEnabled(), c.oidcName
	if p.Error != nil && status == http.StatusOK {
		status = p.Error.Code.HTTPStatus()
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		c.log.Error().Err(err).Str("template", name).Msg("console: rendering a page")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	noStore(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fail renders an error page with the service's message in role="alert". Internal
// errors show no detail (the log has it).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := service.AsError(err)
	if e.Code == service.CodeInternal {
		c.log.Error().Err(e.Err).Str("path", r.URL.Path).Msg("console: internal error")
	}
	c.render(w, r, e.Code.HTTPStatus(), "error", Page{Title: errorTitle(e.Code), Error: e})
}

func errorTitle(code service.Code) string {
	switch code.HTTPStatus() {
	case http.StatusForbidden:
		return "Refused"
	case http.StatusNotFound:
		return "Not found"
	case http.StatusInternalServerError:
		return "Something went wrong"
	}
	return "Cannot do that"
}

// funcs are the template functions.
func (c *Console) funcs() template.FuncMap {
	return template.FuncMap{
		"ago":     func(t time.Time) string { return ago(c.now(), t) },
		"iso":     func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"exact":   exactTime,
		"state":   stateLabel,
		"short":   shortHash,
		"join":    strings.Join,
		"label":   func(s any) string { return strings.ReplaceAll(fmt.Sprint(s), "_", " ") },
		"yesno":   func(b bool) string { return map[bool]string{true: "yes", false: "no"}[b] },
		"fieldOf": fieldOf,
	}
}

// fieldOf is the form field a service error names, for marking the field.
func fieldOf(e *service.Error) string {
	if e == nil {
		return ""
	}
	return e.Field
}

func exactTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// ago says how long ago (or in how long) t is, the way people read it.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < 10*time.Second:
		return "just now"
	case d < time.Minute:
		s = fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		s = fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%d h", int(d.Hours()))
	case d < 60*24*time.Hour:
		s = fmt.Sprintf("%d days", int(d.Hours()/24))
	default:
		return t.UTC().Format("2 Jan 2006")
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

// stateLabel is a job state for people: "pending approval".
func stateLabel(s jobs.State) string { return strings.ReplaceAll(string(s), "_", " ") }

// shortHash abbreviates a hash for tables; the full one is in the title attribute.
func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}
