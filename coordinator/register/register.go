// Package register writes the crypto-device register (api.Register) as the files regulated
// users keep: CSV for spreadsheets and other tools, and a printable PDF.
package register

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// CSVHeader is the CSV's header row, one column per field.
var CSVHeader = []string{"token_serial", "manufacturer", "model", "holder", "holder_name", "organization", "profile",
	"issued", "returned", "state", "return_reason", "document_number", "document_date", "job", "history"}

// WriteCSV writes the register as CSV (RFC 4180, UTF-8, a header row). Times are RFC 3339
// in UTC; the history is one cell, its steps separated by "; ".
func WriteCSV(w io.Writer, r api.Register) error {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true // RFC 4180's line break
	if err := cw.Write(CSVHeader); err != nil {
		return fmt.Errorf("register csv: %w", err)
	}
	for _, e := range r.Items {
		num, date := documentOf(e)
		row := []string{e.TokenSerial, e.Manufacturer, e.Model, e.Holder, e.HolderName, e.Organization, e.Profile,
			timeCSV(e.Issued), timeCSV(e.Returned), e.State, e.ReturnReason, num, date, e.Job, historyText(e.History, time.RFC3339)}
		for i, c := range row {
			row[i] = SafeCell(c)
		}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("register csv: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("register csv: %w", err)
	}
	return nil
}

// SafeCell keeps a spreadsheet from running a cell as a formula (CSV injection): a cell
// that starts with = + - @, or with a tab or carriage return that some applications skip
// before looking, gets a leading apostrophe, which shows the text as it is.
func SafeCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func documentOf(e api.RegisterEntry) (number, date string) {
	if e.Document == nil {
		return "", ""
	}
	return e.Document.Number, e.Document.Date
}

func timeCSV(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// historyText writes a device's history on one line: "<time> <state> by <actor> (<reason>)".
func historyText(h []api.RegisterEvent, layout string) string {
	parts := make([]string, 0, len(h))
	for _, ev := range h {
		s := ev.At.UTC().Format(layout) + " " + ev.State
		if ev.Actor != "" {
			s += " by " + ev.Actor
		}
		if ev.Reason != "" && ev.Reason != "created" {
			s += " (" + ev.Reason + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// FileName is the name an export of r in format (csv, pdf) is offered under:
// register-<organisation>-<date>.<format>, the organisation reduced to letters, digits and
// '-' so that it is safe in a header and a file system.
func FileName(r api.Register, format string) string {
	org := "all"
	if r.Organization != "" {
		var b strings.Builder
		for _, c := range strings.ToLower(r.Organization) {
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
				b.WriteRune(c)
			default:
				if s := b.String(); s != "" && !strings.HasSuffix(s, "-") {
					b.WriteByte('-')
				}
			}
		}
		if s := strings.Trim(b.String(), "-"); s != "" {
			org = s
		}
	}
	return "register-" + org + "-" + r.Generated.UTC().Format("2006-01-02") + "." + format
}

// Render writes r whole in format (api.RegisterCSV or api.RegisterPDF) and returns it with
// its media type, for the API and the console to send: a failure is an error, never half
// a file.
func Render(r api.Register, format string) (contentType string, data []byte, err error) {
	var b bytes.Buffer
	switch format {
	case api.RegisterCSV:
		contentType, err = "text/csv; charset=utf-8; header=present", WriteCSV(&b, r)
	case api.RegisterPDF:
		contentType, err = "application/pdf", WritePDF(&b, r)
	default:
		return "", nil, fmt.Errorf("register: format %q: want csv or pdf", format)
	}
	if err != nil {
		return "", nil, err
	}
	return contentType, b.Bytes(), nil
}
