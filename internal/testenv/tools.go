package testenv

import (
	"os/exec"
	"testing"
)

// Tool is the path of an outside program a test checks tokenfleet's output with. Its
// absence fails the test with the package to install: such tests never skip.
func Tool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is missing: install it with `sudo apt-get install %s` (or run scripts/ensure-deps.sh)", name, debianPackage)
	}
	return p
}

// PDFText is the text of a PDF file as poppler's pdftotext reads it, laid out as printed.
func PDFText(t testing.TB, file string) string {
	t.Helper()
	return Run(t, Tool(t, "pdftotext", "poppler-utils"), "-layout", "-enc", "UTF-8", file, "-")
}
