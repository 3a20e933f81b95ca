package register_test

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/register"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

var t0 = time.Date(2025, 3, 14, 9, 30, 0, 0, time.UTC)

// sample is a register with accented names, a document number that a spreadsheet would run
// as a formula, a returned device, and enough rows for three pages.
func sample() api.Register {
	r := api.Register{Organization: "Préfecture de l'Hérault", Generated: t0.Add(72 * time.Hour)}
	named := []api.RegisterEntry{
		{TokenSerial: "RT4417A01", Manufacturer: "Aktiv", Model: "Rutoken ECP 3.0", Holder: "eloise", HolderName: "Éloïse Lefèvre",
			Profile: "signature", Job: "job-1", Document: &api.Document{Number: "Arrêté n° 2025-117", Date: "2025-03-01"},
			Issued: t0, State: "issued", History: []api.RegisterEvent{
				{At: t0.Add(-2 * time.Hour), State: "pending_approval", Actor: "olga", Reason: "created"},
				{At: t0.Add(-time.Hour), State: "approved", Actor: "arne", Reason: "approved by arne"},
				{At: t0, State: "succeeded", Actor: "agent:ws-01"}}},
		{TokenSerial: "YK5550B02", Manufacturer: "Yubico", Model: "YubiKey 5", Holder: "francois", HolderName: "François Çelik",
			Profile: "signature", Job: "job-2", Document: &api.Document{Number: "=HYPERLINK(\"http://x\")", Date: "2025-03-02"},
			Issued: t0.Add(time.Hour), Returned: t0.Add(48 * time.Hour), State: "returned", ReturnReason: "token wiped by job job-9",
			History: []api.RegisterEvent{{At: t0.Add(time.Hour), State: "succeeded"}, {At: t0.Add(48 * time.Hour), State: "returned", Reason: "token wiped by job job-9"}}},
	}
	r.Items = append(r.Items, named...)
	for i := 3; i <= 40; i++ {
		r.Items = append(r.Items, api.RegisterEntry{TokenSerial: fmt.Sprintf("SN%07d", 7000+i), Model: "SoftHSM v2",
			Holder: fmt.Sprintf("user%02d", i), HolderName: "Hélène Dupré", Profile: "logon", Job: fmt.Sprintf("job-%d", i),
			Issued: t0.Add(time.Duration(i) * time.Hour), State: "issued",
			History: []api.RegisterEvent{{At: t0.Add(time.Duration(i) * time.Hour), State: "succeeded"}}})
	}
	return r
}

func TestCSVReadsBack(t *testing.T) {
	t.Parallel()
	r := sample()
	var b bytes.Buffer
	if err := register.WriteCSV(&b, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\r\n") {
		t.Error("rows do not end in CRLF (RFC 4180)")
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatalf("the CSV does not parse: %v", err)
	}
	if !slices.Equal(rows[0], register.CSVHeader) {
		t.Fatalf("header %q", rows[0])
	}
	if len(rows) != len(r.Items)+1 {
		t.Fatalf("%d rows, want %d and a header", len(rows)-1, len(r.Items))
	}
	col := func(row []string, name string) string { return row[slices.Index(register.CSVHeader, name)] }
	first, second := rows[1], rows[2]
	for name, want := range map[string]string{"token_serial": "RT4417A01", "holder_name": "Éloïse Lefèvre", "model": "Rutoken ECP 3.0",
		"issued": "2025-03-14T09:30:00Z", "returned": "", "state": "issued", "document_number": "Arrêté n° 2025-117", "document_date": "2025-03-01"} {
		if got := col(first, name); got != want {
			t.Errorf("first row %s = %q, want %q", name, got, want)
		}
	}
	if h := col(first, "history"); !strings.Contains(h, "2025-03-14T08:30:00Z approved by arne") {
		t.Errorf("history %q", h)
	}
	// The formula is shown as text, not run.
	if got := col(second, "document_number"); got != `'=HYPERLINK("http://x")` {
		t.Errorf("formula cell %q", got)
	}
	if got := col(second, "returned"); got != "2025-03-16T09:30:00Z" || col(second, "state") != "returned" {
		t.Errorf("returned %q state %q", got, col(second, "state"))
	}
}

