package usb

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func defaultRegistry(t *testing.T) *Registry {
	t.Helper()
	r, err := DefaultRegistry()
	if err != nil {
		t.Fatalf("built-in registry does not load: %v", err)
	}
	return r
}

func TestBuiltinRegistryEntries(t *testing.T) {
	r := defaultRegistry(t)
	tests := []struct {
		id         string
		vendor     string
		name       string
		family     string
		linuxFirst string // first Linux module candidate, "" when none
		winFirst   string
		caps       []Capability
		userPIN    string
		soPIN      string
	}{
		{"0a89:0030", "Aktiv", "Rutoken ECP", "rutoken-ecp", "librtpkcs11ecp.so", "rtPKCS11ECP.dll",
			[]Capability{CapPKCS11, CapInitToken}, "12345678", "87654321"},
		{"1050:0407", "Yubico", "YubiKey 4/5 OTP+FIDO+CCID", "yubikey-ccid", "libykcs11.so", "libykcs11.dll",
			[]Capability{CapPKCS11, CapVendorTool, CapPIVManagementKey}, "123456", "010203040506070801020304050607080102030405060708"},
		{"1050:0404", "Yubico", "YubiKey 4/5 CCID", "yubikey-ccid", "libykcs11.so", "libykcs11.dll",
			[]Capability{CapPKCS11, CapVendorTool, CapPIVManagementKey}, "123456", "010203040506070801020304050607080102030405060708"},
		{"1050:0402", "Yubico", "YubiKey 4/5 FIDO", "yubikey-no-ccid", "", "", []Capability{}, "", ""},
		{"0529:0620", "SafeNet (Aladdin, now Thales)", "eToken 5100 series (5100/5110)", "safenet-etoken", "libeTPkcs11.so", "eTPKCS11.dll",
			[]Capability{CapPKCS11, CapVendorTool}, "1234567890", ""},
		{"0529:0600", "SafeNet (Aladdin, now Thales)", "eToken PRO 64K (4.2)", "safenet-etoken", "libeTPkcs11.so", "eTPKCS11.dll",
			[]Capability{CapPKCS11, CapVendorTool}, "1234567890", ""},
		{"24dc:0101", "Aladdin R.D.", "JaCarta", "jacarta", "libjcPKCS11-2.so", "jcPKCS11-2.dll",
			[]Capability{CapPKCS11, CapVendorTool}, "", ""},
		{"096e:0807", "Feitian", "ePass2003", "feitian-epass2003", "opensc-pkcs11.so", "opensc-pkcs11.dll",
			[]Capability{CapPKCS11, CapVendorTool}, "", ""},
		{"20a0:4108", "Nitrokey", "Nitrokey Pro", "nitrokey-openpgp", "opensc-pkcs11.so", "opensc-pkcs11.dll",
			[]Capability{CapPKCS11, CapVendorTool}, "123456", "12345678"},
		{"20a0:4230", "Nitrokey", "Nitrokey HSM", "nitrokey-hsm", "opensc-pkcs11.so", "opensc-pkcs11.dll",
			[]Capability{CapPKCS11, CapInitToken}, "648219", "3537363231383830"},
		{"20a0:42b2", "Nitrokey", "Nitrokey 3", "nitrokey-3", "opensc-pkcs11.so", "opensc-pkcs11.dll",
			[]Capability{CapPKCS11, CapVendorTool}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			vid, pid, err := ParseID(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			m, ok := r.Lookup(vid, pid)
			if !ok {
				t.Fatalf("%s not in the registry", tc.id)
			}
			if m.ID() != tc.id || m.Vendor != tc.vendor || m.Name != tc.name || m.Family != tc.family {
				t.Fatalf("got %s %q %q %q, want %s %q %q %q", m.ID(), m.Vendor, m.Name, m.Family, tc.id, tc.vendor, tc.name, tc.family)
			}
			if got := first(m.ModuleCandidates(OSLinux)); got != tc.linuxFirst {
				t.Errorf("linux module = %q, want %q", got, tc.linuxFirst)
			}
			if got := first(m.ModuleCandidates(OSWindows)); got != tc.winFirst {
				t.Errorf("windows module = %q, want %q", got, tc.winFirst)
			}
			if !slices.Equal(m.Capabilities, tc.caps) {
				t.Errorf("capabilities = %v, want %v", m.Capabilities, tc.caps)
			}
			var user, so string
			if m.Defaults != nil {
				user, so = m.Defaults.UserPIN, m.Defaults.SOPIN
			}
			if user != tc.userPIN || so != tc.soPIN {
				t.Errorf("default PINs = %q/%q, want %q/%q", user, so, tc.userPIN, tc.soPIN)
			}
		})
	}
}

