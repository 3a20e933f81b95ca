// Package inventory takes stock of what a workstation holds: the USB devices it recognises
// as tokens, every token behind each PKCS#11 module, their PIN state and the certificates
// on them. `tokenfleet-agent tokens` prints it, and the agent's hello message carries it.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

// Options say where to look.
type Options struct {
	// Modules are the PKCS#11 module paths to open. When empty, the modules of the USB
	// token models the registry recognises on this machine are used.
	Modules []string
	// Registry maps USB IDs to token models; nil means the built-in registry.
	Registry *usb.Registry
	// USB enumerates USB devices; nil means no USB enumeration (PKCS#11 only).
	USB usb.Enumerator
	// Now gives the time certificates are judged against; nil means time.Now.
	Now func() time.Time
	Log zerolog.Logger
	// Open opens a module by path; nil means pkcs11.Open. The fleet simulator's seam for
	// simulated tokens.
	Open func(path string, opts pkcs11.Options) (*pkcs11.Module, error)
}

// Report is what was found. Failures of one module or of USB enumeration are recorded in
// it rather than returned, so one broken module does not hide the others.
type Report struct {
	Time    time.Time      `json:"time"`
	USB     USBReport      `json:"usb"`
	Modules []ModuleReport `json:"modules"`
	// Note explains an empty report (no module given and none found).
	Note string `json:"note,omitempty"`
}

// USBReport lists the attached USB devices the registry knows as tokens.
type USBReport struct {
	Enumerated bool          `json:"enumerated"`
	Error      string        `json:"error,omitempty"`
	Devices    []USBIdentity `json:"devices"`
}

// USBIdentity is a recognised USB device.
type USBIdentity struct {
	ID           string `json:"id"` // vvvv:pppp
	Vendor       string `json:"vendor"`
	Model        string `json:"model"`
	Family       string `json:"family"`
	Bus          int    `json:"bus"`
	Address      int    `json:"address"`
	Serial       string `json:"serial,omitempty"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Product      string `json:"product,omitempty"`
}

// ModuleReport is one PKCS#11 module and the tokens behind it.
type ModuleReport struct {
	Path  string             `json:"path"`
	Info  *pkcs11.ModuleInfo `json:"info,omitempty"`
	Error *Failure           `json:"error,omitempty"`
	Slots []SlotReport       `json:"slots"`
}

// Failure is an error as data: a stable code and a message.
type Failure struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func failure(err error) *Failure {
	return &Failure{Code: string(pkcs11.CodeOf(err)), Message: err.Error()}
}

// SlotReport is one slot and its token.
type SlotReport struct {
	Description  string             `json:"description"`
	Manufacturer string             `json:"manufacturer"`
	TokenPresent bool               `json:"token_present"`
	Token        *pkcs11.TokenInfo  `json:"token,omitempty"`
	USB          *USBIdentity       `json:"usb,omitempty"`
	Certificates []CertificateEntry `json:"certificates"`
	// CertificatesError says why the certificates could not be read.
	CertificatesError *Failure `json:"certificates_error,omitempty"`
}

// CertificateEntry is a certificate on a token.
type CertificateEntry struct {
	ID        string    `json:"id"` // CKA_ID, hex
	Label     string    `json:"label"`
	Authority bool      `json:"authority"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Expired   bool      `json:"expired"`
}

// Tokens counts the present tokens in the report.
func (r *Report) Tokens() int {
	n := 0
	for _, m := range r.Modules {
		for _, s := range m.Slots {
			if s.Token != nil {
				n++
			}
		}
	}
	return n
}

// ModuleErrors joins the failures of modules that could not be used.
func (r *Report) ModuleErrors() error {
	var errs []error
	for _, m := range r.Modules {
		if m.Error != nil {
			errs = append(errs, fmt.Errorf("module %s: %s", m.Path, m.Error.Message))
		}
	}
	return errors.Join(errs...)
}