func TestSafeCell(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"=1+2": "'=1+2", "+33 1": "'+33 1", "-2": "'-2", "@SUM(A1)": "'@SUM(A1)",
		"\tx": "'\tx", "\rx": "'\rx", "a=b": "a=b", "": "", "Élodie": "Élodie"} {
		if got := register.SafeCell(in); got != want {
			t.Errorf("SafeCell(%q) = %q, want %q", in, got, want)
		}
	}
}

// need fails the test when a tool the test reads the PDF with is missing.
// The PDF is read by tools nobody here wrote: poppler's pdftotext finds every row and the
// accented names, pdftoppm renders it, and tesseract reads the serials off the image.
func TestPDFReadsBack(t *testing.T) {
	t.Parallel()
	pdftoppm := testenv.Tool(t, "pdftoppm", "poppler-utils")
	tesseract := testenv.Tool(t, "tesseract", "tesseract-ocr")
	r := sample()
	dir := t.TempDir()
	file := filepath.Join(dir, "register.pdf")
	var b bytes.Buffer
	if err := register.WritePDF(&b, r); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	text := testenv.PDFText(t, file)
	pages := strings.Split(strings.TrimRight(text, "\f"), "\f")
	if len(pages) < 2 {
		t.Fatalf("%d page(s) for %d devices; want the table to continue on more pages", len(pages), len(r.Items))
	}
	for i, p := range pages {
		for _, want := range []string{"Crypto-device register — Préfecture de l'Hérault", "Exported 2025-03-17 09:30 UTC",
			"Token serial", "State history", fmt.Sprintf("page %d of %d", i+1, len(pages))} {
			if !strings.Contains(p, want) {
				t.Errorf("page %d lacks %q", i+1, want)
			}
		}
	}
	for _, e := range r.Items {
		if !strings.Contains(text, e.TokenSerial) {
			t.Errorf("no row for %s", e.TokenSerial)
		}
	}
	for _, want := range []string{"Éloïse Lefèvre (eloise)", "François Çelik", "Arrêté n° 2025-117", "2025-03-16",
		"2025-03-14 08:30 approved by arne", "returned (token wiped by job job-9)", "Aktiv Rutoken ECP"} {
		if !strings.Contains(text, want) {
			t.Errorf("the PDF's text lacks %q", want)
		}
	}

	// Rendered to images, and read back by OCR: the serials are on the page, not only in
	// the text layer.
	testenv.Run(t, pdftoppm, "-png", "-r", "300", file, filepath.Join(dir, "page"))
	images, _ := filepath.Glob(filepath.Join(dir, "page-*.png"))
	if len(images) != len(pages) {
		t.Fatalf("%d images for %d pages", len(images), len(pages))
	}
	slices.Sort(images)
	var ocr strings.Builder
	for _, img := range images {
		cmd := exec.Command(tesseract, img, "stdout", "--psm", "4")
		cmd.Env = append(os.Environ(), "OMP_THREAD_LIMIT=1") // one core: the machine is shared with the other tests
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tesseract %s: %v", img, err)
		}
		ocr.Write(out)
	}
	seen := strings.ReplaceAll(ocr.String(), " ", "")
	for _, e := range r.Items {
		if !strings.Contains(seen, e.TokenSerial) {
			t.Errorf("OCR does not find %s", e.TokenSerial)
		}
	}
	// OCR may read è as é or e: the name is there, its accent is pdftotext's to check.
	if !regexp.MustCompile(`Lef.{1,2}vre`).MatchString(ocr.String()) {
		t.Errorf("OCR does not find the holder's name Lefèvre:\n%s", ocr.String())
	}
}

func TestPDFEmpty(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := register.WritePDF(&b, api.Register{Generated: t0}); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b.Bytes(), []byte("%PDF-")) {
		t.Fatalf("not a PDF: %q", b.Bytes()[:min(16, b.Len())])
	}
}