func first(xs []string) string {
	if len(xs) == 0 {
		return ""
	}
	return xs[0]
}

// Every built-in entry must say where it comes from, and be usable.
func TestBuiltinRegistryInvariants(t *testing.T) {
	r := defaultRegistry(t)
	models := r.Models()
	vendors := map[uint16]bool{}
	for _, m := range models {
		vendors[m.VID] = true
		if len(m.Sources) == 0 {
			t.Errorf("%s: no source for its VID:PID", m.ID())
		}
		for _, s := range append(slices.Clone(m.Sources), m.ModuleSources...) {
			if s.ID == "" || s.Title == "" {
				t.Errorf("%s: unresolved source %+v", m.ID(), s)
			}
		}
		if m.Has(CapPKCS11) {
			for _, goos := range []string{OSLinux, OSWindows} {
				if len(m.ModuleCandidates(goos)) == 0 {
					t.Errorf("%s: pkcs11 capability but no %s module", m.ID(), goos)
				}
			}
			if len(m.ModuleSources) == 0 {
				t.Errorf("%s: modules without a source", m.ID())
			}
		} else if len(m.Modules) != 0 {
			t.Errorf("%s: modules listed but no pkcs11 capability", m.ID())
		}
		if m.Defaults != nil && m.Defaults.Source == "" {
			t.Errorf("%s: default PINs without a source", m.ID())
		}
		if len(m.TokenManufacturers) == 0 {
			t.Errorf("%s: no token manufacturer to correlate with", m.ID())
		}
	}
	for _, vid := range []uint16{0x0a89, 0x1050, 0x0529, 0x24dc, 0x096e, 0x20a0} {
		if !vendors[vid] {
			t.Errorf("no model for vendor %04x", vid)
		}
	}
	if !slices.IsSortedFunc(models, func(a, b Model) int { return strings.Compare(a.ID(), b.ID()) }) {
		t.Error("Models() is not ordered by VID:PID")
	}
}

// Lookup must hand out copies: a caller editing a Model must not change the registry.
func TestLookupReturnsCopies(t *testing.T) {
	r := defaultRegistry(t)
	m, _ := r.Lookup(0x1050, 0x0407)
	m.Modules[OSLinux][0] = "evil.so"
	m.Capabilities[0] = "x"
	m.Defaults.UserPIN = "0"
	again, _ := r.Lookup(0x1050, 0x0407)
	if again.Modules[OSLinux][0] != "libykcs11.so" || again.Capabilities[0] != CapPKCS11 || again.Defaults.UserPIN != "123456" {
		t.Fatalf("registry was modified through a returned Model: %+v", again)
	}
}

