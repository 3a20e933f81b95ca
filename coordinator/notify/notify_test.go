package notify_test

import (
	"errors"
	"html/template"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/notify"
)

// sample fills every part of Data, so that every template branch has something to show.
func sample() notify.Data {
	at := time.Date(2027, 1, 15, 9, 30, 0, 0, time.UTC)
	return notify.Data{
		Job: &notify.Job{ID: "job123", Kind: "issue", State: "approved", Attempt: 2, Holder: "alice", HolderName: "Alice Martin",
			Requester: "olga", Organization: "Acme", Profile: "logon", Agent: "ws-01", Hostname: "poste-01.acme.test",
			TokenSerial: "A1B2", Deadline: at, Rollout: "ro1", Subject: "CN=Alice Martin", DecideBy: at.Add(24 * time.Hour)},
		Decision:    &notify.Decision{Verdict: "reject", Gate: "request", Reason: "mauvais poste", DecidedBy: "arne"},
		Failure:     &notify.Failure{Code: "token.locked", Message: "the token is locked"},
		Token:       &notify.Token{Serial: "A1B2", Model: "SafeNet 5110"},
		Rollout:     &notify.Rollout{ID: "ro1", Name: "renew-2027", State: "paused", Summary: "3 of 10 failed", Round: 1, Targets: 100, Succeeded: 7, Failed: 3},
		Certificate: &notify.Certificate{Serial: "1f2e", Subject: "CN=Alice", Profile: "logon", Holder: "alice", HolderName: "Alice Martin", TokenSerial: "A1B2", Agent: "ws-01", NotAfter: at, Warning: "30d"},
		CRL:         &notify.CRL{Issuer: "CN=tokenfleet CA", NextUpdate: at, Margin: "72h0m0s", Error: "CA key unreadable"},
	}
}

func TestEveryEventRendersInEveryLanguage(t *testing.T) {
	tm, err := notify.LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range notify.Events() {
		var subjects []string
		for _, lang := range notify.Languages() {
			m, err := tm.Render(lang, e, sample(), "")
			if err != nil {
				t.Fatalf("%s in %s: %v", e, lang, err)
			}
			if m.Subject == "" || strings.Contains(m.Subject, "\n") || len(m.Body) < 40 {
				t.Errorf("%s in %s: subject %q, body %q", e, lang, m.Subject, m.Body)
			}
			if strings.Contains(m.Subject+m.Body+m.HTML, "<no value>") || strings.Contains(m.Subject+m.Body+m.HTML, "%!") ||
				strings.Contains(m.HTML, "ZgotmplZ") {
				t.Errorf("%s in %s renders a missing value:\n%s\n%s\n%s", e, lang, m.Subject, m.Body, m.HTML)
			}
			if !strings.HasPrefix(m.HTML, "<p>") || strings.Contains(m.HTML, "<html") {
				t.Errorf("%s in %s: the HTML content is not a fragment:\n%s", e, lang, m.HTML)
			}
			// With a console link, both parts show it; the page around the HTML is whole.
			const link = "https://pki.acme.test/ui/jobs/job123"
			ml, err := tm.Render(lang, e, sample(), link)
			if err != nil {
				t.Fatal(err)
			}
			if e != notify.EventCertificateExpiring && e != notify.EventCRLExpiring &&
				(!strings.Contains(ml.Body, link) || !strings.Contains(ml.HTML, `<a href="`+link+`"`)) {
				t.Errorf("%s in %s: no link:\n%s\n%s", e, lang, ml.Body, ml.HTML)
			}
			page, err := tm.Page(lang, ml)
			if err != nil || !strings.HasPrefix(page, "<!DOCTYPE html>") || !strings.Contains(page, ml.HTML) ||
				!strings.Contains(page, "<title>"+htmlEscape(ml.Subject)+"</title>") || !strings.HasSuffix(strings.TrimSpace(page), "</html>") {
				t.Errorf("%s in %s: page (%v):\n%s", e, lang, err, page)
			}
			subjects = append(subjects, m.Subject)
		}
		if subjects[0] == subjects[1] {
			t.Errorf("%s: French and English subjects are the same: %q", e, subjects[0])
		}
	}
	ca, _ := tm.Render(notify.French, notify.EventCAApprovalRequested, sample(), "")
	if !strings.Contains(ca.Subject, "Certificat à approuver (opérateur d'AC)") || !strings.Contains(ca.Body, "Sujet        : CN=Alice Martin") ||
		!strings.Contains(ca.Body, "À décider avant : 2027-01-16 09:30 UTC") || !strings.Contains(ca.HTML, "opérateur de l'autorité de certification") {
		t.Errorf("CA operator's notice:\n%s\n%s\n%s", ca.Subject, ca.Body, ca.HTML)
	}
	expired := sample()
	expired.Job.State = "expired"
	if m, _ := tm.Render(notify.English, notify.EventJobFailed, expired, ""); !strings.HasPrefix(m.Subject, "[tokenfleet] Expired: ") ||
		!strings.Contains(m.Body, "expired before it was carried out") {
		t.Errorf("expired job: %s\n%s", m.Subject, m.Body)
	}
	fr, _ := tm.Render(notify.French, notify.EventJobDecided, sample(), "")
	en, _ := tm.Render(notify.English, notify.EventJobDecided, sample(), "")
	if !strings.Contains(fr.Subject, "refusée") || !strings.Contains(fr.Body, "Motif : mauvais poste") ||
		!strings.Contains(en.Subject, "rejected") || !strings.Contains(en.Body, "Reason: mauvais poste") {
		t.Errorf("decision:\n%s\n%s\n%s\n%s", fr.Subject, fr.Body, en.Subject, en.Body)
	}
	// An unknown language is the default's.
	if m, _ := tm.Render("xx", notify.EventJobDecided, sample(), ""); m != fr {
		t.Errorf("unknown language: %q", m.Subject)
	}
	d, err := tm.RenderDigest(notify.English, []notify.Message{fr, en})
	if err != nil || !strings.Contains(d.Subject, "2 notifications") || !strings.Contains(d.Body, fr.Subject) || !strings.Contains(d.Body, en.Body) {
		t.Fatalf("digest: %v\n%s\n%s", err, d.Subject, d.Body)
	}
	// A subject stays one header line whatever the data holds.
	bad := sample()
	bad.Job.HolderName = "Alice\r\nBcc: everyone@example.org"
	if m, _ := tm.Render(notify.English, notify.EventJobSucceeded, bad, ""); strings.ContainsAny(m.Subject, "\r\n") {
		t.Errorf("subject with a line break: %q", m.Subject)
	}
}

