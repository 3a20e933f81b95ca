//go:build cgo

package pkcs11

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strings"
)

// elfMachines maps GOARCH to the ELF machine a library must be built for.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386, "arm": elf.EM_ARM,
	"riscv64": elf.EM_RISCV, "ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "loong64": elf.EM_LOONGARCH,
}

// checkModuleFile says what is wrong with the file at path before the loader gets it: missing,
// unreadable, a directory. nil when it is a readable file (or a bare name the loader
// searches for).
func checkModuleFile(path string) error {
	if !strings.ContainsRune(path, os.PathSeparator) {
		return nil
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("PKCS#11 module %s does not exist", path)
	case err != nil:
		return fmt.Errorf("PKCS#11 module %s: %w", path, err)
	case st.IsDir():
		return fmt.Errorf("PKCS#11 module %s is a directory, not a library", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("PKCS#11 module %s is not readable: %w", path, err)
	}
	return f.Close()
}

// explainLoadFailure says why the loader refused a readable file, as far as the file
// shows it (miekg/pkcs11 reports no reason).
func explainLoadFailure(path string) error {
	if !strings.ContainsRune(path, os.PathSeparator) {
		return fmt.Errorf("cannot load PKCS#11 module %q: not found in the library search path, or refused by the loader", path)
	}
	f, err := elf.Open(path)
	if err != nil {
		if runtime.GOOS == "linux" || runtime.GOOS == "freebsd" {
			return fmt.Errorf("cannot load PKCS#11 module %s: not an ELF shared library", path)
		}
		return fmt.Errorf("cannot load PKCS#11 module %s: the loader refused it", path)
	}
	defer func() { _ = f.Close() }()
	if f.Type != elf.ET_DYN {
		return fmt.Errorf("cannot load PKCS#11 module %s: an ELF %s, not a shared library", path, f.Type)
	}
	if want, ok := elfMachines[runtime.GOARCH]; ok && f.Machine != want {
		return fmt.Errorf("cannot load PKCS#11 module %s: built for %s, this program runs on %s", path, f.Machine, runtime.GOARCH)
	}
	syms, err := f.DynamicSymbols()
	if err == nil && !slices.ContainsFunc(syms, func(s elf.Symbol) bool {
		return s.Name == "C_GetFunctionList" && s.Section != elf.SHN_UNDEF
	}) {
		return fmt.Errorf("cannot load PKCS#11 module %s: it exports no C_GetFunctionList, so it is not a PKCS#11 module", path)
	}
	return fmt.Errorf("cannot load PKCS#11 module %s: the loader refused it (a library it depends on may be missing: see `ldd %s`)", path, path)
}
