package notify

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
	"time"
)

// Templates per event and language:
//   - <event>.tmpl, a text/template defining "subject" and "body": the subject, the
//     e-mail's text part and the webhook's text;
//   - <event>.html, an html/template defining "body": the content of the e-mail's HTML
//     part, every value escaped for where it lands (an href only takes a safe URL);
//   - page.html, the HTML document around one notice's content or a digest's several,
//     added when the e-mail is sent; common.html, blocks the HTML templates share;
//   - digest.tmpl, the text of notices a rate limit held back, sent as one.
//
//go:embed templates/*/*.tmpl templates/*/*.html
var templateFS embed.FS

// Names of the templates that are not an event's.
const (
	digestName = "digest"
	pageName   = "page"
	commonName = "common"
)

// Templates renders notices. It is safe for concurrent use.
type Templates struct {
	text map[string]map[string]*texttemplate.Template // language → event (or digest) → template
	html map[string]map[string]*htmltemplate.Template // language → event (or page) → template
}

var funcs = map[string]any{
	"date": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	"day":  func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	"holder": func(j *Job) string {
		if j == nil {
			return ""
		}
		if j.HolderName != "" {
			return j.HolderName
		}
		return j.Holder
	},
	"workstation": func(j *Job) string {
		if j == nil {
			return ""
		}
		if j.Hostname != "" && j.Hostname != j.Agent {
			return j.Agent + " (" + j.Hostname + ")"
		}
		return j.Agent
	},
}

// LoadTemplates parses the embedded templates: every event, the digest and the page, in
// every language, or an error naming what is missing.
func LoadTemplates() (*Templates, error) {
	t := &Templates{text: map[string]map[string]*texttemplate.Template{}, html: map[string]map[string]*htmltemplate.Template{}}
	read := func(path string) (string, error) {
		src, err := templateFS.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("notify: template %s: %w", path, err)
		}
		return string(src), nil
	}
	for _, lang := range Languages() {
		dir := "templates/" + lang + "/"
		t.text[lang], t.html[lang] = map[string]*texttemplate.Template{}, map[string]*htmltemplate.Template{}
		common, err := read(dir + commonName + ".html")
		if err != nil {
			return nil, err
		}
		for _, name := range append([]string{digestName}, eventNames()...) {
			path := dir + name + ".tmpl"
			src, err := read(path)
			if err != nil {
				return nil, err
			}
			tt, err := texttemplate.New(name).Funcs(funcs).Option("missingkey=error").Parse(src)
			if err != nil {
				return nil, fmt.Errorf("notify: template %s: %w", path, err)
			}
			for _, part := range []string{"subject", "body"} {
				if tt.Lookup(part) == nil {
					return nil, fmt.Errorf("notify: template %s defines no %q", path, part)
				}
			}
			t.text[lang][name] = tt
		}
		for _, name := range append([]string{pageName}, eventNames()...) {
			path := dir + name + ".html"
			src, err := read(path)
			if err != nil {
				return nil, err
			}
			ht := htmltemplate.New(name).Funcs(funcs).Option("missingkey=error")
			if ht, err = ht.Parse(common); err == nil {
				ht, err = ht.Parse(src)
			}
			if err != nil {
				return nil, fmt.Errorf("notify: template %s: %w", path, err)
			}
			part := "body"
			if name == pageName {
				part = pageName
			}
			if ht.Lookup(part) == nil {
				return nil, fmt.Errorf("notify: template %s defines no %q", path, part)
			}
			t.html[lang][name] = ht
		}
	}
	return t, nil
}

func eventNames() []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = string(e)
	}
	return out
}

// ErrRender: a notice could not be rendered (a template and its data do not fit).
var ErrRender = errors.New("notify: rendering failed")

// Message is a rendered notice.
type Message struct {
	Subject string
	Body    string // text
	// HTML is the content of the HTML part, without the page around it (Page adds it);
	// a digest's is the whole page. "" for text alone.
	HTML string
}

