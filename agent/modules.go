package agent

import (
	"context"
	"runtime"
	"slices"

	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

// openSC is OpenSC's generic module, which serves most smart cards and many USB tokens
// through pcscd: the fallback when no recognised token model is attached.
var openSC = usb.Model{Vendor: "OpenSC", Name: "OpenSC", Modules: map[string][]string{
	usb.OSLinux:   {"opensc-pkcs11.so"},
	usb.OSDarwin:  {"opensc-pkcs11.so"},
	usb.OSWindows: {"opensc-pkcs11.dll"},
}}

// DefaultModules picks the PKCS#11 modules to load when none is configured: the preferred
// installed module of each recognised token model attached now (enum may be nil: no USB
// enumeration), or, when that finds none, OpenSC's module if it is installed.
//
// It deliberately does not load every module it can find: two modules that both serve one
// token (a vendor module and OpenSC, say) make every job selecting it ambiguous. A service
// that must serve models plugged in later names its modules in the configuration.
func DefaultModules(ctx context.Context, reg *usb.Registry, enum usb.Enumerator) []string {
	dirs := usb.ModuleDirs(runtime.GOOS, runtime.GOARCH)
	var out []string
	if enum != nil && reg != nil {
		devices, err := usb.Identify(ctx, enum, reg)
		if err == nil {
			for _, d := range devices {
				if p, err := usb.LocateModule(d.Model, runtime.GOOS, dirs, nil); err == nil && !slices.Contains(out, p) {
					out = append(out, p)
				}
			}
		}
	}
	if len(out) == 0 {
		if p, err := usb.LocateModule(openSC, runtime.GOOS, dirs, nil); err == nil {
			out = append(out, p)
		}
	}
	return out
}