func TestLoadRegistryMerges(t *testing.T) {
	const extra = `
version: 1
sources:
  - id: site-inventory
    title: ACME hardware inventory, 2025
families:
  - name: yubikey-ccid
    vendor: Yubico
    modules:
      linux: [/opt/yubico/lib/libykcs11.so]
    modules_sources: [site-inventory]
    capabilities: [pkcs11, piv-management-key]
  - name: acme-token
    vendor: ACME
    token_manufacturers: [ACME Corp]
    modules:
      linux: [libacme.so]
    modules_sources: [site-inventory]
    capabilities: [pkcs11, init-token]
    key_types: [ec-p256]
    defaults: {user_pin: "0000", source: site-inventory}
devices:
  - id: "0A89:0030"
    model: Rutoken ECP (site)
    family: rutoken-ecp
    sources: [site-inventory]
  - id: "1234:abcd"
    model: ACME Token
    family: acme-token
    sources: [site-inventory]
  - id: "1050:0408"
    model: YubiKey test PID
    family: yubikey-ccid
    sources: [usb-ids]
    key_types: []
`
	r, err := LoadRegistry(strings.NewReader(extra))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		vid, pid uint16
		name     string
		linux    []string
		caps     []Capability
		keyTypes []KeyType
	}{
		// device override keeps the built-in family
		{0x0a89, 0x0030, "Rutoken ECP (site)", []string{"librtpkcs11ecp.so", "opensc-pkcs11.so"}, []Capability{CapPKCS11, CapInitToken}, []KeyType{KeyRSA2048, KeyGOST2012256, KeyGOST2012512}},
		// family override applies to built-in devices of that family
		{0x1050, 0x0407, "YubiKey 4/5 OTP+FIDO+CCID", []string{"/opt/yubico/lib/libykcs11.so"}, []Capability{CapPKCS11, CapPIVManagementKey}, nil},
		// new family, new device
		{0x1234, 0xabcd, "ACME Token", []string{"libacme.so"}, []Capability{CapPKCS11, CapInitToken}, []KeyType{KeyECP256}},
		// device-level empty key_types replaces the family's
		{0x1050, 0x0408, "YubiKey test PID", []string{"/opt/yubico/lib/libykcs11.so"}, []Capability{CapPKCS11, CapPIVManagementKey}, []KeyType{}},
	}
	for _, tc := range tests {
		m, ok := r.Lookup(tc.vid, tc.pid)
		if !ok {
			t.Fatalf("%s missing after merge", FormatID(tc.vid, tc.pid))
		}
		if m.Name != tc.name || !slices.Equal(m.ModuleCandidates(OSLinux), tc.linux) ||
			!slices.Equal(m.Capabilities, tc.caps) || !slices.Equal(m.KeyTypes, tc.keyTypes) {
			t.Errorf("%s: got %q %v %v %v", m.ID(), m.Name, m.ModuleCandidates(OSLinux), m.Capabilities, m.KeyTypes)
		}
	}
	acme, _ := r.Lookup(0x1234, 0xabcd)
	if acme.Defaults == nil || acme.Defaults.UserPIN != "0000" || acme.TokenManufacturers[0] != "ACME Corp" {
		t.Errorf("acme defaults/manufacturers not resolved: %+v", acme)
	}
	// the built-in registry itself is untouched by the merge
	base := defaultRegistry(t)
	if m, _ := base.Lookup(0x0a89, 0x0030); m.Name != "Rutoken ECP" {
		t.Errorf("merge modified the built-in registry: %q", m.Name)
	}
	if base.Known(0x1234, 0xabcd) || !r.Known(0x1234, 0xabcd) {
		t.Error("Known does not reflect the merge")
	}
}