// htmlEscape is what html/template makes of plain text.
func htmlEscape(s string) string { return template.HTMLEscapeString(s) }

// TestHTMLEscapes: whatever a person typed (a name, a reason) lands in the HTML part as
// text, never as markup; a link that is not http(s) is neutralised.
func TestHTMLEscapes(t *testing.T) {
	t.Parallel()
	tm, err := notify.LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	d := sample()
	d.Job.HolderName = `<script>alert("x")</script>`
	d.Decision.Reason = `"><img src=https://tracker.example/p.gif>`
	for _, lang := range notify.Languages() {
		m, err := tm.Render(lang, notify.EventJobDecided, d, "javascript:alert(1)")
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"<script", "<img", "javascript:"} {
			if strings.Contains(m.HTML, bad) {
				t.Errorf("%s: %q in the HTML part:\n%s", lang, bad, m.HTML)
			}
		}
		if !strings.Contains(m.HTML, "&lt;script&gt;") || !strings.Contains(m.HTML, "&lt;img src=https://tracker.example/p.gif&gt;") ||
			!strings.Contains(m.HTML, `href="#ZgotmplZ"`) {
			t.Errorf("%s: not escaped as text:\n%s", lang, m.HTML)
		}
		// The page escapes the subject in its title; the content stays as rendered.
		page, err := tm.Page(lang, m)
		if err != nil || strings.Contains(page, "<script") || !strings.Contains(page, m.HTML) {
			t.Errorf("%s: page (%v):\n%s", lang, err, page)
		}
	}
}

// TestDataIsWhitelisted walks the types templates and webhook receivers see: plain
// values only (no bytes, maps, interfaces or records of other packages), and no field
// whose name says it could hold a secret.
func TestDataIsWhitelisted(t *testing.T) {
	secretish := regexp.MustCompile(`(?i)pin|secret|password|passphrase|activation|private|sealed|key`)
	timeType := reflect.TypeFor[time.Time]()
	var walk func(path string, tp reflect.Type)
	walk = func(path string, tp reflect.Type) {
		switch tp.Kind() {
		case reflect.Pointer:
			walk(path, tp.Elem())
		case reflect.Struct:
			if tp == timeType {
				return
			}
			if tp.PkgPath() != reflect.TypeFor[notify.Data]().PkgPath() {
				t.Errorf("%s: %s is not a type of package notify", path, tp)
				return
			}
			for i := range tp.NumField() {
				f := tp.Field(i)
				if secretish.MatchString(f.Name) {
					t.Errorf("%s.%s: a field named like a secret", path, f.Name)
				}
				walk(path+"."+f.Name, f.Type)
			}
		case reflect.String, reflect.Int, reflect.Bool:
		default:
			t.Errorf("%s: kind %s is not allowed in notification data", path, tp.Kind())
		}
	}
	walk("Data", reflect.TypeFor[notify.Data]())
}

func TestSignatureVerifies(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"id":"x","event":"job.decided"}`)
	at := time.Unix(1_800_000_000, 0)
	h := notify.Sign(secret, at, body)
	if !regexp.MustCompile(`^t=1800000000,v1=[0-9a-f]{64}$`).MatchString(h) {
		t.Fatalf("header %q", h)
	}
	if err := notify.Verify(secret, h, body, at.Add(time.Minute), notify.DefaultTolerance); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// A receiver rotating secrets may be sent two v1 values; one matching is enough.
	if err := notify.Verify(secret, h+",v1="+strings.Repeat("0", 64), body, at, notify.DefaultTolerance); err != nil {
		t.Fatalf("verify with a second v1: %v", err)
	}
	for name, tc := range map[string]struct {
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		"wrong secret":    {[]byte("other"), h, body, at, notify.ErrBadSignature},
		"body changed":    {secret, h, []byte(`{"id":"y"}`), at, notify.ErrBadSignature},
		"too old":         {secret, h, body, at.Add(6 * time.Minute), notify.ErrStale},
		"from the future": {secret, h, body, at.Add(-6 * time.Minute), notify.ErrStale},
		"no time":         {secret, "v1=" + strings.Repeat("a", 64), body, at, notify.ErrBadSignature},
		"garbage":         {secret, "nonsense", body, at, notify.ErrBadSignature},
		"time replaced":   {secret, strings.Replace(h, "t=1800000000", "t=1800000100", 1), body, at, notify.ErrBadSignature},
	} {
		if err := notify.Verify(tc.secret, tc.header, tc.body, tc.now, notify.DefaultTolerance); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}
