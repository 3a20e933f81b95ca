package register

import (
	_ "embed"
	"fmt"
	"io"
	"strings"
	"time"

	"codeberg.org/go-pdf/fpdf"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// DejaVu Sans Condensed (fonts/LICENSE: the Bitstream Vera licence, DejaVu changes in the
// public domain), embedded because the PDF core fonts have no glyphs beyond Latin-1 and
// fpdf writes UTF-8 text only with a TrueType font: names like "Éloïse Lefèvre" or
// "Łukasz" print as they are.
var (
	//go:embed fonts/DejaVuSansCondensed.ttf
	fontRegular []byte
	//go:embed fonts/DejaVuSansCondensed-Bold.ttf
	fontBold []byte
)

const (
	fontFamily = "DejaVuSansCondensed"
	fontSize   = 8.0 // points
	lineHeight = 3.6 // mm, for fontSize
	cellPad    = 1.0 // mm, fpdf's cell margin
)

// column is one column of the PDF table: its title, width (mm) and text.
type column struct {
	title string
	width float64
	text  func(e api.RegisterEntry) string
}

// A4 landscape: 297 mm wide, 10 mm margins leave 277 mm.
var columns = []column{
	{"Token serial", 30, func(e api.RegisterEntry) string { return e.TokenSerial }},
	{"Model", 30, func(e api.RegisterEntry) string { return strings.TrimSpace(e.Manufacturer + " " + e.Model) }},
	{"Holder", 38, func(e api.RegisterEntry) string {
		if e.HolderName != "" {
			return e.HolderName + " (" + e.Holder + ")"
		}
		return e.Holder
	}},
	{"Issued", 19, func(e api.RegisterEntry) string { return day(e.Issued) }},
	{"Returned", 19, func(e api.RegisterEntry) string { return day(e.Returned) }},
	{"Document", 36, func(e api.RegisterEntry) string {
		num, date := documentOf(e)
		if num == "" {
			return ""
		}
		return num + " of " + date
	}},
	{"State history", 105, func(e api.RegisterEntry) string {
		s := historyText(e.History, "2006-01-02 15:04")
		return strings.ReplaceAll(s, "; ", "\n")
	}},
}

// WritePDF writes the register as a printable PDF: A4 landscape, a table with a row per
// device, each page headed by the organisation and the date of export and numbered.
func WritePDF(w io.Writer, r api.Register) error {
	pdf := fpdf.New("L", "mm", "A4", "")
	pdf.AddUTF8FontFromBytes(fontFamily, "", fontRegular)
	pdf.AddUTF8FontFromBytes(fontFamily, "B", fontBold)
	pdf.SetMargins(10, 10, 10)
	pdf.SetAutoPageBreak(false, 12) // rows break pages themselves: a row is never split
	pdf.SetCreationDate(r.Generated)
	pdf.SetModificationDate(r.Generated)
	org := r.Organization
	if org == "" {
		org = "all organisations"
	}
	title := "Crypto-device register — " + org
	pdf.SetTitle(title, true)
	pdf.SetCreator("tokenfleet", true)
	pdf.AliasNbPages("")
	exported := r.Generated.UTC().Format("2006-01-02 15:04 UTC")

	pdf.SetHeaderFunc(func() {
		pdf.SetFont(fontFamily, "B", 12)
		pdf.CellFormat(0, 6, title, "", 1, "L", false, 0, "")
		pdf.SetFont(fontFamily, "", fontSize)
		pdf.CellFormat(0, 5, fmt.Sprintf("Exported %s · %d devices", exported, len(r.Items)), "", 1, "L", false, 0, "")
		pdf.Ln(1)
		pdf.SetFont(fontFamily, "B", fontSize)
		pdf.SetFillColor(225, 225, 225)
		for _, c := range columns {
			pdf.CellFormat(c.width, lineHeight+2, c.title, "1", 0, "L", true, 0, "")
		}
		pdf.Ln(-1)
		pdf.SetFont(fontFamily, "", fontSize)
	})
	pdf.SetFooterFunc(func() {
		pdf.SetY(-10)
		pdf.SetFont(fontFamily, "", fontSize)
		pdf.CellFormat(0, 5, fmt.Sprintf("%s · exported %s · page %d of {nb}", org, exported, pdf.PageNo()), "", 0, "C", false, 0, "")
	})

	pdf.AddPage()
	if len(r.Items) == 0 {
		pdf.CellFormat(0, 8, "No device has been issued.", "", 1, "L", false, 0, "")
	}
	_, pageH := pdf.GetPageSize()
	left, _, _, bottom := pdf.GetMargins()
	for _, e := range r.Items {
		cells := make([][]string, len(columns))
		lines := 1
		for i, c := range columns {
			for _, para := range strings.Split(c.text(e), "\n") {
				cells[i] = append(cells[i], pdf.SplitText(para, c.width)...)
			}
			lines = max(lines, len(cells[i]))
		}
		h := float64(lines)*lineHeight + 2*cellPad
		if pdf.GetY()+h > pageH-bottom-2 {
			pdf.AddPage()
		}
		x, y := left, pdf.GetY()
		for i, c := range columns {
			pdf.Rect(x, y, c.width, h, "D")
			for n, line := range cells[i] {
				pdf.SetXY(x, y+cellPad+float64(n)*lineHeight)
				pdf.CellFormat(c.width, lineHeight, line, "", 0, "L", false, 0, "")
			}
			x += c.width
		}
		pdf.SetXY(left, y+h)
	}
	if err := pdf.Error(); err != nil {
		return fmt.Errorf("register pdf: %w", err)
	}
	if err := pdf.Output(w); err != nil {
		return fmt.Errorf("register pdf: %w", err)
	}
	return nil
}

// day is a date as the register shows it; "" for none.
func day(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02")
}
