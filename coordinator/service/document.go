package service

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Document is the document (number and YYYY-MM-DD date) a request cites, as the job
// keeps it.
type Document = store.Document

// MaxDocumentNumber bounds a document number, in characters.
const MaxDocumentNumber = 64

// DocumentDateLayout is how a document's date is written: a calendar date.
const DocumentDateLayout = "2006-01-02"

// latestOffset is the furthest ahead of UTC any place's calendar is (UTC+14): a document
// dated today where it was signed is never refused as being in the future.
const latestOffset = 14 * time.Hour

// validateDocument checks a cited document's form: both parts or neither, a printable
// number, a real date that is not in the future.
func validateDocument(d store.Document, now time.Time) error {
	if d.IsZero() {
		return nil
	}
	switch n := utf8.RuneCountInString(d.Number); {
	case d.Number == "":
		return badRequest("document.number", "is required with document.date: give the number of the document the issuance is based on")
	case !utf8.ValidString(d.Number):
		return badRequest("document.number", "is not valid UTF-8")
	case n > MaxDocumentNumber:
		return badRequest("document.number", "is %d characters long; at most %d", n, MaxDocumentNumber)
	case strings.IndexFunc(d.Number, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return badRequest("document.number", "%q holds a control or invisible character; use printable characters only", d.Number)
	}
	if d.Date == "" {
		return badRequest("document.date", "is required with document.number: give the document's date as YYYY-MM-DD")
	}
	day, err := time.Parse(DocumentDateLayout, d.Date)
	if err != nil {
		return badRequest("document.date", "%q is not a date: write it as YYYY-MM-DD, e.g. 2025-03-14", d.Date)
	}
	if today := now.UTC().Add(latestOffset).Format(DocumentDateLayout); d.Date > today {
		return badRequest("document.date", "%s is in the future: a request cites a document that exists", d.Date)
	}
	if day.Year() < 1900 {
		return badRequest("document.date", "%s is before 1900: check the year", d.Date)
	}
	return nil
}

// documentAllowed applies the profile's register policy to a request: an issue under a
// profile that requires a document must cite one; a profile that records none takes none.
// Other kinds may cite one when the profile records documents: a standing renewal has
// nobody to ask.
func documentAllowed(p profile.Profile, kind jobs.Kind, d store.Document) error {
	switch rule := p.Register.Document; {
	case rule == profile.DocumentRequired && (kind == jobs.KindIssue || kind == jobs.KindServerKeygen) && d.IsZero():
		return badRequest("document", "profile %s requires the document the issuance is based on: give its number and date (document.number, document.date; tokenfleetctl issue --document-number N --document-date YYYY-MM-DD)", p.Name)
	case rule == profile.DocumentNone && !d.IsZero():
		return badRequest("document", "profile %s records no document (its register.document is not set): leave the document out, or ask an administrator to set register.document in the profile", p.Name)
	}
	return nil
}
