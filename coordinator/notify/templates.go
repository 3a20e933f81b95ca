package notify

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"strings"
	"text/template"
	"time"
)

// Templates are text/template files, one per event and language, each defining
// "subject" and "body"; digest.tmpl gathers notices a rate limit held back.
//
//go:embed templates/*/*.tmpl
var templateFS embed.FS

// digestName is the template of a digest.
const digestName = "digest"

// Templates renders notices. It is safe for concurrent use.
type Templates struct {
	byLang map[string]map[string]*template.Template // language → event (or digest) → template
}

var funcs = template.FuncMap{
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

// LoadTemplates parses the embedded templates: every event and the digest, in every
// language, or an error naming what is missing.
func LoadTemplates() (*Templates, error) {
	t := &Templates{byLang: map[string]map[string]*template.Template{}}
	for _, lang := range Languages() {
		t.byLang[lang] = map[string]*template.Template{}
		names := []string{digestName}
		for _, e := range events {
			names = append(names, string(e))
		}
		for _, name := range names {
			path := "templates/" + lang + "/" + name + ".tmpl"
			src, err := templateFS.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("notify: template %s: %w", path, err)
			}
			tt, err := template.New(name).Funcs(funcs).Option("missingkey=error").Parse(string(src))
			if err != nil {
				return nil, fmt.Errorf("notify: template %s: %w", path, err)
			}
			for _, part := range []string{"subject", "body"} {
				if tt.Lookup(part) == nil {
					return nil, fmt.Errorf("notify: template %s defines no %q", path, part)
				}
			}
			t.byLang[lang][name] = tt
		}
	}
	return t, nil
}

// ErrRender: a notice could not be rendered (a template and its data do not fit).
var ErrRender = errors.New("notify: rendering failed")

// Message is a rendered notice.
type Message struct {
	Subject string
	Body    string
}

// Render renders the notice of event e in lang (the default language when lang has no
// templates).
func (t *Templates) Render(lang string, e Event, d Data) (Message, error) {
	return t.render(lang, string(e), d)
}

// digestData is what the digest template sees.
type digestData struct {
	Count int
	Items []Message
}

// RenderDigest renders the messages a rate limit held back as one.
func (t *Templates) RenderDigest(lang string, items []Message) (Message, error) {
	return t.render(lang, digestName, digestData{Count: len(items), Items: items})
}

func (t *Templates) render(lang, name string, data any) (Message, error) {
	set, ok := t.byLang[lang]
	if !ok {
		set = t.byLang[DefaultLanguage]
	}
	tt, ok := set[name]
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
