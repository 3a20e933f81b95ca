package usb

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrModuleNotFound is wrapped by LocateModule when no candidate exists.
var ErrModuleNotFound = errors.New("no PKCS#11 module found")

// ModuleDirs returns the directories where PKCS#11 modules are commonly installed on goos
// (GOOS) for goarch (GOARCH), searched in this order after the loader's own search fails.
func ModuleDirs(goos, goarch string) []string {
	switch goos {
	case OSLinux:
		dirs := []string{}
		if triplet := debianTriplet(goarch); triplet != "" {
			dirs = append(dirs, "/usr/lib/"+triplet, "/usr/lib/"+triplet+"/pkcs11")
		}
		return append(dirs, "/usr/lib64", "/usr/lib64/pkcs11", "/usr/lib", "/usr/lib/pkcs11",
			"/usr/local/lib", "/usr/local/lib/pkcs11", "/opt/local/lib")
	case OSDarwin:
		return []string{"/usr/local/lib", "/opt/homebrew/lib", "/Library/OpenSC/lib", "/usr/local/lib/pkcs11"}
	case OSWindows:
		root := os.Getenv("SystemRoot")
		if root == "" {
			root = `C:\Windows`
		}
		pf := os.Getenv("ProgramFiles")
		if pf == "" {
			pf = `C:\Program Files`
		}
		return []string{
			root + `\System32`,
			pf + `\OpenSC Project\OpenSC\pkcs11`,
			pf + `\Yubico\Yubico PIV Tool\bin`,
		}
	}
	return nil
}

func debianTriplet(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64-linux-gnu"
	case "arm64":
		return "aarch64-linux-gnu"
	case "386":
		return "i386-linux-gnu"
	case "arm":
		return "arm-linux-gnueabihf"
	}
	return ""
}

// LocateModule returns the path of the first of the model's module candidates for goos
// that exists as a regular file in one of dirs (candidates first, then dirs, so the
// preferred module wins wherever it is). fsys stats the paths; nil means the real file
// system. The error lists what was tried.
func LocateModule(m Model, goos string, dirs []string, stat func(string) (fs.FileInfo, error)) (string, error) {
	if stat == nil {
		stat = os.Stat
	}
	cands := m.ModuleCandidates(goos)
	if len(cands) == 0 {
		return "", fmt.Errorf("%w: %s (%s) lists no module for %s", ErrModuleNotFound, m.Name, m.ID(), goos)
	}
	var tried []string
	for _, c := range cands {
		for _, d := range dirs {
			p := filepath.Join(d, c)
			if goos == OSWindows {
				// filepath uses the host's separator; keep Windows paths in Windows form.
				p = strings.TrimRight(d, `\`) + `\` + c
			}
			tried = append(tried, p)
			if st, err := stat(p); err == nil && st.Mode().IsRegular() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%w for %s (%s) on %s; tried %s", ErrModuleNotFound, m.Name, m.ID(), goos, strings.Join(tried, ", "))
}