// Collect takes stock. It returns an error only when ctx ends; everything else is in the
// report.
func Collect(ctx context.Context, o Options) (*Report, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	reg := o.Registry
	if reg == nil {
		var err error
		if reg, err = usb.DefaultRegistry(); err != nil {
			return nil, fmt.Errorf("inventory: built-in token registry: %w", err)
		}
	}
	rep := &Report{Time: now().UTC(), USB: USBReport{Devices: []USBIdentity{}}, Modules: []ModuleReport{}}

	var devices []usb.Identified
	if o.USB != nil {
		ids, err := usb.Identify(ctx, o.USB, reg)
		if err != nil {
			rep.USB.Error = err.Error()
			o.Log.Warn().Err(err).Msg("USB enumeration failed; continuing with PKCS#11 only")
		} else {
			rep.USB.Enumerated = true
			devices = ids
			for _, d := range ids {
				rep.USB.Devices = append(rep.USB.Devices, identity(d))
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	modules := o.Modules
	if len(modules) == 0 {
		modules = locateModules(devices)
		if len(modules) == 0 {
			rep.Note = "no PKCS#11 module given (--module PATH) and no known USB token model attached"
			return rep, nil
		}
	}
	for _, path := range modules {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rep.Modules = append(rep.Modules, collectModule(ctx, path, devices, now(), o.Log, o.open()))
	}
	return rep, nil
}

// locateModules finds, on this machine, the PKCS#11 module of every recognised device,
// each path once.
func locateModules(devices []usb.Identified) []string {
	dirs := usb.ModuleDirs(runtime.GOOS, runtime.GOARCH)
	var out []string
	for _, d := range devices {
		p, err := usb.LocateModule(d.Model, runtime.GOOS, dirs, func(name string) (fs.FileInfo, error) { return os.Stat(name) })
		if err == nil && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// open is how modules are opened: Options.Open or pkcs11.Open.
func (o Options) open() func(path string, opts pkcs11.Options) (*pkcs11.Module, error) {
	if o.Open != nil {
		return o.Open
	}
	return pkcs11.Open
}

func collectModule(ctx context.Context, path string, devices []usb.Identified, now time.Time, log zerolog.Logger,
	open func(string, pkcs11.Options) (*pkcs11.Module, error)) ModuleReport {
	mr := ModuleReport{Path: path, Slots: []SlotReport{}}
	mod, err := open(path, pkcs11.Options{Logger: log})
	if err != nil {
		mr.Error = failure(err)
		return mr
	}
	defer func() {
		if err := mod.Close(); err != nil {
			log.Warn().Err(err).Str("module", path).Msg("closing PKCS#11 module")
		}
	}()
	info, err := mod.Info(ctx)
	if err != nil {
		mr.Error = failure(err)
		return mr
	}
	mr.Info = &info
	slots, err := mod.Slots(ctx)
	if err != nil {
		mr.Error = failure(err)
		return mr
	}
	var refs []usb.TokenRef
	for _, s := range slots {
		if s.Token != nil {
			refs = append(refs, usb.TokenRef{Serial: s.Token.Serial, Manufacturer: s.Token.Manufacturer})
		}
	}
	for _, s := range slots {
		sr := SlotReport{Description: s.Description, Manufacturer: s.Manufacturer, TokenPresent: s.TokenPresent,
			Token: s.Token, Certificates: []CertificateEntry{}}
		if s.Token != nil {
			if d := usb.Tie(usb.TokenRef{Serial: s.Token.Serial, Manufacturer: s.Token.Manufacturer}, devices, refs); d != nil {
				id := identity(*d)
				sr.USB = &id
			}
			if s.Token.Initialized {
				certs, err := certificates(ctx, mod, s.Token.Serial, now)
				if err != nil {
					sr.CertificatesError = failure(err)
				} else {
					sr.Certificates = certs
				}
			}
		}
		mr.Slots = append(mr.Slots, sr)
	}
	return mr
}

// certificates lists the certificate objects on the token; they are public objects, so no
// PIN is needed.
func certificates(ctx context.Context, mod *pkcs11.Module, serial string, now time.Time) ([]CertificateEntry, error) {
	tok, err := mod.FindToken(ctx, &uri.URI{Serial: serial})
	if err != nil {
		return nil, err
	}
	defer func() { _ = tok.Close() }()
	certs, err := tok.Certificates(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]CertificateEntry, 0, len(certs))
	for _, c := range certs {
		out = append(out, CertificateEntry{
			ID: c.ID.String(), Label: c.Label, Authority: c.Authority,
			Subject: c.Subject, Issuer: c.Issuer, Serial: c.Serial,
			NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
			Expired: !c.NotAfter.IsZero() && now.After(c.NotAfter),
		})
	}
	return out, nil
}

func identity(d usb.Identified) USBIdentity {
	return USBIdentity{
		ID: d.Device.ID(), Vendor: d.Model.Vendor, Model: d.Model.Name, Family: d.Model.Family,
		Bus: d.Device.Bus, Address: d.Device.Address, Serial: d.Device.Serial,
		Manufacturer: d.Device.Manufacturer, Product: d.Device.Product,
	}
}