func TestLoadRegistryEmptyFile(t *testing.T) {
	r, err := LoadRegistry(strings.NewReader("# nothing here yet\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Models()) != len(defaultRegistry(t).Models()) {
		t.Fatal("an empty extra file changed the registry")
	}
}

func TestLoadRegistryErrors(t *testing.T) {
	const head = "version: 1\n"
	tests := []struct {
		name string
		in   string
		want []string // substrings the error must contain
	}{
		{"bad vid", head + "devices:\n  - {id: '10z0:0407', model: X, family: yubikey-ccid, sources: [usb-ids]}\n",
			[]string{`token registry extra registry:3:10: devices[0].id: device "10z0:0407": bad VID:PID`}},
		{"short pid", head + "devices:\n  - {id: '1050:407', model: X, family: yubikey-ccid, sources: [usb-ids]}\n",
			[]string{`device "1050:407"`, "four hex digits"}},
		{"0x prefix", head + "devices:\n  - {id: '0x1050:0x0407', model: X, family: yubikey-ccid, sources: [usb-ids]}\n",
			[]string{`device "0x1050:0x0407"`, "bad VID:PID"}},
		{"empty id", head + "devices:\n  - {model: X, family: yubikey-ccid, sources: [usb-ids]}\n",
			[]string{"extra registry:3:5: devices[0].id: empty id"}},
		{"duplicate device", head + "devices:\n  - {id: '1050:0407', model: X, family: yubikey-ccid, sources: [usb-ids]}\n  - {id: '1050:0407', model: Y, family: yubikey-ccid, sources: [usb-ids]}\n",
			[]string{`extra registry:4:10: devices[1].id: device "1050:0407": duplicate id`}},
		{"duplicate device, other case", head + "devices:\n  - {id: '24dc:0a0b', model: X, family: jacarta, sources: [usb-ids]}\n  - {id: '24DC:0A0B', model: Y, family: jacarta, sources: [usb-ids]}\n",
			[]string{`extra registry:4:10: devices[1].id: device "24DC:0A0B": duplicate id`}},
		{"unknown family", head + "devices:\n  - {id: '1050:0499', model: X, family: yubikey-9, sources: [usb-ids]}\n",
			[]string{`extra registry:3:41: devices[0].family: device "1050:0499": unknown family "yubikey-9"`}},
		{"unknown source", head + "devices:\n  - {id: '1050:0499', model: X, family: yubikey-ccid, sources: [rumour]}\n",
			[]string{`extra registry:3:65: devices[0].sources[0]: device "1050:0499": unknown source "rumour"`}},
		{"no source", head + "devices:\n  - {id: '1050:0499', model: X, family: yubikey-ccid}\n",
			[]string{`device "1050:0499"`, "no sources"}},
		{"no model", head + "devices:\n  - {id: '1050:0499', family: yubikey-ccid, sources: [usb-ids]}\n",
			[]string{`device "1050:0499"`, "empty model"}},
		{"unknown OS", head + "families:\n  - {name: f, vendor: V, modules: {freebsd: [x.so]}, modules_sources: [usb-ids]}\n",
			[]string{`extra registry:3:36: families[0].modules.freebsd: family "f": unknown OS "freebsd" (want one of linux, windows, darwin)`}},
		{"unknown OS on device", head + "devices:\n  - {id: '1050:0499', model: X, family: yubikey-ccid, sources: [usb-ids], modules: {Linux: [x.so]}}\n",
			[]string{`device "1050:0499"`, `unknown OS "Linux"`}},
		{"empty module", head + "families:\n  - {name: f, vendor: V, modules: {linux: ['']}, modules_sources: [usb-ids]}\n",
			[]string{`family "f"`, "empty module name for linux"}},
		{"unknown capability", head + "families:\n  - {name: f, vendor: V, capabilities: [pkcs11, teleport]}\n",
			[]string{`extra registry:3:49: families[0].capabilities[1]: family "f": unknown capability "teleport"`}},
		{"unknown capability on device", head + "devices:\n  - {id: '1050:0499', model: X, family: yubikey-ccid, sources: [usb-ids], capabilities: [init_token]}\n",
			[]string{`device "1050:0499"`, `unknown capability "init_token"`}},
		{"unknown key type", head + "families:\n  - {name: f, vendor: V, key_types: [rsa512]}\n",
			[]string{`family "f"`, `unknown key type "rsa512"`}},
		{"duplicate family", head + "families:\n  - {name: f, vendor: V}\n  - {name: f, vendor: W}\n",
			[]string{`extra registry:4:12: families[1].name: family "f": duplicate name`}},
		{"family without vendor", head + "families:\n  - {name: f}\n",
			[]string{`family "f"`, "empty vendor"}},
		{"modules without source", head + "families:\n  - {name: f, vendor: V, modules: {linux: [x.so]}}\n",
			[]string{`family "f"`, "without modules_sources"}},
		{"unknown modules source", head + "families:\n  - {name: f, vendor: V, modules: {linux: [x.so]}, modules_sources: [blog]}\n",
			[]string{`family "f"`, `unknown source "blog"`}},
		{"vendor tool unnamed", head + "families:\n  - {name: f, vendor: V, capabilities: [vendor-tool]}\n",
			[]string{`family "f"`, "needs vendor_tool"}},
		{"vendor tool without capability", head + "families:\n  - {name: f, vendor: V, vendor_tool: t}\n",
			[]string{`family "f"`, "without capability vendor-tool"}},
		{"defaults without source", head + "families:\n  - {name: f, vendor: V, defaults: {user_pin: '1'}}\n",
			[]string{`family "f"`, "defaults without a source"}},
		{"defaults unknown source", head + "families:\n  - {name: f, vendor: V, defaults: {user_pin: '1', source: x}}\n",
			[]string{`extra registry:3:60: families[0].defaults.source: family "f": unknown source "x"`}},
		{"empty defaults", head + "families:\n  - {name: f, vendor: V, defaults: {source: usb-ids}}\n",
			[]string{`family "f"`, "without any PIN"}},
		{"duplicate source", head + "sources:\n  - {id: s, title: a}\n  - {id: s, title: b}\n",
			[]string{`extra registry:4:10: sources[1].id: source "s": duplicate id`}},
		{"source without title", head + "sources:\n  - {id: s}\n",
			[]string{`extra registry:3:5: sources[0].title: source "s": empty title`}},
		{"misspelt field", head + "devices:\n  - {id: '1050:0499', model_name: X, family: yubikey-ccid, sources: [usb-ids]}\n",
			[]string{`extra registry:3:23: devices[0].model_name: unknown field "model_name" (known fields: id, model, family, vendor, sources, modules, capabilities, key_types, notes)`}},
		{"no version", "devices:\n  - {id: '1050:0499', model: X, family: yubikey-ccid, sources: [usb-ids]}\n",
			[]string{"extra registry:1:1: version: version 0 is not supported (want 1)"}},
		{"future version", "version: 2\n", []string{"extra registry:1:10: version: version 2 is not supported (want 1)"}},
		{"two documents", head + "---\nversion: 1\n", []string{"extra registry:2:1: a second YAML document"}},
		{"misspelt field, suggested", head + "families:\n  - name: f\n    vendor: V\n    capabilites: [pkcs11]\n", //nolint:misspell // the misspelling is the test
			[]string{`extra registry:5:5: families[0].capabilites: unknown field "capabilites"; did you mean "capabilities"?`}}, //nolint:misspell // the misspelling is the test
		{"wrong type", head + "devices:\n  - id: '1050:0499'\n    sources: usb-ids\n",
			[]string{`extra registry:4:14: devices[0].sources: want a list, got text "usb-ids"`}},
		{"key twice", head + "version: 1\n", []string{"extra registry:2:1: version: given twice (first on line 1): keep one"}},
		{"tab", head + "devices:\n\t- {id: '1050:0499'}\n", []string{"extra registry:3:1: a tab in the indentation"}},
		{"not yaml", "{{{", []string{"token registry extra registry:1:1: not valid YAML: "}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadRegistry(strings.NewReader(tc.in))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadRegistryFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(p, []byte("version: 1\ndevices:\n  - {id: '1050:0499', model: X, family: nope, sources: [usb-ids]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadRegistryFile(p)
	if err == nil || !strings.Contains(err.Error(), p+`:3:41: devices[0].family: device "1050:0499": unknown family "nope"`) {
		t.Fatalf("error %v does not name the file and the problem", err)
	}
	if _, err := LoadRegistryFile(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestParseFormatID(t *testing.T) {
	tests := []struct {
		in       string
		vid, pid uint16
		ok       bool
	}{
		{"1050:0407", 0x1050, 0x0407, true},
		{"FFFF:abCD", 0xffff, 0xabcd, true},
		{"1050-0407", 0, 0, false},
		{"1050:04070", 0, 0, false},
		{" 1050:0407", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tc := range tests {
		vid, pid, err := ParseID(tc.in)
		if (err == nil) != tc.ok || vid != tc.vid || pid != tc.pid {
			t.Errorf("ParseID(%q) = %04x, %04x, %v", tc.in, vid, pid, err)
		}
		if tc.ok && !strings.EqualFold(FormatID(vid, pid), tc.in) {
			t.Errorf("FormatID round trip of %q gave %q", tc.in, FormatID(vid, pid))
		}
	}
}

type fakeInfo struct {
	fs.FileInfo
	mode fs.FileMode
}

func (f fakeInfo) Mode() fs.FileMode { return f.mode }

func TestLocateModule(t *testing.T) {
	r := defaultRegistry(t)
	rutoken, _ := r.Lookup(0x0a89, 0x0030)
	files := map[string]fs.FileMode{
		"/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so": 0,
		"/opt/local/lib/librtpkcs11ecp.so":           0,
		"/usr/lib/librtpkcs11ecp.so":                 fs.ModeDir, // not a file
		`C:\Windows\System32\rtPKCS11ECP.dll`:        0,
	}
	stat := func(p string) (fs.FileInfo, error) {
		if m, ok := files[p]; ok {
			return fakeInfo{mode: m}, nil
		}
		return nil, fs.ErrNotExist
	}
	linuxDirs := ModuleDirs(OSLinux, "amd64")
	// The vendor module is preferred even though OpenSC sits in an earlier directory.
	got, err := LocateModule(rutoken, OSLinux, linuxDirs, stat)
	if err != nil || got != "/opt/local/lib/librtpkcs11ecp.so" {
		t.Fatalf("linux: %q, %v", got, err)
	}
	got, err = LocateModule(rutoken, OSWindows, []string{`C:\Windows\System32\`}, stat)
	if err != nil || got != `C:\Windows\System32\rtPKCS11ECP.dll` {
		t.Fatalf("windows: %q, %v", got, err)
	}
	_, err = LocateModule(rutoken, OSDarwin, ModuleDirs(OSDarwin, "arm64"), stat)
	if !errors.Is(err, ErrModuleNotFound) || !strings.Contains(err.Error(), "/Library/OpenSC/lib/opensc-pkcs11.so") {
		t.Fatalf("darwin: %v", err)
	}
	fido, _ := r.Lookup(0x1050, 0x0402)
	if _, err := LocateModule(fido, OSLinux, linuxDirs, stat); !errors.Is(err, ErrModuleNotFound) || !strings.Contains(err.Error(), "lists no module") {
		t.Fatalf("fido-only: %v", err)
	}
}

// OpenSC is installed on the project's machines (scripts/ensure-deps.sh): the real file
// system must yield its module for an OpenSC-driven model.
func TestLocateModuleRealOpenSC(t *testing.T) {
	if runtime.GOOS != OSLinux {
		t.Fatalf("this test describes the Linux build machines; GOOS is %s", runtime.GOOS)
	}
	r := defaultRegistry(t)
	hsm, _ := r.Lookup(0x20a0, 0x4230)
	p, err := LocateModule(hsm, OSLinux, ModuleDirs(OSLinux, runtime.GOARCH), nil)
	if err != nil {
		t.Fatalf("%v (install OpenSC: apt-get install -y opensc-pkcs11)", err)
	}
	if filepath.Base(p) != "opensc-pkcs11.so" {
		t.Fatalf("located %s", p)
	}
}