// view is what an event's templates see: the notice's data, and the console page of what
// it is about ("" for none).
type view struct {
	Data
	Link string
}

// Render renders the notice of event e in lang (the default language when lang has no
// templates); link is the console page the notice points to, "" for none.
func (t *Templates) Render(lang string, e Event, d Data, link string) (Message, error) {
	lang = t.language(lang)
	name := string(e)
	v := view{Data: d, Link: link}
	m, err := t.renderText(lang, name, v)
	if err != nil {
		return Message{}, err
	}
	ht, ok := t.html[lang][name]
	if !ok {
		return Message{}, fmt.Errorf("%w: no HTML template for %q", ErrRender, name)
	}
	var b bytes.Buffer
	if err := ht.ExecuteTemplate(&b, "body", v); err != nil {
		return Message{}, fmt.Errorf("%w: %s HTML body (%s): %w", ErrRender, name, lang, err)
	}
	m.HTML = strings.TrimSpace(b.String())
	return m, nil
}

// digestData is what the digest template sees.
type digestData struct {
	Count int
	Items []Message
}

// RenderDigest renders the messages a rate limit held back as one, its HTML the whole
// page.
func (t *Templates) RenderDigest(lang string, items []Message) (Message, error) {
	lang = t.language(lang)
	m, err := t.renderText(lang, digestName, digestData{Count: len(items), Items: items})
	if err != nil {
		return Message{}, err
	}
	m.HTML, err = t.page(lang, m.Subject, true, items)
	return m, err
}

// Page is the HTML document of one message: its content in the page of its language.
func (t *Templates) Page(lang string, m Message) (string, error) {
	return t.page(t.language(lang), m.Subject, false, []Message{m})
}

// pageItem is one notice in a page.
type pageItem struct {
	Subject string
	// HTML was rendered by an html/template when the notice was written, its values
	// escaped then; the outbox it comes from is the coordinator's own database.
	HTML htmltemplate.HTML
	Text string // shown as preformatted text when HTML is empty
}

// pageData is what page.html sees.
type pageData struct {
	Lang    string
	Subject string
	Digest  bool
	Count   int
	Items   []pageItem
}

func (t *Templates) page(lang, subject string, digest bool, ms []Message) (string, error) {
	d := pageData{Lang: lang, Subject: subject, Digest: digest, Count: len(ms)}
	for _, m := range ms {
		d.Items = append(d.Items, pageItem{Subject: m.Subject, HTML: htmltemplate.HTML(m.HTML), Text: m.Body})
	}
	var b bytes.Buffer
	if err := t.html[lang][pageName].ExecuteTemplate(&b, pageName, d); err != nil {
		return "", fmt.Errorf("%w: page (%s): %w", ErrRender, lang, err)
	}
	return b.String(), nil
}

// language is lang when it has templates, else the default.
func (t *Templates) language(lang string) string {
	if _, ok := t.text[lang]; ok {
		return lang
	}
	return DefaultLanguage
}

func (t *Templates) renderText(lang, name string, data any) (Message, error) {
	tt, ok := t.text[lang][name]
	if !ok {
		return Message{}, fmt.Errorf("%w: no template for %q", ErrRender, name)
	}
	var subject, body bytes.Buffer
	if err := tt.ExecuteTemplate(&subject, "subject", data); err != nil {
		return Message{}, fmt.Errorf("%w: %s subject (%s): %w", ErrRender, name, lang, err)
	}
	if err := tt.ExecuteTemplate(&body, "body", data); err != nil {
		return Message{}, fmt.Errorf("%w: %s body (%s): %w", ErrRender, name, lang, err)
	}
	// A subject is one header line, whatever the data held.
	s := strings.Join(strings.Fields(subject.String()), " ")
	return Message{Subject: s, Body: strings.TrimLeft(body.String(), "\n")}, nil
}
