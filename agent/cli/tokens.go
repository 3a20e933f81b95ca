package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/agent/inventory"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

func tokensCommand(e *env) *cobra.Command {
	var (
		modules  []string
		asJSON   bool
		noUSB    bool
		registry string
	)
	cmd := &cobra.Command{
		Use:   "tokens [--module PATH]... [--json]",
		Short: "List every token this machine can see, with its PIN state and certificates",
		Long: `List every token behind the given PKCS#11 modules: USB identity where the device is a
known model, label, serial, manufacturer, model, firmware, memory, PIN state, and the
certificates on it with subject and expiry. Without --module, the modules of the known
USB token models attached to this machine are used.

Exit status: 0 when every module could be used (also when there is no token),
1 when a module could not be loaded or read (it is named, with the reason).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := e.logger()
			reg, err := loadRegistry(registry)
			if err != nil {
				return err
			}
			opts := inventory.Options{Modules: modules, Registry: reg, Log: log}
			if !noUSB {
				enum, err := usb.NewGoUSB(log, reg.Known)
				if err != nil {
					log.Warn().Err(err).Msg("USB enumeration unavailable; listing PKCS#11 tokens only")
				} else {
					defer func() { _ = enum.Close() }()
					opts.USB = enum
				}
			}
			rep, err := inventory.Collect(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printReport(e.stdout, rep)
			}
			if err := rep.ModuleErrors(); err != nil {
				if asJSON {
					// The JSON carries the failure; say it on stderr too, for people.
					fmt.Fprintf(e.stderr, "tokenfleet-agent: %v\n", err)
				}
				return exitError{ExitError}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&modules, "module", nil, "PKCS#11 module `PATH` (repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&noUSB, "no-usb", false, "do not enumerate USB devices")
	cmd.Flags().StringVar(&registry, "registry", "", "extra token model registry `FILE` (YAML), merged over the built-in one")
	return cmd
}

func loadRegistry(path string) (*usb.Registry, error) {
	if path == "" {
		return usb.DefaultRegistry()
	}
	return usb.LoadRegistryFile(path)
}

func printReport(w io.Writer, rep *inventory.Report) {
	if len(rep.USB.Devices) > 0 {
		fmt.Fprintln(w, "USB tokens:")
		for _, d := range rep.USB.Devices {
			fmt.Fprintf(w, "  %s  %s %s  bus %d address %d%s\n", d.ID, d.Vendor, d.Model, d.Bus, d.Address, optional(" serial ", d.Serial))
		}
	}
	for _, m := range rep.Modules {
		if m.Error != nil {
			fmt.Fprintf(w, "Module %s: cannot use it: %s\n", m.Path, m.Error.Message)
			continue
		}
		fmt.Fprintf(w, "Module %s (%s %s, library %s, Cryptoki %s)\n", m.Path, m.Info.Manufacturer, m.Info.Description, m.Info.LibraryVersion, m.Info.CryptokiVersion)
		present := 0
		for _, s := range m.Slots {
			if s.Token == nil {
				continue
			}
			present++
			printToken(w, s, rep.Time)
		}
		if present == 0 {
			fmt.Fprintf(w, "  no token (%d empty slot%s)\n", len(m.Slots), plural(len(m.Slots)))
		}
	}
	if rep.Tokens() == 0 {
		msg := "No token found."
		if rep.Note != "" {
			msg = "No token found: " + rep.Note + "."
		}
		fmt.Fprintln(w, msg)
	}
}

func printToken(w io.Writer, s inventory.SlotReport, now time.Time) {
	t := s.Token
	if !t.Initialized {
		fmt.Fprintf(w, "  Blank token in slot %q: %s %s, not initialised\n", s.Description, t.Manufacturer, t.Model)
		return
	}
	fmt.Fprintf(w, "  Token %q  serial %s\n", t.Label, t.Serial)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "    maker\t%s %s, hardware %s, firmware %s\n", t.Manufacturer, t.Model, t.HardwareVersion, t.FirmwareVersion)
	if s.USB != nil {
		fmt.Fprintf(tw, "    usb\t%s %s %s (bus %d address %d)\n", s.USB.ID, s.USB.Vendor, s.USB.Model, s.USB.Bus, s.USB.Address)
	}
	fmt.Fprintf(tw, "    state\t%s\n", tokenState(t))
	fmt.Fprintf(tw, "    user PIN\t%s\n", pinState(t.UserPIN, t.UserPINInitialized))
	fmt.Fprintf(tw, "    SO PIN\t%s\n", pinState(t.SOPIN, true))
	fmt.Fprintf(tw, "    PIN length\t%d to %d\n", t.MinPINLen, t.MaxPINLen)
	fmt.Fprintf(tw, "    memory\tpublic %s, private %s\n", mem(t.FreePublicMemory, t.TotalPublicMemory), mem(t.FreePrivateMemory, t.TotalPrivateMemory))
	_ = tw.Flush()
	switch {
	case s.CertificatesError != nil:
		fmt.Fprintf(w, "    certificates: cannot read them: %s\n", s.CertificatesError.Message)
	case len(s.Certificates) == 0:
		fmt.Fprintln(w, "    certificates: none")
	default:
		fmt.Fprintln(w, "    certificates:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "      ID\tSUBJECT\tEXPIRES\tISSUER")
		for _, c := range s.Certificates {
			fmt.Fprintf(tw, "      %s\t%s\t%s\t%s\n", c.ID, c.Subject, expiry(c.NotAfter, now), c.Issuer)
		}
		_ = tw.Flush()
	}
}

func tokenState(t *pkcs11.TokenInfo) string {
	var parts []string
	parts = append(parts, "initialised")
	if t.LoginRequired {
		parts = append(parts, "login required")
	}
	if !t.UserPINInitialized {
		parts = append(parts, "user PIN not set")
	}
	if t.WriteProtected {
		parts = append(parts, "write protected")
	}
	if t.ProtectedAuthPath {
		parts = append(parts, "PIN pad")
	}
	return strings.Join(parts, ", ")
}

func pinState(p pkcs11.PINStatus, set bool) string {
	switch {
	case !set:
		return "not set"
	case p.Locked:
		return "LOCKED"
	case p.FinalTry:
		return "one try left"
	case p.CountLow:
		return "wrong PIN entered recently"
	case p.ToBeChanged:
		return "ok, must be changed"
	}
	return "ok"
}

func mem(free, total *uint64) string {
	if free == nil && total == nil {
		return "not reported"
	}
	f, t := "?", "?"
	if free != nil {
		f = fmt.Sprint(*free)
	}
	if total != nil {
		t = fmt.Sprint(*total)
	}
	return f + " of " + t + " bytes free"
}

func expiry(notAfter, now time.Time) string {
	d := notAfter.Sub(now)
	day := notAfter.UTC().Format("2006-01-02")
	if d < 0 {
		return day + " (EXPIRED)"
	}
	return fmt.Sprintf("%s (in %d days)", day, int(d.Hours()/24))
}

func optional(prefix, v string) string {
	if v == "" {
		return ""
	}
	return prefix + v
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
