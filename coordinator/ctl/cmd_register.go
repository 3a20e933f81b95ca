package ctl

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

func registerCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "register",
		Short: "The crypto-device register: every device issued, with its document and history",
		Long: `The crypto-device register lists every device issued (an issue job that succeeded on
a token): token serial and model, holder, issue and return dates, the document the
issuance is based on, and its history. Who reads an organisation's jobs reads its register.`,
		Args: exactArgs(),
	}
	cmd.AddCommand(registerShowCommand(e), registerExportCommand(e))
	return cmd
}

func registerShowCommand(e *env) *cobra.Command {
	var (
		org    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "show [--org O] [--json]",
		Short: "Print the register of an organisation (default: your own, or every one)",
		Args:  exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			r, err := c.Register(cmd.Context(), org)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, r)
			}
			t := newTable(e.stdout, "SERIAL", "MODEL", "HOLDER", "ISSUED", "RETURNED", "DOCUMENT", "STATE")
			for _, it := range r.Items {
				holder, doc, returned := it.Holder, "", ""
				if it.HolderName != "" {
					holder = it.HolderName + " (" + it.Holder + ")"
				}
				if it.Document != nil {
					doc = documentText(it.Document)
				}
				if !it.Returned.IsZero() {
					returned = it.Returned.UTC().Format("2006-01-02")
				}
				t.row(it.TokenSerial, it.Model, holder, it.Issued.UTC().Format("2006-01-02"), returned, doc, it.State)
			}
			return t.flush()
		}),
	}
	cmd.Flags().StringVar(&org, "org", "", "organisation name")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, with each device's history")
	return cmd
}

func registerExportCommand(e *env) *cobra.Command {
	var org, format, out string
	cmd := &cobra.Command{
		Use:   "export --format csv|pdf -o FILE [--org O]",
		Short: "Write the register as CSV or as a printable PDF",
		Long: `Write the register as CSV (RFC 4180, UTF-8, a header row; a cell a spreadsheet would
run as a formula starts with a quote) or as a printable PDF (A4 landscape, the
organisation and the date of export on every page). -o - writes to standard output.
The file is written whole or not at all, readable by its owner only: the register names
people.`,
		Args: exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if format != api.RegisterCSV && format != api.RegisterPDF {
				return usageErrorf("--format %q: want csv or pdf", format)
			}
			if out == "" {
				return usageErrorf("-o is required: the file to write, or - for standard output")
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			b, err := c.ExportRegister(cmd.Context(), org, format)
			if err != nil {
				return err
			}
			if out == "-" {
				_, err := e.stdout.Write(b)
				return err
			}
			return writeWhole(out, b)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&org, "org", "", "organisation name (default: your own, or every one)")
	f.StringVar(&format, "format", "", "csv or pdf (required)")
	f.StringVarP(&out, "output", "o", "", "file to write, - for standard output (required)")
	return cmd
}

// writeWhole writes b to path through a temporary file in the same directory, renamed
// into place, so that a failure never leaves half a file.
func writeWhole(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // gone after the rename; removed on failure
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
